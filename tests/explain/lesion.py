"""Synthetic chest films with one opacity placed in one lung, and where it is.

The film is rendered twice from the same random draws, with and without the opacity (the
project's pneumonia generator), so the lesion is exactly where the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
