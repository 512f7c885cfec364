from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.tiny_model import write_tiny_suite

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny real ONNX models under the four contract names (bad input never reaches them)."""
    return write_tiny_suite(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def app_client(tiny_models: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_dir=tiny_models,
        max_upload_bytes=160 * MiB,
        max_image_pixels=50_000_000,
        max_decompressed_bytes=64 * MiB,
    )
    with TestClient(create_app(settings)) as client:
        yield client
