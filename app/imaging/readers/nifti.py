"""NIfTI-1 / NIfTI-2 (``.nii``, ``.nii.gz``) → Volume, entirely in memory.

nibabel parses the header (data type, dims, scaling, best affine, zooms). The voxel data is
read with ``np.frombuffer`` straight from the (decompressed) bytes and written once, as
float32 and already in canonical order, into the output: one raw buffer plus one float32
volume, never a float64 intermediate (what ``get_fdata`` would allocate when scaling).
The scaling is nibabel's: ``value = raw * scl_slope + scl_inter`` where nibabel's
``get_slope_inter`` says a scaling applies.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from io import BytesIO
from typing import cast

import nibabel as nib
import numpy as np
from isal import isal_zlib

from app.errors import InvalidVolume, PayloadTooLarge, UnsupportedMediaType
from app.imaging.limits import DecodeLimits
from app.imaging.readers.detect import nifti_version
from app.imaging.readers.orient import canonical_view, plan, source_view
from app.imaging.types import Meta, Volume

_CHUNK = 1 << 20
_IN_PIECE = 1 << 18  # compressed bytes handed to zlib at a time
# isal's stub declares ``error`` as an instance; it is the exception class
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, cast(type, isal_zlib.error))
_HEAD = 544  # enough for either header (NIfTI-1: 348, NIfTI-2: 540)


def gunzip(data: bytes, limit: int, peek: Callable[[bytes], None] | None = None) -> bytearray:
    """Decompress gzip ``data`` (several members allowed) in ``max_length`` chunks, with ISA-L's
    inflate (``isal_zlib``: zlib's interface, the same bytes, about 1.5x faster).

    Raises PayloadTooLarge as soon as the output passes ``limit`` bytes (a gzip bomb never
    gets further than that). ``peek`` sees the first ``_HEAD`` bytes as soon as they exist,
    so a header can be judged before the rest is inflated. The input is fed a piece at a time
    (``_IN_PIECE``), so the inflater's unconsumed tail, which zlib hands back as a copy, stays
    small: feeding the whole input made every output chunk copy the rest of it (quadratic).
    """
    out = bytearray()
    inflater = isal_zlib.decompressobj(wbits=31)
    view = memoryview(data)
    position = 0
    pending: bytes = b""
    peeked = peek is None
    while True:
        if not pending and position < len(view):
            pending = bytes(view[position : position + _IN_PIECE])
            position += len(pending)
        try:
            chunk = inflater.decompress(pending, _CHUNK)
        except _INFLATE_ERRORS:
            raise InvalidVolume("gzip data is corrupt") from None
        if chunk:
            if len(out) + len(chunk) > limit:
                raise PayloadTooLarge(f"gzip data expands past the limit of {limit} bytes")
            out += chunk
        if not peeked and (len(out) >= _HEAD or inflater.eof):
            peeked = True
            assert peek is not None
            peek(bytes(out[:_HEAD]))
        pending = inflater.unconsumed_tail
        if inflater.eof:
            rest = inflater.unused_data + bytes(view[position:])
            if rest[:2] == b"\x1f\x8b":  # another gzip member follows
                inflater = isal_zlib.decompressobj(wbits=31)
                view, position, pending = memoryview(rest), 0, b""
                continue
            break  # trailing bytes that are not a gzip member are ignored, as gzip(1) does
        if not chunk and not pending and position >= len(view):
            raise InvalidVolume("gzip data is truncated")
    if not peeked and peek is not None:
        peek(bytes(out[:_HEAD]))
    return out


class _Layout:
    """What the header says about the data, validated before anything large is allocated."""

    def __init__(self, head: bytes, limits: DecodeLimits) -> None:
        version = nifti_version(head)
        if version is None:
            raise InvalidVolume("NIfTI header is corrupt")
        klass = nib.Nifti1Header if version == 1 else nib.Nifti2Header
        size = 348 if version == 1 else 540
        try:
            hdr = klass.from_fileobj(BytesIO(head[:size]), check=False)  # type: ignore[no-untyped-call]
        except Exception:  # nibabel's header errors quote values; never echo them
            raise InvalidVolume("NIfTI header is corrupt") from None
        magic = bytes(hdr["magic"])
        if magic.startswith((b"ni1", b"ni2")):
            raise InvalidVolume(
                "NIfTI header without its data (.hdr/.img pair); send a single .nii or .nii.gz"
            )
        dims = [int(d) for d in hdr["dim"]]
        ndim = dims[0]
        if not 1 <= ndim <= 7:
            raise InvalidVolume("NIfTI header declares an invalid number of dimensions")
        shape = dims[1 : ndim + 1]
        if any(d < 1 for d in shape):
            raise InvalidVolume("NIfTI header declares a zero or negative dimension")
        if ndim < 3:
            raise InvalidVolume(f"NIfTI image is {ndim}D; a 3D volume was expected")
        if ndim == 4 and shape[3] != 1:
            raise InvalidVolume(f"NIfTI holds {shape[3]} volumes; one 3D volume was expected")
        if ndim > 4:
            raise InvalidVolume(f"NIfTI image has {ndim} dimensions; a 3D volume was expected")
        self.shape = (shape[0], shape[1], shape[2])
        self.voxels = shape[0] * shape[1] * shape[2]  # Python ints: no overflow
        if self.voxels > limits.max_volume_voxels:
            raise InvalidVolume(
                f"volume has {self.voxels} voxels; the limit is {limits.max_volume_voxels}"
            )
        try:
            dtype = np.dtype(hdr.get_data_dtype())
        except Exception:
            raise InvalidVolume("NIfTI data type is not supported") from None
        if dtype.kind not in "uif" or dtype.itemsize > 8 or dtype.fields is not None:
            raise InvalidVolume("NIfTI data type is not supported")
        self.dtype = dtype
        self.offset = int(hdr.get_data_offset())
        if self.offset < size:
            raise InvalidVolume("NIfTI data offset lies inside the header")
        self.nbytes = self.voxels * dtype.itemsize
        try:
            slope, inter = hdr.get_slope_inter()
            affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
            zooms = [abs(float(z)) for z in hdr.get_zooms()[:3]]
        except Exception:
            raise InvalidVolume("NIfTI scaling or geometry fields are corrupt") from None
        self.slope = None if slope is None else float(slope)
        self.inter = 0.0 if inter is None else float(inter)
        if not all(math.isfinite(v) for v in (self.slope or 0.0, self.inter)):
            raise InvalidVolume("NIfTI scaling is not finite")
        if not np.isfinite(affine).all():
            raise InvalidVolume("NIfTI orientation is not finite")
        self.affine = affine
        ok = all(math.isfinite(z) and z > 0 for z in zooms)
        self.zooms = (zooms[0], zooms[1], zooms[2]) if ok else None
        self.version = version


def decode_nifti(data: bytes, limits: DecodeLimits) -> Volume:
    """``.nii`` or ``.nii.gz`` bytes → Volume in canonical order (see ``types.Volume``).

    ``voxels``: (S, H, W) float32 with ``scl_slope``/``scl_inter`` applied (8/16-bit integer
    data without scaling: a read-only view of those integers in the upload's bytes); axis 0
    inferior → superior, axis 1 anterior → posterior, axis 2 right → left, whatever the
    file's orientation (from its best affine: sform, else qform, else the ANALYZE default).
    ``spacing``: (slice, row, col) mm from the header zooms, permuted the same way; None when
    the zooms are unusable. Accepts 3D, or 4D with a single volume; anything else, absurd or
    over-limit dims, short data and NaN/Inf voxels raise InvalidVolume; gzip output past
    ``limits.max_decompressed_bytes`` raises PayloadTooLarge.
    """
    raw: bytes | bytearray
    if data[:2] == b"\x1f\x8b":

        def peek(head: bytes) -> None:
            if nifti_version(head) is not None:
                early = _Layout(head, limits)  # absurd / over-limit dims stop the inflation early
                limits.reserve(min(early.offset + early.nbytes, limits.max_decompressed_bytes))

        raw = gunzip(data, limits.max_decompressed_bytes, peek)
        if nifti_version(bytes(raw[:_HEAD])) is None:
            raise UnsupportedMediaType("gzip data holds no NIfTI volume")
    else:
        raw = data
    layout = _Layout(bytes(raw[:_HEAD]), limits)
    if len(raw) < layout.offset + layout.nbytes:
        raise InvalidVolume("NIfTI data is shorter than its header declares")
    try:
        canon = plan(layout.shape, layout.affine, layout.zooms)
    except ValueError:
        raise InvalidVolume("NIfTI orientation is degenerate") from None
    src = np.frombuffer(raw, dtype=layout.dtype, count=layout.voxels, offset=layout.offset)
    source = src.reshape(layout.shape, order="F")
    identity = layout.slope is None or (layout.slope == 1.0 and layout.inter == 0.0)
    if identity and layout.dtype.kind in "ui" and layout.dtype.itemsize <= 2:
        # Integers that float32 holds exactly and no scaling: the voxels are the file's own
        # bytes seen in canonical order (no float32 copy of the volume; preprocessing converts
        # a few slices at a time).
        out = canonical_view(source, canon)
        out.setflags(write=False)
    else:
        limits.reserve(layout.voxels * 4)  # the float32 volume
        out = np.empty(canon.shape, dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            np.copyto(source_view(out, canon), source, casting="unsafe")
            if layout.slope is not None:
                out *= np.float32(layout.slope)
                out += np.float32(layout.inter)
        if layout.dtype.kind == "f" or layout.slope is not None:
            for plane in out:  # slice by slice: no volume-sized boolean temporary
                if not np.isfinite(plane).all():
                    raise InvalidVolume("NIfTI holds NaN or infinite voxels")
    del src, source, raw
    meta = Meta(format="nifti", modality=None, extra={"nifti_version": layout.version})
    return Volume(voxels=out, spacing=canon.spacing, meta=meta)
