"""The OOD set: inputs a model must flag, by kind, as decoded items (before preprocessing).

Kinds (2D models): the other models' modalities (from their synthetic generators), natural-looking
images (textures, gradients, text, shapes), noise, blank, saturated, inverted, rotated 90/180,
tiled/montaged in-distribution images, wrong bit depth. ``covid_ct`` gets the volume versions,
plus noise volumes, constant volumes and a radiograph repeated as slices.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import zoom

from app.imaging.card import ModelCard
from app.imaging.types import Image2D, Meta, Volume
from training.ood import data

Item = Image2D | Volume
KINDS_2D = (
    "other_modality",
    "texture",
    "gradient",
    "text",
    "shapes",
    "noise",
    "blank",
    "saturated",
    "inverted",
    "rotated_90",
    "rotated_180",
    "tiled",
    "wrong_bit_depth",
)
KINDS_3D = (*KINDS_2D, "noise_volume", "constant_volume", "radiograph_slices")
# A 2D image shown to the CT model is repeated as this many slices (the synthetic studies have
# 36-44).
CT_SLICES = 40
HU_RANGE = (-1024.0, 1500.0)


def _img(pixels: np.ndarray) -> Image2D:
    return Image2D(np.asarray(pixels, dtype=np.float32), None, Meta(format="png"))


def _vol(voxels: np.ndarray) -> Volume:
    return Volume(np.asarray(voxels, dtype=np.float32), None, Meta(format="nifti"))


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    coarse = rng.normal(size=(cells, cells))
    up = zoom(coarse, (shape[0] / cells, shape[1] / cells), order=3)[: shape[0], : shape[1]]
    up = (up - up.min()) / max(float(np.ptp(up)), 1e-9)
    return np.asarray(up, dtype=np.float64)


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Smooth noise at one or two scales, sometimes with a sinusoidal grating: [0, 1]."""
    t = _smooth(rng, shape, int(rng.integers(3, 24)))
    if rng.random() < 0.5:
        t = 0.5 * t + 0.5 * _smooth(rng, shape, int(rng.integers(24, 64)))
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        ang, period = rng.uniform(0, np.pi), rng.uniform(4, 40)
        grating = 0.5 + 0.5 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
        t = 0.5 * t + 0.5 * grating
    return t


def gradient(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A linear or radial ramp: [0, 1]."""
    yy, xx = (
        np.mgrid[0 : shape[0], 0 : shape[1]] / np.asarray(shape, dtype=np.float64)[:, None, None]
    )
    if rng.random() < 0.5:
        ang = rng.uniform(0, 2 * np.pi)
        g = xx * np.cos(ang) + yy * np.sin(ang)
    else:
        cy, cx = rng.uniform(0, 1, 2)
        g = np.hypot(yy - cy, xx - cx)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-9)
    return np.asarray(g ** rng.uniform(0.5, 2.0), dtype=np.float64)


_WORDS = ("patient", "report", "normal", "findings", "impression", "chest", "lorem", "study")


def text(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Lines of words on a plain background (a scanned page, a screenshot): [0, 1]."""
    bg, fg = (255, 0) if rng.random() < 0.7 else (0, 255)
    im = Image.new("L", (shape[1], shape[0]), bg)
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=int(rng.integers(10, 28)))
    y = int(rng.integers(2, 12))
    while y < shape[0] - 8:
        line = " ".join(rng.choice(_WORDS, size=int(rng.integers(2, 8))))
        draw.text((int(rng.integers(2, 20)), y), line, fill=fg, font=font)
        y += int(rng.integers(14, 36))
    return np.asarray(im, dtype=np.float64) / 255.0


def shapes(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A colour "photo" made of filled rectangles and ellipses over a gradient sky: (H, W, 3)
    in [0, 1]."""
    im = Image.new("RGB", (shape[1], shape[0]))
    sky = gradient(rng, shape)
    base = rng.uniform(0, 255, 3)
    arr = (sky[..., None] * base[None, None, :]).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(4, 16))):
        x0, x1 = sorted(rng.integers(0, shape[1], 2).tolist())
        y0, y1 = sorted(rng.integers(0, shape[0], 2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (x0, y0, x1 + 4, y1 + 4)
        if rng.random() < 0.5:
            draw.rectangle(box, fill=colour)
        else:
            draw.ellipse(box, fill=colour)
    return np.asarray(im, dtype=np.float64) / 255.0


def noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform or Gaussian white noise: [0, 1]."""
    if rng.random() < 0.5:
        return rng.uniform(0, 1, shape)
    return np.clip(rng.normal(0.5, rng.uniform(0.05, 0.3), shape), 0, 1)


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    factors = (shape[0] / a.shape[0], shape[1] / a.shape[1]) + (1,) * (a.ndim - 2)
    return np.asarray(zoom(a, factors, order=1), dtype=np.float64)[: shape[0], : shape[1]]


def tile(parts: list[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """In-distribution planes side by side (``rows`` × ``cols``), each resized to the first's
    shape: a montage like the README's preview strip."""
    h, w = parts[0].shape[:2]
    cells = [_resize(p, (h, w)) for p in parts[: rows * cols]]
    return np.concatenate(
        [np.concatenate(cells[r * cols : (r + 1) * cols], axis=1) for r in range(rows)], axis=0
    )


def _max_value(card: ModelCard) -> float:
    bits = card.input.preprocessing.expected_bits or 8
    return float(2**bits - 1)


@lru_cache(maxsize=16)
def _generated(name: str, count: int, seed: int) -> tuple[Item, ...]:
    """``count`` decoded cases of generator ``name`` (cached: the OOD sets of several models
    made in one process share them)."""
    with tempfile.TemporaryDirectory(prefix="medserve-ood-") as tmp:
        root = Path(tmp)
        data.generate(name, root, max(count, 6), seed)
        files = [p for p, _, _ in data.files(name, root)]
        step = max(1, len(files) // count)
        return tuple(data.decode_any(p) for p in files[::step][:count])


def _other_modalities(card: ModelCard, n: int, seed: int) -> list[Item]:
    """Decoded images of the other three models' generators (about ``n`` in all)."""
    others = [m for m in data.GENERATED if m != card.name]
    per = max(1, n // len(others))
    return [item for other in others for item in _generated(other, per, seed)]


def _as_plane(item: Item) -> np.ndarray:
    if isinstance(item, Volume):
        return np.asarray(item.voxels[item.shape[0] // 2], dtype=np.float64)
    return np.asarray(item.pixels, dtype=np.float64)


def _luma(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else a[..., :3].mean(axis=-1)


def make_kinds(
    card: ModelCard, raw: list[Item], n_per_kind: int, seed: int
) -> dict[str, list[Item]]:
    """``n_per_kind`` decoded OOD items per kind for ``card``'s model; ``raw`` are decoded
    in-distribution items (for inverted, rotated, tiled, wrong bit depth)."""
    rng = np.random.default_rng([seed, 20])
    volume = card.input.preprocessing.kind == "volume3d"
    top = _max_value(card)
    out: dict[str, list[Item]] = {}
    like = raw[0].shape[-2:] if raw else (256, 256)
    shape2d = (int(like[0]), int(like[1]))

    def as_input(plane01: np.ndarray) -> Item:
        """A [0, 1] picture as this model's input: gray levels for 2D models, HU repeated as
        slices for the CT model."""
        if not volume:
            return _img(plane01 * top)
        hu = HU_RANGE[0] + _luma(plane01) * (HU_RANGE[1] - HU_RANGE[0])
        return _vol(np.repeat(hu[None], CT_SLICES, axis=0))

    def pictures(fn: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]) -> list[Item]:
        return [as_input(fn(rng, shape2d)) for _ in range(n_per_kind)]

    others = _other_modalities(card, n_per_kind, seed)
    if volume:
        conv: list[Item] = []
        for o in others:
            plane = _as_plane(o)
            conv.append(_vol(np.repeat(_luma(plane)[None], CT_SLICES, axis=0)))
        out["other_modality"] = conv
    else:
        out["other_modality"] = [
            o if isinstance(o, Image2D) else _img(_as_plane(o)) for o in others
        ]
    out["texture"] = pictures(texture)
    out["gradient"] = pictures(gradient)
    out["text"] = pictures(text)
    out["shapes"] = pictures(shapes)
    if volume:
        out["noise"] = pictures(noise)  # one noise picture repeated
    else:
        out["noise"] = [_img(noise(rng, shape2d) * top) for _ in range(n_per_kind)]
    lo_value = HU_RANGE[0] if volume else 0.0
    hi_value = HU_RANGE[1] if volume else top
    out["blank"] = [_constant(card, raw, lo_value) for _ in range(n_per_kind)]
    out["saturated"] = [_constant(card, raw, hi_value) for _ in range(n_per_kind)]
    picks = [raw[int(i)] for i in rng.integers(0, len(raw), n_per_kind)]
    out["inverted"] = [_map(it, lambda a: a.max() + a.min() - a) for it in picks]
    out["rotated_90"] = [_map(it, lambda a: _rot(a, 1, volume)) for it in picks]
    out["rotated_180"] = [_map(it, lambda a: _rot(a, 2, volume)) for it in picks]
    tiled: list[Item] = []
    for _ in range(n_per_kind):
        rows, cols = [(1, 3), (2, 2), (1, 2), (3, 3)][int(rng.integers(0, 4))]
        chosen = [raw[int(i)] for i in rng.integers(0, len(raw), rows * cols)]
        if volume:
            vols = [np.asarray(c.voxels, dtype=np.float64) for c in chosen if isinstance(c, Volume)]
            depth = min(v.shape[0] for v in vols)
            stack = [tile([v[k] for v in vols], rows, cols) for k in range(depth)]
            tiled.append(_vol(np.stack(stack)))
        else:
            tiled.append(_img(tile([_as_plane(c) for c in chosen], rows, cols)))
    out["tiled"] = tiled
    out["wrong_bit_depth"] = [_wrong_bits(card, it) for it in picks]
    if volume:
        out["noise_volume"] = [
            _vol(HU_RANGE[0] + noise(rng, (CT_SLICES, *shape2d)) * (HU_RANGE[1] - HU_RANGE[0]))
            for _ in range(n_per_kind)
        ]
        out["constant_volume"] = [
            _vol(np.full((CT_SLICES, *shape2d), rng.uniform(*HU_RANGE))) for _ in range(n_per_kind)
        ]
        films = [o for o in others if isinstance(o, Image2D) and o.pixels.ndim == 2]
        slices: list[Item] = [
            _vol(np.repeat(_resize(f.pixels, shape2d)[None], CT_SLICES, axis=0)) for f in films
        ]
        out["radiograph_slices"] = slices[:n_per_kind] or out["other_modality"][:1]
    return out


def _rot(a: np.ndarray, k: int, volume: bool) -> np.ndarray:
    """Rotate by k·90° in the image plane (a volume's axial plane)."""
    return np.rot90(a, k, axes=(1, 2) if volume else (0, 1))


def _constant(card: ModelCard, raw: list[Item], value: float) -> Item:
    like = raw[0] if raw else None
    if isinstance(like, Volume):
        return _vol(np.full(like.shape, value))
    shape = like.pixels.shape if isinstance(like, Image2D) else (256, 256)
    return _img(np.full(shape, value))


def _map(item: Item, fn: Callable[[np.ndarray], np.ndarray]) -> Item:
    if isinstance(item, Volume):
        return _vol(fn(np.asarray(item.voxels, dtype=np.float64)))
    return _img(fn(np.asarray(item.pixels, dtype=np.float64)))


def _wrong_bits(card: ModelCard, item: Item) -> Item:
    """An in-distribution image stored with fewer bits than the model was trained on (what the
    ``expected_bits`` conformance warning is about, here without the header that says so):
    4 bits for 8-bit models, 8 bits for 16-bit models; a CT volume stored as 8 bits
    ((HU + 1024) / 16, read back as if it were HU)."""
    bits = card.input.preprocessing.expected_bits or 8
    if isinstance(item, Volume):
        return _vol(np.clip(np.floor((item.voxels + 1024.0) / 16.0), 0, 255))
    return _img(np.floor(item.pixels / 2 ** (bits // 2)))
