"""The segmentation report plots: curves, ROC, reliability, confusion, pixel-threshold scan and
a grid of input / truth / prediction overlays on test cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from app.imaging.preprocess import resize2d
from training.core.calibrate import CalibrationResult
from training.core.metrics import binary_metrics, sigmoid
from training.core.seg_metrics import dice_iou, lesion_logits, predicted_mask
from training.core.seg_train import SegSplit
from training.evaluate import (
    plot_confusion,
    plot_reliability,
    plot_roc,
    plot_training_curves,
    pyplot,
)

SEG_PLOT_FILES = {
    "curves": "training_curves.png",
    "roc": "roc.png",
    "reliability": "reliability.png",
    "confusion": "confusion_matrix.png",
    "threshold": "pixel_threshold.png",
    "examples": "segmentation_examples.png",
}


def plot_segmentation_curves(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Loss and Dice per epoch, training and validation."""
    plot_training_curves(history, path, metric="dice")


def plot_threshold_scan(table: Mapping[str, Sequence[float]], chosen: float, path: Path) -> None:
    """Validation mean Dice against the pixel threshold, the chosen one marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.0), dpi=80)
    ax.plot(table["thresholds"], table["mean_dice"], "-", lw=1.5)
    ax.axvline(chosen, color="tab:red", ls="--", lw=1, label=f"chosen {chosen:.3f}")
    ax.set_xlabel("pixel threshold")
    ax.set_ylabel("mean Dice (validation, all slices)")
    ax.set_title("Pixel threshold")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _example_indices(masks: Sequence[np.ndarray], n_lesion: int, n_empty: int) -> list[int]:
    """Evenly spread cases with lesions (by size) plus a few without, deterministic."""
    areas = np.array([int(np.count_nonzero(m)) for m in masks])
    lesion = np.flatnonzero(areas > 0)
    empty = np.flatnonzero(areas == 0)
    out: list[int] = []
    if lesion.size:
        ordered = lesion[np.argsort(areas[lesion], kind="stable")]
        picks = np.linspace(0, ordered.size - 1, min(n_lesion, ordered.size)).round().astype(int)
        out.extend(int(ordered[i]) for i in picks)
    if empty.size:
        picks = np.linspace(0, empty.size - 1, min(n_empty, empty.size)).round().astype(int)
        out.extend(int(empty[i]) for i in picks)
    return out


def plot_examples(
    x: np.ndarray,
    masks: Sequence[np.ndarray],
    prob_maps: np.ndarray,
    pixel_threshold: float,
    path: Path,
    *,
    n_lesion: int = 5,
    n_empty: int = 2,
) -> None:
    """A grid, one case per row: model input | truth (green) | prediction (red) with Dice,
    at the input's resolution (the model input is bilinearly resized up for display)."""
    plt = pyplot()
    idx = _example_indices(masks, n_lesion, n_empty)
    rows = max(len(idx), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.8 * rows), dpi=72, squeeze=False)
    for r, i in enumerate(idx):
        truth = masks[i]
        img = resize2d(x[i, :, :, 0], truth.shape, "bilinear")
        pred = predicted_mask(prob_maps[i], truth.shape, pixel_threshold)
        d, _ = dice_iou(pred, truth)
        for c, (title, overlay, color) in enumerate(
            (
                ("input", None, None),
                ("truth", truth, (0.1, 0.9, 0.2)),
                ("prediction", pred, (1, 0.2, 0.2)),
            )
        ):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if overlay is not None and overlay.any():
                rgba = np.zeros((*overlay.shape, 4), dtype=np.float32)
                rgba[overlay] = (*color, 0.45)  # type: ignore[misc]
                ax.imshow(rgba)
            label = title if c < 2 else f"{title} (Dice {d:.2f})"
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    for ax in axes.ravel()[len(idx) * 3 :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_segmentation_plots(
    out_dir: Path,
    *,
    history: Mapping[str, Sequence[float]],
    test: SegSplit,
    test_probs: np.ndarray,
    calibration: CalibrationResult,
    pixel_threshold: float,
    threshold_table: Mapping[str, Sequence[float]],
    labels: Sequence[str],
) -> list[str]:
    """All report plots into ``out_dir``; returns their file names."""
    out_dir = Path(out_dir)
    f = SEG_PLOT_FILES
    plot_segmentation_curves(history, out_dir / f["curves"])
    plot_threshold_scan(threshold_table, pixel_threshold, out_dir / f["threshold"])
    plot_examples(test.x, test.masks, test_probs, pixel_threshold, out_dir / f["examples"])
    y = test.has_lesion
    logits = lesion_logits(test_probs)
    p_cal, p_unc = calibration.probability(logits), sigmoid(logits)
    points = {k: float(v["threshold"]) for k, v in calibration.operating_points.items()}  # type: ignore[arg-type]
    written = [f["curves"], f["threshold"], f["examples"]]
    if 0 < int(y.sum()) < y.size:  # ROC and reliability need both classes
        plot_roc(y, p_cal, points, out_dir / f["roc"], title="Lesion detection ROC (test)")
        plot_reliability(y, p_unc, p_cal, out_dir / f["reliability"])
        written += [f["roc"], f["reliability"]]
    t = points[calibration.default_operating_point]
    cm = binary_metrics(y, p_cal, t)["confusion_matrix"]
    plot_confusion(
        cm,  # type: ignore[arg-type]
        labels,
        out_dir / f["confusion"],
        f"lesion detection, {calibration.default_operating_point} (t={t:.2f})",
    )
    written.append(f["confusion"])
    return written
