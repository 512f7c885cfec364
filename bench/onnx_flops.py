"""Floating-point operations of one forward pass, counted from an ONNX graph.

FLOPs = 2 x multiply-accumulates of the dense-algebra nodes (Conv, ConvTranspose, MatMul,
Gemm), the usual convention; element-wise nodes (BatchNorm folded or not, activations, adds,
pooling, resizes) are counted separately in ``other`` as one operation per output element,
so the share they represent is visible instead of silently dropped.

Shapes come from ONNX shape inference after the batch dimension is fixed to ``batch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import shape_inference

DENSE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
ELEMENTWISE_OPS = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Resize",
    "Clip",
)


@dataclass
class FlopCount:
    dense: int = 0  # 2 x MACs of DENSE_OPS
    other: int = 0  # one per output element of ELEMENTWISE_OPS
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: list[str] = field(default_factory=list)  # dense nodes whose shapes were unknown

    @property
    def total(self) -> int:
        return self.dense + self.other


def _dims(value: onnx.ValueInfoProto) -> list[int] | None:
    t = value.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in t.shape.dim]
    return dims if all(d > 0 for d in dims) else None


def _fix_batch(model: onnx.ModelProto, batch: int) -> None:
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch


def count_flops(model: onnx.ModelProto | str | Path, batch: int = 1) -> FlopCount:
    """Count the FLOPs of ``model`` (a path or a loaded graph) for a batch of ``batch``."""
    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else onnx.ModelProto()
    if not isinstance(model, (str, Path)):
        proto.CopyFrom(model)
    _fix_batch(proto, batch)
    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    graph = inferred.graph
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = _dims(value)
        if dims is not None:
            shapes[value.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)

    count = FlopCount()
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in DENSE_OPS:
            macs = _dense_macs(node, shapes, out)
            if macs is None:
                count.uncounted.append(node.name or node.op_type)
                continue
            count.dense += 2 * macs
            count.by_op[node.op_type] = count.by_op.get(node.op_type, 0) + 2 * macs
        elif node.op_type in ELEMENTWISE_OPS and out is not None:
            count.other += math.prod(out)
    return count


def _dense_macs(
    node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int] | None
) -> int | None:
    if node.op_type == "Conv":
        weight = shapes.get(node.input[1])
        if weight is None or out is None:
            return None
        # weight (C_out, C_in / groups, k...): each output element needs C_in/groups * prod(k)
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        weight, inp = shapes.get(node.input[1]), shapes.get(node.input[0])
        if weight is None or inp is None:
            return None
        # weight (C_in, C_out / groups, k...): each input element scatters into C_out/g * prod(k)
        return math.prod(inp) * math.prod(weight[1:])
    a = shapes.get(node.input[0])
    if a is None or out is None:
        return None
    k = a[-1]
    if node.op_type == "Gemm":
        trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
    return math.prod(out) * k
