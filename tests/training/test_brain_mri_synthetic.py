"""The brain-MRI generator: seeded, the kaggle_3m layout and formats, a lesion signal that is
FLAIR-bright but not separable by raw intensity."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.synthetic.brain_mri import (
    ROOT,
    SynthConfig,
    counts,
    generate,
    plan,
    preview_grid,
    render_patient,
)

NAME = re.compile(r"^TCGA_(CS|DU|EZ|FG|HT)_\d{4}_(19|20)\d{6}$")
SMALL = SynthConfig(n=14, seed=3, slices_per_patient=(7, 7), size=64)


def test_plan_is_seeded_and_covers_n() -> None:
    cfg = SynthConfig(n=100, seed=5)
    a, b = plan(cfg), plan(cfg)
    assert a == b
    assert sum(p.slices for p in a) == 100
    assert all(NAME.match(p.name) for p in a)
    assert len({p.name for p in a}) == len(a)
    assert all(16 <= p.slices <= 28 for p in a[:-1])
    assert plan(SynthConfig(n=100, seed=6)) != a


def test_layout_formats_and_determinism(tmp_path: Path) -> None:
    cfg = SynthConfig(n=6, seed=1, slices_per_patient=(3, 3))  # real size, 256
    files = generate(tmp_path / "a", cfg)
    assert len(files) == 6
    root = tmp_path / "a" / ROOT
    patients = sorted(p.name for p in root.iterdir())
    assert len(patients) == 2 and all(NAME.match(p) for p in patients)
    for patient in patients:
        names = sorted(p.name for p in (root / patient).iterdir())
        assert names == sorted(
            [f"{patient}_{n}.tif" for n in (1, 2, 3)]
            + [f"{patient}_{n}_mask.tif" for n in (1, 2, 3)]
        )
    with Image.open(files[0]) as im:
        assert im.format == "TIFF" and im.mode == "RGB" and im.size == (256, 256)
    with Image.open(files[0].with_name(files[0].stem + "_mask.tif")) as im:
        assert im.mode == "L" and im.size == (256, 256)
        assert set(np.unique(np.asarray(im)).tolist()) <= {0, 255}
    again = generate(tmp_path / "b", cfg)
    assert [p.read_bytes() for p in files] == [p.read_bytes() for p in again]
    with pytest.raises(FileExistsError):
        generate(tmp_path / "a", cfg)
    generate(
        tmp_path / "a", SynthConfig(n=3, seed=9, slices_per_patient=(3, 3), size=64), overwrite=True
    )
    assert counts(tmp_path / "a")["slices"] == 3  # stale patients are gone


def test_lesions_are_flair_bright_inside_the_head_and_most_slices_empty() -> None:
    cfg = SynthConfig(n=120, seed=2, size=128)
    flair, masks = [], []
    for pp in plan(cfg):
        for img, mask in render_patient(pp, cfg):
            flair.append(img[:, :, 1].astype(np.float32))
            masks.append(mask)
    f, m = np.stack(flair), np.stack(masks)
    with_lesion = m.any(axis=(1, 2))
    assert 0.15 < with_lesion.mean() < 0.5  # most slices empty, many with a lesion
    areas = m.sum(axis=(1, 2))[with_lesion]
    assert areas.max() > 4 * areas.min()  # sizes vary
    for img, mask in zip(f[with_lesion], m[with_lesion], strict=True):
        ring = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        ring[max(ys.min() - 6, 0) : ys.max() + 7, max(xs.min() - 6, 0) : xs.max() + 7] = True
        ring &= ~mask
        assert img[mask].mean() > img[ring].mean()  # hyperintense against its surroundings
        assert img[mask].mean() > 20  # inside the head, not on the background
    # Raw intensity alone does not segment: the best global FLAIR threshold has a poor Dice.
    best = 0.0
    for t in range(0, 256, 4):
        pred = f >= t
        best = max(best, 2 * np.sum(pred & m) / (pred.sum() + m.sum()))
    assert best < 0.5, best
    centres = [np.argwhere(mask).mean(axis=0) for mask in m[with_lesion]]
    assert np.ptp(np.array(centres), axis=0).min() > 10  # positions vary


def test_preview_grid_is_small(tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    preview_grid(out, SMALL, columns=3, tile=64)
    with Image.open(out) as im:
        assert im.size == (3 * 64, 2 * 64)
    assert out.stat().st_size < 300_000
