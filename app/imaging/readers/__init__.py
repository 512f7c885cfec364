"""Uploads → ``Image2D`` / ``Volume``, the format picked from the bytes, never the name.

Readers (one module each, behind these four functions):

- ``raster``: PNG, JPEG, TIFF through Pillow's allow-list (8/16-bit kept).
- ``dicom``: single DICOM images (native and compressed transfer syntaxes).
- ``series``: DICOM volumes (a series of slices, or one multi-frame object).
- ``archive``: zips of DICOM slices, read in memory with decompression caps.
- ``nifti``: NIfTI-1/2, plain or gzipped, read in memory.

Every failure is one of the contract's domain errors (``app.errors``); a ``detail`` is
written from what the reader knows and never quotes a file name, a tag value or a
third-party message. Nothing is written to disk.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.errors import InvalidImage, InvalidVolume, UnsupportedMediaType
from app.imaging.limits import DecodeLimits
from app.imaging.readers.archive import dicom_entries
from app.imaging.readers.detect import Kind, sniff
from app.imaging.readers.dicom import decode_dicom_image, pixel_info, read_dataset
from app.imaging.readers.nifti import decode_nifti
from app.imaging.readers.raster import decode_raster
from app.imaging.readers.series import decode_multiframe, decode_series
from app.imaging.types import Image2D, Volume

__all__ = ["decode", "decode_image", "decode_volume", "sniff"]

_ONE_IMAGE = "this endpoint takes one 2D image (PNG, JPEG, TIFF or single-frame DICOM)"
_VOLUME = (
    "this endpoint takes a volume: NIfTI (.nii, .nii.gz), a zip of one DICOM series, "
    "several DICOM slices or one multi-frame DICOM"
)


def _kind(data: bytes) -> Kind | None:
    return sniff(data)


def decode_image(
    parts: Sequence[bytes], limits: DecodeLimits, *, apply_voi_lut: bool = False
) -> Image2D:
    """One uploaded 2D image → Image2D (the 2D endpoints).

    ``pixels``: (H, W) float32 for gray or (H, W, 3) float32 RGB, in the file's value range
    (16-bit kept; DICOM after the modality LUT, and the VOI LUT when ``apply_voi_lut``;
    MONOCHROME1 inverted so that bright is high). ``spacing``: (row, col) mm or None.
    Exactly one part: several parts, NIfTI, zip or unknown bytes → UnsupportedMediaType;
    a DICOM with more than one frame → InvalidDicom; an empty body → InvalidImage.
    """
    if len(parts) > 1:
        raise UnsupportedMediaType(_ONE_IMAGE + f"; the upload has {len(parts)} files")
    data = parts[0] if parts else b""
    if not data:
        raise InvalidImage("empty upload")
    kind = _kind(data)
    if kind in ("png", "jpeg", "tiff"):
        return decode_raster(data, kind, limits)
    if kind == "dicom":
        ds = read_dataset(data)
        return decode_dicom_image(ds, pixel_info(ds), limits, apply_voi_lut=apply_voi_lut)
    if kind is None:
        raise UnsupportedMediaType("data is not PNG, JPEG, TIFF or DICOM")
    raise UnsupportedMediaType(_ONE_IMAGE)


def decode_volume(parts: Sequence[bytes], limits: DecodeLimits) -> Volume:
    """Uploaded volume → Volume (the CT endpoint).

    ``voxels``: (S, H, W) float32 in canonical order (axis 0 inferior → superior, axis 1
    anterior → posterior, axis 2 patient right → left; see ``types.Volume``), Hounsfield
    units for CT. ``spacing``: (slice, row, col) mm or None. Accepts one NIfTI (plain or
    gzipped), one zip of a DICOM series, one multi-frame DICOM, or several single-frame
    DICOM parts of one series. Rasters, a single 2D DICOM, unknown bytes and a zip without
    any DICOM entry → UnsupportedMediaType (the upload is not a volume format); DICOM entries
    or parts of which none holds pixel data → InvalidDicom.
    """
    nonempty = [p for p in parts if p]
    if not nonempty:
        raise InvalidVolume("empty upload")
    if len(parts) > 1:
        datasets = []
        for index, data in enumerate(parts):
            if _kind(data) != "dicom":
                raise UnsupportedMediaType(
                    f"file {index + 1} of {len(parts)} is not DICOM; several files must all "
                    "be DICOM slices of one series"
                )
            datasets.append(read_dataset(data))
        return decode_series(datasets, limits)
    data = parts[0]
    kind = _kind(data)
    if kind in ("nifti", "gzip"):
        return decode_nifti(data, limits)
    if kind == "zip":
        entries = dicom_entries(data, limits)
        if not entries:
            raise UnsupportedMediaType("zip holds no DICOM file; " + _VOLUME)
        datasets = []
        entries.reverse()
        while entries:  # each entry's bytes are dropped as soon as it is parsed
            datasets.append(read_dataset(entries.pop()))
        return decode_series(datasets, limits)
    if kind == "dicom":
        ds = read_dataset(data)
        info = pixel_info(ds)
        if info.frames > 1:
            return decode_multiframe(ds, info, limits)
        raise UnsupportedMediaType("one single-frame DICOM image is not a volume; " + _VOLUME)
    raise UnsupportedMediaType(_VOLUME)


def decode(
    parts: Sequence[bytes], limits: DecodeLimits, *, apply_voi_lut: bool = False
) -> Image2D | Volume:
    """Whatever the bytes are → Image2D or Volume (generic callers).

    One raster or single-frame DICOM → Image2D; NIfTI, zip, a multi-frame DICOM or several
    DICOM parts → Volume. Same shapes and errors as ``decode_image`` / ``decode_volume``.
    """
    if len(parts) > 1:
        return decode_volume(parts, limits)
    data = parts[0] if parts else b""
    if not data:
        raise InvalidImage("empty upload")
    kind = _kind(data)
    if kind in ("png", "jpeg", "tiff"):
        return decode_raster(data, kind, limits)
    if kind in ("nifti", "gzip", "zip"):
        return decode_volume([data], limits)
    if kind == "dicom":
        ds = read_dataset(data)
        info = pixel_info(ds)
        if info.frames > 1:
            return decode_multiframe(ds, info, limits)
        return decode_dicom_image(ds, info, limits, apply_voi_lut=apply_voi_lut)
    raise UnsupportedMediaType("data is not PNG, JPEG, TIFF, DICOM, NIfTI or a zip")
