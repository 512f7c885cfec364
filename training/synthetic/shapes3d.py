"""Voxel-grid drawing helpers of the CT generator: smooth noise fields, ellipses, and capsules
(airways, vessels) painted by their distance to a segment. Points are (z, y, x) mm."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter


def smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]
) -> np.ndarray:
    """(S, H, W) float32 Gaussian-filtered white noise scaled to unit standard deviation."""
    field = rng.standard_normal(tuple(shape), dtype=np.float32)
    field = gaussian_filter(field, sigma=list(sigma_vox), mode="reflect")
    std = float(field.std())
    return np.asarray(field / np.float32(std if std > 0 else 1.0))


def ellipse(
    u: np.ndarray, v: np.ndarray, a: float | np.ndarray, b: float | np.ndarray
) -> np.ndarray:
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def segment_distance(
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    p0: np.ndarray,
    p1: np.ndarray,
    reach: float,
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Distance (mm) from each voxel of the segment's bounding box (grown by ``reach``) to
    the segment p0 → p1 (points as (z, y, x) mm); None when the box misses the volume."""
    z, y, x = grid
    box = []
    for axis, coords in enumerate((z, y, x)):
        lo = min(p0[axis], p1[axis]) - reach
        hi = max(p0[axis], p1[axis]) + reach
        idx = np.flatnonzero((coords >= lo) & (coords <= hi))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    zz = z[box[0]][:, None, None]
    yy = y[box[1]][None, :, None]
    xx = x[box[2]][None, None, :]
    d = p1 - p0
    length2 = float(d @ d) or 1e-9
    t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist = np.sqrt(
        (zz - p0[0] - t * d[0]) ** 2 + (yy - p0[1] - t * d[1]) ** 2 + (xx - p0[2] - t * d[2]) ** 2
    )
    return (box[0], box[1], box[2]), dist.astype(np.float32)


def tube(
    hu: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray, np.ndarray],
    p0: Sequence[float] | np.ndarray,
    p1: Sequence[float] | np.ndarray,
    radius: float,
    wall: float,
    lumen_hu: float,
    wall_hu: float | None,
) -> None:
    """Paint a capsule: ``lumen_hu`` inside ``radius``, ``wall_hu`` in the ``wall`` around it."""
    found = segment_distance(grid, np.asarray(p0, float), np.asarray(p1, float), radius + wall + 1)
    if found is None:
        return
    box, dist = found
    view = hu[box]
    if wall_hu is not None and wall > 0:
        view[dist <= radius + wall] = wall_hu
    view[dist <= radius] = lumen_hu
