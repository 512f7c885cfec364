"""Test-split evaluation of a classifier and the report plots (numpy in, dict / PNG out).

``evaluate_probabilities`` gives the card's metrics, ``write_plots`` the classifier's plots;
``pyplot`` and the single plots are shared with the segmentation kind and the benchmarks.
Re-checking an exported artifact is ``training.core.evaluate.evaluate_artifact``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.core.metrics import (
    ECE_BINS,
    binary_metrics,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
    roc_curve,
)

PLOT_FILES = {
    "curves": "training_curves.png",
    "roc": "roc.png",
    "reliability": "reliability.png",
    "confusion": "confusion_matrix.png",
}


def evaluate_probabilities(
    y: np.ndarray,
    p_calibrated: np.ndarray,
    p_uncalibrated: np.ndarray,
    thresholds: Mapping[str, float],
    default_operating_point: str,
) -> dict[str, Any]:
    """Card ``metrics``: AUC, ECE (calibrated and not), and at the default operating point
    accuracy, precision, recall, specificity, F1 and the confusion matrix; the same at every
    operating point under ``operating_points``. Confusion matrices are [[TN, FP], [FN, TP]]."""
    y = np.asarray(y).astype(np.int64).ravel()
    by_point = {name: binary_metrics(y, p_calibrated, t) for name, t in thresholds.items()}
    default = by_point[default_operating_point]
    return {
        "split": "test",
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "auc": roc_auc(y, p_calibrated),
        "ece": expected_calibration_error(y, p_calibrated),
        "ece_uncalibrated": expected_calibration_error(y, p_uncalibrated),
        "ece_bins": ECE_BINS,
        "operating_point": default_operating_point,
        **{k: v for k, v in default.items() if k != "sensitivity"},
        "confusion_matrix_layout": "rows: true (negative, positive); columns: predicted",
        "operating_points": by_point,
    }


# --------------------------------------------------------------------------- plots


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(
    history: Mapping[str, Sequence[float]], path: Path, metric: str = "auc"
) -> None:
    """Loss and ``metric`` per epoch, training and validation."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), dpi=80)
    for ax, key in zip(axes, ("loss", metric), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            vals = history.get(prefix + key)
            if vals:
                ax.plot(range(1, len(vals) + 1), vals, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(
    y: np.ndarray,
    p: np.ndarray,
    thresholds: Mapping[str, float],
    path: Path,
    title: str = "ROC (test)",
) -> None:
    """ROC curve with each operating point (its threshold applied to these cases) marked."""
    plt = pyplot()
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(3.8, 3.6), dpi=80)
    ax.plot(fpr, tpr, lw=1.5, label=f"AUC {roc_auc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    for (name, t), marker in zip(thresholds.items(), "osD^v", strict=False):
        m = binary_metrics(y, p, t)
        spec, sens = m["specificity"] or 0.0, m["sensitivity"] or 0.0
        ax.plot(1 - float(spec), float(sens), marker, label=f"{name} (t={t:.2f})")  # type: ignore[arg-type]
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(
    y: np.ndarray,
    p_uncalibrated: np.ndarray,
    p_calibrated: np.ndarray,
    path: Path,
    bins: int = ECE_BINS,
) -> None:
    """Reliability diagram (observed positive fraction per probability bin), before and after."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.6), dpi=80)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    for p, label in ((p_uncalibrated, "uncalibrated"), (p_calibrated, "calibrated")):
        count, mean_p, frac = reliability_bins(y, p, bins)
        used = count > 0
        ece = expected_calibration_error(y, p, bins)
        ax.plot(mean_p[used], frac[used], "o-", ms=3, label=f"{label} (ECE {ece:.3f})")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed fraction positive")
    ax.set_title(f"Reliability (test, {bins} bins)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(
    cm: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str
) -> None:
    plt = pyplot()
    arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(3.4, 3.0), dpi=80)
    ax.imshow(arr, cmap="Blues")
    for i in range(2):
        for j in range(2):
            color = "white" if arr[i, j] > arr.max() / 2 else "black"
            ax.text(j, i, str(arr[i, j]), ha="center", va="center", color=color)
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_plots(
    out_dir: Path,
    *,
    history: Mapping[str, Sequence[float]],
    y_test: np.ndarray,
    p_uncalibrated: np.ndarray,
    p_calibrated: np.ndarray,
    thresholds: Mapping[str, float],
    default_operating_point: str,
    labels: Sequence[str],
) -> list[str]:
    """All report plots into ``out_dir``; returns their file names."""
    out_dir = Path(out_dir)
    plot_training_curves(history, out_dir / PLOT_FILES["curves"])
    plot_roc(y_test, p_calibrated, thresholds, out_dir / PLOT_FILES["roc"])
    plot_reliability(y_test, p_uncalibrated, p_calibrated, out_dir / PLOT_FILES["reliability"])
    t = thresholds[default_operating_point]
    cm = binary_metrics(y_test, p_calibrated, t)["confusion_matrix"]
    plot_confusion(
        cm,  # type: ignore[arg-type]
        labels,
        out_dir / PLOT_FILES["confusion"],
        f"test, {default_operating_point} (t={t:.2f})",
    )
    return list(PLOT_FILES.values())


# --------------------------------------------------------------------------- artifacts


def predict_logits(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 64
) -> np.ndarray:
    """(N, ...) inputs → (N,) float64 logits, in batches through ``run``."""
    out = [
        np.asarray(run(x[i : i + batch]), dtype=np.float64).reshape(-1)
        for i in range(0, len(x), batch)
    ]
    return np.concatenate(out) if out else np.zeros((0,), np.float64)
