"""Calibration on the validation split: temperature scaling and operating points (numpy only).

The service computes the calibrated probability as ``sigmoid(logit / T)`` and the uncalibrated
one as ``sigmoid(logit)``; everything here uses exactly that, and thresholds are expressed on the
calibrated probability (the service calls positive when ``probability >= threshold``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from training.core.metrics import ECE_BINS, expected_calibration_error, sigmoid

DEFAULT_OPERATING_POINT = "high_sensitivity"
MIN_SENSITIVITY = 0.95  # missing pneumonia is the costly error
MIN_SPECIFICITY = 0.95


def _nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T), computed stably from logits."""
    z = logits / temperature
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The T > 0 minimising validation NLL of ``sigmoid(logits / T)`` (searched on log T)."""
    z = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(y, dtype=np.float64).ravel()
    if z.size == 0 or t.min() == t.max():
        return 1.0  # nothing to fit with one class
    res = minimize_scalar(
        lambda log_t: _nll(z, t, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


@dataclass(frozen=True)
class ThresholdTable:
    """Every distinct way of splitting the scores, one row per candidate threshold.

    Thresholds lie midway between consecutive distinct scores (more robust on new data than a
    threshold equal to a validation score), plus one below all scores (everything positive) and,
    where the top score is below 1, one above it (everything negative).
    """

    thresholds: np.ndarray
    sensitivity: np.ndarray
    specificity: np.ndarray
    precision: np.ndarray  # NaN where nothing is called positive


def threshold_table(y: np.ndarray, p: np.ndarray) -> ThresholdTable:
    yv = np.asarray(y).astype(np.int64).ravel()
    pv = np.asarray(p, dtype=np.float64).ravel()
    values = np.unique(pv)[::-1]  # distinct scores, descending
    # Row k: the top k distinct values are called positive (k = 0 .. len(values)).
    mids = (values[:-1] + values[1:]) / 2.0
    above = [(values[0] + 1.0) / 2.0] if values[0] < 1.0 else []
    thresholds = np.r_[above, mids, values[-1] / 2.0]
    n_pos = max(int(yv.sum()), 1)
    n_neg = max(int(yv.size - yv.sum()), 1)
    pred = pv[None, :] >= thresholds[:, None]  # (T, N); fine for validation-sized sets
    tp = (pred & (yv == 1)).sum(axis=1)
    fp = (pred & (yv == 0)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), np.nan)
    return ThresholdTable(
        thresholds=thresholds,
        sensitivity=tp / n_pos,
        specificity=1.0 - fp / n_neg,
        precision=precision,
    )


def _point(table: ThresholdTable, i: int) -> dict[str, float | None]:
    prec = float(table.precision[i])
    return {
        "threshold": float(table.thresholds[i]),
        "sensitivity": float(table.sensitivity[i]),
        "specificity": float(table.specificity[i]),
        "precision": None if np.isnan(prec) else prec,
    }


def operating_points(
    y: np.ndarray,
    p: np.ndarray,
    *,
    min_sensitivity: float = MIN_SENSITIVITY,
    min_specificity: float = MIN_SPECIFICITY,
) -> dict[str, dict[str, float | None]]:
    """Named thresholds on the probabilities ``p``, each with its measured figures.

    - ``balanced``: the maximum of Youden's J = sensitivity + specificity − 1 (ties: the highest
      threshold);
    - ``high_sensitivity``: the highest threshold with sensitivity ≥ ``min_sensitivity`` (so the
      best specificity under that constraint), but never above ``balanced``;
    - ``high_specificity``: the lowest threshold with specificity ≥ ``min_specificity``, but
      never below ``balanced``.

    The caps keep the names honest: where ``balanced`` already meets a constraint, the
    unconstrained optimum would lie on the far side of it (a "high_sensitivity" threshold less
    sensitive than "balanced"); the thresholds are always ordered high_sensitivity ≤ balanced ≤
    high_specificity.
    """
    table = threshold_table(y, p)
    j = table.sensitivity + table.specificity - 1.0
    # Rows run from the highest threshold to the lowest: sensitivity rises and specificity falls
    # with the row index, so the first row of a tie is the highest threshold.
    balanced = int(np.flatnonzero(j >= j.max() - 1e-9)[0])  # ties within rounding
    ok_sens = np.flatnonzero(table.sensitivity >= min_sensitivity - 1e-12)
    ok_spec = np.flatnonzero(table.specificity >= min_specificity - 1e-12)
    high_sens = max(int(ok_sens[0]) if ok_sens.size else len(table.thresholds) - 1, balanced)
    high_spec = min(int(ok_spec[-1]) if ok_spec.size else 0, balanced)
    return {
        "balanced": _point(table, balanced),
        "high_sensitivity": _point(table, high_sens),
        "high_specificity": _point(table, high_spec),
    }


@dataclass(frozen=True)
class CalibrationResult:
    temperature: float
    ece_before: float
    ece_after: float
    operating_points: dict[str, dict[str, float | None]]
    default_operating_point: str = DEFAULT_OPERATING_POINT
    bins: int = ECE_BINS
    extra: dict[str, object] = field(default_factory=dict)

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probability, as the service computes it."""
        return sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)


def calibrate(
    val_logits: np.ndarray,
    y_val: np.ndarray,
    *,
    default_operating_point: str = DEFAULT_OPERATING_POINT,
    min_sensitivity: float = MIN_SENSITIVITY,
    min_specificity: float = MIN_SPECIFICITY,
) -> CalibrationResult:
    """Fit T on validation logits, report ECE before/after (15 bins), choose operating points."""
    z = np.asarray(val_logits, dtype=np.float64).ravel()
    y = np.asarray(y_val).astype(np.int64).ravel()
    temperature = fit_temperature(z, y)
    p_before = sigmoid(z)
    p_after = sigmoid(z / temperature)
    points = operating_points(
        y, p_after, min_sensitivity=min_sensitivity, min_specificity=min_specificity
    )
    if default_operating_point not in points:
        raise ValueError(f"default operating point {default_operating_point!r} is not computed")
    return CalibrationResult(
        temperature=temperature,
        ece_before=expected_calibration_error(y, p_before),
        ece_after=expected_calibration_error(y, p_after),
        operating_points=points,
        default_operating_point=default_operating_point,
    )
