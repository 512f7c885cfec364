"""Image2D / Volume → model input tensor, driven only by the card's ``Preprocessing``.

Training calls these same functions, so what a model was trained on is what it is served.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

from app.imaging.card import Intensity, Preprocessing
from app.imaging.types import Image2D, Volume

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601
_PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "trilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
}


def select_channel(pixels: np.ndarray, channel_index: int | None) -> np.ndarray:
    """(H, W) or (H, W, C) → (H, W) float32.

    ``channel_index`` picks one channel when the image has it (e.g. FLAIR of pre/FLAIR/post);
    otherwise RGB(A) becomes luminance, gray+alpha keeps the gray, and gray stays as it is.
    """
    if pixels.ndim == 2:
        return pixels.astype(np.float32, copy=False)
    channels = pixels.shape[2]
    if channel_index is not None and channel_index < channels and channels >= 3:
        return np.ascontiguousarray(pixels[:, :, channel_index], dtype=np.float32)
    if channels >= 3:
        return np.tensordot(pixels[:, :, :3].astype(np.float32, copy=False), _LUMA, axes=1)
    return np.ascontiguousarray(pixels[:, :, 0], dtype=np.float32)


def _small_integers(values: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``values`` as unsigned integers (uint8 or uint16) and the offset that gives them back,
    when every one is an integer and they span at most 16 bits (what the readers' float32
    pixels of an 8/16-bit file hold), else None."""
    if values.size == 0:
        return None
    if values.dtype in (np.uint8, np.uint16):
        return values, 0
    if values.dtype.kind in "ui" and values.dtype.itemsize <= 2:
        least = int(values.min())
        return (values.astype(np.int32) - least).astype(np.uint16), least
    if values.dtype.kind != "f":
        return None
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)) or high - low > 65535 or abs(low) > 2**30:
        return None
    if low >= 0 and high <= 65535:
        # one cast and one comparison: values that are not whole numbers compare unequal
        ints = values.astype(np.uint8 if high <= 255 else np.uint16)
        return (ints, 0) if np.equal(ints, values).all() else None
    shifted = values - np.float32(low) if values.dtype == np.float32 else values - low
    ints = shifted.astype(np.uint16)
    return (ints, int(low)) if np.equal(ints, shifted).all() and float(low).is_integer() else None


_COUNT_STEP = 1 << 17  # uint16 values counted at a time: their intp copy stays in cache


def _counts(ints: np.ndarray) -> np.ndarray:
    """How often each value 0, 1, ... occurs in a uint8 / uint16 array."""
    flat = ints.ravel()
    if flat.dtype == np.uint8:  # Pillow's histogram: one pass, no intp copy
        row = np.ascontiguousarray(flat).reshape(1, -1)
        return np.asarray(Image.fromarray(row).histogram(), dtype=np.int64)
    if flat.size <= _COUNT_STEP:
        return np.bincount(flat)
    # bincount casts its input to intp first: on a 2500 x 2000 film that is a 40 MB copy
    # written and read back through memory; in steps it stays in cache (9.4 -> 7.0 ms)
    top = int(flat.max()) + 1
    counts = np.zeros(top, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_STEP):
        counts += np.bincount(flat[start : start + _COUNT_STEP], minlength=top)
    return counts


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, qs)`` (its default linear method). Integer-valued images (8- and
    16-bit files) are ranked from a histogram: one counting pass instead of a partial sort,
    several times faster on a 768 x 1024 frame, same values."""
    small = _small_integers(values)
    if small is None:
        return [float(v) for v in np.percentile(values, qs)]
    ints, offset = small
    cumulative = np.cumsum(_counts(ints))
    last = ints.size - 1
    out = []
    for q in qs:
        h = q / 100.0 * last
        k = int(np.floor(h))
        # the value of rank k (0-based) is the first one whose cumulative count exceeds k
        v0 = int(np.searchsorted(cumulative, k, side="right"))
        v1 = int(np.searchsorted(cumulative, min(k + 1, last), side="right"))
        out.append(offset + v0 + (h - k) * (v1 - v0))
    return out


def intensity_bounds(values: np.ndarray, intensity: Intensity) -> tuple[float, float]:
    """The (low, high) raw values that map to 0 and 1."""
    if intensity.method == "window":
        assert intensity.low is not None and intensity.high is not None
        return float(intensity.low), float(intensity.high)
    sample = values if values.size <= 4_000_000 else values.ravel()[:: values.size // 2_000_000]
    if intensity.method == "minmax":
        return float(np.min(sample)), float(np.max(sample))
    assert intensity.low is not None and intensity.high is not None
    lo, hi = percentiles(sample, (intensity.low, intensity.high))
    return lo, hi


def apply_window(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1] and clip; a flat image becomes all zeros.
    Returns a new float32 array (``values`` is left as it is)."""
    span = high - low
    if span <= 0:
        return np.zeros(values.shape, dtype=np.float32)
    # three passes for float32 (v - low into a new array, the scale, the clip), a cast first
    # for other types
    out: np.ndarray
    if values.dtype == np.float32:
        out = np.subtract(values, np.float32(low), dtype=np.float32)
    else:
        out = values.astype(np.float32)
        out -= np.float32(low)
    out *= np.float32(1.0 / span)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _pil_float(plane: np.ndarray) -> Image.Image:
    """A float32 (H, W) array as a Pillow ``F`` image sharing its memory (no copy)."""
    data = np.ascontiguousarray(plane, dtype=np.float32)
    height, width = data.shape
    return Image.frombuffer("F", (width, height), data, "raw", "F", 0, 1)


def resize2d(plane: np.ndarray, size: tuple[int, int], method: str) -> np.ndarray:
    """(H, W) float32 → (size[0], size[1]) float32."""
    height, width = size
    if plane.shape == (height, width):
        return plane.astype(np.float32, copy=False)
    fh, fw = plane.shape[0] // height, plane.shape[1] // width
    if method == "area" and plane.shape == (height * fh, width * fw):
        return _block_mean(plane.astype(np.float32, copy=False), fh, fw)
    resized = _pil_float(plane).resize((width, height), resample=_PIL_RESAMPLE[method])
    return np.asarray(resized, np.float32)


_CHUNK_VOXELS = 4_000_000  # 16 MB of float32 windowed voxels at a time


# Pillow's convolution filters (support in source pixels at scale 1, kernel): the ones
# resize_weights computes directly; any other method is read off Pillow itself.
def _triangle(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(0.0, 1.0 - np.abs(x))
    return out


def _box(x: np.ndarray) -> np.ndarray:
    return ((x > -0.5) & (x <= 0.5)).astype(np.float64)


_FILTERS: dict[str, tuple[float, Callable[[np.ndarray], np.ndarray]]] = {
    "bilinear": (1.0, _triangle),
    "trilinear": (1.0, _triangle),
    "area": (0.5, _box),
}


@lru_cache(maxsize=32)
def resize_weights(src: int, dst: int, method: str) -> np.ndarray:
    """(dst, src) float32 matrix ``M`` such that ``M @ v`` resizes a line of ``src`` samples to
    ``dst`` as Pillow does, so a plane resized as ``R @ P @ C.T`` matches ``resize2d`` to
    float32 rounding. Bilinear and box weights are computed as Pillow computes them (its
    ``precompute_coeffs``: the kernel widened by the reduction factor, centred on
    ``(i + 0.5) * src / dst``, normalised over the source pixels it covers); other filters are
    read off Pillow by resizing the identity."""
    if method not in _FILTERS:
        identity = Image.fromarray(np.eye(src, dtype=np.float32))
        out = identity.resize((dst, src), resample=_PIL_RESAMPLE[method])  # columns → dst
        weights = np.asarray(out, dtype=np.float32).T.copy()
        weights.setflags(write=False)
        return weights
    base, kernel = _FILTERS[method]
    scale = src / dst
    filterscale = max(scale, 1.0)
    support = base * filterscale
    centres = (np.arange(dst, dtype=np.float64) + 0.5) * scale
    first = np.maximum((centres - support + 0.5).astype(np.int64), 0)  # C's (int): truncation
    stop = np.minimum((centres + support + 0.5).astype(np.int64), src)
    taps = first[:, None] + np.arange(math.ceil(support) * 2 + 1)[None, :]
    inside = taps < stop[:, None]
    w = np.where(inside, kernel((taps - centres[:, None] + 0.5) / filterscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=w, where=total != 0)
    dense = np.zeros((dst, src), dtype=np.float64)
    rows = np.broadcast_to(np.arange(dst)[:, None], taps.shape)
    dense[rows[inside], taps[inside]] = w[inside]
    weights = dense.astype(np.float32)
    weights.setflags(write=False)
    return weights


_ROW_BLOCK = 64  # source rows windowed at a time (a few hundred kB: stays in cache)


def _blocks_of(weights: np.ndarray) -> tuple[tuple[int, int, int, int], ...]:
    """For each block of ``_ROW_BLOCK`` source rows of a (dst, src) weight matrix: (start,
    stop, first, last + 1) of the output rows its weights reach."""
    blocks = []
    for start in range(0, weights.shape[1], _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, weights.shape[1])
        reached = np.flatnonzero(weights[:, start:stop].any(axis=1))
        if reached.size:
            blocks.append((start, stop, int(reached[0]), int(reached[-1]) + 1))
    return tuple(blocks)


@lru_cache(maxsize=32)
def _row_blocks(src: int, dst: int, method: str) -> tuple[tuple[int, int, int, int], ...]:
    return _blocks_of(resize_weights(src, dst, method))


def window_resize(
    values: np.ndarray, low: float, high: float, size: tuple[int, int], method: str
) -> np.ndarray:
    """``resize2d(apply_window(values, low, high), size, method)`` for a large (H, W) image,
    without the full-resolution windowed copy: each block of rows is windowed while it is in
    cache and folded into the output rows it reaches with Pillow's weights (``resize_weights``),
    then the columns are resized. Same values as the two steps to float32 rounding; ``values``
    may be the stored 8/16-bit samples (the same numbers as their float32 copy)."""
    height, width = size
    rows = resize_weights(values.shape[0], height, method)
    cols = resize_weights(values.shape[1], width, method)
    tall = np.zeros((height, values.shape[1]), dtype=np.float32)
    for start, stop, first, last in _row_blocks(values.shape[0], height, method):
        block = apply_window(values[start:stop], low, high)
        tall[first:last] += rows[first:last, start:stop] @ block
    out: np.ndarray = tall @ cols.T
    return out


def _block_mean(plane: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """Mean of whole ``fh`` x ``fw`` blocks: what Pillow's box filter gives for an integer
    reduction (to float32 rounding), by strided adds, ~5x faster than resizing with Pillow."""
    h, w = plane.shape[0] // fh, plane.shape[1] // fw
    rows = plane.reshape(h, fh, plane.shape[1])
    acc = rows[:, 0].copy()
    for i in range(1, fh):
        acc += rows[:, i]
    cols = acc.reshape(h, w, fw)
    out = cols[:, :, 0].copy()
    for j in range(1, fw):
        out += cols[:, :, j]
    out *= np.float32(1.0 / (fh * fw))
    return out


def resize_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """(S, H, W) → (depth, H, W) by linear interpolation between slice centres.

    When slices are removed (S > depth) the linear (triangle) kernel is widened by S / depth,
    as Pillow's bilinear resize does in-plane, so every source slice contributes (like a
    thicker reconstruction). Plain interpolation would read two slices per output and skip the
    rest: a thin-slice series (300 × 1 mm) would reach a model trained on thick slices as a
    sparse, noisy sample of itself.
    """
    slices = volume.shape[0]
    if slices == depth:
        return volume
    if slices > depth:
        return _shrink_depth(volume, depth)
    pos = (np.arange(depth, dtype=np.float64) + 0.5) * (slices / depth) - 0.5
    pos = np.clip(pos, 0, slices - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, slices - 1)
    w = (pos - i0).astype(np.float32)[:, None, None]
    out: np.ndarray = volume[i0] * (1 - w) + volume[i1] * w
    return out


def _shrink_depth(volume: np.ndarray, depth: int) -> np.ndarray:
    """(S, H, W) → (depth, H, W), S > depth: triangle kernel of half-width S / depth slices
    centred on each output slice, weights normalised over the slices that exist."""
    slices = volume.shape[0]
    scale = slices / depth
    centres = (np.arange(depth, dtype=np.float64) + 0.5) * scale - 0.5
    taps = np.arange(slices, dtype=np.float64)
    weights = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centres[:, None]) / scale)
    weights /= weights.sum(axis=1, keepdims=True)
    out: np.ndarray = np.tensordot(weights.astype(np.float32), volume, axes=(1, 0))
    return out.astype(np.float32, copy=False)


def _to_layout(x: np.ndarray, layout: str, channels: int) -> np.ndarray:
    """(H, W) or (D, H, W) in [0, 1] → a batch of one in ``layout``."""
    if layout in ("NHWC", "NDHWC"):
        x = np.repeat(x[..., None], channels, axis=-1) if channels > 1 else x[..., None]
    else:
        x = np.repeat(x[None], channels, axis=0) if channels > 1 else x[None]
    return np.ascontiguousarray(x[None], dtype=np.float32)


def preprocess_image(image: Image2D, prep: Preprocessing, layout: str) -> np.ndarray:
    """Image2D → (1, H, W, C) or (1, C, H, W) float32 in [0, 1] at ``prep.size``."""
    # A gray 8/16-bit image's samples as integers are the same values as its float32 pixels:
    # ranked from a histogram, windowed straight from the samples (no float32 copy).
    stored = image.stored if image.stored is not None and image.stored.ndim == 2 else None
    plane = stored if stored is not None else select_channel(image.pixels, prep.channel_index)
    size = (prep.size[0], prep.size[1])
    if prep.order == "resize_then_window":
        small = resize2d(plane, size, prep.resize)
        low, high = intensity_bounds(small, prep.intensity)
        return _to_layout(apply_window(small, low, high), layout, prep.channels)
    low, high = intensity_bounds(plane, prep.intensity)
    if _fold_rows(plane.shape, size, prep.resize):
        resized = window_resize(plane, low, high, size, prep.resize)
    else:
        resized = resize2d(apply_window(plane, low, high), size, prep.resize)
    return _to_layout(resized, layout, prep.channels)


_FOLD_MIN_PIXELS = 1_000_000


def _fold_rows(shape: tuple[int, ...], size: tuple[int, int], method: str) -> bool:
    """Whether ``window_resize`` does this resize: a large image reduced (a film) with a filter
    whose weights are computed (not a whole-block area reduction, which has its own path)."""
    rows, cols = shape[0], shape[1]
    if method not in _FILTERS or rows * cols < _FOLD_MIN_PIXELS:
        return False
    if rows < size[0] or cols < size[1]:
        return False
    whole_blocks = rows % size[0] == 0 and cols % size[1] == 0
    return not (method == "area" and whole_blocks)


def preprocess_volume(volume: Volume, prep: Preprocessing, layout: str) -> np.ndarray:
    """Volume (S, H, W) → (1, D, H, W, 1) or (1, 1, D, H, W) float32 in [0, 1] at ``prep.size``.

    Works slice by slice (window, then in-plane resize) so that the full-resolution volume is
    never copied as float: memory stays near the input plus the small output.
    """
    depth, height, width = prep.size
    low, high = intensity_bounds(volume.voxels, prep.intensity)
    slices, rows, cols = volume.shape
    planes = np.empty((slices, height, width), dtype=np.float32)
    if (rows, cols) == (height, width):
        for i in range(slices):
            planes[i] = apply_window(volume.voxels[i], low, high)
        return _to_layout(resize_depth(planes, depth), layout, prep.channels)
    # In-plane resize as two matrix products with Pillow's own filter weights, a few slices at
    # a time: one BLAS call per chunk instead of a Pillow round trip per slice.
    voxels = volume.voxels
    row_w = resize_weights(rows, height, prep.resize)
    col_w = resize_weights(cols, width, prep.resize)
    # A reader's canonical view may run backwards along an axis (a flipped file): read it
    # forwards (a fast cast) and reverse the weights instead (a slice flip is reversed last).
    flips = tuple(axis for axis in range(3) if voxels.strides[axis] < 0)
    if flips:
        voxels = np.flip(voxels, flips)
        row_w = row_w[:, ::-1] if 1 in flips else row_w
        col_w = col_w[:, ::-1] if 2 in flips else col_w
    chunk = max(1, _CHUNK_VOXELS // (rows * cols))
    blocks = _blocks_of(row_w)
    col_t = np.ascontiguousarray(col_w.T)
    for start in range(0, slices, chunk):
        windowed = apply_window(voxels[start : start + chunk], low, high)
        # the row resize block by block: each block of source rows meets only the few output
        # rows its weights reach, not the whole (mostly zero) weight matrix
        tall = np.zeros((windowed.shape[0], height, cols), dtype=np.float32)
        for first_row, stop_row, first, last in blocks:
            tall[:, first:last] += np.matmul(
                row_w[first:last, first_row:stop_row], windowed[:, first_row:stop_row]
            )
        planes[start : start + chunk] = np.matmul(tall, col_t)
    if 0 in flips:
        planes = planes[::-1]
    return _to_layout(resize_depth(planes, depth), layout, prep.channels)


def preprocess(item: Image2D | Volume, prep: Preprocessing, layout: str) -> np.ndarray:
    """The card-driven input tensor for ``item`` (a batch of one)."""
    if isinstance(item, Volume):
        return preprocess_volume(item, prep, layout)
    return preprocess_image(item, prep, layout)
