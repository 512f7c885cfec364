"""The upload path's own header lookups, request ids and response header, against what Starlette
and the standard library give; FastAPI's native OpenTelemetry off (issue 18)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from starlette.datastructures import Headers, MutableHeaders

from app.headers import header
from app.main import create_app
from app.metrics import Metrics
from app.middleware import new_request_id, with_request_id

RAW = [
    (b"host", b"127.0.0.1"),
    (b"content-type", b"image/png"),
    (b"accept", b"application/json"),
    (b"x-dup", b"first"),
    (b"x-dup", b"second"),
    (b"x-latin", "caf\u00e9".encode("latin-1")),
    (b"content-length", b"40667"),
]
NAMES = [b"host", b"content-type", b"accept", b"x-dup", b"x-latin", b"content-length", b"x-none"]


@pytest.mark.parametrize("shape", [list, tuple, lambda r: [list(p) for p in r], iter])
def test_header_gives_what_starlette_headers_give(shape: Any) -> None:
    scope: dict[str, Any] = {"headers": shape(RAW)}
    starlette = Headers(scope={"headers": list(RAW)})
    for name in NAMES:
        assert header(scope, name) == starlette.get(name.decode())
    assert header(scope, b"x-dup") == "first"
    assert header(scope, b"x-none") is None


def test_header_follows_a_replaced_header_list() -> None:
    scope: dict[str, Any] = {"headers": list(RAW)}
    assert header(scope, b"accept") == "application/json"
    scope["headers"] = [(b"accept", b"image/png")]
    assert header(scope, b"accept") == "image/png"
    assert header(scope, b"host") is None


def test_request_ids_are_uuid4_hex() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for rid in ids:
        parsed = uuid.UUID(hex=rid)
        assert parsed.hex == rid and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize(
    "raw",
    [
        [(b"content-type", b"application/json"), (b"content-length", b"2")],
        [],
        [(b"x-request-id", b"old"), (b"content-type", b"text/plain")],
        [(b"a", b"1"), (b"X-Request-ID", b"old"), (b"x-request-id", b"older"), (b"b", b"2")],
    ],
)
def test_with_request_id_sets_the_header_as_mutable_headers_does(
    raw: list[tuple[bytes, bytes]],
) -> None:
    expected = MutableHeaders(raw=list(raw))
    expected["X-Request-ID"] = "abc-123"
    assert with_request_id(tuple(raw), "abc-123") == expected.raw


class _Recording(trace.TracerProvider):
    """A configured tracer provider (not the API's deferred proxy) that counts its tracers."""

    def __init__(self) -> None:
        self.tracers = 0

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        self.tracers += 1
        return trace.NoOpTracer()


def test_fastapis_opentelemetry_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = _Recording()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    plain = FastAPI()
    plain.get("/x")(lambda: {})
    with TestClient(plain) as c:
        assert c.get("/x").status_code == 200
    assert provider.tracers > 0  # a default FastAPI app traces with a configured provider
    provider.tracers = 0
    with TestClient(create_app()) as c:
        assert c.get("/health/live").status_code == 200
        upload = c.post("/segment/mri", content=b"x", headers={"content-type": "image/png"})
        assert upload.status_code == 415 and upload.json()["code"] == "unsupported_media_type"
    assert provider.tracers == 0


def test_kept_metric_children_count_as_labels_would() -> None:
    metrics = Metrics()
    for status, seconds in ((200, 0.004), (200, 0.006), (415, 0.001), (200, 0.02)):
        metrics.observe_request("/segment/mri", status, seconds)
    metrics.observe_request("/models", 200, 0.002)
    for model, seconds in (
        ("brain_tumor_mri", 0.004),
        ("brain_tumor_mri", 0.005),
        ("covid_ct", 0.1),
    ):
        metrics.observe_inference(model, seconds)
    value = metrics.registry.get_sample_value
    assert value("medserve_requests_total", {"endpoint": "/segment/mri", "status": "200"}) == 3
    assert value("medserve_requests_total", {"endpoint": "/segment/mri", "status": "415"}) == 1
    assert value("medserve_requests_total", {"endpoint": "/models", "status": "200"}) == 1
    durations = "medserve_request_duration_seconds"
    assert value(durations + "_count", {"endpoint": "/segment/mri"}) == 4
    assert value(durations + "_sum", {"endpoint": "/segment/mri"}) == pytest.approx(0.031)
    inference = "medserve_inference_duration_seconds"
    assert value(inference + "_count", {"model": "brain_tumor_mri"}) == 2
    assert value(inference + "_sum", {"model": "brain_tumor_mri"}) == pytest.approx(0.009)
    assert value(inference + "_count", {"model": "covid_ct"}) == 1
