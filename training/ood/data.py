"""In-distribution inputs for the OOD statistics: the project's synthetic generators, written to
a temporary folder in each data set's own layout, then read back through the service's own
readers and card-driven preprocessing (the tensors the deployed model will see).

The only module of ``training.ood`` that knows the generators; the hook (``add_ood``) takes
arrays and does not need it.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.imaging.card import ModelCard
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess
from app.imaging.readers import decode_image, decode_volume
from app.imaging.types import Image2D, Volume
from training.synthetic import brain_mri, covid_ct, phantom, pneumonia

LIMITS = DecodeLimits()
# The covid_ct demo's classes (the Makefile's ``--categories``): CT-0 negative, CT-2/3 positive.
CT_CATEGORIES = ("CT-0", "CT-2", "CT-3")
CT_VOLUME_SIZE = 128
PHANTOM_FRAMES_PER_SEQUENCE = (2, 5)
GENERATED = ("pneumonia_xray", "covid_ct", "brain_tumor_mri", "phantom_tumor_xray")


@dataclass
class InDistribution:
    """``x``: (N, ...) float32 preprocessed inputs in the card's layout (no batch axis per item
    beyond N); ``y``: (N,) int class (classifiers: the label; segmenters: lesion present);
    ``groups``: the patient / sequence of each input (splits never cut one); ``raw``: the first
    decoded items, for the OOD kinds made from in-distribution images."""

    x: np.ndarray
    y: np.ndarray
    groups: list[str]
    raw: list[Image2D | Volume] = field(default_factory=list)


def files(name: str, root: Path) -> Iterator[tuple[Path, int, str]]:
    """(image file, class, group) in a generated layout, in a stable order."""
    if name == "pneumonia_xray":
        for p in sorted((root / "chest_xray").glob("*/*/*.jpeg")):
            yield p, int(p.parent.name == "PNEUMONIA"), re.sub(r"[-_]\d+\.jpeg$", "", p.name)
    elif name == "covid_ct":
        for p in sorted((root / "MosMedData" / "studies").glob("CT-*/*.nii.gz")):
            yield p, int(p.parent.name != "CT-0"), p.name
    elif name == "brain_tumor_mri":
        for p in sorted((root / "kaggle_3m").glob("*/*.tif")):
            if p.stem.endswith("_mask"):
                continue
            mask = np.asarray(_read_mask(p.with_name(p.stem + "_mask.tif")))
            yield p, int(mask.any()), p.parent.name
    elif name == "phantom_tumor_xray":
        for p in sorted((root / "phantom" / "images").glob("*.tif")):
            label = _read_mask(root / "phantom" / "labels" / p.name)
            yield p, int(label.any()), p.stem.split("_")[0]
    else:
        raise ValueError(f"no generator for {name}")


def _read_mask(path: Path) -> np.ndarray:
    return np.asarray(decode_image([path.read_bytes()], LIMITS).pixels)


def generate(name: str, root: Path, n: int, seed: int) -> None:
    """Write ``n`` synthetic cases of ``name`` (about ``n``: CT counts studies of the demo's
    three categories) with ``seed`` under ``root``."""
    if name == "pneumonia_xray":
        pneumonia.generate(root, pneumonia.SynthConfig(n=n, seed=seed), overwrite=True)
    elif name == "covid_ct":
        # category shares follow the real set: n of the full set gives ~n*(254+125+45)/1110 here
        full = max(3, round(n * 1110 / (254 + 125 + 45)))
        cfg = covid_ct.SynthConfig(n=full, seed=seed, size=CT_VOLUME_SIZE, categories=CT_CATEGORIES)
        covid_ct.generate(root, cfg, overwrite=True)
    elif name == "brain_tumor_mri":
        brain_mri.generate(root, brain_mri.SynthConfig(n=n, seed=seed), overwrite=True)
    elif name == "phantom_tumor_xray":
        ph = phantom.SynthConfig(n=n, seed=seed, frames_per_sequence=PHANTOM_FRAMES_PER_SEQUENCE)
        phantom.generate(root, ph, overwrite=True)
    else:
        raise ValueError(f"no generator for {name}")


def decode_file(card: ModelCard, path: Path) -> Image2D | Volume:
    prep = card.input.preprocessing
    data = [path.read_bytes()]
    if prep.kind == "volume3d":
        return decode_volume(data, LIMITS)
    return decode_image(data, LIMITS, apply_voi_lut=prep.apply_voi_lut)


def decode_any(path: Path) -> Image2D | Volume:
    """A generated file of any of the four layouts, decoded by its own reader."""
    if path.name.endswith(".nii.gz"):
        return decode_volume([path.read_bytes()], LIMITS)
    return decode_image([path.read_bytes()], LIMITS)


def tensor(card: ModelCard, item: Image2D | Volume) -> np.ndarray:
    """One decoded item -> its preprocessed input (the card's layout, no batch axis)."""
    return np.asarray(preprocess(item, card.input.preprocessing, card.input.layout)[0])


def in_distribution(card: ModelCard, n: int, seed: int, keep_raw: int | None = 0) -> InDistribution:
    """``n`` synthetic cases of ``card``'s model made with ``seed``, preprocessed; the first
    ``keep_raw`` decoded items are kept too (all of them with None)."""
    with tempfile.TemporaryDirectory(prefix="medserve-ood-") as tmp:
        root = Path(tmp)
        generate(card.name, root, n, seed)
        xs: list[np.ndarray] = []
        ys: list[int] = []
        groups: list[str] = []
        raw: list[Image2D | Volume] = []
        for path, y, group in files(card.name, root):
            item = decode_file(card, path)
            xs.append(tensor(card, item))
            ys.append(y)
            groups.append(group)
            if keep_raw is None or len(raw) < keep_raw:
                raw.append(item)
    return InDistribution(np.stack(xs), np.asarray(ys, dtype=np.int64), groups, raw)
