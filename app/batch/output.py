"""The output folder: Parquet part files that are complete or absent, and what is done.

``OUT/part-<run>-<n>.parquet`` is written as ``OUT/.part-<run>-<n>.parquet.tmp`` and renamed
when complete (a rename within one folder is atomic), so a killed run leaves only whole parts
and ``pyarrow.parquet.ParquetDataset(OUT)`` reads it at any time (it skips names starting with
``_`` or ``.``). ``OUT/_medserve_batch.json`` records the model (name, version, sha256) and the
source; a run with ``--resume`` refuses an output made by another model, skips the ids its
parts hold, and removes leftover temporaries.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "_medserve_batch.json"

_WARNING = pa.struct([("code", pa.string()), ("detail", pa.string())])

_COMMON: list[tuple[str, pa.DataType]] = [
    ("id", pa.string()),
    ("path", pa.string()),
    ("study_instance_uid", pa.string()),
    ("series_instance_uid", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("model_sha256", pa.string()),
    ("input_format", pa.string()),
    ("input_shape", pa.list_(pa.int32())),
    ("input_spacing_mm", pa.list_(pa.float64())),
    ("input_sha256", pa.string()),
    ("instances", pa.int32()),
    ("probability", pa.float64()),
    ("uncalibrated_probability", pa.float64()),
    ("label", pa.string()),
    ("positive", pa.bool_()),
    ("operating_point", pa.string()),
    ("threshold", pa.float64()),
    ("warnings", pa.list_(_WARNING)),
    ("ood_score", pa.float64()),
    ("ood_in_distribution", pa.bool_()),
]
_MASK: list[tuple[str, pa.DataType]] = [
    ("mask_height", pa.int32()),
    ("mask_width", pa.int32()),
    ("mask_area_px", pa.int64()),
    ("mask_area_mm2", pa.float64()),
    ("mask_bbox", pa.list_(pa.int32())),
    ("mask_centroid", pa.list_(pa.float64())),
    ("mask_centroid_mm", pa.list_(pa.float64())),
    ("mask_rle_counts", pa.list_(pa.int64())),
]
_TAIL: list[tuple[str, pa.DataType]] = [
    ("stored_sop_instance_uid", pa.string()),
    ("error_code", pa.string()),
    ("error_detail", pa.string()),
    ("timing_decode_ms", pa.float64()),
    ("timing_preprocess_ms", pa.float64()),
    ("timing_inference_ms", pa.float64()),
    ("timing_postprocess_ms", pa.float64()),
]


def schema(segmenter: bool) -> pa.Schema:
    """The columns of every part: mask columns (RLE counts are COCO uncompressed, column-major,
    starting with background, of ``mask_height`` × ``mask_width``) for segmenters only."""
    return pa.schema(_COMMON + (_MASK if segmenter else []) + _TAIL)


def to_table(rows: list[dict[str, Any]], segmenter: bool) -> pa.Table:
    """Rows (dicts; missing keys are nulls) → a table with exactly :func:`schema`'s columns."""
    s = schema(segmenter)
    return pa.Table.from_pylist([{n: r.get(n) for n in s.names} for r in rows], schema=s)


def _parts(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith(("_", "."))
    )


class Output:
    """One output folder, opened for a run."""

    def __init__(self, folder: Path, manifest: dict[str, Any], resume: bool) -> None:
        self.folder = folder
        self.run = uuid.uuid4().hex[:8]
        self.count = 0
        if folder.exists() and not folder.is_dir():
            raise ValueError("the output exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        existing = _parts(folder)
        recorded = folder / MANIFEST
        if existing and not resume:
            raise ValueError("the output folder holds results: pass --resume or another folder")
        if recorded.is_file():
            before = json.loads(recorded.read_text())
            if before.get("model") != manifest["model"]:
                raise ValueError("the output folder holds another model's results")
        for stale in folder.glob(".part-*.tmp"):
            stale.unlink()
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, recorded)

    def done_ids(self) -> set[str]:
        """The ids of every row in the complete parts."""
        done: set[str] = set()
        for part in _parts(self.folder):
            done.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        return done

    def write(self, table: pa.Table) -> Path:
        """One part: written under a temporary name, flushed, renamed into place."""
        name = f"part-{self.run}-{self.count:05d}.parquet"
        tmp = self.folder / f".{name}.tmp"
        with tmp.open("wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        final = self.folder / name
        os.replace(tmp, final)
        self.count += 1
        return final
