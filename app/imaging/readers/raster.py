"""PNG / JPEG / TIFF → Image2D with Pillow (allow-listed formats only, 16-bit kept)."""

from __future__ import annotations

import zlib
from io import BytesIO
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ImageTooLarge, InvalidImage
from app.imaging.limits import DecodeLimits
from app.imaging.types import Image2D, Meta

RasterFormat = Literal["png", "jpeg", "tiff"]

_PIL_FORMATS = ["PNG", "JPEG", "TIFF"]
_NAMES: dict[RasterFormat, str] = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF"}
_FORMATS: dict[str, RasterFormat] = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}
_GRAY16 = {"I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I;16LS", "I;16BS"}
# Errors Pillow's decoders raise on corrupt input (their messages may quote the input).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zlib.error, IndexError, KeyError)


def _open(data: bytes, name: str) -> Image.Image:
    # Pillow's own bomb check (global Image.MAX_IMAGE_PIXELS) runs inside open(); past twice
    # that it raises, below it at most warns. Our limit is checked on img.size right after,
    # before load(): no global Pillow state or warning filter is touched (thread-safe).
    try:
        return Image.open(BytesIO(data), formats=_PIL_FORMATS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{name} header declares more pixels than allowed") from None
    except UnidentifiedImageError:
        raise InvalidImage(f"{name} data is corrupt or truncated") from None
    except _DECODE_ERRORS:
        raise InvalidImage(f"{name} header is corrupt") from None


# Modes whose raw bytes are the samples as they are (Pillow's own raw encoding of the mode).
_RAW_DTYPES: dict[str, np.dtype[np.uint8] | np.dtype[np.uint16]] = {
    "L": np.dtype(np.uint8),
    "RGB": np.dtype(np.uint8),
    "I;16": np.dtype("<u2"),
    "I;16L": np.dtype("<u2"),
    "I;16B": np.dtype(">u2"),
}


def _samples(img: Image.Image) -> np.ndarray:
    """The image's samples as a read-only array: (H, W) or (H, W, bands). For the common
    modes from ``tobytes`` (one copy; ``np.asarray`` through the array interface takes about
    four times as long on a film), else through the array interface."""
    dtype = _RAW_DTYPES.get(img.mode)
    if dtype is None:
        return np.asarray(img)
    width, height = img.size
    bands = len(img.getbands())
    shape = (height, width) if bands == 1 else (height, width, bands)
    samples: np.ndarray = np.frombuffer(img.tobytes(), dtype=dtype).reshape(shape)
    return samples


def _to_array(img: Image.Image) -> tuple[np.ndarray | None, int, np.ndarray | None]:
    """Pixels as (H, W) or (H, W, 3) float32, the bits per sample they carry, and the gray
    8/16-bit samples; for those the float32 pixels are None (``Image2D`` makes them when they
    are first read)."""
    mode = img.mode
    if mode in _GRAY16:
        # native byte order (I;16B is big endian); no copy when it already is
        stored = _samples(img).astype(np.uint16, copy=False)
        return None, 16, stored
    if mode == "I":
        arr = np.asarray(img)
        bits = 16 if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 0xFFFF) else 32
        if bits == 16:
            return None, bits, arr.astype(np.uint16)
        return arr.astype(np.float32), bits, None
    if mode == "F":
        return np.asarray(img, dtype=np.float32), 32, None
    if mode == "L":
        return None, 8, _samples(img)
    if mode in ("1", "LA", "La"):  # bilevel → 0/255, gray + alpha → gray
        return None, 8, np.asarray(img.convert("L"))
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.asarray(img)[:, :, :3].astype(np.float32), 8, None
    if mode == "RGB":
        return _samples(img).astype(np.float32), 8, None
    # P, PA, CMYK, YCbCr, LAB, HSV, ...: let Pillow produce RGB.
    return np.asarray(img.convert("RGB")).astype(np.float32), 8, None


def _rotated(img: Image.Image) -> bool:
    """Whether the EXIF orientation asks for a transpose (``exif_transpose`` copies the image
    even when it does not)."""
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except _DECODE_ERRORS:
        return True  # let exif_transpose decide (and report a corrupt file)


def decode_raster(data: bytes, kind: RasterFormat, limits: DecodeLimits) -> Image2D:
    """PNG / JPEG / TIFF bytes → Image2D.

    ``pixels``: (H, W) float32 for gray (L, I;16, I, F, 1, LA) or (H, W, 3) float32 RGB for
    colour (P → RGB, alpha dropped), in the file's own value range: 16-bit data stays
    0..65535. EXIF orientation is applied. ``spacing`` is None (rasters carry no reliable
    physical size). The pixel count is checked from the header before any pixel is decoded.
    Multi-page TIFF / animated PNG are refused (one 2D image is expected).
    """
    name = _NAMES[kind]
    img = _open(data, name)
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"{name} image has zero size")
        if width * height > limits.max_image_pixels:
            raise ImageTooLarge(
                f"image has {width * height} pixels; the limit is {limits.max_image_pixels}"
            )
        # the decoded image, its samples as an array (kept for gray) and their float32 copy
        limits.reserve(width * height * len(img.getbands()) * 8)
        fmt = _FORMATS.get(img.format or "", kind)
        frames = int(getattr(img, "n_frames", 1))
        if frames > 1 and fmt != "jpeg":  # an MPO JPEG's extra frames are previews
            raise InvalidImage(f"{name} holds {frames} frames; one 2D image was expected")
        try:
            img.load()
            oriented = ImageOps.exif_transpose(img, in_place=False) if _rotated(img) else img
            pixels, bits, stored = _to_array(oriented)
        except _DECODE_ERRORS as exc:
            truncated = isinstance(exc, OSError) and "truncated" in str(exc)
            what = "truncated" if truncated else "corrupt"
            raise InvalidImage(f"{name} data is {what}") from None
    finally:
        img.close()
    meta = Meta(format=fmt, bits_stored=16 if bits == 16 else (32 if bits == 32 else 8))
    if stored is not None:  # gray 8/16-bit: the samples; float32 pixels made when first read
        if stored.size == 0:
            raise InvalidImage(f"{name} image has zero size")
        return Image2D(None, None, meta, stored=np.ascontiguousarray(stored))
    assert pixels is not None
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.size == 0:
        raise InvalidImage(f"{name} image has zero size")
    return Image2D(pixels=np.ascontiguousarray(pixels), spacing=None, meta=meta)
