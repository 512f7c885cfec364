"""The service under test: where it is, its key, and (when no URL is given) a real process.

Nothing here imports ``app``: a managed service is ``python -m app.cli serve`` in a subprocess,
reached over TCP like any client would.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
DEFAULT_MAX_UPLOAD_BYTES = 256 * MiB  # the service's default (docs/api.md, README)
START_TIMEOUT_S = 60.0

# The contract's table: model name -> endpoint (shared/api-contract.md). This black-box suite
# runs in its own image without the app package, so it states the contract itself; a test in
# tests/app/test_endpoints.py checks it equals app/endpoints.py.
ENDPOINTS = {
    "pneumonia_xray": "/classify/xray",
    "covid_ct": "/classify/ct",
    "brain_tumor_mri": "/segment/mri",
    "phantom_tumor_xray": "/segment/xray",
}
MODEL_OF = {endpoint: name for name, endpoint in ENDPOINTS.items()}


@dataclass(frozen=True)
class Service:
    """A running medserve as the suite sees it."""

    url: str
    api_key: str | None
    max_upload_bytes: int
    managed: bool  # started by this suite: its configuration is known, nobody else calls it
    workers: int

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def service_env(**settings: str) -> dict[str, str]:
    """The parent's environment without any MEDSERVE_* (a developer's shell must not leak in),
    plus ``settings``; the service's database goes to a fresh temporary folder unless
    ``settings`` names one (never into the checkout)."""
    base = os.environ.get("MEDSERVE_DATA_DIR")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["MEDSERVE_DATA_DIR"] = tempfile.mkdtemp(prefix="medserve-data-", dir=base)
    env.update(settings)
    return env


def start_process(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m app.cli serve`` from the repository root, output into ``log_path``."""
    cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def wait_live(url: str, proc: subprocess.Popen[bytes] | None, log_path: Path | None) -> None:
    """Poll ``/health/live`` until 200; fail with the process's output if it dies or hangs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _tail(log_path) if log_path else ""
            pytest.fail(f"medserve exited with {proc.returncode} before serving:\n{tail}")
        try:
            r = httpx.get(f"{url}/health/live", timeout=2.0)
            if r.status_code == 200:
                return
            last_error = f"HTTP {r.status_code}"
        except httpx.TransportError as exc:
            last_error = type(exc).__name__
        time.sleep(0.1)
    tail = _tail(log_path) if log_path else ""
    pytest.fail(
        f"{url}/health/live did not answer 200 in {START_TIMEOUT_S:.0f} s ({last_error})\n{tail}"
    )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM (uvicorn's graceful shutdown), then SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


@contextmanager
def running_service(
    env: dict[str, str], log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A medserve process for the duration of the block: (base URL, process)."""
    port = free_port()
    proc = start_process(env, port, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_live(url, proc, log_path)
        yield url, proc
    finally:
        stop_process(proc)


# --------------------------------------------------------------------------- Prometheus text

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = list[tuple[str, dict[str, str], float]]


def parse_metrics(text: str) -> Samples:
    """Prometheus text exposition → [(name, labels, value)] (comments skipped)."""
    out: Samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        out.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return out


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0.0 if none)."""
    return sum(
        value
        for n, have, value in samples
        if n == name and all(have.get(k) == v for k, v in labels.items())
    )
