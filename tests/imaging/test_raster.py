"""PNG / JPEG / TIFF → Image2D, and the 2D endpoint's refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from imaging_factories import nifti_bytes, png_header_only, zip_bytes
from PIL import Image

from app.errors import ImageTooLarge, InvalidImage, MedserveError, UnsupportedMediaType
from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode, decode_image, sniff
from app.imaging.types import Image2D

LIMITS = DecodeLimits()


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def ramp16() -> np.ndarray:
    return np.linspace(0, 65535, 64 * 32).round().astype(np.uint16).reshape(32, 64)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_ramp_round_trips_without_clipping(fmt: str) -> None:
    ramp = ramp16()
    img = decode_image([encode(Image.fromarray(ramp), fmt)], LIMITS)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (32, 64)
    np.testing.assert_array_equal(img.pixels, ramp.astype(np.float32))
    assert img.pixels.max() == 65535.0 and img.pixels.min() == 0.0
    assert img.meta.bits_stored == 16
    assert img.meta.format == fmt.lower()
    assert img.spacing is None


def test_8bit_gray_png() -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = decode_image([encode(Image.fromarray(gray), "PNG")], LIMITS)
    np.testing.assert_array_equal(img.pixels, gray.astype(np.float32))
    assert img.meta.bits_stored == 8


@pytest.mark.parametrize(
    ("mode", "shape"),
    [
        ("RGB", (6, 5, 3)),
        ("RGBA", (6, 5, 3)),
        ("P", (6, 5, 3)),
        ("LA", (6, 5)),
        ("1", (6, 5)),
        ("I", (6, 5)),
        ("L", (6, 5)),
        ("CMYK", (6, 5, 3)),
    ],
)
def test_modes(mode: str, shape: tuple[int, ...]) -> None:
    src = Image.new(mode, (5, 6))
    img = decode_image([encode(src, "TIFF" if mode in ("I", "CMYK") else "PNG")], LIMITS)
    assert img.pixels.shape == shape and img.pixels.dtype == np.float32


def test_rgba_alpha_dropped_and_palette_expanded() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    img = decode_image([encode(Image.fromarray(rgba, "RGBA"), "PNG")], LIMITS)
    assert img.pixels.shape == (2, 2, 3) and float(img.pixels[0, 0, 0]) == 200.0
    pal = Image.new("P", (2, 2))
    pal.putpalette([10, 20, 30] * 256)
    img = decode_image([encode(pal, "PNG")], LIMITS)
    np.testing.assert_array_equal(img.pixels[0, 0], [10.0, 20.0, 30.0])


def test_float_tiff() -> None:
    data = np.linspace(-1.5, 2.5, 12, dtype=np.float32).reshape(3, 4)
    img = decode_image([encode(Image.fromarray(data, "F"), "TIFF")], LIMITS)
    np.testing.assert_array_equal(img.pixels, data)


def test_jpeg_exif_orientation_applied() -> None:
    src = Image.new("L", (40, 20), 0)  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img = decode_image([encode(src, "JPEG", exif=exif)], LIMITS)
    assert img.shape == (40, 20)  # displayed tall
    assert img.meta.format == "jpeg"


def test_tiff_with_png_name_is_still_tiff() -> None:
    # Names are never looked at: the bytes say TIFF.
    data = encode(Image.new("L", (3, 3)), "TIFF")
    assert sniff(data) == "tiff"
    assert decode_image([data], LIMITS).meta.format == "tiff"


def test_png_header_declaring_huge_size() -> None:
    data = png_header_only(20000, 20000)
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image([data], LIMITS)
    with pytest.raises(ImageTooLarge):  # past Pillow's own bomb threshold too
        decode_image([png_header_only(20000, 20000)], DecodeLimits(max_image_pixels=10**10))


def test_pixel_limit_is_configurable() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image([data], DecodeLimits(max_image_pixels=9999))
    assert decode_image([data], DecodeLimits(max_image_pixels=10000)).shape == (100, 100)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "WEBP"])
def test_other_raster_formats_refused(fmt: str) -> None:
    data = encode(Image.new("RGB", (4, 4)), fmt)
    assert sniff(data) is None
    with pytest.raises(UnsupportedMediaType):
        decode_image([data], LIMITS)
    with pytest.raises(UnsupportedMediaType):
        decode([data], LIMITS)


def test_truncated_png() -> None:
    data = encode(Image.fromarray(ramp16()), "PNG")
    with pytest.raises(InvalidImage, match=r"PNG data is (truncated|corrupt)"):
        decode_image([data[: len(data) // 2]], LIMITS)


def test_truncated_jpeg() -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, size=(64, 64), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "JPEG")
    with pytest.raises(InvalidImage, match="JPEG"):
        decode_image([data[: len(data) // 2]], LIMITS)


def test_png_magic_then_garbage() -> None:
    with pytest.raises(InvalidImage):
        decode_image([b"\x89PNG\r\n\x1a\n" + b"garbage" * 10], LIMITS)


def test_zero_size_png() -> None:
    with pytest.raises(InvalidImage):
        decode_image([png_header_only(0, 10)], LIMITS)


def test_multipage_tiff_refused() -> None:
    pages = [Image.new("L", (4, 4)), Image.new("L", (4, 4))]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    with pytest.raises(InvalidImage, match="2 frames"):
        decode_image([data], LIMITS)


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        pytest.param([b""], InvalidImage, id="empty-body"),
        pytest.param([], InvalidImage, id="no-part"),
        pytest.param([b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n"], UnsupportedMediaType, id="two"),
        pytest.param([b"%PDF-1.4 ..."], UnsupportedMediaType, id="unknown"),
    ],
)
def test_2d_endpoint_refusals(parts: list[bytes], error: type[MedserveError]) -> None:
    with pytest.raises(error):
        decode_image(parts, LIMITS)


def test_empty_detail() -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image([b""], LIMITS)
    assert info.value.detail == "empty upload"


def test_volumes_refused_by_2d_endpoint() -> None:
    with pytest.raises(UnsupportedMediaType, match="one 2D image"):
        decode_image([nifti_bytes(np.zeros((2, 2, 2), np.int16))], LIMITS)
    with pytest.raises(UnsupportedMediaType, match="one 2D image"):
        decode_image([zip_bytes([("a", b"b")])], LIMITS)


def test_decode_dispatches_raster() -> None:
    out = decode([encode(Image.new("L", (3, 2)), "PNG")], LIMITS)
    assert isinstance(out, Image2D) and out.shape == (2, 3)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "png"),
        (b"\xff\xd8\xff\xe0" + b"\0" * 8, "jpeg"),
        (b"II*\x00" + b"\0" * 8, "tiff"),
        (b"MM\x00*" + b"\0" * 8, "tiff"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"PK\x03\x04", "zip"),
        (b"\0" * 128 + b"DICM" + b"\0" * 8, "dicom"),
        (b"II*\x00" + b"\0" * 124 + b"DICM", "dicom"),  # TIFF-compatible preamble
        (b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100", "dicom"),  # no preamble, explicit VR
        (b"\x08\x00\x16\x00\x1a\x00\x00\x001.2.840.10008.5.1.4.1.1.2", "dicom"),  # implicit
        (b"GIF89a", None),
        (b"BM" + b"\0" * 20, None),
        (b"", None),
    ],
)
def test_sniff(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_over_our_limit_but_under_pillows_error_threshold() -> None:
    with pytest.raises(ImageTooLarge, match="limit"):
        decode_image([png_header_only(10000, 10000)], LIMITS)  # 1e8 > 64e6 default
