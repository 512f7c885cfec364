"""U-Net builder: per-pixel logits at the input size, sizes as arguments, round trips through
.keras and ONNX."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from training.core import export  # noqa: E402
from training.models.unet import build  # noqa: E402


def _batch(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def test_output_is_one_logit_per_pixel() -> None:
    model = build((32, 48, 1), depth=3, base_filters=4)
    out = np.asarray(model(_batch(2, (32, 48, 1)), training=False))
    assert out.shape == (2, 32, 48, 1) and np.all(np.isfinite(out))
    assert model.layers[-1].get_config()["activation"] == "linear"


def test_sizes_are_arguments() -> None:
    small = build((32, 32, 1), depth=2, base_filters=4, batch_norm=False)
    big = build((32, 32, 1), depth=4, base_filters=8, dropout=0.2)
    assert small.count_params() < big.count_params()
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in small.layers)
    assert any(isinstance(layer, keras.layers.Dropout) for layer in big.layers)
    # Four levels doubling from base_filters (the reference: 64 at the top, 1024 at the bottom).
    assert big.get_layer("enc1_conv1").filters == 8
    assert big.get_layer("bottleneck_conv2").filters == 8 * 2**4
    with pytest.raises(ValueError, match="divisible"):
        build((36, 32, 1), depth=3)


def test_saves_reloads_and_matches_onnx(tmp_path: Path) -> None:
    model = build((32, 32, 1), depth=2, base_filters=4, dropout=0.1)
    x = _batch(3, (32, 32, 1), seed=1)
    before = model.predict(x, verbose=0)
    path = tmp_path / "unet.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), before)
    worst = export.export_onnx(model, tmp_path / "model.onnx", [x, _batch(2, (32, 32, 1), 2)])
    assert worst <= export.ONNX_ATOL
    run = export.onnx_runner(export.onnx_session(tmp_path / "model.onnx"))
    got = run(x)
    assert got.shape == (3, 32, 32, 1)
    np.testing.assert_allclose(got, before, atol=1e-4)
