"""The windowed mask, the cropped summary and the column-limited RLE give exactly what the
whole-image computations give (random maps, every kind of resize and edge case)."""

from __future__ import annotations

import numpy as np
import pytest

from app.imaging.encode import rle_decode, rle_encode
from app.imaging.postprocess import mask_at, summarize_mask
from app.imaging.preprocess import resize2d


def _reference_rle(mask: np.ndarray) -> list[int]:
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    return [0, *counts] if flat[0] else counts


def _blobby_map(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    prob = rng.random(shape).astype(np.float32) * 0.3
    for _ in range(rng.integers(0, 3)):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        prob[max(0, y - 2) : y + 3, max(0, x - 3) : x + 2] = rng.random()
    return prob


@pytest.mark.parametrize("seed", range(6))
def test_windowed_mask_equals_the_whole_resize(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(50):
        src = (int(rng.integers(4, 64)), int(rng.integers(4, 64)))
        dst = (int(rng.integers(3, 300)), int(rng.integers(3, 300)))  # up- and down-sizing
        prob = _blobby_map(rng, src)
        threshold = float(rng.choice([0.05, 0.3, 0.5, 0.9]))
        expected = resize2d(prob, dst, "bilinear") >= threshold
        np.testing.assert_array_equal(mask_at(prob, dst, threshold), expected)


def test_windowed_mask_of_a_frame_sized_map() -> None:
    prob = np.zeros((192, 256), np.float32)
    prob[40:60, 100:130] = 0.9
    prob[41, 101] = 0.2
    expected = resize2d(prob, (768, 1024), "bilinear") >= 0.5
    np.testing.assert_array_equal(mask_at(prob, (768, 1024), 0.5), expected)
    assert not mask_at(np.zeros((8, 8), np.float32), (32, 32), 0.5).any()
    same = np.random.default_rng(9).random((40, 56)).astype(np.float32)  # no resize at all
    np.testing.assert_array_equal(mask_at(same, (40, 56), 0.5), same >= 0.5)
    everywhere = np.full((24, 32), 0.9, np.float32)  # the window is the whole frame
    assert mask_at(everywhere, (96, 128), 0.5).all()


def test_cropped_summary_equals_numpy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(100):
        mask = rng.random((int(rng.integers(1, 50)), int(rng.integers(1, 50)))) < rng.random() * 0.2
        summary = summarize_mask(mask, (0.5, 0.25))
        ys, xs = np.nonzero(mask)
        assert summary.area_px == xs.size
        if xs.size == 0:
            assert summary.centroid is None and summary.bbox is None
            continue
        assert summary.bbox == [xs.min(), ys.min(), xs.max(), ys.max()]
        assert summary.centroid == [round(float(xs.mean()), 3), round(float(ys.mean()), 3)]


def test_rle_equals_the_whole_image_run_lengths() -> None:
    rng = np.random.default_rng(8)
    for trial in range(300):
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random() * 0.3
        if trial % 5 == 0:
            mask[:] = False
        if trial % 7 == 0:
            mask[0, 0] = True
        if trial % 11 == 0:
            mask[-1, -1] = True
        if trial % 13 == 0:
            mask[:] = True
        rle = rle_encode(mask)
        assert rle["counts"] == _reference_rle(mask)
        assert sum(rle["counts"]) == mask.size
        np.testing.assert_array_equal(rle_decode(rle), mask)
