"""DICOM volumes: a series of single-frame slices (zip or several parts) or one multi-frame
object (enhanced CT/MR with functional groups, or legacy multi-frame) → Volume.

Geometry, in this order of preference:

- positions: each slice's ImagePositionPatient (enhanced: the per-frame PlanePositionSequence;
  legacy multi-frame: ImagePositionPatient + GridFrameOffsetVector) projected on the slice
  normal ``row_cos × col_cos`` from ImageOrientationPatient. Slices are sorted by that
  projection, never by file name, archive order or InstanceNumber. Duplicate positions or
  uneven gaps (a missing slice shows as a gap of ~2× the median) → InconsistentSeries.
- only when some slice has no position (or no orientation): InstanceNumber order (frame order
  for a multi-frame object), slice spacing from SpacingBetweenSlices, else SliceThickness
  (enhanced: the shared PixelMeasuresSequence), else unknown (``spacing`` None); the slice
  axis is assumed to run along the slice normal. Without ImageOrientationPatient the volume
  is returned in stored order (``meta.extra["orientation_known"]`` is False).

The output is allocated once, in the canonical order of ``types.Volume``, and filled slice by
slice through a view (no second float copy of the volume). Voxels go through the modality
LUT (Hounsfield units for CT); MONOCHROME1 is inverted as in ``dicom``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from app.errors import (
    InconsistentSeries,
    InvalidDicom,
    InvalidVolume,
)
from app.imaging.limits import DecodeLimits
from app.imaging.readers.dicom import (
    PixelInfo,
    as_float,
    as_floats,
    dicom_meta,
    drop_pixels,
    functional,
    get,
    gray_values,
    has_pixels,
    int16_rescale,
    iter_frames,
    pixel_decoder,
    pixel_info,
    pixel_spacing,
    write_int16,
)
from app.imaging.readers.orient import LPS_TO_RAS, Canonical, plan, source_view
from app.imaging.types import DicomSource, SourceFormat, Volume

_ORIENTATION_TOL = 1e-3  # direction cosines
_DUPLICATE_MM = 1e-3
_UNEVEN = 0.2  # a gap more than 20% off the median gap is uneven


@dataclass(frozen=True)
class _Plane:
    """Where one slice (or frame) lies."""

    orientation: np.ndarray | None  # (6,) row cosines then column cosines
    position: np.ndarray | None  # (3,) mm, LPS
    instance: int | None


def _unit_orientation(values: list[float] | None) -> np.ndarray | None:
    if values is None:
        return None
    row, col = np.array(values[:3]), np.array(values[3:])
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        return None
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > 1e-2:
        return None
    return np.concatenate([row, col])


def _orientation(ds: Dataset | None) -> np.ndarray | None:
    if ds is None:
        return None
    return _unit_orientation(as_floats(get(ds, "ImageOrientationPatient"), 6))


def _position(ds: Dataset | None) -> np.ndarray | None:
    if ds is None:
        return None
    values = as_floats(get(ds, "ImagePositionPatient"), 3)
    return None if values is None else np.array(values)


def _instance(ds: Dataset) -> int | None:
    try:
        value = get(ds, "InstanceNumber")
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _grid_position(
    base: np.ndarray | None,
    orientation: np.ndarray | None,
    offsets: list[float] | None,
    frame: int,
) -> np.ndarray | None:
    """Legacy multi-frame (e.g. RT dose): ImagePositionPatient of frame 0 moved along the
    normal by GridFrameOffsetVector (relative to the first offset, which covers both the
    relative and the absolute form of that vector)."""
    if base is None or orientation is None or offsets is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    moved: np.ndarray = base + normal * (offsets[frame] - offsets[0])
    return moved


def _fallback_spacing(ds: Dataset) -> float | None:
    measures = functional(ds, "PixelMeasuresSequence", 0)
    for source in (measures, ds):
        if source is None:
            continue
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = as_float(get(source, keyword))
            if value is not None and value > 0:
                return value
    return None


def _check_gaps(sorted_positions: np.ndarray) -> float:
    """The median slice gap; InconsistentSeries for duplicates or uneven gaps."""
    gaps = np.diff(sorted_positions)
    duplicates = int(np.sum(gaps <= _DUPLICATE_MM))
    if duplicates:
        raise InconsistentSeries(
            f"slice positions repeat: {duplicates} slice(s) share a position with another"
        )
    median = float(np.median(gaps))
    ratios = gaps / median
    worst = float(ratios.max())
    if worst > 1 + _UNEVEN or float(ratios.min()) < 1 - _UNEVEN:
        if worst >= 1.5:
            raise InconsistentSeries(
                f"slice spacing uneven: gap of {round(worst)} slices (slices missing)"
            )
        raise InconsistentSeries(
            f"slice spacing uneven: gaps vary by more than {round(_UNEVEN * 100)}%"
        )
    return median


def _order(
    planes: Sequence[_Plane], what: str
) -> tuple[list[int], float | None, np.ndarray | None, str]:
    """(slice order, slice spacing, orientation, how it was found)."""
    orientations = [p.orientation for p in planes]
    known = [o for o in orientations if o is not None]
    orientation: np.ndarray | None = None
    if known:
        if len(known) != len(orientations) or any(
            not np.allclose(o, known[0], atol=_ORIENTATION_TOL) for o in known
        ):
            raise InconsistentSeries(f"{what} have mixed orientations")
        orientation = known[0]
    positions = [p.position for p in planes]
    if orientation is not None and all(p is not None for p in positions):
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.array([float(p @ normal) for p in positions if p is not None])
        order = np.argsort(along, kind="stable")
        spacing = _check_gaps(along[order])
        return [int(i) for i in order], spacing, orientation, "positions"
    instances = [p.instance for p in planes]
    if any(i is None for i in instances) or len(set(instances)) != len(instances):
        raise InconsistentSeries(
            f"{what} carry neither positions nor distinct instance numbers to order them"
        )
    order_list = sorted(range(len(planes)), key=lambda i: instances[i] or 0)
    return order_list, None, orientation, "instance_number"


class _Target:
    """The volume being filled: ``view`` is it in the sources' order (slices or frames, as
    ``fill`` writes them); an int16 volume can be widened to float32 mid-way."""

    def __init__(self, canon: Canonical, dtype: type[np.generic], limits: DecodeLimits) -> None:
        self.canon = canon
        self.limits = limits
        limits.reserve(int(np.prod(canon.shape)) * np.dtype(dtype).itemsize)
        self.array = np.empty(canon.shape, dtype=dtype)
        self.view = source_view(self.array, canon)

    def widen(self) -> None:
        """int16 → float32 (a slice whose values int16 cannot hold): the slices written so
        far are kept, converted."""
        self.limits.reserve(self.array.size * 4)
        self.array = self.array.astype(np.float32)
        self.view = source_view(self.array, self.canon)


def _assemble(
    count: int,
    info: PixelInfo,
    planes: Sequence[_Plane],
    first: Dataset,
    limits: DecodeLimits,
    fill: Callable[[_Target, list[int]], None],
    fmt: SourceFormat,
    what: str,
    sources: Callable[[list[int]], tuple[Dataset, ...]],
    dtype: type[np.generic] = np.float32,
) -> Volume:
    if count < 2:
        raise InvalidVolume(f"a volume needs at least 2 slices; the upload has {count}")
    voxels = count * info.rows * info.cols
    if voxels > limits.max_volume_voxels:
        raise InvalidVolume(f"volume has {voxels} voxels; the limit is {limits.max_volume_voxels}")
    order, slice_spacing, orientation, how = _order(planes, what)
    if slice_spacing is None:
        slice_spacing = _fallback_spacing(first)
    in_plane = pixel_spacing(first)
    zooms = None
    if slice_spacing is not None and in_plane is not None:
        zooms = (slice_spacing, in_plane[0], in_plane[1])
    affine = None
    if orientation is not None:
        steps = zooms or (1.0, 1.0, 1.0)
        lps = np.eye(4)
        lps[:3, 0] = np.cross(orientation[:3], orientation[3:]) * steps[0]  # slice axis
        lps[:3, 1] = orientation[3:] * steps[1]  # down the rows: column direction cosines
        lps[:3, 2] = orientation[:3] * steps[2]  # along a row: row direction cosines
        affine = LPS_TO_RAS @ lps
    try:
        canon = plan((count, info.rows, info.cols), affine, zooms)
    except ValueError:
        raise InvalidVolume("DICOM orientation is degenerate") from None
    target = _Target(canon, dtype, limits)
    fill(target, order)
    out = target.array
    meta = dicom_meta(
        first, info, fmt, slices=count, geometry=how, orientation_known=orientation is not None
    )
    return Volume(voxels=out, spacing=canon.spacing, meta=meta, dicom=DicomSource(sources(order)))


def _require_gray(info: PixelInfo) -> None:
    if not info.is_mono:
        raise InvalidVolume("colour DICOM images cannot form a volume")


def decode_multiframe(ds: Dataset, info: PixelInfo, limits: DecodeLimits) -> Volume:
    """One multi-frame DICOM (enhanced CT/MR, or legacy NM/RT dose) → Volume (canonical order,
    see ``types.Volume``; voxels after each frame's rescale, e.g. HU)."""
    _require_gray(info)
    count = info.frames
    if count * info.rows * info.cols > limits.max_volume_voxels:
        raise InvalidVolume(
            f"volume has {count * info.rows * info.cols} voxels; "
            f"the limit is {limits.max_volume_voxels}"
        )
    planes: list[_Plane] = []
    base_orientation = _orientation(ds)
    base_position = _position(ds)
    offsets = as_floats(get(ds, "GridFrameOffsetVector"), count)
    rescales: list[tuple[float, float] | None] = []
    for frame in range(count):
        orient_item = functional(ds, "PlaneOrientationSequence", frame)
        orientation = _orientation(orient_item) if orient_item is not None else base_orientation
        position = _position(functional(ds, "PlanePositionSequence", frame))
        if position is None:
            position = _grid_position(base_position, orientation, offsets, frame)
        planes.append(_Plane(orientation, position, frame))
        transform = functional(ds, "PixelValueTransformationSequence", frame)
        slope = as_float(get(transform, "RescaleSlope")) if transform is not None else None
        inter = as_float(get(transform, "RescaleIntercept")) if transform is not None else None
        rescales.append((slope, inter) if slope is not None and inter is not None else None)
    decoder = pixel_decoder(ds, info)

    def fill(target: _Target, order: list[int]) -> None:
        slot = {frame: k for k, frame in enumerate(order)}
        for frame, arr in enumerate(iter_frames(ds, decoder)):
            target.view[slot[frame]] = gray_values(arr, ds, info, rescale=rescales[frame])
        drop_pixels(ds)

    return _assemble(count, info, planes, ds, limits, fill, "dicom", "frames", lambda order: (ds,))


def decode_series(datasets: Sequence[Dataset], limits: DecodeLimits) -> Volume:
    """Single-frame DICOM slices of one series (any order) → Volume.

    ``voxels``: (S, H, W) float32 in canonical order (see ``types.Volume``), each slice
    through its own modality LUT (HU for CT). ``spacing``: (slice gap from positions, row, col
    from PixelSpacing) in mm, or None. Data sets without pixel data (DICOMDIR, reports) are
    ignored. Several SeriesInstanceUIDs, mixed sizes / orientations / pixel spacing, duplicate
    or missing slices → InconsistentSeries.
    """
    images = [ds for ds in datasets if has_pixels(ds)]
    if not images:
        raise InvalidDicom("upload holds no DICOM image")
    uids = {str(get(ds, "SeriesInstanceUID") or "") for ds in images}
    if len(uids) > 1:
        raise InconsistentSeries(f"upload holds {len(uids)} series; send one")
    infos = [pixel_info(ds) for ds in images]
    if len(images) == 1 and infos[0].frames > 1:
        return decode_multiframe(images[0], infos[0], limits)
    if any(i.frames != 1 for i in infos):
        raise InconsistentSeries("a series upload must hold single-frame slices")
    first = infos[0]
    _require_gray(first)
    if any(not i.is_mono for i in infos):
        raise InvalidVolume("colour DICOM images cannot form a volume")
    if len({(i.rows, i.cols) for i in infos}) > 1:
        sizes = len({(i.rows, i.cols) for i in infos})
        raise InconsistentSeries(f"slices have mixed sizes ({sizes} different rows × columns)")
    spacings = [pixel_spacing(ds) for ds in images]
    if spacings[0] is not None and any(
        s is None or not np.allclose(s, spacings[0], rtol=1e-3) for s in spacings
    ):
        raise InconsistentSeries("slices have mixed pixel spacing")
    planes = [_Plane(_orientation(ds), _position(ds), _instance(ds)) for ds in images]
    # CT slices' HU are whole numbers, nearly always in int16's range: the volume is int16
    # (half the memory, no float pass), widened to float32 at the first slice that is not
    rescales = [int16_rescale(ds, info) for ds, info in zip(images, infos, strict=True)]
    as_int16 = all(r is not None for r in rescales)

    def fill(target: _Target, order: list[int]) -> None:
        for k, index in enumerate(order):
            ds, info, rescale = images[index], infos[index], rescales[index]
            frame = next(iter_frames(ds, pixel_decoder(ds, info), [0]))
            int16 = target.array.dtype == np.int16
            if int16 and not (rescale is not None and write_int16(target.view[k], frame, *rescale)):
                target.widen()
                int16 = False
            if not int16:
                target.view[k] = gray_values(frame, ds, info)
            drop_pixels(ds)

    def sources(order: list[int]) -> tuple[Dataset, ...]:
        return tuple(images[i] for i in order)

    return _assemble(
        len(images),
        first,
        planes,
        images[0],
        limits,
        fill,
        "dicom_series",
        "slices",
        sources,
        np.int16 if as_int16 else np.float32,
    )
