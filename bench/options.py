"""Options measured (issue #18): OpenVINO as the runtime (adopted per model: ``auto``, see
app/runtime.py) and the order of window and resize (the card's ``order``: adopted for the
phantom). Writes the "Options measured" section of BENCHMARKS.md and bench/options.json.

    .venv/bin/python bench/options.py

OpenVINO (the `openvino` wheel, about 180 MB installed, not `onnxruntime-openvino`, which would
replace the pinned onnxruntime) comes with the ``serve`` extra; without it the runtime rows say
so and only the preprocessing rows are measured.

- Runtime: each committed model loaded by the registry twice, every model on onnxruntime
  (``MEDSERVE_RUNTIME=onnxruntime``: the service's session options, intra-op threads = cores,
  no spinning) and every model on OpenVINO (``openvino``: the CPU plugin in f32, the same
  threads, one stream, the latency hint), ``entry.run`` timed on the same random input, medians
  of interleaved rounds, the largest output difference and the load-time parity (<= 1e-4 or
  the model stays on onnxruntime); then whole in-process uploads of the CT volume and the
  phantom frame (``app.pipeline``) on both; then the resident memory of a fresh process that
  loads the four models all on onnxruntime and with ``auto``.
- Order: a 2500 x 2000 8-bit film (pneumonia_xray) and a 1024 x 768 16-bit frame
  (phantom_tumor_xray) through the service's ``preprocess_image`` with the card's
  preprocessing in each ``order``, window-then-resize (on a film the window is folded into the
  row resize) and resize-then-window (percentiles and window on the reduced image), and the
  largest difference between the two tensors (why the card says which one its model was
  trained with).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in the service

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmark import write_section  # noqa: E402

BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"
PARITY = 1e-4
WIN = 1.2  # a runtime would have to be this much faster to be worth a second one


def _median_ms(fn: Callable[[], object], n: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return float(np.median(samples))


MODELS = ("pneumonia_xray", "covid_ct", "brain_tumor_mri", "phantom_tumor_xray")
PATHS = ("covid_ct", "phantom_tumor_xray")  # whole uploads timed on both runtimes


def _entries(runtime: str) -> dict[str, Any]:
    """The committed models loaded by the registry with every model on ``runtime``."""
    from app.config import Settings
    from app.registry import build_registry

    settings = Settings(model_dir=ROOT / "models", runtime=runtime)  # type: ignore[arg-type]
    registry = build_registry(settings)
    return {name: registry.get(name) for name in MODELS}


def runtimes(rounds: int, n: int) -> dict[str, Any]:
    """Each model's run on the registry's onnxruntime runner and on its OpenVINO runner, side
    by side (interleaved rounds), the load-time parity and the difference on a random input;
    then whole in-process uploads (decode, preprocess, run, postprocess) of ``PATHS``."""
    from app.runtime import AUTO_OPENVINO, PARITY_ATOL

    try:
        import openvino as ov
    except ImportError:
        return {"openvino": None, "models": {}}
    assert PARITY_ATOL == PARITY
    on_ort, on_ov = _entries("onnxruntime"), _entries("openvino")
    out: dict[str, Any] = {}
    for model in MODELS:
        a, b = on_ort[model], on_ov[model]
        if b.runtime != "openvino":
            out[model] = {"fallback": b.runtime_reason}
            continue
        assert a.card is not None and a.input_name is not None
        x = np.random.default_rng(0).random([1, *a.card.input.shape[1:]], dtype=np.float32)
        diff = float(np.abs(a.run(x) - b.run(x)).max())
        o, v = _side_by_side(partial(a.run, x), partial(b.run, x), rounds, n)
        with _busy_core():
            bo, bv = _side_by_side(partial(a.run, x), partial(b.run, x), rounds, n)
        out[model] = {
            "onnxruntime_ms": o,
            "openvino_ms": v,
            "speedup": o / v,
            "busy_onnxruntime_ms": bo,
            "busy_openvino_ms": bv,
            "busy_speedup": bo / bv,
            "max_abs_diff": diff,
            "load_parity": b.runtime_parity,
            "auto": "openvino" if model in AUTO_OPENVINO else "onnxruntime",
        }
        print(model, out[model], flush=True)
    return {
        "openvino": ov.__version__,
        "models": out,
        "paths": paths(on_ort, on_ov, rounds, max(5, n // 3)),
        "rss": rss(PATHS),
    }


def _side_by_side(
    first: Callable[[], object], second: Callable[[], object], rounds: int, n: int
) -> tuple[float, float]:
    """Medians of ``rounds`` interleaved rounds of ``n`` calls each: both see the same machine."""
    a, b = [], []
    for _ in range(rounds):
        a.append(_median_ms(first, n))
        b.append(_median_ms(second, n))
    return float(np.median(a)), float(np.median(b))


@contextmanager
def _busy_core() -> Iterator[None]:
    """One other process spinning on a core meanwhile, at this process's priority: what
    decoding (or another request) does to inference in the service."""
    import subprocess

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        spin.kill()
        spin.wait()


def paths(on_ort: dict[str, Any], on_ov: dict[str, Any], rounds: int, n: int) -> dict[str, Any]:
    """One upload per model in ``PATHS`` through ``app.pipeline`` on each runtime."""
    import tempfile

    from benchmark import build_uploads

    from app.config import Settings
    from app.metrics import Metrics
    from app.pipeline import classify, segment

    limits, metrics = Settings().decode_limits, Metrics()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work:
        uploads = build_uploads(Path(work), PATHS)
    for model in PATHS:
        calls, answers = [], []
        for entry in (on_ort[model], on_ov[model]):
            card, parts = entry.card, [uploads[model].data]
            if card.task == "binary_classification":
                call = partial(
                    classify, entry, parts, card.default_operating_point, limits, metrics
                )
            else:
                rle = frozenset({"rle"})
                call = partial(
                    segment, entry, parts, card.default_operating_point, rle, limits, metrics
                )
            calls.append(call)
            answers.append(call())
        o, v = _side_by_side(calls[0], calls[1], rounds, n)
        same = _same_answer(answers[0], answers[1])
        out[model] = {
            "upload": uploads[model].what,
            "onnxruntime_ms": o,
            "openvino_ms": v,
            "speedup": o / v,
            "same_answer": same,
        }
        print(model, "path", out[model], flush=True)
    return out


def _same_answer(a: Any, b: Any) -> bool:
    """Whether two pipeline answers agree: the decision's probability within the parity bound,
    and for a segmentation the same mask."""
    close = abs(a.decision.probability - b.decision.probability) <= PARITY
    if hasattr(a, "summary"):
        return bool(close and np.array_equal(a.summary.mask, b.summary.mask))
    return bool(close)


def _rss(runtime: str, model: str | None) -> dict[str, Any]:
    """Resident memory (MB, /proc/self/status) of a fresh process that loads ``model`` (None:
    all four) with ``runtime``: after the imports, after OpenVINO's library and Core where a
    model runs on it, after the load (the self-test, the parity run and the explain timing
    included)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--rss-worker", runtime, *([model] if model else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print("rss", runtime, model, result, flush=True)
    return result


def rss(models: tuple[str, ...]) -> dict[str, Any]:
    """Per model, onnxruntime alone against OpenVINO (with the onnxruntime session kept for the
    graph's metadata); then the four models all on onnxruntime against ``auto``."""
    out: dict[str, Any] = {m: {r: _rss(r, m) for r in ("onnxruntime", "openvino")} for m in models}
    out["all"] = {r: _rss(r, None) for r in ("onnxruntime", "auto")}
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_worker(runtime: str, models: list[str]) -> dict[str, Any]:
    from app.config import Settings
    from app.registry import load_entry
    from app.runtime import _openvino_core, requested_runtime

    settings = Settings(model_dir=ROOT / "models", runtime=runtime)  # type: ignore[arg-type]
    models = models or list(MODELS)
    steps: dict[str, Any] = {"imports_mb": _rss_mb()}
    if any(requested_runtime(m, settings.runtime, {})[1] == "openvino" for m in models):
        _openvino_core()
    steps["library_mb"] = _rss_mb() - steps["imports_mb"]
    before = _rss_mb()
    for model in models:
        folder = max((ROOT / "models" / model).iterdir(), key=lambda p: p.name)
        entry = load_entry(model, folder, settings)
        steps.setdefault("runtimes", {})[model] = entry.runtime
    steps["models_mb"] = _rss_mb() - before
    steps["total_mb"] = _rss_mb()
    return steps


def _card(model: str) -> Any:
    from app.imaging.card import ModelCard

    folder = max((ROOT / "models" / model).iterdir(), key=lambda p: p.name)
    return ModelCard.model_validate_json((folder / "model_card.json").read_text())


def _order_row(model: str, label: str, data: bytes, n: int) -> dict[str, Any]:
    """One upload through the service's ``preprocess_image`` with the model card's
    preprocessing in each order: times and the largest difference between the tensors."""
    from app.imaging.limits import DecodeLimits
    from app.imaging.preprocess import preprocess_image
    from app.imaging.readers import decode_image

    card = _card(model)
    image = decode_image([data], DecodeLimits())
    preps = {
        order: card.input.preprocessing.model_copy(update={"order": order})
        for order in ("window_then_resize", "resize_then_window")
    }
    runs = {
        order: (lambda p=prep: preprocess_image(image, p, card.input.layout))
        for order, prep in preps.items()
    }
    a, b = (run() for run in runs.values())
    return {
        "image": label,
        "model": model,
        "version": card.version,
        "resize": card.input.preprocessing.resize,
        "card_order": card.input.preprocessing.order,
        **{f"{order}_ms": _median_ms(run, n) for order, run in runs.items()},
        "max_abs_diff": float(np.abs(a - b).max()),
        "mean_abs_diff": float(np.abs(a - b).mean()),
    }


def order(n: int) -> list[dict[str, Any]]:
    from hospital import _dx, _encode, _film

    rng = np.random.default_rng(18)
    film = (_film(2500, 2000, rng) * 255).astype(np.uint8)
    frame = (_film(768, 1024, rng) * 60000).astype(np.uint16)
    return [
        _order_row("pneumonia_xray", "2000x2500 8-bit PNG film", _encode(film, "PNG"), n),
        _order_row("phantom_tumor_xray", "1024x768 16-bit DICOM frame", _dx(frame, 16, False), n),
    ]


def report(results: dict[str, Any]) -> str:
    rt, od = results["runtimes"], results["order"]
    lines = [BEGIN, "## Options measured (bench/options.py)", ""]
    if rt["openvino"] is None:
        lines += ["OpenVINO was not importable in this run: no runtime rows.", ""]
    else:
        lines += [
            f"Runtime (`MEDSERVE_RUNTIME`, app/runtime.py): the registry's onnxruntime runner "
            f"(CPU provider) against its OpenVINO {rt['openvino']} runner (CPU plugin, "
            f"`INFERENCE_PRECISION_HINT=f32`, one stream, latency hint, no pinning), "
            f"{results['cores']} threads, one inference at a time, same random input, medians "
            "of interleaved rounds, on the machine as it is and again with one more process "
            "spinning on a core (as decoding or a second request does in the service); the "
            "load-time parity is on the card's self-test input, every output (OOD features "
            "included).",
            "",
            "| model | onnxruntime | OpenVINO | speed-up | one core busy: onnxruntime | "
            "OpenVINO | speed-up | max abs difference (random / load parity) | `auto` runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for model, m in rt["models"].items():
            if "fallback" in m:
                lines.append(f"| {model} | | | | | | | OpenVINO fell back: {m['fallback']} | |")
                continue
            lines.append(
                f"| {model} | {m['onnxruntime_ms']:.2f} ms | {m['openvino_ms']:.2f} ms "
                f"| {m['speedup']:.2f}× | {m['busy_onnxruntime_ms']:.2f} ms "
                f"| {m['busy_openvino_ms']:.2f} ms | {m['busy_speedup']:.2f}× "
                f"| {m['max_abs_diff']:.1e} / {m['load_parity']:.1e} | {m['auto']} |"
            )
        winners = [
            model
            for model, m in rt["models"].items()
            if "fallback" not in m
            and min(m["speedup"], m["busy_speedup"]) >= WIN
            and m["max_abs_diff"] <= PARITY
        ]
        picked = sorted(m for m, v in rt["models"].items() if v.get("auto") == "openvino")
        lines += [
            "",
            f"OpenVINO is at least {WIN}× faster, idle and with a core busy, within "
            f"{PARITY:g}, on: "
            f"{', '.join(winners) or 'none'}; `auto` (the default) runs OpenVINO for "
            f"{', '.join(picked) or 'none'} (`AUTO_OPENVINO` in app/runtime.py"
            + (", which this run disagrees with" if sorted(winners) != picked else "")
            + ") and onnxruntime for the others. On these shared cores the 2D models swing "
            "from run to run (OpenVINO between about 1.5× faster and 2× slower, the slow side "
            "when other processes hold the cores: app/runtime.py has the runs); covid_ct is "
            "faster in every run.",
            "",
        ]
        if rt.get("paths"):
            lines += [
                "Whole uploads in process (`app.pipeline`: decode, preprocess, run, postprocess), "
                "the same file on each runtime:",
                "",
                "| model | upload | onnxruntime | OpenVINO | speed-up | same answer |",
                "|---|---|---|---|---|---|",
            ]
            for model, p in rt["paths"].items():
                lines.append(
                    f"| {model} | {p['upload']} | {p['onnxruntime_ms']:.1f} ms "
                    f"| {p['openvino_ms']:.1f} ms | {p['speedup']:.2f}× "
                    f"| {'yes' if p['same_answer'] else 'NO'} |"
                )
            lines.append("")
        if rt.get("rss"):
            mem = rt["rss"]
            per_model = ", ".join(
                f"{m} {v['onnxruntime']['models_mb']:.0f} → {v['openvino']['models_mb']:.0f} MB"
                for m, v in mem.items()
                if m != "all"
            )
            lib = max(v["openvino"]["library_mb"] for m, v in mem.items() if m != "all")
            lines += [
                "Resident memory (a fresh process per row, after the load: self-test, parity "
                f"run, explain timing): one model alone, onnxruntime → OpenVINO: {per_model} "
                "(the onnxruntime session stays beside the compiled model for the graph's "
                f"metadata), plus {lib:.0f} MB for OpenVINO's library and Core, once; the four "
                f"models {mem['all']['onnxruntime']['total_mb']:.0f} MB all on onnxruntime, "
                f"{mem['all']['auto']['total_mb']:.0f} MB with `auto`. The `openvino` wheel adds "
                "about 180 MB to the image.",
                "",
            ]
    lines += [
        "Order of window and resize (the card's `preprocessing.order`), one upload through the "
        "service's `preprocess_image` with the model's preprocessing in each order:",
        "",
        "| upload | model (resize) | window-then-resize | resize-then-window | largest / mean "
        "difference in [0, 1] | the card says |",
        "|---|---|---|---|---|---|",
    ]
    for row in od:
        lines.append(
            f"| {row['image']} | {row['model']} {row['version']} ({row['resize']}) | "
            f"{row['window_then_resize_ms']:.2f} ms | {row['resize_then_window_ms']:.2f} ms | "
            f"{row['max_abs_diff']:.3f} / {row['mean_abs_diff']:.4f} | {row['card_order']} |"
        )
    lines += [
        "",
        "The tensors differ, so the order is part of what a model is trained with "
        "(`medserve-train train phantom_tumor_xray --order`). On a film the window is folded "
        "into the row resize and window-then-resize costs about what the other order does, so "
        "the film models keep it. On the 16-bit phantom frame the percentiles of the full frame "
        "(786k values) cost more than the resize: phantom_tumor_xray is trained and served "
        "resize-then-window since 1.3.0 (README, issue #18, for the test-split comparison).",
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=30, help="runs per round")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "options.json")
    parser.add_argument(
        "--keep-order",
        action="store_true",
        help="reuse the window/resize rows of the existing --json instead of measuring them",
    )
    parser.add_argument("--rss-worker", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_worker:
        print(json.dumps(rss_worker(args.rss_worker[0], args.rss_worker[1:])))
        return 0
    results = {
        "cores": len(os.sched_getaffinity(0)),
        "runtimes": runtimes(args.rounds, args.n),
        "order": (json.loads(args.json.read_text())["order"] if args.keep_order else order(args.n)),
    }
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    section = report(results)
    write_section(args.out, section)
    print(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
