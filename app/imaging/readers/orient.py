"""The canonical volume axis order (see ``types.Volume``) and views to fill it in place.

Canonical: voxels (S, H, W) with axis 0 inferior → superior, axis 1 anterior → posterior,
axis 2 patient right → left. In nibabel's RAS+ axis codes that is an array whose (i, j, k)
axes point to ("L", "P", "S"), transposed to (k, j, i).

Readers never reorient a finished array (that would copy it): they allocate the canonical
output once and write the source data through a *view* of it indexed like the source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from nibabel import orientations

# nibabel is untyped: give its functions the types they have.
io_orientation: Callable[[np.ndarray], np.ndarray] = orientations.io_orientation
axcodes2ornt: Callable[[tuple[str, str, str]], np.ndarray] = orientations.axcodes2ornt
ornt_transform: Callable[[np.ndarray, np.ndarray], np.ndarray] = orientations.ornt_transform
apply_orientation: Callable[[np.ndarray, np.ndarray], np.ndarray] = orientations.apply_orientation

_TARGET = axcodes2ornt(("L", "P", "S"))
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Unknown orientation: source axes (slice, row, col) are taken as (S, P, L) already.
_AS_STORED = np.array([[2.0, 1.0], [1.0, -1.0], [0.0, -1.0]])


@dataclass(frozen=True)
class Canonical:
    """How a source array (any 3 axes) maps onto the canonical (S, H, W) output."""

    source: np.ndarray  # nibabel ornt of the source axes (RAS+ codes)
    transform: np.ndarray  # ornt_transform(source, L/P/S): source axis i → [i, 0], flip [i, 1]
    shape: tuple[int, int, int]  # canonical (S, H, W)
    spacing: tuple[float, float, float] | None  # canonical (slice, row, col) in mm


def plan(
    src_shape: tuple[int, int, int],
    affine_ras: np.ndarray | None,
    zooms: tuple[float, float, float] | None,
) -> Canonical:
    """Plan the mapping of a source array with voxel→RAS ``affine_ras`` onto canonical order.

    ``affine_ras`` None means the orientation is unknown: the source axes are taken as they
    are, (slice, row, col). Raises ValueError for a degenerate affine.
    """
    if affine_ras is None:
        src = _AS_STORED
    else:
        src = io_orientation(np.asarray(affine_ras, dtype=np.float64))
        if np.isnan(src).any():
            raise ValueError("degenerate orientation")
    transform = ornt_transform(src, _TARGET)
    lps_shape = [0, 0, 0]
    lps_zoom = [0.0, 0.0, 0.0]
    for axis in range(3):
        out = int(transform[axis, 0])
        lps_shape[out] = src_shape[axis]
        if zooms is not None:
            lps_zoom[out] = float(zooms[axis])
    spacing = None if zooms is None else (lps_zoom[2], lps_zoom[1], lps_zoom[0])
    return Canonical(
        source=src,
        transform=transform,
        shape=(lps_shape[2], lps_shape[1], lps_shape[0]),
        spacing=spacing,
    )


def source_view(out: np.ndarray, canon: Canonical) -> np.ndarray:
    """A view of the canonical ``out`` (S, H, W) indexed like the source array.

    Writing ``view[...] = source`` fills ``out`` in canonical order without another copy.
    """
    lps = out.transpose(2, 1, 0)  # (L, P, S) axes
    back = ornt_transform(_TARGET, canon.source)
    return apply_orientation(lps, back)


def canonical_view(source: np.ndarray, canon: Canonical) -> np.ndarray:
    """A view of ``source`` (indexed like the file's axes) in canonical (S, H, W) order: flips
    and a transpose, no copy. Reading it gives what ``source_view`` writes into ``out``."""
    lps = apply_orientation(source, canon.transform)  # (L, P, S) axes
    view: np.ndarray = lps.transpose(2, 1, 0)
    return view
