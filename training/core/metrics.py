"""Binary metrics in plain numpy (no TensorFlow), shared by calibration, evaluation and reuse by
the segmentation slices (image-level lesion scores).

Conventions: ``y`` is (N,) of 0/1 (1 = positive class); ``p`` is (N,) scores in [0, 1] (or any
real score for ranking metrics); a case is called positive when ``p >= threshold``, exactly as the
service does.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

ECE_BINS = 15


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _as_arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y has {y.size} values, p has {p.size}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("y must hold 0/1 labels")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with one class only."""
    y, p = _as_arrays(y, p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(p)  # average ranks for ties
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from (0, 0) to (1, 1); ``thresholds[k]`` is the score at or above
    which point ``k`` calls positive (``inf`` for the first point)."""
    y, p = _as_arrays(y, p)
    order = np.argsort(-p, kind="mergesort")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    n_pos, n_neg = max(int(y.sum()), 1), max(int(y.size - y.sum()), 1)
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, ps[last]]


def confusion_matrix(y: np.ndarray, p: np.ndarray, threshold: float) -> np.ndarray:
    """[[TN, FP], [FN, TP]] (rows: true 0/1, columns: predicted 0/1), predicted = p >= threshold."""
    y, p = _as_arrays(y, p)
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, object]:
    """Accuracy, precision, recall (= sensitivity), specificity, F1 and the confusion matrix at
    ``threshold``. Undefined ratios (0/0) are None."""
    cm = confusion_matrix(y, p, threshold)
    (tn, fp), (fn, tp) = cm.tolist()
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": f1,
        "confusion_matrix": cm.tolist(),
    }


def reliability_bins(
    y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin over [0, 1]: (count, mean predicted probability, observed positive
    fraction); empty bins hold NaN means. Bin k holds k/bins <= p < (k+1)/bins (the last bin
    includes 1.0)."""
    y, p = _as_arrays(y, p)
    idx = np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    sum_p = np.bincount(idx, weights=p, minlength=bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, sum_p / count, sum_y / count


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the positive-class probability: sum over equal-width bins of
    (bin share) × |observed positive fraction − mean predicted probability|."""
    count, mean_p, frac_y = reliability_bins(y, p, bins)
    used = count > 0
    total = count.sum()
    if total == 0:
        return float("nan")
    return float(np.sum(count[used] / total * np.abs(frac_y[used] - mean_p[used])))
