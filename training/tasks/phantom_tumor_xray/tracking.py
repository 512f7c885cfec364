"""What tumour *tracking* needs beyond the generic segmentation kind, and the publish hook that
adds it to the card in staging:

- ``centroid_errors``: the distance in pixels between the centroid of the served mask and that
  of the truth, at the input's FULL resolution (the model runs smaller; the service resizes the
  probability map back before thresholding, and so does this), with misses and false alarms;
- ``plot_tracking``: test frames with the truth (green) and predicted (red) outline and
  centroids, and the superior-inferior centroid trace of one test sequence;
- ``measure_latency``: per-frame time through the service pipeline (``app.pipeline.segment``:
  decode → preprocess → infer → postprocess) at the frames' full size;
- ``tracking_hook``: centroid figures and the tracking plot on the test split through the
  staged ONNX graph, and the service latency on the first test frames, as a ``Hook``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.postprocess import summarize_mask
from training.core.publish import CardUpdate, Hook, HookContext
from training.core.seg_metrics import predicted_mask, probability_maps
from training.core.seg_train import SegSplit

NAME = "phantom_tumor_xray"
TRACKING_PLOT = "tracking.png"


def centroid_errors(
    prob_maps: np.ndarray, masks: Sequence[np.ndarray], pixel_threshold: float
) -> dict[str, Any]:
    """Centroid error of the served mask against the truth, in pixels at full resolution.

    ``prob_maps``: (N, h, w) float32 at the model's resolution; ``masks``: N (H, W) bool truth
    masks at the input's resolution. Each prediction is made as the service makes it (bilinear
    resize to (H, W), ``>= pixel_threshold``) and its centroid by
    ``app.imaging.postprocess.summarize_mask``. Returns ``errors_px`` (per frame with a tumour and
    a non-empty prediction, NaN for a miss), the summaries (median, 95th percentile, mean, max),
    ``missed`` (tumour, empty mask) and ``false_masks`` (no tumour, non-empty mask).
    """
    errors = np.full(len(masks), np.nan)
    missed = false_masks = 0
    for i, (prob, truth) in enumerate(zip(prob_maps, masks, strict=True)):
        pred = predicted_mask(prob, truth.shape, pixel_threshold)
        got = summarize_mask(pred, None).centroid
        want = summarize_mask(truth, None).centroid
        if want is None:
            false_masks += int(got is not None)
            continue
        if got is None:
            missed += 1
            continue
        errors[i] = float(np.hypot(got[0] - want[0], got[1] - want[1]))
    found = errors[np.isfinite(errors)]
    has = int(sum(int(m.any()) for m in masks))

    def stat(fn: Callable[[np.ndarray], Any]) -> float | None:
        return float(fn(found)) if found.size else None

    return {
        "n_with_tumour": has,
        "n_tracked": int(found.size),
        "missed": missed,
        "false_masks": false_masks,
        "median_px": stat(np.median),
        "p95_px": stat(lambda a: np.percentile(a, 95)),
        "mean_px": stat(np.mean),
        "max_px": stat(np.max),
        "within_2px": float(np.mean(found <= 2.0)) if found.size else None,
        "errors_px": [None if not np.isfinite(e) else round(float(e), 4) for e in errors],
    }


def tracking_metrics(
    prob_maps: np.ndarray, split: SegSplit, pixel_threshold: float
) -> dict[str, Any]:
    """Card-ready centroid figures (without the per-frame list) plus the definition."""
    out = centroid_errors(prob_maps, split.masks, pixel_threshold)
    out.pop("errors_px")
    out["definition"] = (
        "Euclidean distance in pixels between the centroid of the served mask (probability map "
        "resized bilinearly to the full input size, >= pixel_threshold) and the centroid of the "
        "truth mask, over test frames with a tumour and a non-empty prediction; missed: tumour "
        "but empty mask; false_masks: no tumour but a non-empty mask"
    )
    return out


# --------------------------------------------------------------------------- figure


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return np.asarray(mask & ~inner)


def plot_tracking(
    split: SegSplit,
    prob_maps: np.ndarray,
    pixel_threshold: float,
    path: Path,
    *,
    tiles: int = 4,
    crop: int = 160,
) -> None:
    """Top: ``tiles`` test frames cropped around the tumour (model input shown, resized up),
    truth outline and centroid green (+), prediction red (x), error in the title. Bottom: the
    superior-inferior (row) centroid of the longest test sequence with a tumour, truth vs
    prediction, frame by frame."""
    from app.imaging.preprocess import resize2d
    from training.evaluate import pyplot

    plt = pyplot()

    has = [i for i, m in enumerate(split.masks) if m.any()]
    groups = split.groups
    seqs = sorted({groups[i] for i in has}, key=lambda g: -int(np.sum(groups == g)))
    fig = plt.figure(figsize=(8.0, 5.0), dpi=80)
    picks = (
        [has[k] for k in np.linspace(0, len(has) - 1, min(tiles, len(has))).round().astype(int)]
        if has
        else []
    )
    for t, i in enumerate(picks):
        truth = split.masks[i]
        pred = predicted_mask(prob_maps[i], truth.shape, pixel_threshold)
        img = resize2d(split.x[i, :, :, 0], truth.shape, "bilinear")
        want = summarize_mask(truth, None).centroid
        got = summarize_mask(pred, None).centroid
        assert want is not None
        cx, cy = int(want[0]), int(want[1])
        h, w = truth.shape
        half = min(crop // 2, h // 2, w // 2)
        y0, x0 = int(np.clip(cy - half, 0, h - 2 * half)), int(np.clip(cx - half, 0, w - 2 * half))
        sl = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
        rgb = np.repeat(img[sl][..., None], 3, axis=2).clip(0, 1)
        rgb[_outline(truth[sl])] = (0.1, 0.9, 0.2)
        rgb[_outline(pred[sl])] = (1.0, 0.2, 0.2)
        ax = fig.add_subplot(2, len(picks), t + 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.plot(want[0] - x0, want[1] - y0, "+", color=(0.1, 0.9, 0.2), ms=10, mew=1.5)
        err = "missed"
        if got is not None:
            ax.plot(got[0] - x0, got[1] - y0, "x", color=(1.0, 0.2, 0.2), ms=8, mew=1.5)
            err = f"{np.hypot(got[0] - want[0], got[1] - want[1]):.2f} px"
        ax.set_title(f"{split.groups[i]}: {err}", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(2, 1, 2)
    if seqs:
        idx = [i for i in range(len(split)) if groups[i] == seqs[0]]
        true_y, pred_y = [], []
        for i in idx:
            truth = split.masks[i]
            c_t = summarize_mask(truth, None).centroid
            c_p = summarize_mask(
                predicted_mask(prob_maps[i], truth.shape, pixel_threshold), None
            ).centroid
            true_y.append(np.nan if c_t is None else c_t[1])
            pred_y.append(np.nan if c_p is None else c_p[1])
        ax.plot(range(len(idx)), true_y, "-", color="tab:green", lw=2, label="truth centroid row")
        ax.plot(range(len(idx)), pred_y, "x--", color="tab:red", lw=1, label="predicted")
        ax.invert_yaxis()
        ax.set_xlabel(f"frame of test sequence {seqs[0]}")
        ax.set_ylabel("centroid row (px, superior up)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def measure_latency(model_dir: Path, frames: Sequence[bytes], repeats: int = 1) -> dict[str, Any]:
    """Per-frame milliseconds through ``app.pipeline.segment`` (decode → preprocess → infer →
    postprocess, RLE encoding of the mask as the default JSON answer does), with the service's
    onnxruntime settings; medians and 95th percentiles per stage, frames per second, and the
    stage that dominates. ``frames``: encoded files (e.g. 16-bit TIFFs)."""
    from app.config import Settings
    from app.imaging.limits import DecodeLimits
    from app.metrics import Metrics
    from app.pipeline import segment
    from app.registry import load_entry

    model_dir = Path(model_dir).resolve()
    settings = Settings(model_dir=model_dir.parent.parent)
    entry = load_entry(NAME, model_dir, settings)
    if not entry.ready:
        raise RuntimeError(f"model not ready: {entry.reason}")
    assert entry.card is not None
    metrics, limits = Metrics(), DecodeLimits()
    point = entry.card.default_operating_point
    segment(entry, [frames[0]], point, frozenset({"rle"}), limits, metrics)  # warm-up
    rows: list[dict[str, float]] = []
    shapes = set()
    for _ in range(repeats):
        for data in frames:
            result = segment(entry, [data], point, frozenset({"rle"}), limits, metrics)
            rows.append(result.timing_ms)
            shapes.add(tuple(result.item.shape))
    stages = [k for k in rows[0] if k != "total"]
    med = {k: round(float(np.median([r[k] for r in rows])), 2) for k in [*stages, "total"]}
    p95 = {k: round(float(np.percentile([r[k] for r in rows], 95)), 2) for k in [*stages, "total"]}
    return {
        "frames": len(rows),
        "frame_shape": [list(s) for s in sorted(shapes)],
        "median_ms": med,
        "p95_ms": p95,
        "frames_per_second": round(1000.0 / med["total"], 2),
        "dominant_stage": max(stages, key=lambda k: med[k]),
        "intra_op_threads": settings.intra_op_threads,
        "cpu_count": os.cpu_count(),
    }


def frame_files(data_dir: Path, n: int) -> list[bytes]:
    from training.datasets.phantom import list_items

    return [it.image.read_bytes() for it in list_items(data_dir)[:n]]


def tracking_hook(latency_frames: int = 10) -> Hook:
    """The phantom's report as a publish hook: centroid metrics and the tracking plot on the
    test split through the staged ONNX graph and (``latency_frames`` > 0) the service latency
    on the first frames of the test folder (the training folder without one)."""

    def run(ctx: HookContext) -> CardUpdate:
        from training.core.export import onnx_runner, onnx_session

        card = ctx.card
        assert card.pixel_threshold is not None
        test: SegSplit = ctx.splits.test
        onnx = onnx_runner(onnx_session(ctx.folder / "model.onnx"))
        probs = probability_maps(onnx, test.x)
        tracking = tracking_metrics(probs, test, card.pixel_threshold)
        plot_tracking(test, probs, card.pixel_threshold, ctx.folder / TRACKING_PLOT)
        fields: dict[str, Any] = {}
        frames_dir = ctx.test_data or ctx.data_dir
        if frames_dir is not None and latency_frames > 0:
            latency = measure_latency(ctx.folder, frame_files(Path(frames_dir), latency_frames))
            latency["note"] = "measured at export on the training machine; CPU only"
            fields["service_latency"] = latency
        return CardUpdate(metrics={"centroid": tracking}, fields=fields, files=[TRACKING_PLOT])

    return Hook("phantom_tracking", run, fields=("service_latency",))
