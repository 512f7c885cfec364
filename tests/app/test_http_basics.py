"""Health, models, metrics, error shapes, API keys, request ids, logs: through the real app."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from tests.app.conftest import API_KEY

PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "request_id"}


def assert_problem(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body.keys() >= PROBLEM_KEYS
    assert body["code"] == code and body["status"] == status
    assert body["type"] == f"urn:medserve:error:{code}"
    assert body["request_id"] == response.headers["x-request-id"]  # type: ignore[attr-defined]
    return body


def test_live_ready_models(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {"pneumonia_xray": "ready"}}
    (summary,) = client.get("/models").json()
    assert summary["name"] == "pneumonia_xray" and summary["ready"] is True
    assert summary["endpoint"] == "/classify/xray" and len(summary["sha256"]) == 64
    assert summary["default_operating_point"] == "balanced"
    assert summary["operating_points"]["balanced"]["threshold"] == 0.5
    card = client.get("/models/pneumonia_xray").json()
    assert card["ready"] is True and card["self_test"]["seed"] == 7
    assert card["files"]["model.onnx"] == summary["sha256"]


def test_error_shapes(client: TestClient) -> None:
    assert_problem(client.get("/models/nope"), 404, "not_found")
    assert_problem(client.get("/no/such/path"), 404, "not_found")
    resp = client.delete("/models")
    assert_problem(resp, 405, "bad_request")
    assert resp.headers["allow"] == "GET"


def test_openapi_and_docs(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/health/ready" in schema["paths"] and "/models/{name}" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_metrics_count_requests(client: TestClient) -> None:
    for _ in range(3):
        client.get("/health/live")
    client.get("/models/nope")
    text = client.get("/metrics").text
    assert 'medserve_requests_total{endpoint="/health/live",status="200"} 3.0' in text
    assert 'medserve_requests_total{endpoint="/models/{name}",status="404"} 1.0' in text
    assert "medserve_request_duration_seconds_bucket" in text
    assert "# TYPE medserve_inference_duration_seconds histogram" in text
    assert 'medserve_model_ready{model="pneumonia_xray"} 1.0' in text


def test_request_id_round_trip(client: TestClient) -> None:
    resp = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    # An id that could inject into logs is replaced, not echoed.
    resp = client.get("/health/live", headers={"X-Request-ID": 'bad"\nid'})
    assert resp.headers["x-request-id"] != 'bad"\nid' and len(resp.headers["x-request-id"]) == 32
    assert client.get("/health/live").headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key-0123456789"},
        {"Authorization": "Bearer wrong-key-0123456789"},
        {"Authorization": f"Basic {API_KEY}"},
    ],
)
def test_api_key_refused(auth_client: TestClient, headers: dict[str, str]) -> None:
    resp = auth_client.get("/models", headers=headers)
    assert_problem(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_api_key_accepted_and_exemptions(auth_client: TestClient) -> None:
    assert auth_client.get("/models", headers={"X-API-Key": API_KEY}).status_code == 200
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert auth_client.get("/models", headers=bearer).status_code == 200
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert auth_client.get(path).status_code == 200


def test_no_api_key_configured_means_open(client: TestClient) -> None:
    assert client.get("/models").status_code == 200


def test_logs_are_json_lines_with_request_id(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    client.get("/models", headers={"X-Request-ID": "log-check-1"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    access = [rec for rec in lines if rec.get("event") == "access"]
    assert access, lines
    rec = access[-1]
    assert rec["request_id"] == "log-check-1"
    assert {"time", "level", "method", "path", "status", "duration_ms"} <= rec.keys()
    assert rec["path"] == "/models" and rec["status"] == 200


def test_import_app_main_does_not_import_tensorflow() -> None:
    code = "import sys, app.main; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_refusals_before_routing_are_counted_under_their_route(auth_client: TestClient) -> None:
    auth_client.post("/classify/xray", content=b"x")
    auth_client.get("/nowhere")
    text = auth_client.get("/metrics").text
    assert 'medserve_requests_total{endpoint="/classify/xray",status="401"} 1.0' in text
    assert 'medserve_requests_total{endpoint="unmatched",status="401"} 1.0' in text
