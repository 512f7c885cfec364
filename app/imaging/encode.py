"""Masks out: COCO uncompressed RLE, PNG, and an overlay of the mask on the input."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

OUTLINE_RGB = (255, 48, 48)


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool → COCO uncompressed RLE ``{"size": [H, W], "counts": [...], "order": "F"}``.

    Column-major runs that alternate starting with background (the first count may be 0);
    the counts sum to H*W. ``pycocotools.mask.decode`` reads it unchanged (after
    ``frPyObjects``).
    """
    height, width = mask.shape
    total = height * width
    if total == 0:
        return {"size": [height, width], "counts": [], "order": "F"}
    mask = np.asarray(mask, dtype=bool)
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return {"size": [height, width], "counts": [total], "order": "F"}
    # Only the columns the mask touches can hold a change (column-major order); background
    # on both sides of them makes the first and last changes explicit.
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    sub = mask[:, c0:c1].ravel(order="F")
    padded = np.concatenate(([False], sub, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + c0 * height
    changes = changes[changes < total]
    # a mask starting at pixel 0 begins with an empty background run, as COCO expects
    counts = np.diff(np.concatenate(([0], changes, [total]))).tolist()
    return {"size": [height, width], "counts": counts, "order": "F"}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: → (H, W) bool."""
    height, width = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != height * width:
        raise ValueError("RLE counts do not sum to height*width")
    values = np.arange(counts.size) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def mask_png(mask: np.ndarray) -> bytes:
    """(H, W) bool → 8-bit gray PNG, 0 background / 255 mask."""
    img = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3)
    return buf.getvalue()


def _display_gray(plane: np.ndarray) -> np.ndarray:
    """(H, W) any range → uint8 via a 1st–99th percentile window (for display only)."""
    lo, hi = np.percentile(plane, [1, 99]) if plane.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1
    scaled = np.clip((plane.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return (scaled * 255).astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool → the mask's boundary pixels (4-neighbourhood), (H, W) bool."""
    m: np.ndarray = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & m
    edge: np.ndarray = m & ~interior
    return edge


def overlay_png(plane: np.ndarray, mask: np.ndarray) -> bytes:
    """The input (H, W) as gray with the mask's outline drawn in red, as an RGB PNG."""
    gray = _display_gray(plane)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    edge = outline(mask)
    rgb[edge] = OUTLINE_RGB
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()
