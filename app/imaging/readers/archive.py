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
- Only stored and deflated entries are read (the methods whose inflation Python bounds
  chunk by chunk); other methods raise InvalidDicom.
"""

from __future__ import annotations

import zipfile
import zlib
from io import BytesIO

from app.errors import InvalidDicom, PayloadTooLarge
from app.imaging.limits import DecodeLimits
from app.imaging.readers.detect import sniff

MAX_RATIO = 200
RATIO_FLOOR = 1 << 20  # entries smaller than this are never called bombs
_CHUNK = 1 << 20
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def _skipped(name: str) -> bool:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith("._") or base == ".DS_Store"


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """The entry's bytes; PayloadTooLarge past ``budget`` bytes or the ratio cap."""
    chunks: list[bytes] = []
    size = 0
    with zf.open(info) as stream:
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > budget:
                raise PayloadTooLarge("zip contents expand past the decompressed-size limit")
            if size > RATIO_FLOOR and size > MAX_RATIO * max(info.compress_size, 1):
                raise PayloadTooLarge(f"a zip entry expands more than {MAX_RATIO}:1")
            chunks.append(chunk)
    return b"".join(chunks)


def dicom_entries(data: bytes, limits: DecodeLimits) -> list[bytes]:
    """The bytes of every DICOM entry of the zip ``data``, in archive order."""
    try:
        archive = zipfile.ZipFile(BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidDicom("zip archive is corrupt") from None
    found: list[bytes] = []
    total = 0
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
                entry = _read_entry(archive, info, limits.max_decompressed_bytes - total)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, ValueError):
                raise InvalidDicom("zip archive is corrupt") from None
            total += len(entry)
            if sniff(entry) == "dicom":
                found.append(entry)
    return found
