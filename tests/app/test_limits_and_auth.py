"""Refusals happen before the body is read: driven at the ASGI level to count receive() calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.app.conftest import API_KEY


class Upload:
    """An ASGI receive() that hands out ``chunks`` chunks of ``size`` bytes and counts calls."""

    def __init__(self, chunks: int, size: int = 64 * 1024) -> None:
        self.chunks, self.size, self.calls = chunks, size, 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        more = self.calls < self.chunks
        return {"type": "http.request", "body": b"\0" * self.size, "more_body": more}


def _call(
    app: Any, path: str, headers: dict[str, str], receive: Upload
) -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
        "state": {},
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.fixture
def app_with_keys(model_root: Path) -> Iterator[Any]:
    settings = Settings(model_dir=model_root, api_keys=API_KEY, max_upload_bytes=1024 * 1024)  # type: ignore[arg-type]
    app = create_app(settings)
    with TestClient(app):  # runs the lifespan
        yield app


def test_wrong_key_refused_without_reading_body(app_with_keys: Any) -> None:
    upload = Upload(chunks=1600)  # a 100 MB body
    headers = {"content-length": str(1600 * 64 * 1024), "x-api-key": "not-the-key-at-all"}
    status, body = _call(app_with_keys, "/models", headers, upload)
    assert status == 401 and body["code"] == "unauthorized"
    assert upload.calls == 0


def test_declared_oversize_refused_without_reading_body(app_with_keys: Any) -> None:
    upload = Upload(chunks=1600)
    headers = {"content-length": str(1600 * 64 * 1024), "x-api-key": API_KEY}
    status, body = _call(app_with_keys, "/classify/xray", headers, upload)
    assert status == 413 and body["code"] == "payload_too_large"
    assert upload.calls == 0


def test_chunked_oversize_stops_at_the_limit(app_with_keys: Any) -> None:
    """No Content-Length: bytes are counted as they arrive; reading stops just past 1 MiB."""
    upload = Upload(chunks=1600)
    headers = {"transfer-encoding": "chunked", "x-api-key": API_KEY}
    status, body = _call(app_with_keys, "/classify/xray", headers, upload)
    assert status == 413 and body["code"] == "payload_too_large"
    assert upload.calls == 17  # 16 chunks of 64 KiB fill 1 MiB; the 17th passes it


def test_oversize_through_test_client(model_root: Path) -> None:
    settings = Settings(model_dir=model_root, max_upload_bytes=1000)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/classify/xray", content=b"x" * 5000)
        assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:
            for _ in range(50):
                yield b"y" * 500

        resp = client.post("/classify/xray", content=chunks())
        assert resp.status_code == 413 and resp.json()["code"] == "payload_too_large"


def test_short_api_keys_are_rejected_at_start(model_root: Path) -> None:
    with pytest.raises(ValueError, match="16 characters"):
        Settings(model_dir=model_root, api_keys="short")  # type: ignore[arg-type]
