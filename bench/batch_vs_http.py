"""Images per second: ``medserve batch`` vs the HTTP path (a real ``medserve serve`` process at
its best client concurrency) on the same synthetic films. Prints a table; not a timed test.

    .venv/bin/python bench/batch_vs_http.py [--n 600] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.batch.conftest import film  # noqa: E402
from tests.servers import free_port  # noqa: E402


def http_rate(files: list[Path], concurrency: int, url: str) -> float:
    bodies = [p.read_bytes() for p in files]
    with httpx.Client(timeout=60) as client:

        def one(body: bytes) -> None:
            r = client.post(f"{url}/classify/xray", content=body)
            assert r.status_code == 200, r.text

        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, bodies))
        return len(bodies) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    a = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medserve-bench-"))
    rng = np.random.default_rng(0)
    files = []
    for i in range(a.n):
        path = tmp / "films" / f"film{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(film(rng, a.size, a.size))
        files.append(path)
    env = {**os.environ, "MEDSERVE_MODEL_DIR": str(ROOT / "models"), "MEDSERVE_DATA_DIR": str(tmp)}

    start = time.perf_counter()
    cmd = [sys.executable, "-m", "app.cli", "batch", "--model", "pneumonia_xray",
           "--input", str(tmp / "films"), "--output", str(tmp / "out"), "--batch-size", "32",
           "--rows-per-part", "64"]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    events = [json.loads(ln) for ln in done.stderr.splitlines() if ln.startswith("{")]
    first, last = events[0], events[-1]
    steady = (last["done"] - first["done"]) / max(1e-9, last["elapsed_s"] - first["elapsed_s"])
    print(f"batch: {a.n} films {a.size}x{a.size}: {a.n / wall:.1f} img/s including Ray start-up "
          f"({wall:.1f} s), {steady:.1f} img/s from the first part on")  # fmt: skip

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    serve = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        http_rate(files[:20], 2, url)  # warm-up
        for c in (1, 2, 4):
            print(f"http: concurrency {c}: {http_rate(files, c, url):.1f} img/s")
    finally:
        serve.terminate()
        serve.wait(timeout=30)


if __name__ == "__main__":
    main()
