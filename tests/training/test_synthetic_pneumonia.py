"""The synthetic chest X-ray generator: layout, names, imbalance, determinism (no TF)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.core.metrics import roc_auc
from training.synthetic.pneumonia import SynthConfig, counts, generate, plan

NAME = {
    "PNEUMONIA": re.compile(r"^person\d+_(bacteria|virus)_\d+\.jpeg$"),
    "NORMAL": re.compile(r"^(NORMAL2-)?IM-\d{4}-\d{4}\.jpeg$"),
}
CFG = SynthConfig(n=90, seed=7, size_range=(48, 72))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, CFG)
    return out


def test_layout_names_and_imbalance(generated: Path) -> None:
    c = counts(generated)
    assert sum(sum(v.values()) for v in c.values()) == CFG.n
    assert set(c) == {"train", "val", "test"}
    assert sum(c["val"].values()) <= 16 and min(c["val"].values()) >= 1  # tiny, both classes
    ratio = c["train"]["PNEUMONIA"] / c["train"]["NORMAL"]
    assert 2.3 < ratio < 3.7
    for path in (generated / "chest_xray").glob("*/*/*.jpeg"):
        assert NAME[path.parent.name].match(path.name), path.name


def test_images_are_gray_jpegs_of_varying_size(generated: Path) -> None:
    sizes = set()
    for path in sorted((generated / "chest_xray" / "train").glob("*/*.jpeg"))[:30]:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "L"
            assert min(im.size) >= 48 and max(im.size) <= 72
            sizes.add(im.size)
    assert len(sizes) > 5


def test_some_patients_have_several_images_and_patients_are_unique_per_split() -> None:
    items = plan(SynthConfig(n=300, seed=1))
    per_patient: dict[str, set[str]] = {}
    n_images: dict[str, int] = {}
    for it in items:
        per_patient.setdefault(it.patient, set()).add(it.split)
        n_images[it.patient] = n_images.get(it.patient, 0) + 1
    assert max(n_images.values()) >= 2
    assert all(len(splits) == 1 for splits in per_patient.values())
    assert len({it.filename for it in items}) == len(items)


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    cfg = SynthConfig(n=24, seed=3, size_range=(40, 56))
    a = generate(tmp_path / "a", cfg)
    b = generate(tmp_path / "b", cfg)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    c = generate(tmp_path / "c", SynthConfig(n=24, seed=4, size_range=(40, 56)))
    assert any(pa.read_bytes() != pc.read_bytes() for pa, pc in zip(a, c, strict=False))


def test_refuses_to_mix_with_existing_images(tmp_path: Path) -> None:
    cfg = SynthConfig(n=12, seed=0, size_range=(32, 40))
    generate(tmp_path, cfg)
    with pytest.raises(FileExistsError):
        generate(tmp_path, cfg)
    generate(tmp_path, SynthConfig(n=10, seed=0, size_range=(32, 40)), overwrite=True)
    assert sum(sum(v.values()) for v in counts(tmp_path).values()) == 10


def test_global_brightness_does_not_separate_the_classes(generated: Path) -> None:
    means, labels = [], []
    for path in (generated / "chest_xray").glob("*/*/*.jpeg"):
        with Image.open(path) as im:
            means.append(float(np.asarray(im, np.float32).mean()))
        labels.append(int(path.parent.name == "PNEUMONIA"))
    auc = roc_auc(np.array(labels), np.array(means))
    assert 0.25 < auc < 0.8, auc
