"""``app.graph.split_concat_convs``: a channel Concat feeding one Conv becomes a Conv per part,
summed, with the same outputs on onnxruntime; graphs where the rewrite would not be the same
computation are left alone; the registry serves the rewritten graph where the setting asks,
and the original when the rewrite's outputs differ."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import app.registry as registry
from app.config import Settings
from app.graph import split_concat_convs, wants_rewrite
from app.registry import load_entry

MODELS = Path(__file__).resolve().parents[2] / "models"
MRI = MODELS / "brain_tumor_mri" / "1.2.0"
PHANTOM = MODELS / "phantom_tumor_xray" / "1.3.0"
PNEUMONIA = next((MODELS / "pneumonia_xray").iterdir())


def _graph(
    parts: tuple[int, ...] = (3, 5),
    axis: int = 1,
    group: int = 1,
    weights_as_input: bool = False,
    concat_also_output: bool = False,
    bias: bool = True,
) -> bytes:
    """x (N, sum(parts), 6, 6) → one Conv per part (so the Concat's inputs are computed) →
    Concat along ``axis`` → Conv 3x3 (4 outputs, padded) → Relu."""
    rng = np.random.default_rng(len(parts) + axis + group)
    total = sum(parts)
    nodes, inits, inputs = (
        [],
        [],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, total, 6, 6])],
    )
    names = []
    for k, c in enumerate(parts):
        w = rng.normal(size=(c, total, 1, 1)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes.append(helper.make_node("Conv", ["x", f"w{k}"], [f"p{k}"], kernel_shape=[1, 1]))
        names.append(f"p{k}")
    nodes.append(helper.make_node("Concat", names, ["cat"], axis=axis))
    cin = total if axis == 1 else parts[0]
    w = rng.normal(size=(4, cin // group, 3, 3)).astype(np.float32)
    conv_inputs = ["cat", "wc"] + (["bc"] if bias else [])
    if weights_as_input:
        inputs.append(helper.make_tensor_value_info("wc", TensorProto.FLOAT, list(w.shape)))
    else:
        inits.append(numpy_helper.from_array(w, "wc"))
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "bc"))
    nodes.append(
        helper.make_node(
            "Conv", conv_inputs, ["y0"], kernel_shape=[3, 3], pads=[1] * 4, group=group
        )
    )
    nodes.append(helper.make_node("Relu", ["y0"], ["y"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if concat_also_output:
        outputs.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _run(model: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, feeds)]


@pytest.mark.parametrize("parts", [(3, 5), (2, 4, 6), (8, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_a_concat_feeding_a_conv_is_split_into_summed_convs_with_the_same_outputs(
    parts: tuple[int, ...], bias: bool
) -> None:
    original = _graph(parts, bias=bias)
    rewritten, splits = split_concat_convs(original)
    assert splits == 1
    graph = onnx.load_model_from_string(rewritten).graph
    ops = [n.op_type for n in graph.node]
    assert "Concat" not in ops
    # the parts' own producers, then one Conv per part and the sums
    assert ops.count("Conv") == 2 * len(parts) and ops.count("Add") == len(parts) - 1
    assert "wc" not in {i.name for i in graph.initializer}  # the whole weight is gone
    x = np.random.default_rng(1).normal(size=(2, sum(parts), 6, 6)).astype(np.float32)
    (want,), (got,) = _run(original, {"x": x}), _run(rewritten, {"x": x})
    assert want.shape == got.shape == (2, 4, 6, 6)
    assert np.abs(want - got).max() < 1e-4 and np.abs(want).max() > 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"axis": 2},  # not along the channels
        {"group": 2},  # a grouped convolution mixes channels per group
        {"weights_as_input": True},  # weights known only at run time
        {"concat_also_output": True},  # the Concat's result is needed as it is
    ],
)
def test_graphs_the_rewrite_does_not_fit_are_left_as_they_are(kwargs: dict[str, object]) -> None:
    original = _graph(**kwargs)  # type: ignore[arg-type]
    assert split_concat_convs(original) == (original, 0)


def _shape(info: onnx.ValueInfoProto) -> list[int | str | None]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in info.type.tensor_type.shape.dim
    ]


def _optimized(model: bytes, path: Path) -> onnx.GraphProto:
    """The graph onnxruntime runs for ``model`` (its optimised graph, written to ``path``)."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return onnx.load(str(path)).graph


def _sum_fused(graph: onnx.GraphProto) -> int:
    """Blocked-layout convolutions that add a tensor into their output and apply a ReLU."""
    return sum(
        1
        for n in graph.node
        if n.op_type == "Conv"
        and len(n.input) == 4
        and any(a.name == "activation" and a.s == b"Relu" for a in n.attribute)
    )


@pytest.mark.parametrize("folder", [MRI, PHANTOM])
def test_the_rewritten_graph_carries_shapes_that_let_onnxruntime_fuse_the_sums(
    folder: Path, tmp_path: Path
) -> None:
    """Each sum's two addends have the same shape in the rewritten graph, the batch dimension
    as one named symbol; onnxruntime then folds every sum and the ReLU after it into its
    blocked-layout convolution, and its optimised graph has no more Add, Relu or Reshape nodes
    than the original's (without the shapes it added each sum in a reshaped layout: 12
    Reshapes, 4 Adds and 4 Relus more on the MRI U-Net)."""
    original = (folder / "model.onnx").read_bytes()
    rewritten, splits = split_concat_convs(original)
    assert splits > 0
    graph = onnx.load_model_from_string(rewritten).graph
    shapes = {v.name: _shape(v) for v in (*graph.value_info, *graph.input, *graph.output)}
    sums = [n for n in graph.node if n.op_type == "Add" and n.name.endswith("_sum")]
    assert len(sums) == splits
    for node in sums:
        a, b = (shapes[name] for name in node.input)
        assert a == b and isinstance(a[0], str) and all(isinstance(d, int) for d in a[1:])
    before, after = (
        _optimized(g, tmp_path / f"{k}.onnx") for k, g in enumerate((original, rewritten))
    )
    # each sum's other addend became a convolution's fourth input, with the ReLU fused as well
    assert _sum_fused(after) == _sum_fused(before) + splits
    for op in ("Add", "Relu", "Reshape"):  # and none is left for onnxruntime to run apart
        assert sum(n.op_type == op for n in after.node) == sum(n.op_type == op for n in before.node)


def test_the_setting_picks_the_models() -> None:
    assert wants_rewrite("brain_tumor_mri", "auto") and wants_rewrite("phantom_tumor_xray", "auto")
    assert not wants_rewrite("pneumonia_xray", "auto") and not wants_rewrite("covid_ct", "auto")
    assert wants_rewrite("pneumonia_xray", "on") and not wants_rewrite("brain_tumor_mri", "off")


def test_the_registry_serves_the_rewritten_graph_where_the_setting_asks(tmp_path: Path) -> None:
    auto = load_entry("brain_tumor_mri", MRI, Settings(model_dir=MODELS))
    off = load_entry("brain_tumor_mri", MRI, Settings(model_dir=MODELS, graph_rewrite="off"))
    assert auto.ready and off.ready
    assert auto.graph_rewrites == 4 and off.graph_rewrites == 0
    phantom = load_entry("phantom_tumor_xray", PHANTOM, Settings(model_dir=MODELS))
    assert phantom.ready and phantom.graph_rewrites == 5
    on = load_entry("pneumonia_xray", PNEUMONIA, Settings(model_dir=MODELS, graph_rewrite="on"))
    assert on.ready and on.graph_rewrites == 0  # no Concat feeds a Conv there
    x = np.random.default_rng(2).random((1, 128, 128, 1), dtype=np.float32)
    a, fa = auto.run_with_features(x)
    b, fb = off.run_with_features(x)
    assert fa is not None and fb is not None
    assert np.abs(a - b).max() < 1e-4 and np.abs(fa - fb).max() < 1e-4


def test_a_rewrite_whose_outputs_differ_is_not_served(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rewrite that changed the computation (its weights scaled: a bug in it) is caught by
    the parity run at load: the original graph serves, and the log says why."""
    real = registry.split_concat_convs

    def wrong(model_bytes: bytes) -> tuple[bytes, int]:
        rewritten, splits = real(model_bytes)
        model = onnx.load_model_from_string(rewritten)
        for init in model.graph.initializer:
            if "_part" in init.name:
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
        return model.SerializeToString(), splits

    monkeypatch.setattr(registry, "split_concat_convs", wrong)
    with caplog.at_level(logging.WARNING, logger="medserve.registry"):
        entry = load_entry("brain_tumor_mri", MRI, Settings(model_dir=MODELS))
    assert entry.ready and entry.graph_rewrites == 0
    assert any("graph not rewritten" in r.getMessage() for r in caplog.records)
    assert any("differ" in str(getattr(r, "reason", "")) for r in caplog.records)


def test_a_rewrite_that_fails_leaves_the_original_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A graph the rewriter cannot read (here: the bytes it returns are not ONNX) costs the
    model nothing but the rewrite: it is ready on its original graph."""
    monkeypatch.setattr(registry, "split_concat_convs", lambda model_bytes: (b"not onnx", 4))
    with caplog.at_level(logging.WARNING, logger="medserve.registry"):
        entry = load_entry("brain_tumor_mri", MRI, Settings(model_dir=MODELS))
    assert entry.ready and entry.graph_rewrites == 0
    assert any("failed" in str(getattr(r, "reason", "")) for r in caplog.records)
