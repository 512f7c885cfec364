"""MosMedData loader: categories → labels, split by study (= patient), service preprocessing,
cache, and the card's conformance section derived from the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_volume
from app.imaging.readers import decode_volume
from training.core.splits import split_by_group
from training.datasets import covid_ct as ds
from training.synthetic import covid_ct as synth
from training.tasks.covid_ct.card import conformance_from, covid_ct_preprocessing

PREP = covid_ct_preprocessing((16, 16, 16))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mosmed")
    cfg = synth.SynthConfig(n=60, seed=11, size=24, slices=(8, 10), categories=synth.CATEGORIES)
    synth.generate(out, cfg)
    return out


def test_default_categories_are_the_reference_ones(root: Path) -> None:
    studies = ds.list_studies(root)
    cats = {s.category for s in studies}
    assert cats == {"CT-0", "CT-2", "CT-3"}
    assert all(s.label == (s.category != "CT-0") for s in studies)
    assert len({s.patient for s in studies}) == len(studies)  # one study per patient
    # the layout folder itself is accepted too
    assert len(ds.list_studies(root / "MosMedData")) == len(studies)


def test_categories_are_configurable_and_validated(root: Path) -> None:
    studies = ds.list_studies(root, negative=("CT-0", "CT-1"), positive=("CT-4",))
    assert {s.category for s in studies} <= {"CT-0", "CT-1", "CT-4"}
    assert all(s.label == (s.category == "CT-4") for s in studies)
    with pytest.raises(ValueError, match="both"):
        ds.list_studies(root, negative=("CT-0",), positive=("CT-0",))
    with pytest.raises(ValueError, match="unknown"):
        ds.list_studies(root, positive=("CT-7",))


def test_split_is_by_study_and_stratified(root: Path) -> None:
    studies = ds.list_studies(root)
    ids, cats = [s.patient for s in studies], [s.category for s in studies]

    def split(seed: int) -> list[list[int]]:  # as the MosMedData loader cuts them
        val, test, train = split_by_group(ids, [0.2, 0.2], seed, strata=cats)
        return [train.tolist(), val.tolist(), test.tolist()]

    parts = split(3)
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(len(studies)))  # every study once, in one part only
    for part in parts[1:]:
        assert {studies[i].category for i in part} >= {"CT-0", "CT-2"}
    assert parts == split(3)
    assert parts != split(4)


def test_load_feeds_the_service_preprocessing(root: Path, tmp_path: Path) -> None:
    splits = ds.load(root, PREP, val_fraction=0.25, test_fraction=0.25, seed=0, cache_dir=tmp_path)
    sizes = splits.sizes
    assert sum(sizes.values()) == len(ds.list_studies(root)) and min(sizes.values()) >= 2
    patients = [set(getattr(splits, k).patients) for k in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    x = splits.train.x
    assert x.shape[1:] == (16, 16, 16, 1) and x.dtype == np.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # exactly what the service computes for that file
    path = splits.train.files[0]
    volume = decode_volume([path.read_bytes()], DecodeLimits())
    np.testing.assert_array_equal(x[0], preprocess_volume(volume, PREP, "NDHWC")[0])
    assert splits.train.slices[0] == volume.shape[0]
    np.testing.assert_allclose(splits.train.spacing[0], volume.spacing)
    assert set(splits.class_weight) == {0, 1}


def test_cache_returns_the_same_arrays_and_follows_the_preprocessing(
    root: Path, tmp_path: Path
) -> None:
    studies = ds.list_studies(root)[:4]
    first = ds.load_arrays(studies, PREP, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = ds.load_arrays(studies, PREP, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.x, again.x)
    assert list(again.patients) == list(first.patients)
    other = covid_ct_preprocessing((16, 16, 32))
    assert ds.load_arrays(studies, other, cache_dir=tmp_path).x.shape[1:] == (16, 16, 32, 1)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_separate_test_folder(root: Path, tmp_path: Path) -> None:
    synth.generate(
        tmp_path,
        synth.SynthConfig(n=30, seed=12, size=24, slices=(8, 10), categories=("CT-0", "CT-2")),
    )
    splits = ds.load(root, PREP, seed=0, test_root=tmp_path)
    assert len(splits.test) == len(ds.list_studies(tmp_path))
    assert sum(splits.sizes.values()) - len(splits.test) == len(ds.list_studies(root))


def test_conformance_from_the_seen_geometry() -> None:
    spacing = np.array([[6.2, 2.7, 2.7], [9.1, 2.9, 2.9], [7.0, 2.8, 2.8]])
    out = conformance_from(spacing, np.array([36, 44, 40]))
    assert out["modalities"] == ["CT"]
    lo, hi = out["slice_thickness_range_mm"]
    assert lo <= 6.2 * 0.9 and hi >= 9.1 * 1.1 and hi - lo < 6
    assert out["min_slices"] == 22  # 200 mm at 9.1 mm per slice
