"""Memory admission against a real ``medserve serve`` process: a burst of large uploads against
a small in-flight byte budget is served or refused cleanly (200 or 503 ``overloaded`` with
Retry-After, no reset, no lost request) and the server's resident memory stays bounded. Loose
bounds here; the benchmark prints the real figures."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.integration.service import running_service, service_env
from tests.tiny_model import write_tiny_suite

MiB = 1024 * 1024
BUDGET = 48 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("admission")
    env = service_env(
        MEDSERVE_MODEL_DIR=str(write_tiny_suite(tmp / "models")),
        MEDSERVE_MAX_INFLIGHT_BYTES=str(BUDGET),
        MEDSERVE_MAX_CONCURRENT_INFERENCES="1",
        MEDSERVE_MAX_QUEUED_INFERENCES="6",
        MEDSERVE_ADMISSION_TIMEOUT_SECONDS="3",
    )
    with running_service(env, tmp / "service.log") as (url, proc):
        yield url, proc.pid


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def volume(slices: int = 160) -> bytes:
    """An uncompressed int16 NIfTI of about 5 MB (decodes to about 10 MB of float32)."""
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 400, (128, 128, slices), dtype=np.int16)
    return bytes(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])).to_bytes())


def test_a_burst_is_served_or_refused_cleanly_within_the_budget(server: tuple[str, int]) -> None:
    url, pid = server
    body = volume()
    for _ in range(2):  # warm up: first requests allocate the pools
        assert httpx.post(f"{url}/classify/ct", content=body, timeout=60).status_code == 200
    idle = rss_mib(pid)
    peak = idle
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(pid))
            time.sleep(0.01)

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{url}/classify/ct", content=body, timeout=120)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(send, range(32)))
    finally:
        done.set()
        watcher.join()
    statuses = [r.status_code for r in answers]
    served, refused = statuses.count(200), statuses.count(503)
    print(f"burst: {served} served, {refused} refused; RSS {idle:.0f} -> {peak:.0f} MiB")
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 2, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.json()["code"] == "overloaded" and int(r.headers["retry-after"]) > 0
    assert peak - idle <= 2 * BUDGET / MiB + 64, (idle, peak)
    assert httpx.get(f"{url}/health/live", timeout=5).status_code == 200


def test_an_upload_larger_than_the_budget_is_refused(server: tuple[str, int]) -> None:
    url, _ = server
    big = io.BytesIO(b"\0" * (BUDGET // 2 + MiB))
    r = httpx.post(f"{url}/classify/ct", content=big.getvalue(), timeout=60)
    assert r.status_code == 503 and r.json()["code"] == "overloaded"
