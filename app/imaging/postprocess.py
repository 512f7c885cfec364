"""Model output → calibrated answer, driven only by the card."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

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


# --- segmentation -----------------------------------------------------------------------------


def probability_map(output: np.ndarray, card: ModelCard) -> np.ndarray:
    """A segmenter's output for a batch of one → (H, W) float32 pixel probabilities at the
    model's resolution (the card's preprocessing size)."""
    height, width = card.input.preprocessing.size
    plane = np.asarray(output, dtype=np.float32).reshape(height, width)
    if card.output.activation == "logit":
        return (1.0 / (1.0 + np.exp(-plane))).astype(np.float32)
    return plane


def lesion_logit(prob_map: np.ndarray) -> float:
    """The per-image lesion score as a logit: the peak pixel probability of the map.

    The peak is what the pixel threshold compares against, so "some pixel is above the pixel
    threshold" and "the lesion score is above it" agree; temperature scaling then calibrates it.
    """
    return to_logit(float(prob_map.max()) if prob_map.size else 0.0, "sigmoid")


@dataclass(frozen=True)
class MaskSummary:
    mask: np.ndarray  # (H, W) bool at the input's resolution
    area_px: int
    area_mm2: float | None
    bbox: list[int] | None  # [x_min, y_min, x_max, y_max]
    centroid: list[float] | None  # [x, y] in pixels
    centroid_mm: list[float] | None  # [x, y] in mm


def _reach(hot: np.ndarray, src: int, dst: int, support: float) -> tuple[int, int]:
    """The output rows (or columns) ``[lo, hi)`` of a ``src`` → ``dst`` resize whose sample
    position lies within ``support`` source pixels of a hot index (plus one pixel each side)."""
    scale = src / dst
    lo = math.floor((hot[0] - support + 0.5) / scale - 0.5) - 1
    hi = math.ceil((hot[-1] + support + 0.5) / scale - 0.5) + 2
    return max(lo, 0), min(hi, dst)


def mask_at(prob_map: np.ndarray, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """Threshold the probability map after resizing it (bilinear) to the input's (H, W).

    Only the part of the output that can reach the threshold is resized: a bilinear value is a
    weighted mean of the source pixels under its kernel, so it is below the threshold wherever
    all of those are. Pillow resizes that window exactly as it would the whole map (the
    ``box`` form samples the same positions), so the mask is the same, for a fraction of the
    work on a small lesion in a large frame.
    """
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    hot = prob_map >= threshold
    rows, cols = np.flatnonzero(hot.any(axis=1)), np.flatnonzero(hot.any(axis=0))
    if rows.size == 0:
        return mask
    src_h, src_w = prob_map.shape
    # the bilinear kernel spans 1 source pixel, widened by the reduction factor when shrinking
    r0, r1 = _reach(rows, src_h, height, max(1.0, src_h / height))
    c0, c1 = _reach(cols, src_w, width, max(1.0, src_w / width))
    sy, sx = src_h / height, src_w / width
    window = Image.fromarray(np.ascontiguousarray(prob_map, dtype=np.float32)).resize(
        (c1 - c0, r1 - r0), Image.Resampling.BILINEAR, box=(c0 * sx, r0 * sy, c1 * sx, r1 * sy)
    )
    mask[r0:r1, c0:c1] = np.asarray(window, dtype=np.float32) >= threshold
    return mask


def summarize_mask(mask: np.ndarray, spacing: tuple[float, float] | None) -> MaskSummary:
    """Area, bounding box and centroid of a (H, W) bool mask; mm figures when spacing is known."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return MaskSummary(mask, 0, 0.0 if spacing else None, None, None, None)
    y0, x0 = int(rows[0]), int(cols[0])
    ys, xs = np.nonzero(mask[y0 : rows[-1] + 1, x0 : cols[-1] + 1])
    area = int(xs.size)
    cx, cy = float(xs.mean()) + x0, float(ys.mean()) + y0
    bbox = [x0, y0, int(cols[-1]), int(rows[-1])]
    if spacing is None:
        return MaskSummary(mask, area, None, bbox, [round(cx, 3), round(cy, 3)], None)
    row_mm, col_mm = spacing
    return MaskSummary(
        mask,
        area,
        round(area * row_mm * col_mm, 4),
        bbox,
        [round(cx, 3), round(cy, 3)],
        [round(cx * col_mm, 4), round(cy * row_mm, 4)],
    )
