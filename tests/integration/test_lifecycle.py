"""The process as an orchestrator sees it: models that are listed but not ready (503 with
Retry-After, the service still live), a clean exit on SIGTERM, refusal of invalid settings.

Tests that start their own process are skipped when MEDSERVE_URL points at a running service.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration import media
from tests.integration.contract import assert_problem
from tests.integration.service import (
    ENDPOINTS,
    REPO_ROOT,
    Service,
    free_port,
    metric,
    parse_metrics,
    running_service,
    service_env,
    start_process,
    stop_process,
    wait_live,
)

PNG = media.png8(media.chest_like(96, 96, max_value=255)).data


def _expect_not_ready(client: httpx.Client, path: str) -> None:
    r = client.post(path, content=PNG, headers={"Content-Type": "image/png"})
    assert_problem(r, 503, "model_not_ready")
    retry_after = r.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) > 0, dict(r.headers)


def test_listed_models_that_are_not_ready_answer_503(
    client: httpx.Client, models: dict[str, dict[str, Any]]
) -> None:
    not_ready = [n for n, m in models.items() if not m["ready"] and n in ENDPOINTS]
    if not not_ready:
        pytest.skip("every model the service lists is ready (the branch is tested below)")
    for name in not_ready:
        _expect_not_ready(client, ENDPOINTS[name])


@pytest.fixture(scope="module")
def broken(managed: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A second service whose models folder holds a corrupt card and a model without version."""
    root = tmp_path_factory.mktemp("broken_models")
    card_dir = root / "pneumonia_xray" / "1.0.0"
    card_dir.mkdir(parents=True)
    (card_dir / "model_card.json").write_text("{ this is not json")
    (card_dir / "model.onnx").write_bytes(b"\x08\x01")
    (root / "brain_tumor_mri").mkdir()
    key = secrets.token_urlsafe(24)
    env = service_env(MEDSERVE_MODEL_DIR=str(root), MEDSERVE_API_KEYS=key)
    with running_service(env, root.parent / "broken.log") as (url, _proc):
        yield Service(url=url, api_key=key, max_upload_bytes=0, managed=True, workers=1)


def test_not_ready_models_are_listed_with_a_reason(broken: Service) -> None:
    with httpx.Client(base_url=broken.url, headers=broken.auth_headers, timeout=30) as c:
        listed = {m["name"]: m for m in c.get("/models").json()}
        assert set(listed) == {"pneumonia_xray", "brain_tumor_mri"}, listed
        for m in listed.values():
            assert m["ready"] is False and m["reason"], m
        detail = c.get("/models/pneumonia_xray")
        assert detail.status_code == 200 and detail.json()["ready"] is False, detail.text


def test_not_ready_endpoints_answer_503_with_retry_after(broken: Service) -> None:
    with httpx.Client(base_url=broken.url, headers=broken.auth_headers, timeout=30) as c:
        for path in ENDPOINTS.values():  # two listed but broken, two absent
            _expect_not_ready(c, path)


def test_not_ready_service_is_live_but_not_ready(broken: Service) -> None:
    with httpx.Client(base_url=broken.url, timeout=30) as c:
        assert c.get("/health/live").status_code == 200
        r = c.get("/health/ready")
        body = assert_problem(r, 503, "model_not_ready")
        assert r.headers.get("retry-after", "").isdigit()
        assert set(body["models"]) == {"pneumonia_xray", "brain_tumor_mri"}, body
        assert all(v.startswith("not_ready") for v in body["models"].values()), body
        samples = parse_metrics(c.get("/metrics").text)
        assert metric(samples, "medserve_model_ready", model="pneumonia_xray") == 0.0


def test_sigterm_stops_the_service_cleanly(managed: Service, tmp_path: Path) -> None:
    env = service_env(MEDSERVE_MODEL_DIR=str(tmp_path / "empty"))
    port = free_port()
    log = tmp_path / "service.log"
    proc = start_process(env, port, log)
    try:
        wait_live(f"http://127.0.0.1:{port}", proc, log)
    except BaseException:
        stop_process(proc)
        raise
    started = time.monotonic()
    code = stop_process(proc, timeout=20)
    elapsed = time.monotonic() - started
    output = log.read_text()
    # uvicorn re-raises the signal after its graceful shutdown: exit 0 or "killed by SIGTERM"
    assert code in (0, -signal.SIGTERM), output[-2000:]
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    lines = [json.loads(x) for x in output.splitlines() if x.startswith("{")]
    assert lines, "no JSON log lines on stderr"
    assert all({"time", "level", "message"} <= line.keys() for line in lines), lines[:3]
    assert any(line["message"] == "Application shutdown complete." for line in lines), output


def test_invalid_settings_are_refused_at_start(managed: Service) -> None:
    short_key = "short-key"
    env = service_env(MEDSERVE_API_KEYS=short_key, MEDSERVE_MODEL_DIR=str(REPO_ROOT / "models"))
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", "1"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 2, done
    err = done.stderr.decode(errors="replace")
    # README: "the service refuses to start on an invalid value and says which"
    assert "api_keys" in err.lower(), err
    assert short_key not in err, "the refused key is echoed"
