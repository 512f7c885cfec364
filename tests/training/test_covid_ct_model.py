"""3D CNN builder (one logit, configurable sizes, save/reload, Keras vs ONNX) and the 3D
augmentation (per-study in-plane transform, left-right flip only, repeatable)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from training.augment3d import Augment3DConfig, augment_batch, make_augment_fn  # noqa: E402
from training.core import export  # noqa: E402
from training.models import cnn3d  # noqa: E402

SHAPE = (16, 16, 16, 1)


def _batch(n: int, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def test_reference_layout_with_one_logit() -> None:
    model = cnn3d.build(SHAPE, width=0.125)
    assert model.input_shape == (None, *SHAPE)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert [c.filters for c in convs] == [8, 8, 16, 32]  # 64-64-128-256 × 0.125
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 4
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling3D) for layer in model.layers)
    assert model.layers[-1].get_config()["activation"] == "linear"
    out = np.asarray(model(_batch(2), training=False))
    assert out.shape == (2, 1) and np.all(np.isfinite(out))


def test_sizes_are_arguments() -> None:
    slim = cnn3d.build((16, 32, 32, 1), width=0.125, filters=(8, 16), dense_units=32)
    full = cnn3d.build((16, 32, 32, 1))
    assert slim.input_shape == (None, 16, 32, 32, 1)
    assert slim.count_params() < full.count_params()
    assert [c.filters for c in full.layers if isinstance(c, keras.layers.Conv3D)] == [
        64,
        64,
        128,
        256,
    ]


def test_save_reload_and_onnx_match(tmp_path: Path) -> None:
    model = cnn3d.build(SHAPE, width=0.125)
    x = _batch(3, seed=1)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), before)
    worst = export.export_onnx(model, tmp_path / "model.onnx", [x, _batch(2, seed=2)])
    assert worst <= export.ONNX_ATOL
    run = export.onnx_runner(export.onnx_session(tmp_path / "model.onnx"))
    np.testing.assert_allclose(run(x), before, atol=1e-4)


def _marked(n: int = 4) -> np.ndarray:
    """(n, 4, 16, 16, 1): a block on the patient's right (low columns), slices numbered by
    intensity (slice k has value 0.1·(k+1) inside the block)."""
    x = np.zeros((n, 4, 16, 16, 1), np.float32)
    for k in range(4):
        x[:, k, 5:11, 1:6] = 0.1 * (k + 1)
    return x


def test_left_right_flip_is_exact_and_never_touches_other_axes() -> None:
    x = _marked()
    cfg = Augment3DConfig(rotation_deg=0, shift=0, flip_lr=1.0, contrast=0, brightness=0)
    out = augment_batch(x, tf.constant([3, 4]), cfg).numpy()
    np.testing.assert_array_equal(out, x[:, :, :, ::-1])
    cfg_off = Augment3DConfig(rotation_deg=0, shift=0, flip_lr=0.0, contrast=0, brightness=0)
    np.testing.assert_array_equal(augment_batch(x, tf.constant([3, 4]), cfg_off).numpy(), x)


def test_in_plane_transform_is_shared_by_the_slices_of_a_study() -> None:
    x = np.repeat(_marked()[:, :1], 4, axis=1)  # every slice identical
    cfg = Augment3DConfig(rotation_deg=20, shift=0.1, flip_lr=0.5, contrast=0, brightness=0)
    out = augment_batch(x, tf.constant([5, 6]), cfg).numpy()
    for study in out:
        for k in range(1, 4):
            np.testing.assert_allclose(study[k], study[0], atol=1e-6)  # one transform per study
    assert any(not np.allclose(out[0], out[i]) for i in range(1, 4))  # studies differ
    # no superior-inferior flip: slice order (the intensity ladder) survives any augmentation
    ladder = augment_batch(_marked(8), tf.constant([7, 8]), cfg).numpy()
    peaks = ladder.max(axis=(2, 3, 4))
    assert np.all(np.diff(peaks, axis=1) > 0)


def test_intensity_jitter_stays_in_range_and_replays() -> None:
    x = _batch(4, seed=3, shape=(4, 16, 16, 1))
    cfg = Augment3DConfig(seed=9)
    out = augment_batch(x, tf.constant([1, 1]), cfg).numpy()
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, augment_batch(x, tf.constant([1, 1]), cfg).numpy())

    def epochs(fn: object) -> list[np.ndarray]:
        ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(4))).batch(4).map(fn)
        return [b[0].numpy() for _ in range(2) for b in ds]

    first = epochs(make_augment_fn(cfg))
    assert not np.allclose(first[0], first[1])  # a new draw every epoch
    replay = epochs(make_augment_fn(cfg))
    for a, b in zip(first, replay, strict=True):
        np.testing.assert_array_equal(a, b)  # same seed, same sequence
