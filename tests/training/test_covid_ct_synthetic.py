"""Synthetic MosMedData: plan, layout, determinism, geometry and the HU content of each category."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode_volume
from training.synthetic import covid_ct as synth

SMALL = synth.SynthConfig(n=40, seed=5, size=40, slices=(14, 18))


def _first(cfg: synth.SynthConfig, category: str) -> synth.PlannedStudy:
    return next(i for i in synth.plan(cfg) if i.category == category)


def test_category_counts_follow_the_real_proportions() -> None:
    assert synth.category_counts(1110) == dict(
        zip(synth.CATEGORIES, synth.REAL_COUNTS, strict=True)
    )
    for n in (1, 7, 40, 333, 900):
        counts = synth.category_counts(n)
        assert sum(counts.values()) == n
        for category, real in zip(synth.CATEGORIES, synth.REAL_COUNTS, strict=True):
            assert abs(counts[category] - n * real / 1110) < 1.0


def test_plan_numbers_studies_in_one_block_per_category() -> None:
    items = synth.plan(SMALL)
    assert [i.number for i in items] == list(range(1, SMALL.n + 1))
    categories = [i.category for i in items]
    assert categories == sorted(categories)  # CT-0 block first, then CT-1 …
    assert items[0].relpath == "MosMedData/studies/CT-0/study_0001.nii.gz"


def test_generate_writes_the_layout_and_only_the_chosen_categories(tmp_path: Path) -> None:
    cfg = synth.SynthConfig(n=40, seed=5, size=24, slices=(6, 8), categories=("CT-0", "CT-3"))
    files = synth.generate(tmp_path, cfg)
    counts = synth.category_counts(40)
    assert synth.counts(tmp_path) == {"CT-0": counts["CT-0"], "CT-3": counts["CT-3"]}
    assert len(files) == counts["CT-0"] + counts["CT-3"]
    for path in files:
        assert path.parent.parent == tmp_path / "MosMedData" / "studies"
        assert path.name.startswith("study_") and path.name.endswith(".nii.gz")
        img = nib.load(path)
        assert img.get_data_dtype() == np.int16
        zooms = img.header.get_zooms()
        assert 6 <= img.shape[2] <= 8 and img.shape[:2] == (24, 24)
        assert 33 <= zooms[2] <= 55 and 13 <= zooms[0] <= 16  # coverage / slices, fov / size
    with pytest.raises(FileExistsError):
        synth.generate(tmp_path, cfg)
    assert len(synth.generate(tmp_path, cfg, overwrite=True)) == len(files)


def test_a_study_depends_only_on_seed_and_number() -> None:
    item = _first(SMALL, "CT-2")
    a, b = synth.render_study(SMALL, item), synth.render_study(SMALL, item)
    assert np.array_equal(a.hu, b.hu) and a.spacing == b.spacing
    subset = synth.SynthConfig(**{**SMALL.__dict__, "categories": ("CT-2",)})
    assert np.array_equal(synth.render_study(subset, item).hu, a.hu)
    other = synth.SynthConfig(**{**SMALL.__dict__, "seed": 6})
    assert not np.array_equal(synth.render_study(other, item).hu[:2], a.hu[:2])


@pytest.mark.parametrize("storage", ["LPS", "RAS", "LAS"])
def test_every_stored_orientation_decodes_to_the_canonical_study(storage: str) -> None:
    study = synth.render_study(SMALL, _first(SMALL, "CT-3"))
    raw = synth.to_nifti(study.hu, study.spacing, storage).to_bytes()
    for data in (raw, gzip.compress(raw)):
        volume = decode_volume([data], DecodeLimits())
        assert np.array_equal(volume.voxels, study.hu.astype(np.float32))
        assert volume.spacing is not None
        assert np.allclose(volume.spacing, study.spacing, atol=1e-3)


def test_anatomy_sides_and_hounsfield_ranges() -> None:
    study = synth.render_study(SMALL, _first(SMALL, "CT-0"))
    hu = study.hu.astype(np.float32)
    assert study.affected.sum() == 0 and study.lung.mean() > 0.05
    assert -900 < float(np.median(hu[study.lung])) < -750  # lungs near -850 HU
    corner = hu[:, :3, :3]
    assert float(np.median(corner)) in (-2048.0,) or -1100 < float(np.median(corner)) < -900
    # heart left of the midline: more soft tissue in the patient's-left half at heart level
    mid = hu.shape[0] // 4
    soft = (hu[mid] > -100) & (hu[mid] < 100)
    half = hu.shape[2] // 2
    assert soft[:, half:].sum() > soft[:, :half].sum()  # columns run right → left


@pytest.mark.parametrize("category", ["CT-1", "CT-2", "CT-3", "CT-4"])
def test_opacities_cover_the_share_of_their_category(category: str) -> None:
    cfg = synth.SynthConfig(n=1110, seed=2, size=40, slices=(14, 16))
    study = synth.render_study(cfg, _first(cfg, category))
    lo, hi = synth.INVOLVEMENT[category]
    assert lo - 0.02 <= study.involvement <= hi + 0.02
    hu = study.hu.astype(np.float32)
    opacities = hu[study.affected]
    # ground glass: most affected voxels between about -750 and -250 HU (vessels, consolidation
    # and noise make the rest); clearly denser than the rest of the lung
    ggo = np.mean((opacities > -750) & (opacities < -250))
    assert ggo > 0.5
    healthy = hu[study.lung & ~study.affected]
    assert np.median(opacities) > np.median(healthy) + 150


def test_involvement_grows_with_the_category() -> None:
    cfg = synth.SynthConfig(n=1110, seed=4, size=32, slices=(10, 12))
    shares = [
        float(np.mean([synth.render_study(cfg, i).involvement for i in items]))
        for items in ([i for i in synth.plan(cfg) if i.category == c][:3] for c in synth.CATEGORIES)
    ]
    assert shares[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(shares))


def test_preview_is_small(tmp_path: Path) -> None:
    out = tmp_path / "preview.png"
    synth.preview(out, synth.SynthConfig(n=1110, seed=1, size=48, slices=(12, 12)))
    assert 0 < out.stat().st_size < 300_000


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown categories"):
        synth.SynthConfig(categories=("CT-9",))
    with pytest.raises(ValueError):
        synth.SynthConfig(slices=(5, 3))


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    args = ["synth", "covid_ct", "--out", str(tmp_path), "--n", "20", "--seed", "1"]
    args += ["--volume-size", "24", "--slices", "6", "8", "--categories", "CT-0", "CT-1"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    counts = synth.category_counts(20)
    assert out["counts"] == {"CT-0": counts["CT-0"], "CT-1": counts["CT-1"]}
    assert out["written"] == counts["CT-0"] + counts["CT-1"]
