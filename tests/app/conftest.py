from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.tiny_model import write_tiny_model

API_KEY = "test-key-0123456789abcdef"


@pytest.fixture
def model_root(tmp_path: Path) -> Path:
    write_tiny_model(tmp_path, name="pneumonia_xray")
    return tmp_path


@pytest.fixture
def client(model_root: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=model_root))) as c:
        yield c


@pytest.fixture
def auth_client(model_root: Path) -> Iterator[TestClient]:
    settings = Settings(model_dir=model_root, api_keys=API_KEY)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:
        yield c
