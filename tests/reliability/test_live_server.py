"""Guarantees shown against a real ``medserve serve`` process (uvicorn over TCP).

Liveness while a 200 MB upload arrives and while a large CT volume is processed, a bounded
inference queue, refusal before the body is read, memory back to its level after bad input, a
canary patient that appears nowhere, a broken model that leaves the others serving, and a mixed
load with zero 500s and zero dropped connections.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.data.bad.make_corpus import dicom_slice
from tests.integration.service import running_service, service_env
from tests.reliability.test_bad_input import BAD, EXPECTED
from tests.tiny_model import write_tiny_suite

KEY = "reliability-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
MiB = 1024 * 1024


@dataclass
class Live:
    url: str
    pid: int
    log: Path
    tmp: Path

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


def _start(tmp: Path, **settings: str) -> Iterator[Live]:
    models = write_tiny_suite(tmp / "models")
    scratch = tmp / "tmpdir"
    scratch.mkdir()
    env = service_env(
        MEDSERVE_MODEL_DIR=str(models),
        MEDSERVE_API_KEYS=KEY,
        TMPDIR=str(scratch),
        HOME=str(scratch),
        **settings,
    )
    log = tmp / "service.log"
    with running_service(env, log) as (url, proc):
        yield Live(url, proc.pid, log, scratch)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from _start(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One inference at a time and one waiting: the third concurrent request is refused."""
    yield from _start(
        tmp_path_factory.mktemp("tight"),
        MEDSERVE_MAX_CONCURRENT_INFERENCES="1",
        MEDSERVE_MAX_QUEUED_INFERENCES="1",
    )


def _nifti(slices: int, side: int = 512) -> bytes:
    rng = np.random.default_rng(slices)
    data = rng.integers(-1000, 400, (side, side, slices), dtype=np.int16)
    return bytes(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.0, 1.0])).to_bytes())


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _probe_liveness(url: str, stop: threading.Event) -> list[float]:
    """/health/live latencies (s) until ``stop``; a failed probe counts as infinite."""
    latencies: list[float] = []
    with httpx.Client(timeout=5.0) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ok = client.get(f"{url}/health/live").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0 if ok else float("inf"))
            time.sleep(0.05)
    return latencies


def test_liveness_while_a_200mb_upload_arrives(live: Live) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    total = 200 * MiB
    stop = threading.Event()
    with socket.create_connection((host, int(port))) as sock, ThreadPoolExecutor(1) as pool:
        probes = pool.submit(_probe_liveness, live.url, stop)
        sock.sendall(
            f"POST /classify/ct HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n".encode()
        )
        chunk = b"\0" * MiB
        for _ in range(40):  # 40 MiB over ~2 s, the rest never comes
            sock.sendall(chunk)
            time.sleep(0.05)
        stop.set()
        latencies = probes.result()
    assert len(latencies) >= 10
    assert max(latencies) < 1.0, f"liveness took up to {max(latencies):.2f} s"


def test_liveness_while_a_large_volume_is_processed(live: Live) -> None:
    volume = _nifti(300)  # 512 x 512 x 300 int16, 150 MiB
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        probes = pool.submit(_probe_liveness, live.url, stop)
        before = live.rss_mib()
        resp = httpx.post(f"{live.url}/classify/ct", content=volume, headers=AUTH, timeout=120)
        stop.set()
        latencies = probes.result()
    assert resp.status_code == 200, resp.text
    assert resp.json()["input"]["shape"] == [300, 512, 512]
    assert max(latencies) < 1.0, f"liveness took up to {max(latencies):.2f} s"
    print(f"RSS before {before:.0f} MiB, after a 512x512x300 volume {live.rss_mib():.0f} MiB")


def test_key_refused_before_a_100mb_body_is_read(live: Live) -> None:
    host, port = live.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /classify/xray HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key-0123456789abc\r\n"
            + f"Content-Length: {100 * MiB}\r\n\r\n".encode()
            + b"\0" * 65536
        )
        # The answer arrives although 99.9 MB of the body were never sent.
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 401"), head[:200]
    assert "application/problem+json" in head and "www-authenticate" in head.lower()


def test_overload_is_refused_not_queued(tight: Live) -> None:
    volume = _nifti(120)

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{tight.url}/classify/ct", content=volume, headers=AUTH, timeout=120)

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(send, range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    refused = [r for r in responses if r.status_code == 503]
    assert refused, "six concurrent inferences with room for two were all accepted"
    for r in refused:
        assert r.json()["code"] == "overloaded" and int(r.headers["retry-after"]) > 0
    assert send(0).status_code == 200  # and the service goes on


def test_memory_returns_after_bad_input(live: Live) -> None:
    corpus = [(BAD / name).read_bytes() for name in sorted(EXPECTED)]
    endpoints = ("/classify/xray", "/classify/ct", "/segment/mri", "/segment/xray")

    def one_round(client: httpx.Client) -> None:
        for data in corpus:
            for endpoint in endpoints:
                assert client.post(endpoint, content=data).status_code < 500

    with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as client:
        one_round(client)  # warm-up: allocator arenas, caches
        baseline = live.rss_mib()
        for _ in range(5):
            one_round(client)
        after = live.rss_mib()
    print(f"RSS after warm-up {baseline:.0f} MiB, after 5 more rounds {after:.0f} MiB")
    assert after - baseline < 32, f"RSS grew by {after - baseline:.0f} MiB over 5 rounds"


def test_mixed_load_no_500_no_dropped_connection(live: Live) -> None:
    good_png = np.zeros((32, 32), np.uint8)
    good_png[:, 16:] = 255  # the tiny classifier's logit is exactly 0 here: p = 0.5
    seg = np.zeros((24, 24), np.uint8)
    seg[4:12, 6:18] = 255
    series = [("file", (f"{i}.dcm", dicom_slice(z=5.0 * i))) for i in range(4)]
    bad = [(BAD / name).read_bytes() for name in sorted(EXPECTED) if name != "zip_traversal.zip"]

    def request(i: int) -> tuple[str, int, dict[str, object]]:
        with httpx.Client(base_url=live.url, headers=AUTH, timeout=60) as client:
            kind = i % 6
            if kind in (0, 3):
                r = client.post("/classify/xray", content=_png(good_png))
            elif kind == 1:
                r = client.post("/segment/mri?mask_format=both", content=_png(seg))
            elif kind == 4:
                r = client.post("/classify/ct", files=series)
            else:
                r = client.post("/segment/xray", content=bad[i % len(bad)])
            return ("bad" if kind in (2, 5) else f"good{kind}", r.status_code, r.json())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(request, range(300)))
    assert len(results) == 300
    assert all(status < 500 for _, status, _ in results)
    for kind, status, body in results:
        if kind == "bad":
            assert 400 <= status < 500 and body["code"]
            continue
        assert status == 200, body
        if kind in ("good0", "good3"):
            assert body["probability"] == pytest.approx(0.5, abs=1e-6)
        if kind == "good1":
            assert body["mask"]["area_px"] > 0 and body["positive"] is True


def test_canary_never_logged_exported_or_written(live: Live) -> None:
    """Runs after the tests above sent canary-tagged DICOMs, good and bad. A DICOM result is
    the one answer that carries the patient: the canary is its PatientName / PatientID and
    appears nowhere else in it, nor in the JSON answer, logs, metrics or files."""
    for part in [dicom_slice(z=0.0), dicom_slice(pixels=False)]:
        httpx.post(f"{live.url}/classify/xray", content=part, headers=AUTH, timeout=30)
    answer = httpx.post(
        f"{live.url}/classify/xray", content=dicom_slice(z=0.0), headers=AUTH, timeout=30
    )
    assert answer.status_code == 200 and "CANARY" not in answer.text
    sr = httpx.post(
        f"{live.url}/classify/xray",
        content=dicom_slice(z=0.0),
        headers={**AUTH, "Accept": "application/dicom"},
        timeout=30,
    )
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    holders = []
    pydicom.dcmread(io.BytesIO(sr.content)).walk(
        lambda _, elem: holders.append(elem.keyword) if "CANARY" in str(elem.value) else None
    )
    assert sorted(holders) == ["PatientID", "PatientName"]
    metrics = httpx.get(f"{live.url}/metrics").text
    assert "CANARY" not in metrics
    log = live.log.read_text(errors="replace")
    assert "CANARY" not in log and '"request_id"' in log
    left = sorted(str(p.relative_to(live.tmp)) for p in live.tmp.rglob("*"))
    assert left == [], f"the service left files in its temp/home folder: {left}"


def test_broken_model_leaves_the_others_serving(tmp_path: Path) -> None:
    models = write_tiny_suite(tmp_path / "models")
    onnx_file = models / "covid_ct" / "1.0.0" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:100])  # truncated
    (models / "brain_tumor_mri" / "1.0.0" / "model.onnx").unlink()  # missing
    env = service_env(MEDSERVE_MODEL_DIR=str(models))
    with running_service(env, tmp_path / "log") as (url, _):
        ready = httpx.get(f"{url}/health/ready")
        assert ready.status_code == 503
        body = ready.json()
        assert body["models"]["pneumonia_xray"] == "ready"
        assert body["models"]["phantom_tumor_xray"] == "ready"
        assert "sha256" in body["models"]["covid_ct"]
        assert "missing" in body["models"]["brain_tumor_mri"]
        for endpoint in ("/classify/ct", "/segment/mri"):
            r = httpx.post(f"{url}{endpoint}", content=b"x")
            assert r.status_code == 503 and r.json()["code"] == "model_not_ready"
            assert int(r.headers["retry-after"]) > 0
        png = _png(np.full((8, 8), 9, np.uint8))
        assert httpx.post(f"{url}/classify/xray", content=png).status_code == 200
        assert httpx.post(f"{url}/segment/xray", content=png).status_code == 200


def test_no_upload_left_in_the_working_tree() -> None:
    leftovers = [p for p in Path(os.getcwd()).glob("evil_*.dcm")]
    leftovers += list(Path(os.getcwd()).parent.glob("evil_*.dcm"))
    assert leftovers == []
