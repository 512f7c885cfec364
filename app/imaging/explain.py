"""Explanations of a decision: occlusion sensitivity for the classifiers, and the heat map.

Occlusion sensitivity (Zeiler & Fergus, ECCV 2014): mask one square patch of the input at a
time and record how much the *calibrated* positive-class probability drops. A large drop means
the model relied on that region for its answer; a negative drop means the region argued
against it.

- **Geometry.** ``patch`` and ``stride`` are in input pixels (the image as uploaded, rows and
  columns). Cell ``(i, j)`` of the grid covers input rows ``[i*stride, i*stride + patch)`` and
  columns ``[j*stride, j*stride + patch)``, clipped to the image; the last row and column of
  cells reach the image's far edges. A rung of :data:`LADDER` is ``(a, b)``: the patch is
  ``1/a`` of the input's shorter side and the stride ``1/b`` of the patch. Finer rungs move a
  patch of about a lesion's size in smaller steps before they shrink it: a patch much smaller
  than the lesion hides too little of it to move a confident answer.
- **Masking.** The patch is masked in the model-input tensor (after preprocessing), over the
  model pixels the input rectangle maps to (rounded outwards), with one value: the lowest
  value of the preprocessed tensor, which is what the intensity window maps "no signal" to
  (air on a radiograph, the bottom of the HU window on CT). The findings these classifiers
  look for add density, so a patch of "nothing" removes them. (The tensor's mean was tried
  first: on synthetic films it reads as an opacity laid over a dark lung field, and the
  map's maximum fell on the lesion in 10 of 16 films against 16 of 16 with the minimum.)
  For a volume (``NDHWC``) the patch is a column through every slice: the grid is over the
  axial plane (rows x columns), the same for all slices.
- **Cost and budget.** One forward pass per cell, in batches. The rung is chosen *before*
  running, from the time budget and the per-item latency measured when the model was loaded:
  the finest rung whose cells fit in the budget, else the coarsest. The same input (same
  shape) thus always gets the same grid in a process, and the budget is met by a coarser
  grid, never by stopping early.
- **Heat map.** Each input pixel gets the mean drop of the cells covering it, drawn over the
  input (for a volume: its middle slice) at the input's resolution: red for drops (evidence
  for the positive label), blue for rises, opacity in proportion to the size of the change
  relative to the largest one in the map.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from app.imaging.card import ModelCard
from app.imaging.encode import _display_gray
from app.imaging.postprocess import calibrate, to_logit

# (patches across the input's shorter side, strides per patch), finest first.
LADDER: tuple[tuple[int, int], ...] = ((5, 4), (5, 2), (4, 2), (3, 2), (2, 2), (2, 1))
_ALPHA = 0.6  # opacity of the strongest cell in the overlay
_WARM = np.array([255.0, 40.0, 0.0], np.float32)
_COOL = np.array([0.0, 90.0, 255.0], np.float32)
_ROWS = 256

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class OcclusionGrid:
    """``rows`` x ``cols`` square patches of ``patch`` input pixels every ``stride`` pixels
    over an input of ``shape`` (H, W)."""

    shape: tuple[int, int]
    patch: int
    stride: int
    rows: int
    cols: int

    @property
    def cells(self) -> int:
        return self.rows * self.cols

    def region(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Input rows ``[r0, r1)`` and columns ``[c0, c1)`` of cell ``(i, j)``."""
        height, width = self.shape
        r0, c0 = i * self.stride, j * self.stride
        return r0, min(r0 + self.patch, height), c0, min(c0 + self.patch, width)


def _positions(length: int, patch: int, stride: int) -> int:
    if length <= patch:
        return 1
    return math.ceil((length - patch) / stride) + 1


def grid_for(shape: tuple[int, int], rung: tuple[int, int]) -> OcclusionGrid:
    """The grid of a :data:`LADDER` rung ``(a, b)`` over an input of ``shape`` (H, W): patches
    of ``1/a`` of the shorter side, every ``1/b`` of a patch."""
    across, per_patch = rung
    patch = max(1, min(shape) // across)
    stride = max(1, patch // per_patch)
    rows = _positions(shape[0], patch, stride)
    cols = _positions(shape[1], patch, stride)
    return OcclusionGrid(shape, patch, stride, rows, cols)


def choose_grid(shape: tuple[int, int], ms_per_item: float, budget_ms: float) -> OcclusionGrid:
    """The finest rung of :data:`LADDER` whose forward passes (one per cell at
    ``ms_per_item``) fit in ``budget_ms``; the coarsest when none does."""
    for rung in LADDER:
        grid = grid_for(shape, rung)
        if grid.cells * ms_per_item <= budget_ms:
            return grid
    return grid_for(shape, LADDER[-1])


def calibrated_probabilities(output: np.ndarray, card: ModelCard) -> np.ndarray:
    """A classifier's (B, 1) or (B,) output → (B,) float64 calibrated probabilities."""
    values = np.asarray(output, dtype=np.float64).reshape(output.shape[0], -1)[:, 0]
    act = card.output.activation
    return np.array([calibrate(to_logit(float(v), act), card) for v in values])


def _spatial_axes(layout: str) -> tuple[int, int]:
    """Axes of rows and columns in a batch of ``layout`` (``NHWC``, ``NCDHW``, …)."""
    return layout.index("H"), layout.index("W")


def _model_span(start: int, stop: int, length: int, model_length: int) -> slice:
    """Input pixels ``[start, stop)`` of a side of ``length`` → the model pixels they touch."""
    lo = math.floor(start * model_length / length)
    hi = math.ceil(stop * model_length / length)
    return slice(lo, max(hi, lo + 1))


def mask_value(batch: np.ndarray) -> np.float32:
    """What a patch is masked with: the lowest value of the preprocessed input ("no signal")."""
    return np.float32(batch.min())


def occlusion_map(
    run: Runner,
    batch: np.ndarray,
    layout: str,
    grid: OcclusionGrid,
    card: ModelCard,
    baseline: float,
    batch_size: int,
) -> np.ndarray:
    """(rows, cols) float64: ``baseline`` minus the calibrated probability with each cell
    masked. ``batch`` is the preprocessed input (a batch of one in ``layout``); ``run`` maps
    a batch of any size up to ``batch_size`` to output 0 of the model."""
    row_axis, col_axis = _spatial_axes(layout)
    height, width = grid.shape
    model_h, model_w = batch.shape[row_axis], batch.shape[col_axis]
    fill = mask_value(batch)
    cells = [(i, j) for i in range(grid.rows) for j in range(grid.cols)]
    drops = np.zeros(grid.cells, dtype=np.float64)
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        masked = np.repeat(batch, len(chunk), axis=0)
        for k, (i, j) in enumerate(chunk):
            r0, r1, c0, c1 = grid.region(i, j)
            index: list[slice | int] = [slice(None)] * batch.ndim
            index[0] = k
            index[row_axis] = _model_span(r0, r1, height, model_h)
            index[col_axis] = _model_span(c0, c1, width, model_w)
            masked[tuple(index)] = fill
        probs = calibrated_probabilities(run(masked), card)
        drops[start : start + len(chunk)] = baseline - probs
    return drops.reshape(grid.rows, grid.cols)


def heat_map(drops: np.ndarray, grid: OcclusionGrid) -> np.ndarray:
    """(H, W) float32 at the input's resolution: each pixel the mean drop of the cells
    covering it."""
    total = np.zeros(grid.shape, dtype=np.float32)
    count = np.zeros(grid.shape, dtype=np.float32)
    for i in range(grid.rows):
        for j in range(grid.cols):
            r0, r1, c0, c1 = grid.region(i, j)
            total[r0:r1, c0:c1] += np.float32(drops[i, j])
            count[r0:r1, c0:c1] += 1.0
    out: np.ndarray = total / np.maximum(count, 1.0)
    return out


def overlay_heat_png(plane: np.ndarray, heat: np.ndarray, scale: float | None = None) -> bytes:
    """The input ``plane`` (H, W, any range) as gray with ``heat`` (H, W) drawn over it as an
    RGB PNG: warm where ``heat`` > 0, cool where < 0, opacity ``|heat| / scale`` (``scale``
    defaults to the largest ``|heat|``; nothing is drawn where it is 0)."""
    gray = _display_gray(plane)
    size = float(np.max(np.abs(heat))) if scale is None else scale
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    if size > 0:
        for r0 in range(0, rgb.shape[0], _ROWS):  # a few rows at a time: float copies stay small
            strength = np.clip(heat[r0 : r0 + _ROWS] / np.float32(size), -1.0, 1.0)[:, :, None]
            alpha = np.float32(_ALPHA) * np.abs(strength)
            colour = np.where(strength >= 0, _WARM, _COOL)
            blend = rgb[r0 : r0 + _ROWS] * (1.0 - alpha) + colour * alpha
            rgb[r0 : r0 + _ROWS] = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


@dataclass(frozen=True)
class Explanation:
    """What the answer's ``explanation`` holds: ``grid`` (rows, cols) of probability drops for
    occlusion (None for a probability map), and the heat-map overlay PNG."""

    method: str
    patch: int | None
    stride: int | None
    grid: np.ndarray | None
    png: bytes


def occlusion(
    run: Runner,
    batch: np.ndarray,
    layout: str,
    plane: np.ndarray,
    card: ModelCard,
    baseline: float,
    ms_per_item: float,
    batch_size: int,
    budget_ms: float,
) -> Explanation:
    """Occlusion sensitivity of a classifier's calibrated probability (``baseline`` for the
    unmasked input) over ``plane`` (H, W): the input, or the slice a volume's map is drawn
    over (every slice has the input's rows x columns)."""
    grid = choose_grid((int(plane.shape[0]), int(plane.shape[1])), ms_per_item, budget_ms)
    drops = occlusion_map(run, batch, layout, grid, card, baseline, batch_size)
    png = overlay_heat_png(plane, heat_map(drops, grid))
    return Explanation("occlusion", grid.patch, grid.stride, drops, png)


def probability_explanation(plane: np.ndarray, prob_map: np.ndarray) -> Explanation:
    """A segmenter's explanation: its pixel probabilities (model resolution) resized
    (bilinear) to ``plane``'s (H, W) and drawn over it, opacity in proportion to the
    probability."""
    height, width = int(plane.shape[0]), int(plane.shape[1])
    image = Image.fromarray(np.ascontiguousarray(prob_map, dtype=np.float32))
    resized = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    png = overlay_heat_png(plane, resized, scale=1.0)
    return Explanation("probability_map", None, None, None, png)
