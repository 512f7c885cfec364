"""Loader for the MosMedData layout: ``MosMedData/studies/CT-{0..4}/study_NNNN.nii.gz``.

Two groups of severity categories become the two classes (default, as the keras.io reference:
CT-0 negative, CT-2 + CT-3 positive; CT-1 and CT-4 left out). MosMedData holds one study per
patient, so the study number is the patient and a split by study is a split by patient; the
split is stratified by category with a fixed seed.

Every file goes through the service's own code: ``app.imaging.readers.decode_volume`` (gunzip,
header checks, canonical orientation) then ``app.imaging.preprocess.preprocess_volume`` with
the model card's ``Preprocessing``, so training sees exactly the tensors the service computes.
Decoding a few hundred volumes is slow, so the preprocessed arrays can be cached (``cache_dir``,
e.g. in the run folder): the cache key covers the files (name, size, mtime) and the
preprocessing, so a change to either reloads.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.imaging.card import Preprocessing
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_volume
from app.imaging.readers import decode_volume
from app.imaging.types import Volume
from training.core.progress import progress
from training.core.splits import split_by_group
from training.datasets import DataSplits, class_weights

log = logging.getLogger("medserve.training")

CATEGORIES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")
DEFAULT_NEGATIVE = ("CT-0",)
DEFAULT_POSITIVE = ("CT-2", "CT-3")
LAYOUT = "NDHWC"
_STUDY = re.compile(r"^study_(\d+)\.nii(\.gz)?$", re.IGNORECASE)


@dataclass(frozen=True)
class StudyFile:
    path: Path
    category: str
    label: int  # 0 negative, 1 positive
    patient: str  # the study number: one study per patient in MosMedData


@dataclass
class Split:
    """``x``: (N, D, H, W, 1) float32 in [0, 1] (NDHWC, the card's ``size`` = [D, H, W]);
    ``y``: (N,) int64 (1 = positive); ``patients``, ``categories``: (N,) str;
    ``spacing``: (N, 3) float64 (slice, row, col) mm as decoded (NaN where unknown);
    ``slices``: (N,) int64 slices per study as decoded."""

    x: np.ndarray
    y: np.ndarray
    patients: np.ndarray
    categories: np.ndarray
    spacing: np.ndarray
    slices: np.ndarray
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def layout_root(root: Path) -> Path:
    """Accept the folder holding ``MosMedData/``, ``MosMedData/`` itself or its ``studies/``."""
    root = Path(root)
    for candidate in (root / "MosMedData" / "studies", root / "studies", root):
        if any((candidate / c).is_dir() for c in CATEGORIES):
            return candidate
    raise FileNotFoundError(f"no CT-0 … CT-4 folders under {root}")


def list_studies(
    root: Path,
    negative: Sequence[str] = DEFAULT_NEGATIVE,
    positive: Sequence[str] = DEFAULT_POSITIVE,
) -> list[StudyFile]:
    """Every study of the chosen categories, sorted by category then study number."""
    negative, positive = tuple(negative), tuple(positive)
    bad = (set(negative) | set(positive)) - set(CATEGORIES)
    if bad:
        raise ValueError(f"unknown categories {sorted(bad)}; choose from {CATEGORIES}")
    if set(negative) & set(positive):
        raise ValueError("a category cannot be both negative and positive")
    base = layout_root(root)
    out = []
    for category in (*negative, *positive):
        folder = base / category
        if not folder.is_dir():
            continue
        label = 1 if category in positive else 0
        found = []
        for path in folder.iterdir():
            m = _STUDY.match(path.name)
            if m:
                found.append((int(m.group(1)), path))
        for number, path in sorted(found):
            out.append(StudyFile(path, category, label, f"study_{number:04d}"))
    return out


def decode_study(path: Path, limits: DecodeLimits | None = None) -> Volume:
    """One study file → Volume (S, H, W) float32 HU, canonical order, via the service reader."""
    return decode_volume([Path(path).read_bytes()], limits or DecodeLimits())


def _cache_key(studies: Sequence[StudyFile], prep: Preprocessing) -> str:
    h = hashlib.sha256(prep.model_dump_json().encode())
    for s in studies:
        st = s.path.stat()
        h.update(f"{s.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{s.label}\n".encode())
    return h.hexdigest()[:20]


def load_arrays(
    studies: Sequence[StudyFile],
    prep: Preprocessing,
    *,
    limits: DecodeLimits | None = None,
    cache_dir: Path | None = None,
) -> Split:
    """Decode and preprocess ``studies`` into one Split (NDHWC), through a cache if given."""
    if prep.kind != "volume3d":
        raise ValueError("covid_ct needs a volume3d preprocessing")
    cache = None
    if cache_dir is not None and studies:
        cache = Path(cache_dir) / f"covid_ct-{_cache_key(studies, prep)}.npz"
        if cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                return Split(
                    x=z["x"],
                    y=z["y"],
                    patients=z["patients"].astype(object),
                    categories=z["categories"].astype(object),
                    spacing=z["spacing"],
                    slices=z["slices"],
                    files=[s.path for s in studies],
                )
    d, h, w = prep.size
    x = np.empty((len(studies), d, h, w, prep.channels), dtype=np.float32)
    spacing = np.full((len(studies), 3), np.nan)
    slices = np.zeros(len(studies), dtype=np.int64)
    for i, study in enumerate(progress(studies, "load studies", unit="study")):
        volume = decode_study(study.path, limits)
        x[i] = preprocess_volume(volume, prep, LAYOUT)[0]
        if volume.spacing is not None:
            spacing[i] = volume.spacing
        slices[i] = volume.shape[0]
        del volume
    split = Split(
        x=x,
        y=np.array([s.label for s in studies], dtype=np.int64),
        patients=np.array([s.patient for s in studies], dtype=object),
        categories=np.array([s.category for s in studies], dtype=object),
        spacing=spacing,
        slices=slices,
        files=[s.path for s in studies],
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x=split.x,
            y=split.y,
            patients=split.patients.astype(str),
            categories=split.categories.astype(str),
            spacing=split.spacing,
            slices=split.slices,
        )
        tmp.replace(cache)
        log.info("cached %d preprocessed studies in %s", len(split), cache)
    return split


def load(
    root: Path,
    prep: Preprocessing,
    *,
    negative: Sequence[str] = DEFAULT_NEGATIVE,
    positive: Sequence[str] = DEFAULT_POSITIVE,
    val_fraction: float = 0.2,
    test_fraction: float = 0.15,
    seed: int = 0,
    test_root: Path | None = None,
    limits: DecodeLimits | None = None,
    cache_dir: Path | None = None,
) -> DataSplits[Split]:
    """Train / val / test splits by study (= patient), stratified by category.

    With ``test_root`` (e.g. a synthetic set made with another seed) every chosen study there is
    the test split and ``root`` is split into train and val only; otherwise ``root`` is split
    three ways (``test_fraction``).
    """
    studies = list_studies(root, negative, positive)
    if not studies:
        raise FileNotFoundError(f"no studies of {(*negative, *positive)} under {root}")
    if len({s.label for s in studies}) < 2:
        raise ValueError("the chosen categories hold only one class")
    # By study (= patient), stratified by category so every split has the same severity mix.
    ids, cats = [s.patient for s in studies], [s.category for s in studies]
    if test_root is not None:
        val_idx, train_idx = split_by_group(ids, [val_fraction], seed, strata=cats)
        test_studies = list_studies(test_root, negative, positive)
        if not test_studies:
            raise FileNotFoundError(f"no studies of {(*negative, *positive)} under {test_root}")
    else:
        val_idx, test_idx, train_idx = split_by_group(
            ids, [val_fraction, test_fraction], seed, strata=cats
        )
        test_studies = [studies[i] for i in test_idx]
    train = load_arrays([studies[i] for i in train_idx], prep, limits=limits, cache_dir=cache_dir)
    val = load_arrays([studies[i] for i in val_idx], prep, limits=limits, cache_dir=cache_dir)
    test = load_arrays(test_studies, prep, limits=limits, cache_dir=cache_dir)
    return DataSplits(train=train, val=val, test=test, class_weight=class_weights(train.y))


def load_test(
    root: Path,
    prep: Preprocessing,
    *,
    negative: Sequence[str] = DEFAULT_NEGATIVE,
    positive: Sequence[str] = DEFAULT_POSITIVE,
    limits: DecodeLimits | None = None,
) -> Split:
    """Every chosen study of ``root`` (to re-check an artifact on a held-out folder)."""
    studies = list_studies(root, negative, positive)
    if not studies:
        raise FileNotFoundError(f"no studies of {(*negative, *positive)} under {root}")
    return load_arrays(studies, prep, limits=limits)


def category_counts(splits: DataSplits[Split]) -> dict[str, dict[str, int]]:
    """Studies per category in each split (for the card)."""
    out: dict[str, dict[str, int]] = {}
    for name in ("train", "val", "test"):
        part: Split = getattr(splits, name)
        cats, n = np.unique(part.categories.astype(str), return_counts=True)
        out[name] = {str(c): int(k) for c, k in zip(cats, n, strict=True)}
    return out
