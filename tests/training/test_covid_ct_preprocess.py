"""The card-driven CT preprocessing (app.imaging.preprocess.preprocess_volume) as covid_ct uses
it: HU window, NDHWC layout, per-slice resize, and depth resampling (antialiased when slices
are removed, so a thin-slice series reaches the model like the thick slices it was trained on)."""

from __future__ import annotations

import numpy as np

from app.imaging.preprocess import preprocess_volume, resize_depth
from app.imaging.types import Meta, Volume
from training.tasks.covid_ct.card import covid_ct_preprocessing


def _volume(voxels: np.ndarray, dz: float = 8.0) -> Volume:
    return Volume(voxels=voxels.astype(np.float32), spacing=(dz, 0.7, 0.7), meta=Meta("nifti"))


def test_hounsfield_window_and_layout() -> None:
    prep = covid_ct_preprocessing((4, 8, 8))
    hu = np.array([-2048, -1000, -300, 400, 1500], np.float32)
    vox = np.broadcast_to(hu[:, None, None], (5, 8, 8)).copy()
    x = preprocess_volume(_volume(vox), prep, "NDHWC")
    assert x.shape == (1, 4, 8, 8, 1) and x.dtype == np.float32
    # window [-1000, 400] → [0, 1]: padding and air 0, bone 1
    flat = preprocess_volume(_volume(vox[:, :, :]), covid_ct_preprocessing((5, 8, 8)), "NDHWC")
    np.testing.assert_allclose(flat[0, :, 0, 0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_upsampling_depth_is_plain_linear_interpolation() -> None:
    vol = np.random.default_rng(0).normal(size=(10, 3, 3)).astype(np.float32)
    out = resize_depth(vol, 16)
    pos = np.clip((np.arange(16) + 0.5) * (10 / 16) - 0.5, 0, 9)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, 9)
    w = (pos - i0)[:, None, None]
    np.testing.assert_allclose(out, vol[i0] * (1 - w) + vol[i1] * w, atol=1e-6)
    assert resize_depth(vol, 10) is vol


def test_shrinking_depth_uses_every_slice_and_keeps_the_mean() -> None:
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(300, 4, 4)).astype(np.float32)
    out = resize_depth(vol, 30)
    assert out.shape == (30, 4, 4) and out.dtype == np.float32
    # averaging ~10 slices per output: the noise drops by ~sqrt(10); sampling 2 slices would not
    assert float(out.std()) < 0.45 * float(vol.std())
    const = np.full((300, 2, 2), -700.0, np.float32)
    np.testing.assert_allclose(resize_depth(const, 30), -700.0, rtol=1e-6)
    # a single bright slice reaches the output with its share, 1/10 (plain interpolation
    # would read slices 4.5, 14.5, … only and could lose it entirely)
    for k in (150, 153, 157):
        spike = np.zeros((300, 1, 1), np.float32)
        spike[k] = 1.0
        assert abs(float(resize_depth(spike, 30).sum()) - 0.1) < 0.01


def test_thin_and_thick_slices_of_one_body_give_close_inputs() -> None:
    """300 × 1 mm and 30 × 10 mm (each thick slice the mean of 10 thin ones) of the same noisy
    object, preprocessed to 30 slices: close, while plain linear sampling of the thin series
    would carry ~3× the noise."""
    rng = np.random.default_rng(2)
    z = np.arange(300)[:, None, None]
    body = np.where((z > 60) & (z < 240), -850.0, 40.0) + np.zeros((300, 8, 8))
    thin = body + rng.normal(0, 60, size=body.shape)
    thick = thin.reshape(30, 10, 8, 8).mean(axis=1)
    prep = covid_ct_preprocessing((30, 8, 8))
    a = preprocess_volume(_volume(thin, 1.0), prep, "NDHWC")
    b = preprocess_volume(_volume(thick, 10.0), prep, "NDHWC")
    assert float(np.median(np.abs(a - b))) < 0.01
