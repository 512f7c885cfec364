"""Zip archives of DICOM slices, read entirely in memory with caps enforced while reading.

- Entry names are never used as paths (nothing is ever written to disk): an entry called
  ``../evil.dcm`` or ``/etc/x`` is just bytes, judged by its content like any other.
- Skipped unread: directories, macOS resource forks (``__MACOSX/``, ``._*``), ``.DS_Store``
  and encrypted entries. Every other entry is read and kept only if its bytes are DICOM;
  text files, images, nested archives are ignored. (DICOMDIR files are DICOM without pixel
  data; the series reader ignores those.)
- Caps, measured on the bytes actually inflated, never on sizes the archive declares:
  at most ``max_archive_entries`` entries, at most ``max_decompressed_bytes`` in total, and
  no entry past 1 MiB may expand more than 200:1 over its compressed size. Past a cap:
  PayloadTooLarge (413).
- Only stored and deflated entries are read; other methods raise InvalidDicom. ``zipfile``
  reads the central directory; an entry's bytes are taken straight from the upload (its local
  header located, nothing copied) and inflated with ISA-L (``isal_zlib``, raw deflate: the
  same bytes as zlib, about 2.6x faster on CT slices), in one call whose output is capped at
  what the entry may expand to; its CRC-32 is checked.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from io import BytesIO
from typing import cast

from isal import isal_zlib

from app.errors import InvalidDicom, PayloadTooLarge
from app.imaging.limits import DecodeLimits
from app.imaging.readers.detect import sniff

MAX_RATIO = 200
RATIO_FLOOR = 1 << 20  # entries smaller than this are never called bombs
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _skipped(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_LOCAL_SIGNATURE = b"PK\x03\x04"
# isal's stub declares ``error`` as an instance; it is the exception class
_INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, cast(type, isal_zlib.error))


class _Corrupt(Exception):
    """An entry whose bytes do not match the archive's directory (read as a corrupt zip)."""


def _entry_data(data: memoryview, info: zipfile.ZipInfo) -> memoryview:
    """The entry's stored (compressed) bytes: after its local header, ``compress_size`` long."""
    start = info.header_offset
    if start < 0 or start + _LOCAL_HEADER.size > len(data):
        raise _Corrupt
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(data, start)
    if signature != _LOCAL_SIGNATURE:
        raise _Corrupt
    begin = start + _LOCAL_HEADER.size + name_len + extra_len
    end = begin + info.compress_size
    if end > len(data):
        raise _Corrupt
    return data[begin:end]


def _read_entry(data: memoryview, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The entry's bytes; PayloadTooLarge past ``budget`` bytes or the ratio cap (on the bytes
    inflated, never on the size the archive declares)."""
    stored = _entry_data(data, info)
    if info.compress_type == zipfile.ZIP_STORED:
        if len(stored) > budget:
            raise PayloadTooLarge("zip contents expand past the decompressed-size limit")
        entry = bytes(stored)
    else:
        ratio_cap = max(RATIO_FLOOR, MAX_RATIO * max(info.compress_size, 1))
        cap = min(budget, ratio_cap)
        inflater = isal_zlib.decompressobj(wbits=-15)
        try:
            entry = inflater.decompress(stored, cap + 1)  # at most one byte past the cap
        except _INFLATE_ERRORS:
            raise _Corrupt from None
        if len(entry) > cap:
            if cap == budget:
                raise PayloadTooLarge("zip contents expand past the decompressed-size limit")
            raise PayloadTooLarge(f"a zip entry expands more than {MAX_RATIO}:1")
        if not inflater.eof:
            raise _Corrupt  # truncated deflate stream
    if zlib.crc32(entry) != info.CRC or len(entry) != info.file_size:
        raise _Corrupt
    return entry


def dicom_entries(data: bytes, limits: DecodeLimits) -> list[bytes]:
    """The bytes of every DICOM entry of the zip ``data``, in archive order."""
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidDicom("zip archive is corrupt") from None
    found: list[bytes] = []
    total = 0
    view = memoryview(data)
    with archive:
        entries = archive.infolist()
        if len(entries) > limits.max_archive_entries:
            raise PayloadTooLarge(
                f"zip holds {len(entries)} entries; the limit is {limits.max_archive_entries}"
            )
        wanted = [
            i for i in entries if not (i.is_dir() or _skipped(i.filename) or i.flag_bits & 0x1)
        ]
        # what the entries inflate to (the central directory says; the cap stops liars)
        limits.reserve(min(sum(i.file_size for i in wanted), limits.max_decompressed_bytes))
        for info in wanted:
            if info.compress_type not in _METHODS:
                raise InvalidDicom("zip entry uses an unsupported compression method")
            try:
                entry = _read_entry(view, info, limits.max_decompressed_bytes - total)
            except (_Corrupt, struct.error):
                raise InvalidDicom("zip archive is corrupt") from None
            total += len(entry)
            if sniff(entry) == "dicom":
                found.append(entry)
    return found
