"""The benchmark: FLOPs counted right on graphs whose answer is known, and ``bench/benchmark.py``
runs end to end on a tiny setting (real demo model, real server, real Keras path)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from onnx_flops import count_flops  # noqa: E402


def _model(nodes: list[onnx.NodeProto], inputs: list, inits: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weights(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def test_conv_flops_with_dynamic_batch_strides_and_groups() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 32, 32])
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=2)
    count = count_flops(_model([conv], [x], [_weights("w", (16, 4, 3, 3))]))
    # output 16 x 16 x 16 elements, each 4 (= 8 / 2 groups) x 3 x 3 MACs
    assert count.dense == 2 * (16 * 16 * 16) * (4 * 9)
    assert count.by_op == {"Conv": count.dense} and not count.uncounted
    assert count_flops(_model([conv], [x], [_weights("w", (16, 4, 3, 3))]), batch=3).dense == (
        3 * count.dense
    )


def test_conv3d_conv_transpose_and_matmul_flops() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 8, 8])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6),  # (1, 6, 4, 8, 8)
        helper.make_node("ConvTranspose", ["c", "t"], ["u"], strides=[2, 2, 2]),  # (1,3,8,16,16)
        helper.make_node("Relu", ["u"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),  # (1, 6144)
        helper.make_node("MatMul", ["flat", "m"], ["out"]),  # (1, 5)
    ]
    inits = [
        _weights("w", (6, 2, 3, 3, 3)),
        _weights("t", (6, 3, 2, 2, 2)),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
        _weights("m", (3 * 8 * 16 * 16, 5)),
    ]
    count = count_flops(_model(nodes, [x], inits))
    conv = 2 * (6 * 4 * 8 * 8) * (2 * 27)
    transpose = 2 * (6 * 4 * 8 * 8) * (3 * 8)  # every input element scatters into 3 x 2^3
    matmul = 2 * 5 * (3 * 8 * 16 * 16)
    assert count.by_op == {"Conv": conv, "ConvTranspose": transpose, "MatMul": matmul}
    assert count.dense == conv + transpose + matmul
    assert count.other == 3 * 8 * 16 * 16  # the Relu


def test_demo_model_flops_match_the_architecture() -> None:
    """covid_ct: four 3x3x3 convolutions (widths 32, 32, 64, 128 at half width) on 32x64x64."""
    count = count_flops(ROOT / "models" / "covid_ct" / "1.2.0" / "model.onnx")
    macs = (32 * 64 * 64) * 32 * 27 * 1 + (16 * 32 * 32) * 32 * 27 * 32
    macs += (8 * 16 * 16) * 64 * 27 * 32 + (4 * 8 * 8) * 128 * 27 * 64
    assert count.by_op["Conv"] == 2 * macs
    assert not count.uncounted


def test_benchmark_runs_on_a_tiny_setting(tmp_path: Path) -> None:
    out, raw, plot = tmp_path / "BENCH.md", tmp_path / "bench.json", tmp_path / "bench.png"
    cmd = [sys.executable, str(ROOT / "bench" / "benchmark.py"), "--quick"]
    cmd += ["--models", "pneumonia_xray", "phantom_tumor_xray"]
    cmd += ["--out", str(out), "--json", str(raw), "--plot", str(plot)]
    cmd += ["--runs-dir", str(tmp_path / "no-runs")]  # the fresh-weights Keras path
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw.read_text())
    assert set(results["models"]) == {"pneumonia_xray", "phantom_tumor_xray"}
    for name, m in results["models"].items():
        assert 0 < m["floor_ms"]["p50"] <= m["pipeline_ms"]["p50"] * 1.5, name
        assert m["flops"] > 1e7
        for c in ("1", "2"):
            assert m["http"][c]["statuses"] == {"200": m["http"][c]["latency_ms"]["n"]}
        assert m["keras"]["weights"].startswith("fresh")
        assert m["keras"]["keras_ms"]["p50"] > 0
        ratio = results["ratios"][name]
        assert ratio["e2e_over_floor"] > 1.0  # HTTP cannot beat session.run alone
    assert results["http"]["mixed"]["statuses"] == {"200": 20}
    assert results["sgemm_gflops"] > 0
    text = out.read_text()
    assert "e2e p50 / floor p50" in text and "pneumonia_xray" in text
    assert plot.stat().st_size > 1000


def test_phantom_tracking_runs_through_a_real_server(tmp_path: Path) -> None:
    """One short sequence of fresh frames through HTTP: every frame answered, centroids and
    Dice against the generator's truth, a plot drawn."""
    raw, plot = tmp_path / "track.json", tmp_path / "track.png"
    cmd = [sys.executable, str(ROOT / "bench" / "phantom_tracking.py"), "--seed", "7"]
    cmd += ["--n", "4", "--json", str(raw), "--plot", str(plot)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(raw.read_text())
    assert result["frames"] == len(result["per_frame"]) == 4
    assert result["frames_with_tumour"] == 4  # sequence 0 of seed 7 carries the insert
    assert result["dice_mean"] > 0.85 and result["centroid_error_median_px"] < 5
    assert plot.stat().st_size > 1000


def test_hospital_benchmark_runs_small(tmp_path: Path) -> None:
    """bench/hospital.py end to end at a tiny scale: every row answered 200 and a ratio."""
    out, js = tmp_path / "b.md", tmp_path / "h.json"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hospital.py"), "--scale", "0.05", "--ct-slices",
         "8", "--no-throughput", "--burst", "3", "--settle", "0", "--out", str(out),
         "--json", str(js)],
        check=True, cwd=ROOT, timeout=300, capture_output=True,
    )  # fmt: skip
    results = json.loads(js.read_text())
    assert len(results["rows"]) == 12
    assert all(r["statuses"] == {"200": r["e2e_ms"]["n"]} for r in results["rows"])
    assert all(r["ratio"] > 0 for r in results["rows"])
    for r in results["rows"]:  # 2D: 15 uploads in rounds of 3; CT: one round of 3
        assert len(r["round_ratios"]) == (1 if r["model"] == "covid_ct" else 5)
        assert all(b > 0 for b in r["round_ratios"])
        stages = r["stages_ms"]  # the service's own split of its answers
        assert set(stages) == {"decode", "preprocess", "inference", "postprocess", "total",
                               "outside"}  # fmt: skip
        assert stages["inference"] > 0 and stages["total"] >= stages["inference"]
        assert 0 < stages["outside"] < r["e2e_ms"]["p95"]
    assert [b["row"].split()[-1] for b in results["bursts"]] == [".nii", "slices"]
    for b in results["bursts"]:  # small uploads: all fit the budget
        assert b["outcomes"] == {"served": 3} and b["lost"] == 0
        assert b["peak_rss_mb"] >= b["idle_rss_mb"] > 0
    text = out.read_text()
    assert "Hospital-sized inputs" in text and "Memory under a burst" in text
    assert "Where the service's time goes" in text
    env = results["environment"]  # the machine the figures are from, named in the section
    assert env["cores"] == results["cores"] and env["python"] == platform.python_version()
    assert f"on {env['cpu']}, Python {env['python']}" in text


def test_ab_compares_two_servers_side_by_side(tmp_path: Path) -> None:
    """bench/ab.py at a tiny scale: one row at concurrency 1 and 2, a B/A figure for each;
    side A on the interpreter ``--a-python`` names (here a wrapper that leaves a mark)."""
    mark = tmp_path / "a-python-ran"
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\ntouch "{mark}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    cmd = [sys.executable, str(ROOT / "bench" / "ab.py"), "--scale", "0.05", "--ct-slices", "8",
           "--only", "phantom frame 1024x768 16-bit PNG", "-n", "2",
           "--b-env", "MEDSERVE_ORT_SPIN_WHEN_ALONE=false"]  # fmt: skip
    one = subprocess.run(
        [*cmd, "--a-python", str(wrapper)],
        check=True, cwd=ROOT, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert mark.exists()
    two = subprocess.run(
        [*cmd, "-c", "2", "--rounds", "1"],
        check=True, cwd=ROOT, timeout=300, capture_output=True, text=True,
    )  # fmt: skip
    assert one.stdout.count("B/A") == 1 and "phantom frame" in one.stdout
    pairs = subprocess.run(
        [*cmd, "--pairs", "2"], check=True, cwd=ROOT, timeout=300, capture_output=True, text=True
    )
    assert pairs.stdout.count("pair ") == 2 and pairs.stdout.count("B/A median") == 1
    assert two.stdout.startswith("c=2 ") and "req/s" in two.stdout


def test_quiet_waits_while_either_process_is_busy() -> None:
    """bench/hospital.py's ``quiet``: back at once when both processes idle; the whole limit
    while a thread of this process, or the server process, keeps a core busy. In a fresh
    interpreter: the suite's own process has other tests' threads (servers, sessions)."""
    script = """
import subprocess, sys, threading, time
from hospital import quiet
stop = threading.Event()
def spin():
    while not stop.is_set():
        pass
assert quiet(None, slice_s=0.02, limit_s=1.0) < 0.5, "idle"
spinner = threading.Thread(target=spin)
spinner.start()
try:
    assert quiet(None, slice_s=0.02, limit_s=0.3) >= 0.3, "own thread busy"
finally:
    stop.set()
    spinner.join()
for code, busy in (("import time; time.sleep(30)", False), ("while True: pass", True)):
    other = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        waited = quiet(other.pid, slice_s=0.02, limit_s=1.0 if not busy else 0.3)
        assert (waited >= 0.3) if busy else (waited < 0.5), (code, waited)
    finally:
        other.kill()
        other.wait()
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT / "bench",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_side_by_side_survives_a_reference_longer_than_the_keep_alive(tmp_path: Path) -> None:
    """A reference side longer than the server's keep-alive timeout (a CT row's on a slow
    machine): the next uploads go over a fresh connection instead of a closed socket."""
    import io
    import time

    from benchmark import Server, Upload
    from hospital import Row, side_by_side
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)).save(buf, "PNG")
    calls = []

    def slow_reference() -> None:
        calls.append(1)
        time.sleep(1.5)

    row = Row("MRI 64x64", "brain_tumor_mri", Upload("m.png", "image/png", buf.getvalue(), "MRI"),
              slow_reference, 2)  # fmt: skip
    server = Server(ROOT / "models", tmp_path / "server.log", None,
                    {"MEDSERVE_KEEP_ALIVE_SECONDS": "1"})  # fmt: skip
    try:
        sides = side_by_side(server.port, row, 1, 0, server_pid=server.proc.pid, keep_alive_s=1)
    finally:
        server.stop()
    assert sides.statuses == {"200": 2} and len(sides.e2e_ms) == 2
    assert len(calls) == 3 and len(sides.rounds) == 2
    assert all(s["inference"] > 0 for s in sides.splits)
