"""The fast paths of ``app.imaging.preprocess`` give what the general ones give: percentiles
from a histogram equal ``np.percentile``, whole-block area reduction equals Pillow's box filter,
and an integer image is normalised as its float copy would be."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from app.imaging.card import Intensity, Preprocessing
from app.imaging.preprocess import (
    _small_integers,
    percentiles,
    preprocess_image,
    resize2d,
)
from app.imaging.types import Image2D, Meta

QS = (0.0, 0.5, 1.0, 37.3, 50.0, 99.5, 100.0)


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [(np.uint8, 0, 256), (np.uint16, 0, 65536), (np.int16, -3000, 3000), (np.int8, -128, 128)],
)
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 200_000])
def test_histogram_percentiles_equal_numpy(dtype: type, low: int, high: int, n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.integers(low, high, n).astype(dtype)
    expected = np.percentile(values.astype(np.float64), QS)
    np.testing.assert_allclose(percentiles(values, QS), expected, rtol=0, atol=1e-9)


def test_histogram_percentiles_with_ties_and_a_flat_image() -> None:
    values = np.array([5, 5, 5, 9, 9, 1000], np.uint16)
    np.testing.assert_allclose(percentiles(values, QS), np.percentile(values, QS), atol=1e-9)
    flat = np.full((64, 64), 300, np.uint16)
    assert percentiles(flat, (0.5, 99.5)) == [300.0, 300.0]


def test_float_values_take_the_general_path() -> None:
    values = np.random.default_rng(0).random(999).astype(np.float32)
    np.testing.assert_allclose(percentiles(values, QS), np.percentile(values, QS), rtol=1e-6)


@pytest.mark.parametrize(("shape", "size"), [((768, 1024), (192, 256)), ((300, 200), (100, 50))])
def test_whole_block_area_resize_equals_pillow_box(
    shape: tuple[int, int], size: tuple[int, int]
) -> None:
    plane = (np.random.default_rng(1).random(shape) * 65535).astype(np.float32)
    box = Image.fromarray(plane).resize((size[1], size[0]), Image.Resampling.BOX)
    got = resize2d(plane, size, "area")
    assert got.dtype == np.float32 and got.shape == size
    np.testing.assert_allclose(got, np.asarray(box, np.float32), rtol=1e-6, atol=1e-6 * 65535)


def test_integer_valued_floats_take_the_histogram_path_with_the_same_answer() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 65536, (96, 128)).astype(np.float32)  # what the readers return
    np.testing.assert_allclose(percentiles(frame, QS), np.percentile(frame, QS), atol=1e-9)
    ct = rng.integers(-1024, 3000, 5000).astype(np.float32)
    np.testing.assert_allclose(percentiles(ct, QS), np.percentile(ct, QS), atol=1e-9)
    assert _small_integers(frame) is not None and _small_integers(ct) is not None
    assert _small_integers(frame + 0.5) is None  # a rescale slope left fractions
    assert _small_integers(frame * 4) is None  # wider than 16 bits
    assert _small_integers(np.array([1.0, np.nan], np.float32)) is None


def test_a_16_bit_frame_is_preprocessed_as_numpy_would() -> None:
    pixels = np.random.default_rng(3).integers(0, 65536, (96, 128)).astype(np.float32)
    prep = Preprocessing(
        kind="image2d",
        size=(24, 32),
        channels=1,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
    )
    got = preprocess_image(Image2D(pixels, None, Meta(format="png")), prep, "NHWC")
    low, high = np.percentile(pixels, [0.5, 99.5])
    windowed = np.clip((pixels - low) / (high - low), 0, 1).astype(np.float32)
    box = Image.fromarray(windowed).resize((32, 24), Image.Resampling.BOX)
    np.testing.assert_allclose(got[0, :, :, 0], np.asarray(box), atol=1e-6)


@pytest.mark.parametrize("method", ["trilinear", "area", "nearest"])
@pytest.mark.parametrize("shape", [(5, 128, 128), (3, 97, 140), (4, 40, 50)])
def test_volume_resize_by_matrices_equals_pillow_per_slice(
    method: str, shape: tuple[int, int, int]
) -> None:
    from app.imaging.preprocess import apply_window, preprocess_volume
    from app.imaging.types import Volume

    voxels = np.random.default_rng(4).uniform(-1200, 600, shape).astype(np.float32)
    prep = Preprocessing(
        kind="volume3d",
        size=(shape[0], 64, 64),
        channels=1,
        intensity=Intensity(method="window", low=-1000, high=400),
        resize=method,
    )
    volume = Volume(voxels, (2.0, 0.7, 0.7), Meta(format="nifti"))
    got = preprocess_volume(volume, prep, "NDHWC")[0, ..., 0]
    expected = np.stack([resize2d(apply_window(v, -1000, 400), (64, 64), method) for v in voxels])
    np.testing.assert_allclose(got, expected, atol=1e-6)
