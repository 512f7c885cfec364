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


def _png(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _general(image: Image2D) -> Image2D:
    """The same image without its integer samples: the general (float) path."""
    return Image2D(image.pixels, image.spacing, image.meta, image.dicom)


@pytest.mark.parametrize(
    ("kind", "dtype", "high"),
    [("png", np.uint8, 256), ("png", np.uint16, 65536), ("dicom", np.uint16, 4096),
     ("dicom", np.uint8, 256)],
)  # fmt: skip
@pytest.mark.parametrize("method", ["percentile", "minmax"])
def test_the_stored_samples_give_the_float_paths_tensor(
    kind: str, dtype: type, high: int, method: str
) -> None:
    from app.imaging.limits import DecodeLimits
    from app.imaging.readers import decode_image
    from tests.imaging.imaging_factories import dicom_bytes, image_dataset

    rng = np.random.default_rng(high)
    array = rng.integers(0, high, (301, 257)).astype(dtype)
    if kind == "png":
        data = _png(array)
    else:
        bits = 12 if high == 4096 else None
        ds = image_dataset(array, bits_stored=bits, RescaleSlope=1, RescaleIntercept=0)
        data = dicom_bytes(ds)
    image = decode_image([data], DecodeLimits())
    assert image.stored is not None and image.stored.dtype == dtype
    np.testing.assert_array_equal(image.stored.astype(np.float32), image.pixels)
    low, top = (0.5, 99.5) if method == "percentile" else (None, None)
    for resize in ("area", "bilinear"):
        prep = Preprocessing(
            kind="image2d",
            size=(64, 48),
            channels=1,
            intensity=Intensity(method=method, low=low, high=top),
            resize=resize,
        )
        fast = preprocess_image(image, prep, "NHWC")
        general = preprocess_image(_general(image), prep, "NHWC")
        np.testing.assert_allclose(fast, general, rtol=0, atol=1e-6)


def test_dicom_value_transforms_keep_the_general_path() -> None:
    """A rescale, MONOCHROME1 or a signed frame: no stored samples, the LUT pipeline runs."""
    from app.imaging.limits import DecodeLimits
    from app.imaging.readers import decode_image
    from tests.imaging.imaging_factories import dicom_bytes, image_dataset

    array = np.random.default_rng(5).integers(0, 4096, (40, 30)).astype(np.uint16)
    cases = [
        image_dataset(array, RescaleSlope=2, RescaleIntercept=0),
        image_dataset(array, RescaleSlope=1, RescaleIntercept=-1024),
        image_dataset(array, photometric="MONOCHROME1", bits_stored=12),
        image_dataset(array.astype(np.int16), signed=True),
    ]
    for ds in cases:
        image = decode_image([dicom_bytes(ds)], DecodeLimits())
        assert image.stored is None


def test_large_images_rank_the_same_sample() -> None:
    """Past 4 M pixels the percentiles come from every n-th pixel, on both paths."""
    array = np.random.default_rng(6).integers(0, 256, (2100, 2000)).astype(np.uint8)
    image = Image2D(array.astype(np.float32), None, Meta(format="png"), stored=array)
    prep = Preprocessing(
        kind="image2d",
        size=(128, 128),
        channels=1,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
    )
    fast = preprocess_image(image, prep, "NHWC")
    np.testing.assert_allclose(fast, preprocess_image(_general(image), prep, "NHWC"), atol=1e-6)


@pytest.mark.parametrize(
    ("src", "dst"),
    [(7, 3), (100, 100), (255, 64), (300, 128), (768, 192), (1001, 128), (2500, 128),
     (100, 300)],
)  # fmt: skip
@pytest.mark.parametrize("method", ["bilinear", "trilinear", "area"])
def test_computed_resize_weights_equal_pillows(src: int, dst: int, method: str) -> None:
    """The weights computed as Pillow computes them resize a line as Pillow does."""
    from app.imaging.preprocess import resize_weights

    line = np.random.default_rng(src).random((3, src)).astype(np.float32)
    resample = {"area": Image.Resampling.BOX}.get(method, Image.Resampling.BILINEAR)
    expected = np.asarray(Image.fromarray(line).resize((dst, 3), resample=resample))
    got = line @ resize_weights(src, dst, method).T
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "size", "method"),
    [((2500, 2000), (128, 128), "area"), ((2000, 2500), (128, 128), "bilinear"),
     ((1100, 1001), (224, 200), "bilinear"), ((1024, 1024), (100, 128), "area")],
)  # fmt: skip
@pytest.mark.parametrize("stored", [np.uint8, np.uint16, None])
def test_window_folded_into_the_row_resize_equals_window_then_resize(
    shape: tuple[int, int], size: tuple[int, int], method: str, stored: type | None
) -> None:
    """A large film: ``preprocess_image`` windows blocks of rows into the resize
    (``window_resize``); the tensor equals the full-resolution window then Pillow's resize."""
    from app.imaging.preprocess import _fold_rows, apply_window, intensity_bounds

    top = 256 if stored is np.uint8 else 4096
    samples = np.random.default_rng(8).integers(0, top, shape)
    pixels = samples.astype(np.float32)
    image = Image2D(
        pixels, None, Meta(format="png"), stored=samples.astype(stored) if stored else None
    )
    prep = Preprocessing(
        kind="image2d",
        size=size,
        channels=1,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize=method,
    )
    assert _fold_rows(shape, size, method)
    got = preprocess_image(image, prep, "NHWC")[0, :, :, 0]
    low, high = intensity_bounds(pixels, prep.intensity)  # the float path's bounds
    expected = resize2d(apply_window(pixels, low, high), size, method)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_small_images_and_whole_blocks_keep_pillows_resize() -> None:
    from app.imaging.preprocess import _fold_rows

    assert not _fold_rows((256, 256), (128, 128), "bilinear")  # the MRI slice
    assert not _fold_rows((768, 1024), (192, 256), "area")  # the phantom frame: whole blocks
    assert not _fold_rows((2000, 2000), (128, 128), "nearest")
    assert not _fold_rows((1000, 1000), (2000, 2000), "bilinear")  # enlarging


def test_a_gray_films_float_pixels_are_made_only_when_read() -> None:
    """Readers hand gray 8/16-bit samples over as they are; preprocessing works from them and
    the float32 copy exists only once something reads ``pixels`` (same values)."""
    from app.imaging.limits import DecodeLimits
    from app.imaging.readers import decode_image

    array = np.random.default_rng(9).integers(0, 256, (1200, 1000)).astype(np.uint8)
    image = decode_image([_png(array)], DecodeLimits())
    prep = Preprocessing(
        kind="image2d",
        size=(128, 128),
        channels=1,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
    )
    tensor = preprocess_image(image, prep, "NHWC")
    assert image._pixels is None and image.shape == (1200, 1000)
    np.testing.assert_array_equal(image.pixels, array.astype(np.float32))
    np.testing.assert_allclose(preprocess_image(_general(image), prep, "NHWC"), tensor, atol=1e-6)


@pytest.mark.parametrize(("shape", "resize"), [((768, 1024), "area"), ((301, 257), "bilinear")])
@pytest.mark.parametrize("stored", [True, False])
def test_resize_then_window_windows_the_reduced_image(
    shape: tuple[int, int], resize: str, stored: bool
) -> None:
    """``order: resize_then_window``: the image reduced to the model's size, then the
    percentile window of the reduced image (what the card says, as numpy and Pillow do it);
    it differs from the default order, which a card without the field keeps."""
    rng = np.random.default_rng(18)
    samples = (rng.random(shape) ** 2 * 60000).astype(np.uint16)
    image = (
        Image2D(None, None, Meta(format="png"), stored=samples)
        if stored
        else Image2D(samples.astype(np.float32), None, Meta(format="png"))
    )
    fields = {
        "kind": "image2d",
        "size": (192, 256),
        "channels": 1,
        "intensity": Intensity(method="percentile", low=0.5, high=99.5),
        "resize": resize,
    }
    later = Preprocessing(**fields, order="resize_then_window")  # type: ignore[arg-type]
    got = preprocess_image(image, later, "NHWC")[0, :, :, 0]
    pil = Image.Resampling.BOX if resize == "area" else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(samples.astype(np.float32)).resize((256, 192), pil))
    low, high = np.percentile(small, [0.5, 99.5])
    want = np.clip((small - low) / (high - low), 0, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    default = Preprocessing(**fields)  # type: ignore[arg-type]
    assert default.order == "window_then_resize"
    first = preprocess_image(image, default, "NHWC")[0, :, :, 0]
    assert np.abs(first - got).max() > 1e-3  # the order is part of what a model learnt


def test_the_order_is_a_2d_field() -> None:
    with pytest.raises(ValueError, match="2D"):
        Preprocessing(
            kind="volume3d",
            size=(8, 16, 16),
            intensity=Intensity(method="window", low=-1000, high=400),
            order="resize_then_window",
        )
