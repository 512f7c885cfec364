"""Graph surgery on an exported ``model.onnx``: append the pooled features as an extra output.

The chosen intermediate tensors (a classifier's penultimate layers, a segmenter's bottleneck /
last encoder stage) are globally average-pooled where they are feature maps (tf2onnx keeps
convolutions channel-first, ``(N, C, ...)``), flattened and concatenated into one ``(N, D)``
float32 output appended LAST. Output 0, its name and every existing node stay as they were;
:func:`check_output0_unchanged` proves output 0 bit-equal on real inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, shape_inference

FEATURES_OUTPUT = "ood_features"

# Per model: the tensors whose pooled values form the features (names in the exported graphs).
FEATURE_TENSORS: dict[str, tuple[str, ...]] = {
    "pneumonia_xray": (
        "pneumonia_cnn_1/block4_sep2_1/Relu:0",
        "pneumonia_cnn_1/fc3_dense_1/Relu:0",
    ),
    "covid_ct": ("covid_cnn3d_1/gap_1/Mean:0",),
    "brain_tumor_mri": ("unet_1/bottleneck_relu2_1/Relu:0",),
    "phantom_tumor_xray": (
        "resnet18_seg_1/stage3_block2_out_1/Relu:0",
        "resnet18_seg_1/stage4_block2_out_1/Relu:0",
    ),
}


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    inferred = shape_inference.infer_shapes(model)
    g = inferred.graph
    infos = list(g.value_info) + list(g.output) + list(g.input)
    return {v.name: len(v.type.tensor_type.shape.dim) for v in infos}


def add_features_output(model_bytes: bytes, tensors: Sequence[str]) -> tuple[bytes, int]:
    """``model_bytes`` with the output :data:`FEATURES_OUTPUT` appended last; also its width D.

    ValueError when a tensor is not in the graph, has no known rank, or the graph already has
    the output."""
    model = onnx.load_from_string(model_bytes)
    g = model.graph
    if any(o.name == FEATURES_OUTPUT for o in g.output):
        raise ValueError(f"the graph already has an output {FEATURES_OUTPUT}")
    ranks = _ranks(model)
    produced = {o for n in g.node for o in n.output}
    pieces: list[str] = []
    for i, name in enumerate(tensors):
        if name not in produced:
            raise ValueError(f"tensor {name} is not produced by the graph")
        rank = ranks.get(name)
        if rank is None or rank < 2:
            raise ValueError(f"tensor {name} has no usable rank")
        src = name
        if rank > 2:
            pooled = f"{FEATURES_OUTPUT}/pool{i}"
            g.node.append(helper.make_node("GlobalAveragePool", [src], [pooled], name=pooled))
            src = pooled
        flat = f"{FEATURES_OUTPUT}/flat{i}"
        g.node.append(helper.make_node("Flatten", [src], [flat], name=flat, axis=1))
        pieces.append(flat)
    g.node.append(
        helper.make_node("Concat", pieces, [FEATURES_OUTPUT], name=FEATURES_OUTPUT, axis=1)
    )
    g.output.append(
        helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", "features"])
    )
    onnx.checker.check_model(model)
    out = model.SerializeToString()
    dim = _feature_width(out)
    return out, dim


def remove_features_output(model_bytes: bytes) -> bytes:
    """``model_bytes`` without the output :data:`FEATURES_OUTPUT` and the nodes
    :func:`add_features_output` appended for it (an artifact being refitted); unchanged when it
    has no such output. ValueError when another node reads those nodes' outputs."""
    model = onnx.load_from_string(model_bytes)
    g = model.graph
    if not any(o.name == FEATURES_OUTPUT for o in g.output):
        return model_bytes
    ours = [
        n for n in g.node if n.name == FEATURES_OUTPUT or n.name.startswith(FEATURES_OUTPUT + "/")
    ]
    made = {o for n in ours for o in n.output}
    if any(i in made for n in g.node if n not in ours for i in n.input):
        raise ValueError(f"other nodes read the {FEATURES_OUTPUT} nodes' outputs")
    keep = [n for n in g.node if n not in ours]
    del g.node[:]
    g.node.extend(keep)
    outputs = [o for o in g.output if o.name != FEATURES_OUTPUT]
    del g.output[:]
    g.output.extend(outputs)
    onnx.checker.check_model(model)
    out: bytes = model.SerializeToString()
    return out


def _session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _feature_width(model_bytes: bytes) -> int:
    sess = _session(model_bytes)
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    out = sess.run([FEATURES_OUTPUT], {inp.name: np.zeros(shape, np.float32)})[0]
    return int(np.asarray(out).shape[1])


def check_output0_unchanged(before: bytes, after: bytes, batch: np.ndarray) -> None:
    """AssertionError unless output 0 of ``after`` has the same name as ``before``'s and is
    bit-equal to it on ``batch`` (the card's layout), and the features come last."""
    a, b = _session(before), _session(after)
    names_a = [o.name for o in a.get_outputs()]
    names_b = [o.name for o in b.get_outputs()]
    if names_b[: len(names_a)] != names_a or names_b[-1] != FEATURES_OUTPUT:
        raise AssertionError(f"outputs changed: {names_a} -> {names_b}")
    feed_a = {a.get_inputs()[0].name: batch}
    out_a = np.asarray(a.run([names_a[0]], feed_a)[0])
    outs_b = b.run(None, {b.get_inputs()[0].name: batch})
    if not np.array_equal(out_a, np.asarray(outs_b[0])):
        raise AssertionError("output 0 changed after the surgery")
    if not np.isfinite(np.asarray(outs_b[-1])).all():
        raise AssertionError("features are not finite")
