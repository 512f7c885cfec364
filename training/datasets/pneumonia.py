"""Loader for the Kermany chest X-ray layout: ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``.

The shipped ``val/`` is tiny (16 images), so train and val are pooled and re-split *by patient*
(the patient is encoded in the file name), with a fixed seed; ``test/`` stays the test split.
Every file goes through the service's own code: ``app.imaging.readers.decode_image`` then
``app.imaging.preprocess.preprocess_image`` with the model card's ``Preprocessing``, so training
sees exactly the tensors the service will compute.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.imaging.card import Preprocessing
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_image
from app.imaging.readers import decode_image
from app.imaging.types import Image2D
from training.core.progress import progress
from training.core.splits import split_by_group
from training.datasets import DataSplits, class_weights

CLASSES = ("NORMAL", "PNEUMONIA")  # label 0, label 1
EXTENSIONS = (".jpeg", ".jpg", ".png")

_PERSON = re.compile(r"^(person\d+)_", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def patient_id(filename: str, label: str) -> str:
    """The patient a file belongs to, from its name; the class prefixes it so the two classes'
    numbering schemes never collide. Unknown patterns fall back to the file stem (one patient per
    image), which is the conservative choice for leakage only if names are unique per patient."""
    stem = Path(filename).stem
    for pattern in (_PERSON, _NORMAL):
        m = pattern.match(stem)
        if m:
            return f"{label}/{m.group(1).upper()}"
    return f"{label}/{stem.upper()}"


def decode_file(path: Path, limits: DecodeLimits | None = None) -> Image2D:
    """Bytes of one image file → Image2D through the service's reader."""
    return decode_image([path.read_bytes()], limits or DecodeLimits())


@dataclass
class Split:
    """``x``: (N, H, W, C) float32 in [0, 1]; ``y``: (N,) int64 (1 = PNEUMONIA);
    ``patients``: (N,) str; ``files``: source paths."""

    x: np.ndarray
    y: np.ndarray
    patients: np.ndarray
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def list_files(root: Path, split: str) -> list[tuple[Path, int, str]]:
    """(path, label, patient) for every image of one shipped split, sorted for determinism."""
    base = _layout_root(root) / split
    out = []
    for label_idx, label in enumerate(CLASSES):
        folder = base / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
                out.append((path, label_idx, patient_id(path.name, label)))
    return out


def _layout_root(root: Path) -> Path:
    """Accept either the folder holding ``chest_xray/`` or ``chest_xray/`` itself."""
    root = Path(root)
    return root / "chest_xray" if (root / "chest_xray").is_dir() else root


def load_arrays(
    items: Sequence[tuple[Path, int, str]], prep: Preprocessing, limits: DecodeLimits | None = None
) -> Split:
    """Decode and preprocess ``items`` into one Split (NHWC)."""
    h, w = prep.size
    x = np.empty((len(items), h, w, prep.channels), dtype=np.float32)
    for i, (path, _, _) in enumerate(progress(items, "load images", unit="image")):
        x[i] = preprocess_image(decode_file(path, limits), prep, "NHWC")[0]
    y = np.array([label for _, label, _ in items], dtype=np.int64)
    patients = np.array([p for _, _, p in items], dtype=object)
    return Split(x=x, y=y, patients=patients, files=[p for p, _, _ in items])


def load(
    root: Path,
    prep: Preprocessing,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    test_root: Path | None = None,
    limits: DecodeLimits | None = None,
) -> DataSplits[Split]:
    """The three splits as arrays, train+val pooled and re-split by patient.

    ``test_root`` takes ``test/`` from another folder (e.g. a synthetic set made with another
    seed); by default it is ``root``'s own ``test/``.
    """
    pooled = list_files(root, "train") + list_files(root, "val")
    if not pooled:
        raise FileNotFoundError(f"no images under {_layout_root(root)}/train")
    # By patient, stratified by class (a patient has one class here), so both classes appear
    # in validation whatever the imbalance.
    va_idx, tr_idx = split_by_group(
        [p for _, _, p in pooled], [val_fraction], seed, strata=[lab for _, lab, _ in pooled]
    )
    test_items = list_files(test_root if test_root is not None else root, "test")
    if not test_items:
        raise FileNotFoundError("no images in the test split")
    train = load_arrays([pooled[i] for i in tr_idx], prep, limits)
    val = load_arrays([pooled[i] for i in va_idx], prep, limits)
    test = load_arrays(test_items, prep, limits)
    return DataSplits(train=train, val=val, test=test, class_weight=class_weights(train.y))


def load_test(root: Path, prep: Preprocessing, limits: DecodeLimits | None = None) -> Split:
    """Only ``test/`` (for re-checking an artifact's figures)."""
    items = list_files(root, "test")
    if not items:
        raise FileNotFoundError("no images in the test split")
    return load_arrays(items, prep, limits)
