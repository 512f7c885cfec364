"""medserve against its floor and against the TensorFlow stack, side by side in one run.

    make bench                                   # all four demo models -> BENCHMARKS.md
    .venv/bin/python bench/benchmark.py --quick --models pneumonia_xray --out /tmp/b.md

For each model, on one real upload of the format named in the table:

1. floor: the model's run alone on the preprocessed tensor (the service's runtime and options);
2. pipeline: decode -> preprocess -> infer -> postprocess in process (``app.pipeline``);
3. HTTP: a real ``python -m app.cli serve`` started here; p50/p95/p99 and throughput at
   concurrency 1, 4 and 16 with keep-alive connections, raw-body uploads; the load generator's
   threads are pinned to the last core (and the server kept off it when there are 4+ cores);
4. Keras: the same architecture and weights (the training run's checkpoint when it is on this
   machine, else the card's architecture with fresh weights: said in the table) called through
   ``tf.function`` in a separate process with the same intra-op thread count;
5. efficiency: FLOPs counted from the ONNX graph (``bench/onnx_flops.py``) / floor p50, against
   a NumPy float32 matrix-multiply peak measured in this run;
6. memory: server RSS after warm-up and after 1,000 mixed requests.

Prints the ratios and writes them, with a plot, to ``--out`` (BENCHMARKS.md) and ``--json``.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

# As in the service (app/__init__.py): one NumPy BLAS thread, set before NumPy loads, so the
# in-process pipeline runs as the server does. The sgemm peak runs in a child with all cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from app.endpoints import ENDPOINTS as ENDPOINT_TABLE  # noqa: E402

# model name -> upload path, from the service's endpoint table (app/endpoints.py)
ENDPOINTS = {row.model: row.path for row in ENDPOINT_TABLE}
MODELS = tuple(ENDPOINTS)
# issue #9's targets (ratios on this machine)
E2E_TARGET = {"pneumonia_xray": 2.0, "covid_ct": 1.15, "phantom_tumor_xray": 1.15}
KERAS_TARGET = 2.0
EFFICIENCY_TARGET = {"covid_ct": 0.5, "phantom_tumor_xray": 0.5}
RSS_TARGET = 1.2
BATCH = 8  # dynamic batching is worth it only at >= 1.2x throughput at concurrency 8


@dataclass(frozen=True)
class Profile:
    floor_seconds: float = 3.0
    min_runs: int = 30
    requests: int = 200  # per model and concurrency
    concurrency: tuple[int, ...] = (1, 4, 16)
    mixed: int = 1000
    warmup: int = 10
    sgemm_n: int = 2048
    keras: bool = True


FULL = Profile()
QUICK = Profile(
    floor_seconds=0.2, min_runs=3, requests=6, concurrency=(1, 2), mixed=20, warmup=2, sgemm_n=256
)


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes
    what: str


# --------------------------------------------------------------------------- inputs


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def build_uploads(work: Path, models: tuple[str, ...]) -> dict[str, Upload]:
    """One real file per model, made by the project's synthetic generators (seeds unseen in
    training) in the format a hospital would send for that task."""
    from PIL import Image

    out: dict[str, Upload] = {}
    if "pneumonia_xray" in models:
        from training.synthetic import pneumonia

        paths = pneumonia.generate(work / "pn", pneumonia.SynthConfig(n=12, seed=91))
        src = next(p for p in paths if "PNEUMONIA" in str(p))
        pixels = np.asarray(Image.open(src).convert("L"))
        h, w = pixels.shape
        out["pneumonia_xray"] = Upload(
            "xray.png", "image/png", _png(pixels), f"chest X-ray, {w}x{h} 8-bit PNG"
        )
    if "covid_ct" in models:
        from training.synthetic import covid_ct

        paths = covid_ct.generate(work / "ct", covid_ct.SynthConfig(n=5, seed=91))
        src = paths[0]
        import nibabel as nib

        shape = nib.load(str(src)).shape
        out["covid_ct"] = Upload(
            "ct.nii.gz",
            "application/gzip",
            src.read_bytes(),
            f"chest CT, {shape[0]}x{shape[1]}x{shape[2]} int16 NIfTI (.nii.gz)",
        )
    if "brain_tumor_mri" in models:
        from training.synthetic import brain_mri

        paths = brain_mri.generate(work / "mri", brain_mri.SynthConfig(n=20, seed=91))
        src = next(p for p in paths if not p.stem.endswith("_mask"))
        w, h = Image.open(src).size
        out["brain_tumor_mri"] = Upload(
            "mri.tif", "image/tiff", src.read_bytes(), f"brain MRI slice, {w}x{h} RGB TIFF"
        )
    if "phantom_tumor_xray" in models:
        from tests.integration.media import dicom_xray_phantom
        from training.synthetic import phantom

        _, frame = phantom.render_one(phantom.SynthConfig(seed=91), 0, 2)
        h, w = frame.image.shape
        sample = dicom_xray_phantom(frame.image, spacing=(0.388, 0.388))
        out["phantom_tumor_xray"] = Upload(
            "frame.dcm",
            "application/dicom",
            sample.data,
            f"kV X-ray frame, {w}x{h} 16-bit DICOM (uncompressed)",
        )
    return out


def as_multipart(up: Upload) -> Upload:
    """The same file as multipart field ``file`` (what a browser form sends)."""
    boundary = "medserve-bench-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{up.filename}"\r\nContent-Type: {up.content_type}\r\n\r\n'
    ).encode()
    body = head + up.data + f"\r\n--{boundary}--\r\n".encode()
    return Upload(up.filename, f"multipart/form-data; boundary={boundary}", body, up.what)


# --------------------------------------------------------------------------- timing


def summary(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "min": float(a.min()),
    }


def time_calls(fn: Callable[[], object], profile: Profile, warmup: int = 3) -> list[float]:
    """Milliseconds per call, for at least ``profile.min_runs`` calls and ``floor_seconds``."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < profile.min_runs or time.perf_counter() - start < profile.floor_seconds:
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def sgemm_gflops(n: int, threads: int) -> float:
    """The NumPy float32 matrix-multiply peak with ``threads`` BLAS threads, in a child process
    (this one keeps NumPy to one thread, like the service)."""
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import benchmark; "
    code += f"print(benchmark.sgemm_rate({n}))"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def sgemm_rate(n: int, repeats: int = 5) -> float:
    """Best-of NumPy float32 ``n x n @ n x n`` rate in GFLOP/s (2 n^3 operations)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best / 1e9


# --------------------------------------------------------------------------- in process


def _record_stages(call: Callable[[], Any], stages: dict[str, list[float]]) -> None:
    for k, v in call().timing_ms.items():
        stages.setdefault(k, []).append(v)


def in_process(
    model_dir: Path, models: tuple[str, ...], uploads: dict[str, Upload], profile: Profile
) -> dict[str, dict[str, Any]]:
    """Floor and pipeline per model, with the service's settings and session options."""
    from onnx_flops import count_flops

    from app.config import Settings
    from app.imaging.preprocess import preprocess
    from app.metrics import Metrics
    from app.pipeline import classify, decode_for, segment
    from app.registry import build_registry

    settings = Settings(model_dir=model_dir)
    registry = build_registry(settings)
    metrics = Metrics()
    limits = settings.decode_limits
    results: dict[str, dict[str, Any]] = {}
    for name in models:
        entry = registry.get(name)
        if not entry.ready or entry.card is None or entry.runner is None:
            raise SystemExit(f"{name} is not ready: {entry.reason}")
        # the runner the model serves on (onnxruntime, or OpenVINO under MEDSERVE_RUNTIME):
        # the floor and the pipeline then time the same runtime
        card, session = entry.card, entry.runner
        parts = [uploads[name].data]
        item = decode_for(entry, parts, limits)
        batch = preprocess(item, card.input.preprocessing, card.input.layout)
        feed = {entry.input_name: batch}
        floor = time_calls(lambda s=session, f=feed: s.run(None, f), profile)  # type: ignore[misc]
        output = np.asarray(session.run(None, feed)[0])
        if card.task == "binary_classification":
            call = partial(classify, entry, parts, card.default_operating_point, limits, metrics)
        else:
            call = partial(
                segment,
                entry,
                parts,
                card.default_operating_point,
                frozenset({"rle"}),
                limits,
                metrics,
            )
        stages: dict[str, list[float]] = {}
        staged = partial(_record_stages, call, stages)
        pipeline = time_calls(staged, profile)
        batching = None
        if card.task == "binary_classification" and card.input.preprocessing.kind == "image2d":
            # what dynamic batching could at most gain: session.run per image at batch 8
            feed8 = {entry.input_name: np.repeat(batch, BATCH, axis=0)}
            per8 = [t / BATCH for t in time_calls(partial(session.run, None, feed8), profile)]
            batching = {
                "batch": BATCH,
                "per_image_ms": summary(per8),
                "speedup_per_image": float(np.median(floor) / np.median(per8)),
            }
        flops = count_flops(entry.path / "model.onnx")
        results[name] = {
            "version": entry.version,
            "input_shape": list(batch.shape),
            "floor_ms": summary(floor),
            "pipeline_ms": summary(pipeline),
            "pipeline_stages_p50_ms": {k: float(np.median(v)) for k, v in stages.items()},
            "batching": batching,
            "flops": flops.dense,
            "flops_elementwise": flops.other,
            "_batch": batch,
            "_output": output,
        }
    del registry
    gc.collect()
    return results


# --------------------------------------------------------------------------- Keras


def keras_worker(args: argparse.Namespace) -> int:
    """Child process: time the Keras model of each (name, version, tensor) through tf.function."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import importlib

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    job = json.loads(Path(args.job).read_text())
    profile = Profile(floor_seconds=job["seconds"], min_runs=job["min_runs"])
    results = {}
    for name, spec in job["models"].items():
        card = json.loads(Path(spec["card"]).read_text())
        arch = card["training"]["architecture"]
        options = card["training"].get("architecture_options") or {}
        build = importlib.import_module(f"training.models.{arch}").build
        model = build(tuple(card["input"]["shape"][1:]), **options)
        weights = Path(spec["weights"])
        if weights.is_file():
            model.load_weights(str(weights))
            shown = weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights
            source = f"trained ({shown})"
        else:
            source = "fresh initialisation (no training checkpoint on this machine)"
        batch = np.load(spec["batch"])
        x = tf.constant(batch)
        fn = tf.function(lambda t, m=model: m(t, training=False), jit_compile=False)
        got = np.asarray(fn(x))
        samples = time_calls(lambda f=fn, t=x: f(t).numpy(), profile)
        onnx_out = np.load(spec["onnx_output"])
        # the same weights give the same logits; fresh weights have nothing to agree with
        diff = float(np.max(np.abs(got.reshape(onnx_out.shape) - onnx_out)))
        if not weights.is_file():
            diff = None
        results[name] = {
            "keras_ms": summary(samples),
            "weights": source,
            "max_abs_diff_vs_onnx": diff,
            "parameters": int(model.count_params()),
        }
    print(json.dumps(results))
    return 0


def run_keras(
    model_dir: Path,
    runs_dir: Path,
    measured: dict[str, dict[str, Any]],
    profile: Profile,
    threads: int,
    work: Path,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "seconds": profile.floor_seconds,
        "min_runs": profile.min_runs,
        "models": {},
    }
    for name, m in measured.items():
        version = m["version"]
        np.save(work / f"{name}_batch.npy", m["_batch"])
        np.save(work / f"{name}_onnx.npy", m["_output"])
        job["models"][name] = {
            "card": str(model_dir / name / version / "model_card.json"),
            "weights": str(runs_dir / name / version / "checkpoints" / "best.weights.h5"),
            "batch": str(work / f"{name}_batch.npy"),
            "onnx_output": str(work / f"{name}_onnx.npy"),
        }
    (work / "keras_job.json").write_text(json.dumps(job))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "keras-worker",
        "--job",
        str(work / "keras_job.json"),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"Keras worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_mb(pid: int) -> dict[str, float]:
    """Process ``pid``'s resident memory now (``VmRSS``) and at its peak (``VmHWM``), MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def kept_sections(path: Path) -> str:
    """The sections other benchmarks write into the same file (between ``<!-- name:begin -->``
    and ``<!-- name:end -->``, e.g. bench/hospital.py's), carried over unchanged."""
    old = path.read_text() if path.is_file() else ""
    pattern = r"<!-- ([a-z]+):begin -->.*?<!-- \1:end -->"
    blocks = [m.group(0) for m in re.finditer(pattern, old, flags=re.S)]
    return "".join("\n\n" + b for b in blocks) + ("\n" if blocks else "")


def write_section(path: Path, section: str) -> None:
    """Put ``section`` (one ``<!-- name:begin -->`` … ``<!-- name:end -->`` block) into
    ``path`` in place of that block, or append it; the rest of the file is kept."""
    begin, end = section.split("\n", 1)[0], section.rstrip().rsplit("\n", 1)[-1]
    old = path.read_text() if path.is_file() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) :]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + section + "\n"
    path.write_text(new)


class Server:
    """``python -m app.cli serve`` on a free port, optionally pinned to ``cpus``; from ``tree``
    (another checkout of the service, e.g. a ``git worktree``) instead of this one if given,
    and on the interpreter ``python`` (another virtual environment's) instead of this one's."""

    def __init__(
        self,
        model_dir: Path,
        log: Path,
        cpus: set[int] | None,
        settings: dict[str, str] | None = None,
        tree: Path | None = None,
        python: Path | None = None,
    ) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSERVE_")}
        env.update(settings or {})
        env["MEDSERVE_MODEL_DIR"] = str(model_dir)
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        cmd = [str(python or sys.executable), "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port)]
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=tree or ROOT,
            env=env,
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health/ready")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("server did not become ready in 90 s")

    def rss(self) -> dict[str, float]:
        return memory_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def load(
    port: int, jobs: list[tuple[str, Upload]], concurrency: int, cpu: int | None
) -> dict[str, Any]:
    """Send every (path, upload) of ``jobs`` with ``concurrency`` keep-alive connections."""
    lock = threading.Lock()
    nxt = [0]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    def worker() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                i = nxt[0]
                nxt[0] += 1
            if i >= len(jobs):
                break
            path, up = jobs[i]
            headers = {"Content-Type": up.content_type, "Accept": "application/json"}
            t = time.perf_counter()
            try:
                conn.request("POST", path, body=up.data, headers=headers)
                resp = conn.getresponse()
                resp.read()
            except OSError as exc:
                with lock:
                    errors.append(type(exc).__name__)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            ms = (time.perf_counter() - t) * 1000
            with lock:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    latencies.append(ms)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - start
    return {
        "latency_ms": summary(latencies),
        "throughput_rps": len(latencies) / wall if wall > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "connection_errors": len(errors),
    }


def over_http(
    model_dir: Path,
    models: tuple[str, ...],
    uploads: dict[str, Upload],
    profile: Profile,
    work: Path,
    settings: dict[str, str],
) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu = cpus[-1]
    server_cpus = set(cpus[:-1]) if len(cpus) >= 4 else None
    server = Server(model_dir, work / "server.log", server_cpus, settings)
    try:
        for name in models:
            load(server.port, [(ENDPOINTS[name], uploads[name])] * profile.warmup, 1, client_cpu)
        mixed_jobs = [
            (ENDPOINTS[models[i % len(models)]], uploads[models[i % len(models)]])
            for i in range(profile.mixed)
        ]
        rss_sequential = server.rss()
        # warm-up includes the mixed load itself (a tenth of it): concurrent requests bring
        # their own allocator arenas and onnxruntime buffers, reached once, not a leak
        load(server.port, mixed_jobs[: max(4, profile.mixed // 10)], 4, client_cpu)
        rss_warm = server.rss()
        mixed = load(server.port, mixed_jobs, 4, client_cpu)
        rss_mixed = server.rss()
        per_model: dict[str, Any] = {}
        for name in models:
            per_model[name] = {}
            for c in profile.concurrency:
                n = max(profile.requests, 4 * c)
                per_model[name][str(c)] = load(
                    server.port, [(ENDPOINTS[name], uploads[name])] * n, c, client_cpu
                )
            multipart = as_multipart(uploads[name])
            per_model[name]["1 (multipart)"] = load(
                server.port, [(ENDPOINTS[name], multipart)] * profile.requests, 1, client_cpu
            )
    finally:
        server.stop()
    return {
        "pinning": {
            "client_cpu": client_cpu,
            "server_cpus": sorted(server_cpus) if server_cpus else "all (fewer than 4 cores)",
        },
        "rss_after_sequential_warmup_mb": rss_sequential,
        "rss_warm_mb": rss_warm,
        "rss_after_mixed_mb": rss_mixed,
        "mixed": mixed,
        "models": per_model,
    }


# --------------------------------------------------------------------------- report


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def ratios(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sgemm = results["sgemm_gflops"]
    out: dict[str, dict[str, Any]] = {}
    for name, m in results["models"].items():
        floor = m["floor_ms"]["p50"]
        http1 = m["http"]["1"]["latency_ms"].get("p50")
        keras = m.get("keras", {}).get("keras_ms", {}).get("p50")
        achieved = m["flops"] / (floor / 1000) / 1e9
        out[name] = {
            "e2e_over_floor": http1 / floor if http1 else None,
            "e2e_target": E2E_TARGET.get(name),
            "pipeline_over_floor": m["pipeline_ms"]["p50"] / floor,
            "keras_over_onnx": keras / floor if keras else None,
            "keras_target": KERAS_TARGET,
            "gflops": achieved,
            "sgemm_fraction": achieved / sgemm,
            "efficiency_target": EFFICIENCY_TARGET.get(name),
        }
    return out


def _verdict(value: float | None, target: float | None, higher_is_better: bool) -> str:
    if value is None or target is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def report(results: dict[str, Any], plot: Path | None, out: Path) -> str:
    r = ratios(results)
    env = results["environment"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), Python "
        f"{env['python']}, onnxruntime {env['onnxruntime']}, TensorFlow "
        f"{env.get('tensorflow', '—')}; onnxruntime intra-op threads {env['ort_threads']}. "
        f"Produced by `make bench` (`bench/benchmark.py`); every figure below comes from one run.",
        "",
        "## Ratios against the targets (issue #9)",
        "",
        "| model | e2e p50 / floor p50 (c=1) | target | Keras / onnxruntime | target "
        "| achieved / sgemm GFLOP/s | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, q in r.items():
        e2e_t, eff_t = q["e2e_target"], q["efficiency_target"]
        lines.append(
            f"| {name} | {_fmt(q['e2e_over_floor'], '.2f')}× | "
            f"{'≤ ' + format(e2e_t, '.2f') + '× ' if e2e_t else ''}"
            f"{_verdict(q['e2e_over_floor'], e2e_t, False)} | "
            f"{_fmt(q['keras_over_onnx'], '.2f')}× | ≥ 2× "
            f"{_verdict(q['keras_over_onnx'], KERAS_TARGET, True)} | "
            f"{q['gflops']:.1f} / {results['sgemm_gflops']:.1f} = {q['sgemm_fraction']:.0%} | "
            f"{'≥ ' + format(eff_t, '.0%') + ' ' if eff_t else ''}"
            f"{_verdict(q['sgemm_fraction'], eff_t, True)} |"
        )
    http = results["http"]
    growth = http["rss_after_mixed_mb"]["VmRSS"] / http["rss_warm_mb"]["VmRSS"]
    lines += [
        "",
        f"Server RSS: {http['rss_after_sequential_warmup_mb']['VmRSS']:.0f} MiB after "
        f"{results.get('warmup', '')} requests per model one at a time, "
        f"{http['rss_warm_mb']['VmRSS']:.0f} MiB after warm-up (those plus a tenth of the mixed "
        "load at concurrency 4), "
        f"{http['rss_after_mixed_mb']['VmRSS']:.0f} MiB after {http['mixed']['latency_ms']['n']} "
        f"mixed requests (concurrency 4, round-robin over the models): growth "
        f"**{growth:.2f}×** (target ≤ {RSS_TARGET}×, "
        f"{_verdict(growth, RSS_TARGET, False).strip('*')}); "
        f"peak {http['rss_after_mixed_mb']['VmHWM']:.0f} MiB. "
        f"Mixed-load statuses: {http['mixed']['statuses']}.",
        "",
        "## Latency per stage (milliseconds, p50 unless stated)",
        "",
        "| model | upload | floor | pipeline | pipeline stages (decode / preprocess / inference "
        "/ postprocess) | Keras tf.function | GFLOP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        st = m["pipeline_stages_p50_ms"]
        keras = m.get("keras", {})
        lines.append(
            f"| {name} | {m['upload']} | {m['floor_ms']['p50']:.2f} | "
            f"{m['pipeline_ms']['p50']:.2f} | {st.get('decode', 0):.2f} / "
            f"{st.get('preprocess', 0):.2f} / {st.get('inference', 0):.2f} / "
            f"{st.get('postprocess', 0):.2f} | "
            f"{_fmt(keras.get('keras_ms', {}).get('p50'), '.2f')} | {m['flops'] / 1e9:.3f} |"
        )
    lines += [
        "",
        "## HTTP (real server, raw-body uploads unless marked multipart, keep-alive)",
        "",
        "| model | concurrency | p50 ms | p95 ms | p99 ms | requests/s | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        for c, h in m["http"].items():
            lat = h["latency_ms"]
            lines.append(
                f"| {name} | {c} | {_fmt(lat.get('p50'), '.2f')} | {_fmt(lat.get('p95'), '.2f')} | "
                f"{_fmt(lat.get('p99'), '.2f')} | {h['throughput_rps']:.1f} | {h['statuses']} |"
            )
    for name, m in results["models"].items():
        b = m.get("batching")
        if b:
            lines += [
                "",
                f"Dynamic batching ({name}): `session.run` costs "
                f"{b['per_image_ms']['p50']:.2f} ms per image at batch {b['batch']} against "
                f"{m['floor_ms']['p50']:.2f} ms at batch 1, a {b['speedup_per_image']:.2f}× "
                "ceiling on what batching could add to throughput (the rest of a request — "
                "decode, preprocess, HTTP — is not batched).",
            ]
    lines += ["", "## Keras path", ""]
    for name, m in results["models"].items():
        k = m.get("keras")
        if k:
            diff = k["max_abs_diff_vs_onnx"]
            agree = f"max |Keras − onnxruntime| {diff:.2e}" if diff is not None else "timing only"
            lines.append(
                f"- {name}: weights {k['weights']}; {agree}; {k['parameters']:,} parameters."
            )
    pin = http["pinning"]
    lines += [
        "",
        "## How it was measured",
        "",
        f"- Load generator: threads with one keep-alive `http.client` connection each, pinned to "
        f"CPU {pin['client_cpu']}; server CPUs: {pin['server_cpus']}; server settings: "
        f"{results.get('server_settings') or 'defaults'}. With 2 cores the server "
        "cannot be kept off the client's core without halving its onnxruntime threads, so it "
        "shares it; at concurrency 1 the client is idle while it waits.",
        "- Floor: `InferenceSession.run` on the tensor the service's preprocessing makes from "
        "the same upload, same session options (threads, no spinning, full graph optimisation).",
        "- FLOPs: 2 × multiply-accumulates of Conv, ConvTranspose, MatMul and Gemm nodes, from "
        "ONNX shape inference at batch 1 (element-wise nodes are < 1 % and not counted). sgemm: "
        f"best of 5 NumPy float32 {results['sgemm_n']}² matrix products "
        f"({results['sgemm_gflops']:.1f} GFLOP/s, one BLAS thread per core).",
        "- Keras: the card's architecture rebuilt with `training.models`, the training run's "
        "best checkpoint loaded, called as `tf.function(lambda x: model(x, training=False))` "
        "in its own process with the same intra-op thread count.",
    ]
    if plot is not None:
        lines += ["", f"![latency per model]({os.path.relpath(plot, out.parent)})"]
    return "\n".join(lines) + "\n"


def draw(results: dict[str, Any], path: Path) -> None:
    from training.evaluate import pyplot

    plt = pyplot()
    names = list(results["models"])
    series = {
        "floor (session.run)": [results["models"][n]["floor_ms"]["p50"] for n in names],
        "pipeline (in process)": [results["models"][n]["pipeline_ms"]["p50"] for n in names],
        "HTTP c=1": [results["models"][n]["http"]["1"]["latency_ms"].get("p50", 0) for n in names],
        "Keras tf.function": [
            results["models"][n].get("keras", {}).get("keras_ms", {}).get("p50", 0) for n in names
        ],
    }
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, values, width, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency per image (ms, log scale)")
    ax.set_title("medserve: floor, pipeline, HTTP and Keras, one run")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(threads: int) -> dict[str, Any]:
    import onnxruntime

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "ort_threads": threads,
    }
    try:
        from importlib.metadata import version

        env["tensorflow"] = version("tensorflow")
    except Exception:  # TensorFlow is optional here
        pass
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("keras-worker")
    worker.add_argument("--job", required=True)
    worker.add_argument("--threads", type=int, required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks.png")
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--no-keras", action="store_true", help="skip the TensorFlow path")
    parser.add_argument(
        "--server-setting",
        action="append",
        default=[],
        metavar="MEDSERVE_X=VALUE",
        help="a service setting for this run (repeatable; floor, pipeline and server)",
    )
    args = parser.parse_args(argv)
    if args.command == "keras-worker":
        return keras_worker(args)

    from app.config import Settings

    profile = QUICK if args.quick else FULL
    # the same settings for the in-process floor and pipeline as for the server
    settings = dict(item.split("=", 1) for item in args.server_setting)
    os.environ.update(settings)
    models = tuple(args.models)
    threads = Settings(model_dir=args.model_dir).intra_op_threads
    results: dict[str, Any] = {
        "environment": environment(threads),
        "server_settings": settings,
        "warmup": profile.warmup,
    }
    with tempfile.TemporaryDirectory(prefix="medserve-bench-") as tmp:
        work = Path(tmp)
        print("building uploads ...", flush=True)
        uploads = build_uploads(work, models)
        print("sgemm peak ...", flush=True)
        results["sgemm_n"] = profile.sgemm_n
        results["sgemm_gflops"] = sgemm_gflops(profile.sgemm_n, len(os.sched_getaffinity(0)))
        print("floor and pipeline ...", flush=True)
        measured = in_process(args.model_dir, models, uploads, profile)
        keras: dict[str, Any] = {}
        if profile.keras and not args.no_keras:
            print("Keras tf.function (separate process) ...", flush=True)
            keras = run_keras(args.model_dir, args.runs_dir, measured, profile, threads, work)
        print("HTTP (real server) ...", flush=True)
        http = over_http(args.model_dir, models, uploads, profile, work, settings)
    results["http"] = {k: v for k, v in http.items() if k != "models"}
    results["models"] = {}
    for name in models:
        m = {k: v for k, v in measured[name].items() if not k.startswith("_")}
        m["upload"] = uploads[name].what
        m["upload_bytes"] = len(uploads[name].data)
        m["http"] = http["models"][name]
        if name in keras:
            m["keras"] = keras[name]
        results["models"][name] = m
    results["ratios"] = ratios(results)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        draw(results, args.plot)
    text = report(results, args.plot, args.out)
    args.out.write_text(text + kept_sections(args.out))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
