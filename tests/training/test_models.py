"""Builders: each architecture builds at a tiny size; the default round-trips through .keras and
through ONNX (the export refuses a graph that disagrees with Keras)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

keras = pytest.importorskip("keras")

from training.core import export  # noqa: E402
from training.models import ARCHITECTURES, DEFAULT_ARCH, get_builder  # noqa: E402

SHAPE = (32, 32, 1)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # tf2onnx's np.object probe


def _batch(n: int = 4, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_each_architecture_builds_with_one_logit(arch: str) -> None:
    options = {"weights": "none"} if arch == "efficientnetb0" else {}
    model = get_builder(arch)(SHAPE, **options)
    assert model.input_shape == (None, *SHAPE)
    out = np.asarray(model(_batch(2), training=False))
    assert out.shape == (2, 1) and np.all(np.isfinite(out))
    assert model.layers[-1].get_config()["activation"] == "linear"  # a logit, no sigmoid


def test_cnn_sizes_are_arguments() -> None:
    build = get_builder("cnn")
    slim = build((64, 48, 3), width=0.25, blocks=3, dense_units=(16, 8), dropouts=(0.1, 0.1))
    assert slim.input_shape == (None, 64, 48, 3)
    assert slim.count_params() < build((64, 48, 3)).count_params()


def test_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        get_builder("resnet9000")


def test_default_saves_reloads_and_matches_onnx(tmp_path: Path) -> None:
    model = get_builder(DEFAULT_ARCH)(SHAPE, width=0.25)
    x = _batch(6, seed=1)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), before)

    worst = export.export_onnx(model, tmp_path / "model.onnx", [x, _batch(3, seed=2)])
    assert worst <= export.ONNX_ATOL
    run = export.onnx_runner(export.onnx_session(tmp_path / "model.onnx"))
    np.testing.assert_allclose(run(x), before, atol=1e-4)


def test_export_refuses_a_disagreeing_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = get_builder(DEFAULT_ARCH)(SHAPE, width=0.25)
    real = export.onnx_runner
    monkeypatch.setattr(export, "onnx_runner", lambda s: lambda b: real(s)(b) + 1e-3)
    with pytest.raises(export.ExportMismatch):
        export.export_onnx(model, tmp_path / "model.onnx", [_batch(2)])
    assert not (tmp_path / "model.onnx").exists()


def test_the_tolerance_scales_with_each_inputs_largest_output() -> None:
    """A segmenter's map (logits -17..28): a pixel near 0 off by 1.2e-4 is float32 rounding of
    the large terms it sums (accepted); the same map off by 1e-3 everywhere is not; a
    classifier's logit is its own scale, as before."""
    ref = np.zeros((2, 8, 8, 1))
    ref[:, 0, 0, 0], ref[:, 1, 1, 0], ref[:, 2, 2, 0] = -17.0, 28.0, 0.38
    edge = ref.copy()
    edge[0, 2, 2, 0] += 1.2e-4
    assert export.tolerance_excess(ref, edge, export.ONNX_ATOL, export.ONNX_RTOL) < 1.0
    assert export.tolerance_excess(ref, ref + 1e-3, export.ONNX_ATOL, export.ONNX_RTOL) > 1.0
    logits = np.array([[0.4], [20.0]])
    near = logits + np.array([[1.2e-4], [2.5e-4]])
    assert export.tolerance_excess(logits, near, export.ONNX_ATOL, export.ONNX_RTOL) > 1.0
    far = logits + np.array([[0.0], [2.9e-4]])
    assert export.tolerance_excess(logits, far, export.ONNX_ATOL, export.ONNX_RTOL) < 1.0


def test_publish_artifact_leaves_nothing_behind_when_describing_fails(tmp_path: Path) -> None:
    from training.core.publish import publish_artifact

    model = get_builder(DEFAULT_ARCH)(SHAPE, width=0.25)
    seen: list[tuple[int, float]] = []

    def describe(folder: Path, session, run, max_diff: float):  # type: ignore[no-untyped-def]
        assert (folder / "model.onnx").is_file() and folder.parent.name.startswith(".staging-")
        seen.append((run(_batch(3)).shape[0], max_diff))
        raise ValueError("evaluation failed")

    with pytest.raises(ValueError, match="evaluation failed"):
        publish_artifact(model, "tiny", "0.0.1", tmp_path, _batch(2), 0, False, describe)
    assert seen and seen[0][0] == 3 and seen[0][1] < 1e-3  # it ran the exported graph
    assert not (tmp_path / "tiny" / "0.0.1").exists()
    assert not list(tmp_path.glob(".staging-*"))
