"""What a batch runs over, as records.

- a folder: every file under it, recursively (hidden files and folders too: every file is a
  row, zero-byte and corrupt ones included); ``id`` is the path relative to the folder;
- a glob (``data/**/*.dcm``): the files it matches; ``id`` relative to the glob's fixed prefix;
- a manifest CSV (``*.csv``): a header with ``path`` and optionally ``id``; relative paths are
  relative to the CSV's folder; ``id`` defaults to ``path`` as written;
- ``pacs:`` + a QIDO-RS study-level query, e.g.
  ``pacs:ModalitiesInStudy=CT&StudyDate=20240101-20241231`` on ``MEDSERVE_DICOMWEB_URL``:
  each matching study, then each of its series that the model's card routes to it.
"""

from __future__ import annotations

import csv
import glob
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from app.imaging.card import ModelCard
from app.pacs.dicomweb import Pacs, SeriesInfo

PACS_PREFIX = "pacs:"
_STUDY_UID = "0020000D"
QIDO_PAGE = 500


class SourceError(ValueError):
    """The source cannot be listed (message safe to print: no file content)."""


def is_pacs(source: str) -> bool:
    return source.startswith(PACS_PREFIX)


def _glob_root(pattern: str) -> Path:
    fixed = []
    for piece in Path(pattern).parts:
        if glob.has_magic(piece):
            break
        fixed.append(piece)
    return Path(*fixed) if fixed else Path(".")


def file_records(source: str) -> list[dict[str, Any]]:
    """Records ``{"id", "path"}`` (absolute paths) for a folder, glob or manifest CSV; ids must
    be unique."""
    path = Path(source)
    if path.is_dir():
        root = path.resolve()
        files = sorted(
            Path(d) / f for d, _, names in os.walk(root, followlinks=False) for f in names
        )
        records = [{"id": f.relative_to(root).as_posix(), "path": str(f)} for f in files]
    elif path.is_file() and path.suffix.lower() == ".csv":
        records = _manifest(path)
    elif glob.has_magic(source):
        root = _glob_root(source).resolve()
        files = sorted(Path(p).resolve() for p in glob.glob(source, recursive=True))
        records = [
            {"id": f.relative_to(root).as_posix(), "path": str(f)} for f in files if f.is_file()
        ]
    else:
        raise SourceError("the input is no folder, glob, manifest CSV or pacs: query")
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        raise SourceError("the input has the same id twice")
    return records


def _manifest(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise SourceError("the manifest CSV needs a header with a `path` column")
        rows = list(reader)
    base = path.resolve().parent
    records = []
    for row in rows:
        written = (row.get("path") or "").strip()
        if not written:
            raise SourceError("the manifest CSV has a row without a path")
        full = (base / written).resolve()
        records.append({"id": (row.get("id") or "").strip() or written, "path": str(full)})
    return records


def qido_filters(source: str) -> dict[str, str]:
    """``pacs:Key=Value&...`` → QIDO-RS search filters (study level)."""
    query = source[len(PACS_PREFIX) :].lstrip("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=False, strict_parsing=bool(query))
    except ValueError:
        raise SourceError("the pacs: query is not key=value&key=value") from None
    return dict(pairs)


def studies(pacs: Pacs, filters: dict[str, str]) -> list[str]:
    """QIDO-RS: the Study Instance UIDs that match, page by page."""
    out: list[str] = []
    offset = 0
    while True:
        found = pacs._call(
            "QIDO-RS",
            pacs.client.search_for_studies,
            search_filters=filters,
            fields=["StudyInstanceUID"],
            limit=QIDO_PAGE,
            offset=offset,
        )
        page = [str(v) for item in found or [] if (v := _value(item, _STUDY_UID))]
        out.extend(uid for uid in page if uid not in out)
        if len(found or []) < QIDO_PAGE:
            return out
        offset += QIDO_PAGE


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def routed_series(pacs: Pacs, card: ModelCard, study: str) -> list[SeriesInfo]:
    """The study's series that the card's routing takes (as the jobs route them)."""
    routing = card.routing
    if routing is None:
        return []
    return [s for s in pacs.series(study) if routing.accepts(s.modality, s.instances)]
