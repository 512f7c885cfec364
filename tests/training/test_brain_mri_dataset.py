"""kaggle_3m loader: pairs images with masks, reads FLAIR through the service's preprocessing,
splits by patient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_image
from app.imaging.readers import decode_image
from training.core.splits import split_by_group
from training.datasets.brain_mri import list_slices, load, load_all
from training.synthetic.brain_mri import SynthConfig, generate
from training.tasks.brain_tumor_mri.card import brain_conformance, brain_preprocessing


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("brain")
    generate(root, SynthConfig(n=30, seed=4, slices_per_patient=(5, 5), size=64))
    (root / "kaggle_3m" / "data.csv").write_text("Patient,whatever\n")  # ignored like the real one
    return root


def test_list_slices_pairs_and_orders(data: Path) -> None:
    items = list_slices(data)
    assert len(items) == 30
    assert items == list_slices(data / "kaggle_3m")  # either folder is accepted
    for image, mask, patient, n in items:
        assert image.parent.name == patient and image.name == f"{patient}_{n}.tif"
        assert mask.name == f"{patient}_{n}_mask.tif"
    first = [n for _, _, p, n in items if p == items[0][2]]
    assert first == [1, 2, 3, 4, 5]


def split_patients(patients: list[str], fractions: list[float], seed: int) -> list[list[str]]:
    parts = split_by_group(patients, fractions, seed)  # as the kaggle_3m loader cuts them
    return [sorted({patients[i] for i in part}) for part in parts]


def test_split_patients_is_disjoint_and_seeded() -> None:
    patients = [f"p{i}" for i in range(10) for _ in range(3)]
    a = split_patients(patients, [0.2, 0.2], seed=1)
    assert a == split_patients(patients, [0.2, 0.2], seed=1)
    assert [len(g) for g in a] == [2, 2, 6]
    assert sorted(p for g in a for p in g) == sorted(set(patients))
    assert all(len(g) >= 1 for g in split_patients(patients[:9], [0.05, 0.05], seed=0))


def test_load_splits_by_patient_and_reads_flair(data: Path) -> None:
    prep = brain_preprocessing(32)
    splits = load(data, prep, val_fraction=0.2, test_fraction=0.2, seed=0)
    groups = [set(s.groups.tolist()) for s in (splits.train, splits.val, splits.test)]
    assert all(groups) and not (
        groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2]
    )
    assert sum(splits.sizes.values()) == 30
    tr = splits.train
    assert tr.x.shape == (len(tr), 32, 32, 1) and tr.x.dtype == np.float32
    assert tr.x.min() >= 0.0 and tr.x.max() <= 1.0
    assert all(m.shape == (64, 64) and m.dtype == bool for m in tr.masks)
    # The model input is the FLAIR channel, through the service's own decode + preprocess.
    image = decode_image([tr.files[0].read_bytes()], DecodeLimits())
    assert image.pixels.shape == (64, 64, 3)
    np.testing.assert_array_equal(tr.x[0], preprocess_image(image, prep, "NHWC")[0])
    flair_only = image.pixels[:, :, 1]
    from app.imaging.types import Image2D

    gray = preprocess_image(Image2D(flair_only, None, image.meta), prep, "NHWC")[0]
    np.testing.assert_array_equal(tr.x[0], gray)
    conf = brain_conformance(splits)
    assert conf["modalities"] == ["MR"] and conf["image_side_range"] == [64, 64]


def test_separate_test_folder(data: Path, tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(n=10, seed=8, slices_per_patient=(5, 5), size=64))
    prep = brain_preprocessing(32)
    splits = load(data, prep, val_fraction=0.2, seed=0, test_root=tmp_path)
    assert len(splits.test) == 10 and len(splits.train) + len(splits.val) == 30
    assert len(load_all(tmp_path, prep)) == 10
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing", prep)
