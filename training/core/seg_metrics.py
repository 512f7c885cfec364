"""The segmentation task kind in numpy, exactly as the service does it (``app.imaging.
postprocess``), so the card's figures are what the endpoint will produce.

``probability_maps(run, x)`` → (N, h, w) float32 pixel probabilities from a runner that returns
logits (N, h, w, 1); ``predicted_mask(prob_map, shape, pixel_threshold)`` → (H, W) bool
(bilinear resize of the probabilities to the input's size, then ``>=``); ``lesion_logits``
→ (N,) logit of each map's peak pixel probability; ``dice_iou``; ``threshold_scan`` /
``choose_pixel_threshold`` (max mean per-case Dice over ALL cases); ``evaluate_segmentation``
→ the card's metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.imaging.postprocess import lesion_logit, mask_at
from app.imaging.preprocess import resize2d
from training.core.calibrate import CalibrationResult
from training.core.metrics import binary_metrics, expected_calibration_error, roc_auc, sigmoid

DEFAULT_THRESHOLDS = np.round(
    np.concatenate([[0.01, 0.02, 0.03, 0.04], np.arange(0.05, 0.951, 0.025), [0.97, 0.98, 0.99]]), 4
)


def probability_maps(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 32
) -> np.ndarray:
    """(N, h, w, C) inputs → (N, h, w) float32 pixel probabilities; ``run`` returns LOGITS of
    shape (n, h, w, 1) for a batch (as the exported model does)."""
    n, h, w = x.shape[0], x.shape[1], x.shape[2]
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(0, n, batch):
        logits = np.asarray(run(x[i : i + batch]), dtype=np.float64).reshape(-1, h, w)
        out[i : i + batch] = sigmoid(logits).astype(np.float32)
    return out


def predicted_mask(
    prob_map: np.ndarray, shape: Sequence[int], pixel_threshold: float
) -> np.ndarray:
    """(h, w) probabilities → (H, W) bool mask at the input's size, as the service computes it."""
    return mask_at(prob_map, (int(shape[0]), int(shape[1])), pixel_threshold)


def lesion_logits(prob_maps: np.ndarray) -> np.ndarray:
    """(N, h, w) probabilities → (N,) float64 lesion logits (logit of the peak probability)."""
    return np.array([lesion_logit(p) for p in prob_maps], dtype=np.float64)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two (H, W) bool masks; (1.0, 1.0) when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = int(np.count_nonzero(pred & truth))
    p, t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if p + t == 0:
        return 1.0, 1.0
    return 2.0 * inter / (p + t), inter / (p + t - inter)


def _counts_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(K,) number of ``values >= thresholds[k]`` (thresholds ascending)."""
    idx = np.searchsorted(thresholds, values.ravel(), side="right")  # thresholds <= value
    hist = np.bincount(idx, minlength=thresholds.size + 1)
    return np.cumsum(hist[::-1])[::-1][1:]


def threshold_scan(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """(K,) mean per-case Dice over all cases for each pixel threshold, each mask made as the
    service makes it (bilinear resize to the truth's size, then ``>=``)."""
    th = np.asarray(thresholds, dtype=np.float64)
    if np.any(np.diff(th) <= 0):
        raise ValueError("thresholds must be strictly ascending")
    total = np.zeros(th.size, dtype=np.float64)
    for prob, truth in zip(prob_maps, masks, strict=True):
        up = resize2d(prob, truth.shape, "bilinear").astype(np.float64)
        pred_n = _counts_above(up, th)
        inter = _counts_above(up[truth], th)
        t = int(np.count_nonzero(truth))
        denom = pred_n + t
        total += np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
    return total / max(len(masks), 1)


def choose_pixel_threshold(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[float, dict[str, list[float]]]:
    """The threshold with the highest mean Dice (ties: the one closest to 0.5) and the table."""
    th = np.asarray(thresholds, dtype=np.float64)
    dice = threshold_scan(prob_maps, masks, th)
    best = np.flatnonzero(dice >= dice.max() - 1e-12)
    pick = int(best[np.argmin(np.abs(th[best] - 0.5))])
    return float(th[pick]), {"thresholds": th.tolist(), "mean_dice": dice.tolist()}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate_segmentation(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    pixel_threshold: float,
    calibration: CalibrationResult,
) -> dict[str, Any]:
    """Card ``metrics`` on one split (masks at the inputs' resolution, as served).

    - ``dice`` / ``iou``: mean per-case figures over cases WITH a lesion (the headline);
      ``dice_all`` / ``iou_all``: over every case (empty truth and empty mask count 1);
      ``dice_pooled`` / ``iou_pooled``: over all pixels of the split at once;
      ``pixel_accuracy``.
    - lesion detection by the calibrated lesion probability at the default operating point
      (``sensitivity``, ``specificity``, ``accuracy``, ``precision``, ``f1``, confusion matrix
      [[TN, FP], [FN, TP]]), AUC and ECE, and the same at every operating point;
      ``mask_detection``: the same counting a non-empty mask as "lesion".
    """
    dice_les, iou_les, dice_all, iou_all = [], [], [], []
    inter_sum = pred_sum = truth_sum = correct = pixels = 0
    pred_any = np.zeros(len(masks), dtype=np.int64)
    for i, (prob, truth) in enumerate(zip(prob_maps, masks, strict=True)):
        pred = predicted_mask(prob, truth.shape, pixel_threshold)
        d, j = dice_iou(pred, truth)
        dice_all.append(d)
        iou_all.append(j)
        if truth.any():
            dice_les.append(d)
            iou_les.append(j)
        inter_sum += int(np.count_nonzero(pred & truth))
        pred_sum += int(np.count_nonzero(pred))
        truth_sum += int(np.count_nonzero(truth))
        correct += int(np.count_nonzero(pred == truth))
        pixels += truth.size
        pred_any[i] = int(pred.any())
    y = np.array([int(m.any()) for m in masks], dtype=np.int64)
    logits = lesion_logits(prob_maps)
    p_cal, p_unc = calibration.probability(logits), sigmoid(logits)
    points = {
        name: float(op["threshold"])  # type: ignore[arg-type]
        for name, op in calibration.operating_points.items()
    }
    by_point = {name: binary_metrics(y, p_cal, t) for name, t in points.items()}
    default = by_point[calibration.default_operating_point]
    pooled_den = pred_sum + truth_sum
    return {
        "split": "test",
        "n": len(masks),
        "n_with_lesion": int(y.sum()),
        "pixel_threshold": float(pixel_threshold),
        "dice": _mean(dice_les),
        "iou": _mean(iou_les),
        "dice_median": float(np.median(dice_les)) if dice_les else None,
        "dice_all": _mean(dice_all),
        "iou_all": _mean(iou_all),
        "dice_pooled": 2.0 * inter_sum / pooled_den if pooled_den else 1.0,
        "iou_pooled": inter_sum / (pooled_den - inter_sum) if pooled_den else 1.0,
        "pixel_accuracy": correct / pixels if pixels else None,
        "dice_definition": (
            "dice/iou: mean per slice over slices with a lesion; *_all: over all slices "
            "(empty truth and empty mask = 1); *_pooled: over all pixels; masks at the input's "
            "resolution as served (bilinear probability resize, >= pixel_threshold)"
        ),
        "auc": roc_auc(y, p_cal),
        "ece": expected_calibration_error(y, p_cal),
        "ece_uncalibrated": expected_calibration_error(y, p_unc),
        "operating_point": calibration.default_operating_point,
        **{k: v for k, v in default.items() if k != "recall"},
        "confusion_matrix_layout": "rows: true (no lesion, lesion); columns: predicted",
        "operating_points": by_point,
        "mask_detection": binary_metrics(y, pred_any.astype(np.float64), 0.5),
    }
