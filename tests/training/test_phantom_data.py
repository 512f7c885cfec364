"""The phantom generator (layout, determinism, breathing motion, exposure, a learnable insert)
and its loader (pairs by id, split by sequence, service decoding, full-resolution masks)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.imaging.card import Intensity, Preprocessing
from training.core.splits import split_by_group
from training.datasets import phantom as loader
from training.synthetic import phantom
from training.synthetic.phantom_report import exposure_summary

SIZE = (96, 128)  # small frames: the same field of view at a coarser pixel


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, phantom.SynthConfig]:
    out = tmp_path_factory.mktemp("phantom")
    cfg = phantom.SynthConfig(n=40, seed=5, size=SIZE, frames_per_sequence=(6, 9))
    phantom.generate(out, cfg)
    return out, cfg


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode.startswith("I;16"), im.mode
        return np.asarray(im)


def test_layout_ids_and_value_ranges(generated: tuple[Path, phantom.SynthConfig]) -> None:
    out, cfg = generated
    images = sorted((out / "phantom" / "images").glob("*.tif"))
    labels = sorted((out / "phantom" / "labels").glob("*.tif"))
    assert len(images) == cfg.n == len(labels)
    assert [p.name for p in images] == [p.name for p in labels]
    assert images[0].name == "seq000_frame000.tif"
    for path in images[:5]:
        img = _read(path)
        assert img.shape == SIZE and img.dtype == np.uint16
        assert img.max() > 20000 and img.min() < img.max()  # uses the 16-bit range
        lab = _read(out / "phantom" / "labels" / path.name)
        assert set(np.unique(lab).tolist()) <= {0, 65535}
    rows = list(csv.reader((out / "phantom" / "frames.csv").open()))
    assert rows[0][:3] == ["id", "sequence", "frame"] and len(rows) == cfg.n + 2


def test_deterministic_per_seed() -> None:
    cfg = phantom.SynthConfig(n=3, seed=11, size=SIZE)
    a = [(f.image, f.label) for _, f in phantom.iter_frames(cfg)]
    b = [(f.image, f.label) for _, f in phantom.iter_frames(cfg)]
    assert all(
        np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )
    other = next(iter(phantom.iter_frames(phantom.SynthConfig(n=1, seed=12, size=SIZE))))[1]
    assert not np.array_equal(a[0][0], other.image)


def test_parallel_generation_writes_the_same_files(
    generated: tuple[Path, phantom.SynthConfig], tmp_path: Path
) -> None:
    out, cfg = generated
    written = phantom.generate(tmp_path, cfg, workers=2)
    assert [p.name for p in written] == [f"{i.id}.tif" for i in phantom.plan(cfg)]
    for sub in ("images", "labels"):
        for path in sorted((out / "phantom" / sub).glob("*.tif")):
            other = tmp_path / "phantom" / sub / path.name
            assert np.array_equal(_read(path), _read(other)), other
    a = (out / "phantom" / "frames.csv").read_text()
    assert (tmp_path / "phantom" / "frames.csv").read_text() == a


def test_tumour_moves_within_a_sequence_and_is_denser() -> None:
    cfg = phantom.SynthConfig(n=14, seed=2, size=(192, 256), frames_per_sequence=(14, 14))
    seq = phantom._setup(cfg, 0)
    seq = phantom.Sequence(**{**seq.__dict__, "has_tumour": True})
    frames = [phantom.render_frame(cfg, seq, p) for p in phantom.plan(cfg)]
    rows = [f.centroid[1] for f in frames if f.centroid]
    assert len(rows) == 14
    assert max(rows) - min(rows) > 2.0  # breathing moves it (superior-inferior, in pixels)
    # the insert adds attenuation: brighter than the same pixels without it
    plain = phantom._expose(cfg, seq.static, seq, np.random.default_rng(0))
    f = frames[0]
    inside = f.label > 0
    assert f.image[inside].mean() > plain[inside].mean() + 500


def test_exposure_differs_between_sequences() -> None:
    cfg = phantom.SynthConfig(n=1, seed=1, size=SIZE)
    medians = [s["p50"] for s in exposure_summary(cfg, sequences=5)]
    assert max(medians) - min(medians) > 5000


def test_some_sequences_have_no_insert() -> None:
    cfg = phantom.SynthConfig(n=1, seed=0, size=(32, 32), empty_fraction=0.5)
    has = [phantom._setup(cfg, s).has_tumour for s in range(12)]
    assert 0 < sum(has) < 12


def test_loader_pairs_and_splits_by_sequence(
    generated: tuple[Path, phantom.SynthConfig],
) -> None:
    out, _ = generated
    items = loader.list_items(out)
    assert items[0].sequence == "seq000" and items[0].frame == 0

    def split(seed: int) -> list[list[loader.Item]]:  # as the loader cuts them
        parts = split_by_group([it.sequence for it in items], [0.6, 0.2], seed, by_items=True)
        return [[items[i] for i in part] for part in parts]

    train, val, test = split(0)
    seqs = [{it.sequence for it in part} for part in (train, val, test)]
    assert all(seqs) and not (seqs[0] & seqs[1] or seqs[0] & seqs[2] or seqs[1] & seqs[2])
    assert len(train) + len(val) + len(test) == len(items)
    for part in (train, val, test):  # every sequence complete and in frame order
        for s in {it.sequence for it in part}:
            frames = [it.frame for it in part if it.sequence == s]
            assert frames == list(range(len(frames)))
            assert len(frames) == sum(1 for it in items if it.sequence == s)
    again = split(0)
    assert [[it.id for it in p] for p in again] == [[it.id for it in p] for p in (train, val, test)]


def test_loader_fallback_blocks_and_missing_label(tmp_path: Path) -> None:
    root = tmp_path / "phantom"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    arr = np.zeros((8, 8), np.uint16)
    for k in range(25):
        Image.fromarray(arr).save(root / "images" / f"img{k:03d}.png")
        Image.fromarray(arr).save(root / "labels" / f"img{k:03d}.png")
    items = loader.list_items(tmp_path, block=10)
    assert [it.sequence for it in items].count("block0000") == 10
    assert {it.sequence for it in items} == {"block0000", "block0001", "block0002"}
    Image.fromarray(arr).save(root / "images" / "extra.png")
    with pytest.raises(ValueError, match="without a label"):
        loader.list_items(tmp_path)


def test_load_split_uses_the_service_preprocessing(
    generated: tuple[Path, phantom.SynthConfig],
) -> None:
    out, _ = generated
    items = loader.list_items(out)[:4]
    prep = Preprocessing(
        kind="image2d",
        size=[32, 64],
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
        expected_bits=16,
    )
    split = loader.load_split(items, prep)
    assert split.x.shape == (4, 32, 64, 1) and split.x.dtype == np.float32
    assert split.x.min() >= 0.0 and split.x.max() <= 1.0
    assert all(m.shape == SIZE and m.dtype == bool for m in split.masks)
    label = _read(items[0].label)
    assert np.array_equal(split.masks[0], label == 65535)
    assert list(split.groups) == [it.sequence for it in items]
