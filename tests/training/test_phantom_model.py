"""The ResNet-18 segmenter builds at its configured sizes, gives per-pixel logits at the input's
resolution, round-trips through .keras, and exports to ONNX within 1e-4 of Keras; and the
phantom tracking metrics (centroid error at full resolution, misses, false masks)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from app.imaging.card import Preprocessing  # noqa: E402
from training.core import export  # noqa: E402
from training.models.resnet18_seg import build  # noqa: E402
from training.tasks.phantom_tumor_xray.card import phantom_preprocessing  # noqa: E402
from training.tasks.phantom_tumor_xray.tracking import centroid_errors  # noqa: E402

SHAPE = (64, 96, 1)


def _batch(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *SHAPE)).astype(np.float32)


def test_full_resolution_logits_and_resnet_structure() -> None:
    model = build(SHAPE, base_filters=8, blocks=(2, 2, 2, 2))
    out = np.asarray(model(_batch(), training=False))
    assert out.shape == (2, 64, 96, 1) and np.all(np.isfinite(out))
    assert model.layers[-1].get_config()["activation"] == "linear"  # logits, no sigmoid
    names = [layer.name for layer in model.layers]
    stem = model.get_layer("stem_conv").get_config()
    assert stem["kernel_size"] == (7, 7) and stem["strides"] == (2, 2)
    assert "stem_pool" in names
    assert sum(n.endswith("_add") for n in names) == 8  # 4 stages x 2 residual blocks
    assert sum(n.endswith("_tconv") for n in names) == 5  # back to the input's resolution


def test_sizes_are_arguments() -> None:
    slim = build(SHAPE, base_filters=4, blocks=(1, 1))
    wide = build(SHAPE, base_filters=8, blocks=(2, 2, 2, 2))
    assert slim.count_params() < wide.count_params()
    assert sum(layer.name.endswith("_tconv") for layer in slim.layers) == 3
    plain = build(SHAPE, base_filters=4, blocks=(1, 1), skips=False)
    assert not any(layer.name.endswith("_cat") for layer in plain.layers)
    with pytest.raises(ValueError, match="divisible by 32"):
        build((60, 96, 1), base_filters=4)


def test_keras_round_trip_and_onnx_parity(tmp_path: Path) -> None:
    model = build(SHAPE, base_filters=4, blocks=(1, 1, 1, 1))
    x = _batch(3, seed=1)
    ref = np.asarray(model.predict(x, verbose=0))
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras")
    assert np.array_equal(ref, np.asarray(again.predict(x, verbose=0)))
    worst = export.export_onnx(model, tmp_path / "model.onnx", [x, _batch(2, seed=2)])
    assert worst <= export.ONNX_ATOL
    run = export.onnx_runner(export.onnx_session(tmp_path / "model.onnx"))
    assert run(x).shape == (3, 64, 96, 1)


def test_preprocessing_choices_validate() -> None:
    p = phantom_preprocessing((192, 256), "percentile")
    w = phantom_preprocessing((192, 256), "window")
    assert isinstance(p, Preprocessing) and p.expected_bits == 16 and p.resize == "area"
    assert (p.intensity.method, p.intensity.low, p.intensity.high) == ("percentile", 0.5, 99.5)
    assert (w.intensity.method, w.intensity.low, w.intensity.high) == ("window", 0.0, 65535.0)
    with pytest.raises(ValueError):
        phantom_preprocessing((192, 256), "minmax")
    assert p.order == "window_then_resize"
    assert phantom_preprocessing((192, 256), "percentile", "resize_then_window").order == (
        "resize_then_window"
    )
    with pytest.raises(ValueError):
        phantom_preprocessing((192, 256), "percentile", "sideways")


def _disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_centroid_errors_at_full_resolution() -> None:
    full = (96, 128)
    # model-resolution maps (a quarter per side) of discs; truth discs at full resolution
    truths = [_disc(full, 40, 50, 12), _disc(full, 80, 30, 10), _disc(full, 60, 60, 9),
              np.zeros(full, bool)]  # fmt: skip
    maps = np.zeros((4, 24, 32), np.float32)
    maps[0] = _disc((24, 32), 40 / 4 - 0.375, 50 / 4 - 0.375, 3)  # same place
    maps[1] = _disc((24, 32), (80 + 8) / 4 - 0.375, 30 / 4 - 0.375, 2.5)  # 8 px to the right
    maps[2] = 0.0  # missed
    maps[3] = _disc((24, 32), 10, 10, 2)  # a mask where there is no tumour
    res = centroid_errors(maps, truths, 0.5)
    assert res["n_with_tumour"] == 3 and res["n_tracked"] == 2
    assert res["missed"] == 1 and res["false_masks"] == 1
    assert res["errors_px"][0] < 1.0
    assert 7.0 < res["errors_px"][1] < 9.0
    assert res["errors_px"][2] is None and res["errors_px"][3] is None
    assert res["median_px"] == pytest.approx(np.median(res["errors_px"][:2]), abs=1e-3)
