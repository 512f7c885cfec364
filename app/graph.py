"""Rewrites of a model's ONNX graph into an equivalent graph that onnxruntime's CPU provider
runs faster; the service serves the rewritten graph only where its outputs match the
original's at load (``app.registry``).

One rewrite so far, ``split_concat_convs``: a U-Net decoder concatenates the upsampled
features with the encoder's along the channels and convolves the result. onnxruntime runs its
convolutions in a blocked channel layout (NCHWc) but not Concat, so every such Concat costs a
copy and two layout reorders. A convolution is linear in its input channels, so
``Conv(Concat(a, b), W) = Conv(a, W[:, :ca]) + Conv(b, W[:, ca:])``; onnxruntime fuses the
sum and the ReLU after it into the second convolution, provided the rewritten graph carries
the shapes that show both addends equal (see the end of ``split_concat_convs``). The run of the
brain-MRI U-Net (four such Concats) 3.48 -> 3.36 ms, of the phantom model (five) 2.49 -> 2.41 ms,
in separate processes, three and two runs each; outputs within 4e-6 (the sums are added in
another order; issue 18). Before the shapes were kept, the MRI run was 1 % shorter and the
phantom run 4 % longer than the original's.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper, shape_inference

# The models ``graph_rewrite=auto`` rewrites: measured faster on the rewritten graph (the
# phantom model too since the rewritten graph carries its shapes, see below).
AUTO_GRAPH_REWRITE: frozenset[str] = frozenset({"brain_tumor_mri", "phantom_tumor_xray"})


def wants_rewrite(name: str, setting: str) -> bool:
    """Whether the ``graph_rewrite`` setting asks for model ``name``'s graph rewritten."""
    return setting == "on" or (setting == "auto" and name in AUTO_GRAPH_REWRITE)


def _dims(graph: onnx.GraphProto) -> dict[str, list[int | None]]:
    """Each tensor's dimensions after shape inference (None where not static)."""
    return {
        info.name: [
            int(d.dim_value) if d.HasField("dim_value") else None
            for d in info.type.tensor_type.shape.dim
        ]
        for info in (*graph.value_info, *graph.input, *graph.output)
    }


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def split_concat_convs(model_bytes: bytes) -> tuple[bytes, int]:
    """(the rewritten model, how many Concat → Conv pairs were split); the input unchanged
    and 0 when none qualifies. A pair qualifies when the Concat joins two or more tensors
    along axis 1 of a 4-D or 5-D tensor, its output feeds one Conv and nothing else (no other
    node, no graph output), that Conv has ``group`` 1 and constant weights, and every part's
    channel count is known."""
    model = shape_inference.infer_shapes(onnx.load_model_from_string(model_bytes))
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    dims = _dims(graph)
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | set(initializers)

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        return name

    replaced: dict[int, list[onnx.NodeProto]] = {}  # id(conv) -> its replacement
    dropped: set[int] = set()  # the split Concats
    spent: list[str] = []  # weights no node uses any more
    for concat in graph.node:
        if concat.op_type != "Concat" or len(concat.input) < 2:
            continue
        out = concat.output[0]
        rank = len(dims.get(out, []))
        if rank not in (4, 5) or _attributes(concat).get("axis") not in (1, 1 - rank):
            continue
        if out in outputs:
            continue
        convs = users.get(out, [])
        if len(convs) != 1 or convs[0].op_type != "Conv" or convs[0].input[0] != out:
            continue
        conv = convs[0]
        attrs = _attributes(conv)
        weight = initializers.get(conv.input[1]) if len(conv.input) > 1 else None
        sizes = [d[1] if len(d := dims.get(name, [])) > 1 else None for name in concat.input]
        if attrs.get("group", 1) != 1 or weight is None or None in sizes:
            continue
        w = numpy_helper.to_array(weight)
        counts = [int(s) for s in sizes if s is not None]
        if w.ndim != rank or sum(counts) != w.shape[1]:
            continue
        bias = list(conv.input[2:3])
        parts: list[onnx.NodeProto] = []
        partial: str | None = None
        # the last part first: it carries the bias, and each later Conv adds into the sum
        for index in reversed(range(len(counts))):
            lo = sum(counts[:index])
            piece = numpy_helper.from_array(
                w[:, lo : lo + counts[index]].copy(), fresh(f"{conv.input[1]}_part{index}")
            )
            graph.initializer.append(piece)
            y = fresh(f"{conv.output[0]}_part{index}")
            inputs = [concat.input[index], piece.name, *(bias if partial is None else [])]
            parts.append(
                helper.make_node("Conv", inputs, [y], name=fresh(f"{conv.name}_part{index}"))
            )
            parts[-1].attribute.extend(conv.attribute)
            if partial is not None:
                total = conv.output[0] if index == 0 else fresh(f"{conv.output[0]}_sum{index}")
                parts.append(
                    helper.make_node("Add", [y, partial], [total], name=fresh(f"{conv.name}_sum"))
                )
                partial = total
            else:
                partial = y
        replaced[id(conv)] = parts
        dropped.add(id(concat))
        if len(users.get(conv.input[1], [])) == 1 and conv.input[1] not in outputs:
            spent.append(conv.input[1])
    if not replaced:
        return model_bytes, 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.initializer if i.name not in set(spent)]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Every tensor's shape, the parts' and the sums' included, inferred anew. onnxruntime fuses
    # a sum into the convolution only when it can show both addends have the same shape, and
    # its own inference leaves a batch dimension that a Reshape made (Keras's NHWC input) with
    # no name; ONNX's names it, the same symbol down both branches. Without these shapes it
    # added each sum in a reshaped layout, then the ReLU: 12 Reshapes, 4 Adds and 4 Relus on the
    # MRI U-Net, and the rewritten phantom model ran slower than the original (issue 18).
    del graph.value_info[:]
    model = shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model.SerializeToString(), len(replaced)
