"""Format detection from magic bytes only (never from file names or declared types)."""

from __future__ import annotations

import struct
from typing import Literal

Kind = Literal["png", "jpeg", "tiff", "dicom", "nifti", "gzip", "zip"]

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_GZIP = b"\x1f\x8b"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")  # local file header, empty archive
_NIFTI1_MAGIC = (b"n+1\x00", b"ni1\x00")
_NIFTI2_MAGIC = (b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n")

# Explicit VR codes a first element of group 0002/0008 can plausibly carry.
_VRS = frozenset(
    {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"OB", b"SH", b"SQ", b"TM"}
    | {b"UI", b"UL", b"US", b"UN", b"ST", b"LT", b"PN", b"UT", b"OW", b"UC", b"UR", b"FD"}
)


def _dicom_without_preamble(head: bytes) -> bool:
    """A data set that starts at byte 0 with a plausible (0002,xxxx) or (0008,xxxx) element.

    Little endian (implicit or explicit VR), or explicit VR big endian for group 0008.
    """
    if len(head) < 8:
        return False
    group_le, elem_le = struct.unpack("<HH", head[:4])
    if group_le in (0x0002, 0x0008) and elem_le <= 0x1200:
        if head[4:6] in _VRS:
            return True
        length = int.from_bytes(head[4:8], "little")  # implicit VR: a 32-bit length
        return length < 0x10000 or length == 0xFFFFFFFF
    group_be, elem_be = struct.unpack(">HH", head[:4])
    return group_be == 0x0008 and elem_be <= 0x1200 and head[4:6] in _VRS


def nifti_version(head: bytes) -> int | None:
    """1 or 2 when ``head`` starts with a single-file NIfTI-1/NIfTI-2 header (either byte order),
    else None. Header-only ``ni1``/``ni2`` (a .hdr/.img pair) also answer, the reader rejects them.
    """
    if len(head) >= 348:
        for fmt in ("<i", ">i"):
            (size,) = struct.unpack(fmt, head[:4])
            if size == 348 and head[344:348] in _NIFTI1_MAGIC:
                return 1
            if size == 540 and len(head) >= 540 and head[4:12] in _NIFTI2_MAGIC:
                return 2
    return None


def sniff(data: bytes) -> Kind | None:
    """The container format of ``data`` from its magic bytes, or None when unrecognised.

    Returns one of ``"png" | "jpeg" | "tiff" | "dicom" | "nifti" | "gzip" | "zip"``. DICOM is
    recognised with the 128-byte preamble + ``DICM`` and without it (a data set starting with a
    group 0002 or 0008 element). ``"gzip"`` says nothing about what is inside (a ``.nii.gz``
    is only known to be NIfTI after decompression).
    """
    head = bytes(data[:560])
    # First: a DICOM preamble may itself hold a TIFF header (dual-format files).
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    if head.startswith(_TIFF):
        return "tiff"
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZIP):
        return "zip"
    if nifti_version(head) is not None:
        return "nifti"
    if _dicom_without_preamble(head):
        return "dicom"
    return None
