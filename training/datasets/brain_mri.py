"""Loader for the ``kaggle_3m`` layout (Buda et al., LGG FLAIR segmentation), split by patient.

``ROOT/kaggle_3m/<patient>/<patient>_<n>.tif`` (RGB: pre-contrast, FLAIR, post-contrast) with
``<patient>_<n>_mask.tif`` (0/255) beside it; ``ROOT`` may also be ``kaggle_3m`` itself, and
``data.csv`` or any other file is ignored. Every image goes through the service's own code
(``app.imaging.readers.decode_image`` → ``app.imaging.preprocess.preprocess_image`` with the
card's ``Preprocessing``, whose ``channel_index`` picks FLAIR), so training sees the tensors the
service computes. Masks are read at their own resolution (the service's mask is compared with
them there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from app.imaging.card import Preprocessing
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_image
from app.imaging.readers import decode_image
from training.core.progress import progress
from training.core.seg_train import SegSplit, SegSplits
from training.core.splits import split_by_group

LAYOUT = "kaggle_3m"
_SLICE = re.compile(r"^(?P<patient>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)


def layout_root(root: Path) -> Path:
    """Accept the folder holding ``kaggle_3m/`` or ``kaggle_3m/`` itself."""
    root = Path(root)
    return root / LAYOUT if (root / LAYOUT).is_dir() else root


def list_slices(root: Path) -> list[tuple[Path, Path, str, int]]:
    """(image, mask, patient, slice number) for every slice that has its mask, sorted by patient
    then slice number. The patient is the folder name (the file prefix in the real set)."""
    base = layout_root(root)
    out: list[tuple[Path, Path, str, int]] = []
    if not base.is_dir():
        return out
    for folder in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in folder.iterdir():
            m = _SLICE.match(path.name)
            if not m or path.stem.endswith("_mask"):
                continue
            mask = path.with_name(f"{path.stem}_mask{path.suffix}")
            if mask.is_file():
                out.append((path, mask, folder.name, int(m.group("n"))))
    out.sort(key=lambda t: (t[2], t[3]))
    return out


def read_mask(path: Path) -> np.ndarray:
    """A 0/255 mask TIFF → (H, W) bool (any channel above half scale)."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    return np.asarray(arr > (np.iinfo(arr.dtype).max // 2 if arr.dtype.kind == "u" else 0.5))


def load_split(
    items: Sequence[tuple[Path, Path, str, int]],
    prep: Preprocessing,
    limits: DecodeLimits | None = None,
) -> SegSplit:
    """Decode and preprocess ``items`` into one ``SegSplit`` (x NHWC at the card's size)."""
    h, w = prep.size
    x = np.empty((len(items), h, w, prep.channels), dtype=np.float32)
    masks = []
    limits = limits or DecodeLimits()
    for i, (image, mask, _, _) in enumerate(progress(items, "load slices", unit="slice")):
        x[i] = preprocess_image(decode_image([image.read_bytes()], limits), prep, "NHWC")[0]
        masks.append(read_mask(mask))
    groups = np.array([p for _, _, p, _ in items], dtype=object)
    return SegSplit(x=x, masks=masks, groups=groups, files=[i for i, _, _, _ in items])


def load(
    root: Path,
    prep: Preprocessing,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.15,
    seed: int = 0,
    test_root: Path | None = None,
    limits: DecodeLimits | None = None,
) -> SegSplits:
    """Train / validation / test by patient.

    Without ``test_root`` the patients of ``root`` are cut into test (``test_fraction``),
    validation (``val_fraction``) and train; with it, all of ``test_root`` is the test split
    (e.g. a synthetic set made with another seed) and ``root`` is cut into validation and train.
    """
    items = list_slices(root)
    if not items:
        raise FileNotFoundError(f"no <patient>_<n>.tif with its _mask under {layout_root(root)}")
    patients = [p for _, _, p, _ in items]
    if test_root is not None:
        test_items = list_slices(test_root)
        if not test_items:
            raise FileNotFoundError(f"no slices under {layout_root(test_root)}")
        val_i, train_i = split_by_group(patients, [val_fraction], seed)
    else:
        test_i, val_i, train_i = split_by_group(patients, [test_fraction, val_fraction], seed)
        test_items = [items[i] for i in test_i]
    return SegSplits(
        train=load_split([items[i] for i in train_i], prep, limits),
        val=load_split([items[i] for i in val_i], prep, limits),
        test=load_split(test_items, prep, limits),
    )


def load_all(root: Path, prep: Preprocessing, limits: DecodeLimits | None = None) -> SegSplit:
    """Every slice of ``root`` as one split (for re-checking an artifact)."""
    items = list_slices(root)
    if not items:
        raise FileNotFoundError(f"no slices under {layout_root(root)}")
    return load_split(items, prep, limits)
