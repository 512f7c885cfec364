"""Synthetic chest films with one opacity placed in one lung, and where it is.

The film is rendered twice from the same random draws, with and without the opacity (the
project's pneumonia generator), so the lesion is exactly where the two differ. Also: where an
answer's occlusion map points on such a film (the tests and ``bench/explain_check.py`` judge
it the same way).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from app.imaging.explain import OcclusionGrid, heat_map
from training.synthetic.pneumonia import _patient_params, render

LESION_FRACTION = 0.3  # a pixel is lesion where the opacity adds this share of its peak


@dataclass(frozen=True)
class LesionFilm:
    pixels: np.ndarray  # (H, W) uint8, with the opacity
    clear: np.ndarray  # (H, W) uint8, the same film without it
    lesion: np.ndarray  # (H, W) bool
    side: int  # 0: image left (patient's right lung), 1: image right


def lesion_film(
    seed: int,
    shape: tuple[int, int] = (256, 256),
    side: int = 0,
    along: float = 0.6,
    across: float = 0.0,
    sigma: float = 0.12,
    contrast: float = 0.35,
) -> LesionFilm:
    """A normal patient's film with one patchy opacity in one lung: ``along`` the lung (0 apex,
    1 base), ``across`` it (-1 .. 1), ``sigma`` its size, ``contrast`` its density."""
    patient = _patient_params(np.random.default_rng([seed, 1]), "normal")
    opacity = {
        "pattern": "patchy",
        "contrast": contrast,
        "sides": [side],
        "level": 0.5,
        "slope": 0.0,
        "extent": 0.3,
        "blobs": [(side, along, across, sigma, 1.0)],
        "seed": seed,
    }
    with_lesion = render(shape, {**patient, "opacity": opacity}, np.random.default_rng([seed, 2]))
    clear = render(shape, patient, np.random.default_rng([seed, 2]))
    added = with_lesion.astype(np.int16) - clear.astype(np.int16)
    lesion = added > LESION_FRACTION * max(int(added.max()), 1)
    return LesionFilm(with_lesion, clear, lesion, side)


def film_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def answer_grid(
    explanation: dict[str, Any], shape: tuple[int, int]
) -> tuple[OcclusionGrid, np.ndarray]:
    """An answer's ``explanation`` over an input of ``shape`` (H, W) → its grid and drops."""
    drops = np.asarray(explanation["grid"], dtype=np.float64)
    return OcclusionGrid(shape, explanation["patch"], explanation["stride"], *drops.shape), drops


@dataclass(frozen=True)
class Pointing:
    """Where an occlusion map points on a film with a known lesion."""

    cell: bool  # the cell with the largest drop covers lesion pixels
    side: bool  # that cell's centre lies on the lesion's half of the film
    peak_distance: float  # heat-map maximum → nearest lesion pixel, input pixels
    stride: int


def pointing(film: LesionFilm, explanation: dict[str, Any]) -> Pointing:
    grid, drops = answer_grid(explanation, film.lesion.shape)
    i, j = np.unravel_index(int(np.argmax(drops)), drops.shape)
    r0, r1, c0, c1 = grid.region(int(i), int(j))
    heat = heat_map(drops, grid)
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ly, lx = np.nonzero(film.lesion)
    return Pointing(
        cell=bool(film.lesion[r0:r1, c0:c1].any()),
        side=((c0 + c1) / 2 >= film.lesion.shape[1] / 2) == (film.side == 1),
        peak_distance=float(np.min(np.hypot(ly - y, lx - x))),
        stride=grid.stride,
    )
