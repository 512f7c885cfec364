"""The Kermany-layout loader: patient parsing, patient-level split, arrays, class weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.imaging.card import Intensity, Preprocessing
from training.core.splits import split_by_group
from training.datasets.pneumonia import (
    class_weights,
    list_files,
    load,
    patient_id,
)
from training.synthetic.pneumonia import SynthConfig, generate

PREP = Preprocessing(
    kind="image2d",
    size=[24, 20],
    channels=1,
    intensity=Intensity(method="percentile", low=0.5, high=99.5),
    resize="area",
    expected_bits=8,
)


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [
        ("person1_bacteria_1.jpeg", "PNEUMONIA", "PNEUMONIA/PERSON1"),
        ("person12_virus_44.jpeg", "PNEUMONIA", "PNEUMONIA/PERSON12"),
        ("person1_virus_6.jpeg", "PNEUMONIA", "PNEUMONIA/PERSON1"),
        ("IM-0115-0001.jpeg", "NORMAL", "NORMAL/IM-0115"),
        ("NORMAL2-IM-0006-0001.jpeg", "NORMAL", "NORMAL/NORMAL2-IM-0006"),
        ("odd name.jpeg", "NORMAL", "NORMAL/ODD NAME"),
    ],
)
def test_patient_id(name: str, label: str, expected: str) -> None:
    assert patient_id(name, label) == expected


def test_split_by_patient_never_shares_a_patient() -> None:
    rng = np.random.default_rng(0)
    patients = [f"p{rng.integers(0, 40)}" for _ in range(300)]
    labels = [int(p[1:]) % 4 != 0 for p in patients]  # class is a patient property
    va, tr = split_by_group(patients, [0.25], 3, strata=labels)  # as the loader cuts them
    assert len(tr) + len(va) == 300 and not set(tr) & set(va)
    assert not {patients[i] for i in tr} & {patients[i] for i in va}
    assert {labels[i] for i in va} == {0, 1}
    va2, tr2 = split_by_group(patients, [0.25], 3, strata=labels)
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()


def test_class_weights_balanced() -> None:
    w = class_weights(np.array([0, 1, 1, 1]))
    assert w == pytest.approx({0: 2.0, 1: 4 / 6})


def test_load_pools_train_val_and_splits_by_patient(tmp_path: Path) -> None:
    generate(tmp_path, SynthConfig(n=60, seed=2, size_range=(40, 56)))
    data = load(tmp_path, PREP, val_fraction=0.25, seed=0)
    n_pooled = len(list_files(tmp_path, "train")) + len(list_files(tmp_path, "val"))
    assert len(data.train) + len(data.val) == n_pooled
    assert len(data.test) == len(list_files(tmp_path, "test"))
    assert not set(data.train.patients) & set(data.val.patients)
    assert not {str(f) for f in data.train.files} & {str(f) for f in data.val.files}
    assert set(data.val.y.tolist()) == {0, 1}
    for split in (data.train, data.val, data.test):
        assert split.x.shape == (len(split), 24, 20, 1) and split.x.dtype == np.float32
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert data.class_weight == pytest.approx(class_weights(data.train.y))
    # test/ may come from another folder (e.g. a set generated with another seed)
    other = tmp_path / "other"
    generate(other, SynthConfig(n=30, seed=9, size_range=(40, 56)))
    data2 = load(tmp_path, PREP, seed=0, test_root=other)
    assert all(str(f).startswith(str(other)) for f in data2.test.files)
