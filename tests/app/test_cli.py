"""`medserve serve` validates its settings before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys


def _serve_with(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_settings_refuse_to_start() -> None:
    out = _serve_with(MEDSERVE_MAX_UPLOAD_BYTES="-5", MEDSERVE_API_KEYS="short")
    assert out.returncode == 2
    assert "max_upload_bytes" in out.stderr
    assert "short" not in out.stderr  # a rejected key is never printed


def test_a_short_api_key_is_named_in_the_refusal() -> None:
    out = _serve_with(MEDSERVE_API_KEYS="short-key")
    assert out.returncode == 2
    assert "api_keys" in out.stderr and "16 characters" in out.stderr
    assert "short-key" not in out.stderr


def test_several_workers_leave_runs_alone_unpinned_unless_told() -> None:
    """Each worker would pin its runs alone to the same lowest cores: with more than one the
    default becomes off (the workers read it from the environment), an explicit value stays."""
    from app.cli import pinning_for_workers
    from app.config import Settings

    key = "MEDSERVE_ORT_PIN_WHEN_ALONE"
    before = os.environ.pop(key, None)
    try:
        pinning_for_workers(1)
        assert key not in os.environ and Settings().ort_pin_when_alone
        pinning_for_workers(3)
        assert not Settings().ort_pin_when_alone
        os.environ[key] = "true"
        pinning_for_workers(3)
        assert Settings().ort_pin_when_alone
    finally:
        os.environ.pop(key, None)
        if before is not None:
            os.environ[key] = before
