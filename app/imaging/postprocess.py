"""Model output → calibrated answer, driven only by the card."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.errors import UnknownOperatingPoint
from app.imaging.card import ModelCard, OperatingPoint

_P_CLIP = 1e-7  # a sigmoid output of exactly 0 or 1 has no finite logit


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def to_logit(raw: float, activation: str) -> float:
    """The model's output as a logit (a probability output is converted back)."""
    if activation == "logit":
        return raw
    p = min(max(raw, _P_CLIP), 1.0 - _P_CLIP)
    return math.log(p / (1.0 - p))


def calibrate(logit: float, card: ModelCard) -> float:
    """Calibrated positive-class probability: ``sigmoid(logit / T)`` for temperature scaling."""
    if card.calibration.method == "temperature":
        return sigmoid(logit / card.calibration.temperature)
    return sigmoid(logit)


def resolve_operating_point(card: ModelCard, name: str | None) -> tuple[str, OperatingPoint]:
    """The named operating point (the card's default when None), or 422 listing valid names."""
    chosen = name or card.default_operating_point
    point = card.operating_points.get(chosen)
    if point is None:
        valid = ", ".join(sorted(card.operating_points))
        raise UnknownOperatingPoint(f"operating_point must be one of: {valid}")
    return chosen, point


@dataclass(frozen=True)
class Decision:
    probability: float
    uncalibrated_probability: float
    positive: bool
    label: str
    operating_point: str
    point: OperatingPoint


def decide(logit: float, card: ModelCard, operating_point: str) -> Decision:
    """Probability, decision and label for one logit at a named operating point."""
    name, point = resolve_operating_point(card, operating_point)
    probability = calibrate(logit, card)
    positive = probability >= point.threshold
    return Decision(
        probability=probability,
        uncalibrated_probability=sigmoid(logit),
        positive=positive,
        label=card.output.labels[1] if positive else card.output.labels[0],
        operating_point=name,
        point=point,
    )


def classification_logit(output: np.ndarray, card: ModelCard) -> float:
    """A classifier's (1, 1) or (1,) output for a batch of one → its logit."""
    value = float(np.asarray(output, dtype=np.float64).ravel()[0])
    return to_logit(value, card.output.activation)
