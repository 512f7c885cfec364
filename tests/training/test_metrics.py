"""Metric, calibration and operating-point functions against hand-computed cases (no TF)."""

from __future__ import annotations

import numpy as np
import pytest

from training.core.calibrate import calibrate, fit_temperature, operating_points, threshold_table
from training.core.metrics import (
    binary_metrics,
    confusion_matrix,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
    roc_curve,
    sigmoid,
)


def test_auc_hand_cases() -> None:
    # 4 positive/negative pairs: (0.35 > 0.1), (0.35 < 0.4), (0.8 > 0.1), (0.8 > 0.4) → 3/4
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # tie = 1/2
    assert roc_auc(np.array([0, 0, 1]), np.array([0.1, 0.2, 0.9])) == pytest.approx(1.0)
    assert roc_auc(np.array([1, 1, 0]), np.array([0.1, 0.2, 0.9])) == pytest.approx(0.0)
    assert np.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


def test_roc_curve_points() -> None:
    fpr, tpr, thr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert thr[0] == np.inf and thr[1:].tolist() == [0.8, 0.4, 0.35, 0.1]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_confusion_and_binary_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    # p >= 0.35 → predicted [0, 1, 1, 1]: TN 1, FP 1, FN 0, TP 2
    assert confusion_matrix(y, p, 0.35).tolist() == [[1, 1], [0, 2]]
    m = binary_metrics(y, p, 0.35)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == m["sensitivity"] == pytest.approx(1.0)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.8)
    none = binary_metrics(y, p, 0.95)  # nothing called positive: precision undefined
    assert none["precision"] is None and none["recall"] == 0.0


def test_ece_hand_case() -> None:
    y = np.array([0, 1, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.9])
    # bin of 0.1: mean p 0.1, observed 0.5 → 0.4 × 1/2; bin of 0.9: 0.9 vs 1.0 → 0.1 × 1/2
    assert expected_calibration_error(y, p) == pytest.approx(0.25)
    count, _, _ = reliability_bins(y, np.array([0.0, 1.0, 1.0, 0.5]), bins=15)
    assert count[0] == 1 and count[-1] == 2 and count[7] == 1  # 1.0 falls in the last bin
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_operating_points_hand_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    table = threshold_table(y, p)
    assert table.thresholds.tolist() == pytest.approx([0.95, 0.8, 0.65, 0.5, 0.3, 0.15, 0.05])
    pts = operating_points(y, p)
    # Youden's J peaks at 2/3 at t=0.65 (sens 2/3, spec 1) and t=0.3; the higher one wins.
    assert pts["balanced"]["threshold"] == pytest.approx(0.65)
    assert pts["balanced"]["sensitivity"] == pytest.approx(2 / 3)
    assert pts["balanced"]["specificity"] == pytest.approx(1.0)
    # Highest threshold that keeps every positive: 0.3 (catches 0.4), spec 2/3, precision 3/4.
    hs = pts["high_sensitivity"]
    assert hs["threshold"] == pytest.approx(0.3)
    assert (hs["sensitivity"], hs["specificity"], hs["precision"]) == pytest.approx(
        (1, 2 / 3, 0.75)
    )
    # Lowest threshold with no false positive.
    assert pts["high_specificity"]["threshold"] == pytest.approx(0.65)
    # Each threshold reproduces its figures when applied the service's way (p >= t).
    for point in pts.values():
        m = binary_metrics(y, p, point["threshold"])  # type: ignore[arg-type]
        assert m["sensitivity"] == pytest.approx(point["sensitivity"])
        assert m["specificity"] == pytest.approx(point["specificity"])


def test_temperature_scaling_recovers_t3() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20_000)
    y = (rng.random(z.size) < sigmoid(z)).astype(np.int64)  # calibrated at T = 1 on z
    logits = 3.0 * z  # an overconfident model
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.05)
    cal = calibrate(logits, y)
    assert cal.temperature == pytest.approx(t)
    assert cal.ece_after < cal.ece_before / 3
    assert cal.ece_after < 0.02
    assert cal.default_operating_point == "high_sensitivity"
    assert cal.operating_points["high_sensitivity"]["sensitivity"] >= 0.95  # type: ignore[operator]
    assert cal.operating_points["high_specificity"]["specificity"] >= 0.95  # type: ignore[operator]
    np.testing.assert_allclose(cal.probability(logits), sigmoid(logits / t))


def test_temperature_one_class_is_identity() -> None:
    assert fit_temperature(np.array([1.0, 2.0]), np.array([1, 1])) == 1.0


def test_named_points_never_cross_balanced() -> None:
    """A well-separated set meets both constraints at `balanced`: the named points then stay
    at least as sensitive / specific as balanced instead of crossing to its far side."""
    y = np.array([0] * 50 + [1] * 50)
    p = np.r_[np.linspace(0.0, 0.4, 50), np.linspace(0.6, 1.0, 50)]
    pts = operating_points(y, p)
    t = {name: point["threshold"] for name, point in pts.items()}
    assert t["high_sensitivity"] <= t["balanced"] <= t["high_specificity"]  # type: ignore[operator]
    assert pts["high_sensitivity"]["sensitivity"] >= pts["balanced"]["sensitivity"]  # type: ignore[operator]
    assert pts["high_specificity"]["specificity"] >= pts["balanced"]["specificity"]  # type: ignore[operator]
