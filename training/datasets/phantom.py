"""Loader for the X-ray phantom layout: ``phantom/images/<id>.tif|png`` + ``phantom/labels/<id>``.

Images are 16-bit projections (dense = bright), labels the same size with the tumour as 65535
and everything else 0. Every image goes through the service's own code
(``app.imaging.readers.decode_image`` then ``app.imaging.preprocess.preprocess_image`` with the
card's ``Preprocessing``); labels are read with the same reader and kept at full resolution,
because the service's mask (and so its centroid) is computed at the input's resolution.

Splits keep each *sequence* (consecutive frames of one set-up) on one side: neighbouring frames
are nearly identical, so a frame-level split would leak. The sequence comes from the id
(``seq003_frame012`` → ``seq003``; any ``<sequence>[_-][frame|f]<number>``); ids without that
pattern are sorted and cut into blocks of ``block`` consecutive ids, the conservative guess for
a folder of numbered frames.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.imaging.card import Preprocessing
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_image
from app.imaging.readers import decode_image
from app.imaging.types import Image2D
from training.core.progress import progress
from training.core.seg_train import SegSplit, SegSplits
from training.core.splits import split_by_group

ROOT, IMAGES, LABELS = "phantom", "images", "labels"
EXTENSIONS = (".tif", ".tiff", ".png")
LABEL_HALF = 32768  # label pixels >= this are tumour (labels hold 0 / 65535)
_ID = re.compile(r"^(?P<seq>.+?)[_-](?:frame|f)?(?P<frame>\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Item:
    """One frame: its id, image and label paths, sequence and frame number."""

    id: str
    image: Path
    label: Path
    sequence: str
    frame: int


def layout_root(root: Path) -> Path:
    """Accept either the folder holding ``phantom/`` or ``phantom/`` itself."""
    root = Path(root)
    return root / ROOT if (root / ROOT / IMAGES).is_dir() else root


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        p.stem: p
        for p in sorted(folder.iterdir())
        if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
    }


def list_items(root: Path, *, block: int = 10) -> list[Item]:
    """Every (image, label) pair under ``root``, sorted by sequence then frame.

    Raises ``FileNotFoundError`` when there are no images and ``ValueError`` when an image has
    no label of the same stem (a silently dropped frame would bias the figures).
    """
    base = layout_root(root)
    images, labels = _by_stem(base / IMAGES), _by_stem(base / LABELS)
    if not images:
        raise FileNotFoundError(f"no images under {base / IMAGES}")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise ValueError(f"{len(missing)} image(s) without a label, e.g. {missing[0]!r}")
    stems = sorted(images)
    parsed = {s: _ID.match(s) for s in stems}
    items = []
    for k, stem in enumerate(stems):
        m = parsed[stem]
        if m is not None:
            seq, frame = m.group("seq"), int(m.group("frame"))
        else:
            seq, frame = f"block{k // block:04d}", k % block
        items.append(Item(stem, images[stem], labels[stem], seq, frame))
    return sorted(items, key=lambda it: (it.sequence, it.frame, it.id))


def read_label(path: Path, limits: DecodeLimits | None = None) -> np.ndarray:
    """(H, W) bool: label pixels >= 32768 (the tumour is 65535, background 0)."""
    image = decode_image([path.read_bytes()], limits or DecodeLimits())
    px = image.pixels if image.pixels.ndim == 2 else image.pixels[..., 0]
    return np.asarray(px >= LABEL_HALF)


def read_image(path: Path, limits: DecodeLimits | None = None) -> Image2D:
    """One 16-bit frame through the service's reader."""
    return decode_image([path.read_bytes()], limits or DecodeLimits())


def load_split(
    items: Sequence[Item], prep: Preprocessing, limits: DecodeLimits | None = None
) -> SegSplit:
    """Decode and preprocess ``items``: ``x`` (N, h, w, C) float32 in [0, 1] at the card's
    size, ``masks`` N (H, W) bool at full resolution, ``groups`` the sequences."""
    h, w = prep.size
    x = np.empty((len(items), h, w, prep.channels), dtype=np.float32)
    masks = []
    for i, it in enumerate(progress(items, "load frames", unit="frame")):
        image = read_image(it.image, limits)
        x[i] = preprocess_image(image, prep, "NHWC")[0]
        mask = read_label(it.label, limits)
        if mask.shape != image.shape:
            raise ValueError(f"{it.id}: label {mask.shape} and image {image.shape} differ")
        masks.append(mask)
    groups = np.array([it.sequence for it in items], dtype=object)
    return SegSplit(x=x, masks=masks, groups=groups, files=[it.image for it in items])


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
    """Train / val / test split by sequence.

    With ``test_root`` (e.g. a synthetic set written with another seed) every frame of it is
    the test split and ``root`` is split into train and val only; otherwise ``root`` gives all
    three (``test_fraction`` of the frames, whole sequences).
    """
    items = list_items(root)
    sequences = [it.sequence for it in items]
    if test_root is not None:
        parts = split_by_group(sequences, [1.0 - val_fraction], seed, by_items=True)
        train_items, val_items = ([items[i] for i in p] for p in parts)
        test_items = list_items(test_root)
    else:
        fractions = [1.0 - val_fraction - test_fraction, val_fraction]
        parts = split_by_group(sequences, fractions, seed, by_items=True)
        train_items, val_items, test_items = [[items[i] for i in p] for p in parts]
    return SegSplits(
        train=load_split(train_items, prep, limits),
        val=load_split(val_items, prep, limits),
        test=load_split(test_items, prep, limits),
    )
