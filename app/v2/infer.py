"""One V2 inference request, start to end (blocking; runs in the inference limiter's pool).

body → (inflate) → JSON header + binary inputs → checked against the ONNX graph → the model's
runner (``app.runtime``: onnxruntime or OpenVINO) → every output in graph order, plus, with
``medserve_postprocess: true``, the calibrated decision computed by ``app.imaging.postprocess``
exactly as the upload endpoints do.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import BadRequest
from app.imaging.card import ModelCard
from app.imaging.postprocess import (
    Decision,
    classification_logit,
    decide,
    lesion_logit,
    mask_at,
    probability_map,
    resolve_operating_point,
)
from app.metrics import Metrics
from app.registry import ModelEntry
from app.v2.tensors import (
    ONNX_DATATYPES,
    InputTensor,
    OutputTensor,
    decode_inputs,
    decompress,
    encode_response,
    parameters_of,
    parse_header,
    split_body,
)

# Outputs that `medserve_postprocess: true` adds, after the model's own.
CLASSIFIER_OUTPUTS = ("probability", "positive", "threshold", "label")
SEGMENTER_OUTPUTS = (*CLASSIFIER_OUTPUTS, "mask")
# Added after those when the card has an OOD check (the score per item and score <= threshold).
OOD_OUTPUTS = ("ood_score", "in_distribution")
POSTPROCESS = "medserve_postprocess"
MASK_HEIGHT, MASK_WIDTH = "medserve_mask_height", "medserve_mask_width"
MAX_MASK_SIDE = 16384


def postprocess_outputs(card: ModelCard) -> tuple[str, ...]:
    base = SEGMENTER_OUTPUTS if card.task == "binary_segmentation" else CLASSIFIER_OUTPUTS
    return (*base, *OOD_OUTPUTS) if card.ood is not None else base


def tensor_shape(shape: list[Any]) -> list[int]:
    """An onnxruntime shape with -1 for every variable dimension (named or None)."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def graph_tensors(entry: ModelEntry, outputs: bool) -> list[dict[str, Any]]:
    """The graph's inputs or outputs as ``$metadata_tensor`` objects."""
    assert entry.session is not None
    args = entry.session.get_outputs() if outputs else entry.session.get_inputs()
    return [
        {
            "name": a.name,
            "datatype": ONNX_DATATYPES.get(a.type, "BYTES"),
            "shape": tensor_shape(list(a.shape)),
        }
        for a in args
    ]


@dataclass
class V2Result:
    """What the route sends back and what the audit keeps."""

    body: bytes
    header_length: int | None
    content_encoding: str | None
    input_sha256: str
    batch: int
    decisions: list[Decision] = field(default_factory=list)
    mask_areas: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class RequestOptions:
    postprocess: bool
    operating_point: str
    binary_default: bool
    mask_shape: tuple[int, int] | None


def _bool_param(params: dict[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {name} must be true or false")
    return value


def _side(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_MASK_SIDE:
        raise BadRequest(f"parameter {name} must be an integer in 1..{MAX_MASK_SIDE}")
    return value


def request_options(params: dict[str, Any], card: ModelCard, max_pixels: int) -> RequestOptions:
    """The request-level parameters this server reads (others are ignored, as the protocol
    allows): ``medserve_postprocess``, ``operating_point``, ``binary_data_output`` and, for a
    segmenter's mask, ``medserve_mask_height``/``medserve_mask_width``."""
    point = params.get("operating_point")
    if point is not None and not isinstance(point, str):
        raise BadRequest("parameter operating_point must be a string")
    point_name, _ = resolve_operating_point(card, point)
    mask_shape = None
    if card.task == "binary_segmentation":
        height, width = card.input.preprocessing.size
        mask_shape = (_side(params, MASK_HEIGHT, height), _side(params, MASK_WIDTH, width))
        if mask_shape[0] * mask_shape[1] > max_pixels:
            raise BadRequest(f"the mask would have more than {max_pixels} pixels")
    return RequestOptions(
        postprocess=_bool_param(params, POSTPROCESS),
        operating_point=point_name,
        binary_default=_bool_param(params, "binary_data_output"),
        mask_shape=mask_shape,
    )


def _feeds(entry: ModelEntry, inputs: list[InputTensor]) -> dict[str, np.ndarray]:
    """The inputs as onnxruntime feeds, checked against the graph: names, datatypes, shapes
    (a variable dimension takes any size from 1), finite values."""
    assert entry.session is not None
    graph = {a.name: a for a in entry.session.get_inputs()}
    names = [t.name for t in inputs]
    if sorted(names) != sorted(graph) or len(set(names)) != len(names):
        wanted = ", ".join(repr(n) for n in graph)
        raise BadRequest(f"model {entry.name} takes exactly the inputs {wanted}")
    feeds: dict[str, np.ndarray] = {}
    for tensor in inputs:
        arg = graph[tensor.name]
        where = f"input {tensor.name!r}"
        datatype = ONNX_DATATYPES.get(arg.type)
        if tensor.datatype != datatype:
            raise BadRequest(f"{where} has datatype {tensor.datatype}; the model takes {datatype}")
        expected = tensor_shape(list(arg.shape))
        shape = list(tensor.shape)
        if len(shape) != len(expected) or any(
            (e == -1 and s < 1) or (e != -1 and s != e)
            for s, e in zip(shape, expected, strict=True)
        ):
            raise BadRequest(f"{where} has shape {shape}; the model takes {expected}")
        array = tensor.array
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise BadRequest(f"{where} holds NaN or infinite values")
        feeds[tensor.name] = np.ascontiguousarray(array)
    return feeds


def _requested(
    header: dict[str, Any], available: list[str], post: tuple[str, ...], options: RequestOptions
) -> list[tuple[str, bool]]:
    """(name, binary) of each output to send: the requested ones in the order asked, else every
    available one; ``binary_data`` per output overrides ``binary_data_output``."""
    requested = header.get("outputs")
    if requested is None:
        return [(name, options.binary_default) for name in available]
    if not isinstance(requested, list):
        raise BadRequest("outputs must be a list")
    chosen: list[tuple[str, bool]] = []
    for index, item in enumerate(requested):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"outputs[{index}] needs a name")
        name = item["name"]
        params = parameters_of(item, f"output {name[:64]!r}")
        if "classification" in params:
            raise BadRequest("the classification extension is not supported")
        if name not in available:
            if name in post:
                raise BadRequest(f"output {name!r} needs the request parameter {POSTPROCESS}: true")
            raise BadRequest(f"model has no output named {name[:64]!r}")
        if any(name == c for c, _ in chosen):
            raise BadRequest(f"output {name!r} is requested twice")
        binary = params.get("binary_data", options.binary_default)
        if not isinstance(binary, bool):
            raise BadRequest(f"output {name!r}: binary_data must be true or false")
        chosen.append((name, binary))
    return chosen


def _postprocess(
    entry: ModelEntry, output: np.ndarray, batch: int, options: RequestOptions
) -> tuple[dict[str, np.ndarray], list[Decision], list[int]]:
    """The decision for each item of the batch, by the upload endpoints' own functions."""
    card = entry.card
    assert card is not None
    decisions: list[Decision] = []
    masks: list[np.ndarray] = []
    rows = np.asarray(output).reshape(batch, -1)
    for row in rows:
        if card.task == "binary_segmentation":
            assert card.pixel_threshold is not None and options.mask_shape is not None
            probs = probability_map(row, card)
            decisions.append(decide(lesion_logit(probs), card, options.operating_point))
            masks.append(mask_at(probs, options.mask_shape, card.pixel_threshold))
        else:
            logit = classification_logit(row, card)
            decisions.append(decide(logit, card, options.operating_point))
    out = {
        "probability": np.array([d.probability for d in decisions], dtype=np.float64),
        "positive": np.array([d.positive for d in decisions], dtype=np.bool_),
        "threshold": np.array([d.point.threshold for d in decisions], dtype=np.float64),
        "label": np.array([d.label.encode("utf-8") for d in decisions], dtype=object),
    }
    if masks:
        out["mask"] = np.stack(masks).astype(np.uint8)
    return out, decisions, [int(m.sum()) for m in masks]


def _ood_outputs(entry: ModelEntry, features: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per item of the batch: the OOD score from its features and its input tensor, and
    whether it is within the card's threshold (as the upload endpoints compute them)."""
    assert entry.card is not None and entry.card.ood is not None
    scores = np.array(
        [entry.ood_score(f, xi) for f, xi in zip(features, x, strict=True)], dtype=np.float64
    )
    return {
        "ood_score": scores,
        "in_distribution": scores <= entry.card.ood.threshold,
    }


def response_encoding(accept_encoding: str | None) -> str | None:
    """gzip or deflate when the client's ``Accept-Encoding`` allows one (q > 0), else None."""
    offered: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        name, _, rest = item.strip().partition(";")
        q = 1.0
        key, _, value = rest.strip().partition("=")
        if key.strip() == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        offered[name.strip().lower()] = q
    for name in ("gzip", "deflate"):
        if offered.get(name, 0.0) > 0:
            return name
    return None


def _compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        packer = zlib.compressobj(6)
    return packer.compress(body) + packer.flush()


def run_infer(
    entry: ModelEntry,
    body: bytes,
    *,
    content_encoding: str | None,
    header_length: str | None,
    accept_encoding: str | None,
    max_body_bytes: int,
    max_pixels: int,
    metrics: Metrics,
) -> V2Result:
    """One ``POST /v2/models/{name}/infer``: the response body and what the audit keeps."""
    card, session, runner = entry.card, entry.session, entry.runner
    assert card is not None and session is not None and runner is not None
    body = decompress(body, content_encoding, max_body_bytes)
    head_bytes, binary = split_body(body, header_length)
    header = parse_header(head_bytes)
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("id must be a string")
    options = request_options(parameters_of(header, "request"), card, max_pixels)
    feeds = _feeds(entry, decode_inputs(header, binary))

    raw_names = [o.name for o in session.get_outputs()]
    post = postprocess_outputs(card)
    available = raw_names + (list(post) if options.postprocess else [])
    chosen = _requested(header, available, post, options)

    started = time.perf_counter()
    raw = [np.asarray(a) for a in runner.run(None, feeds)]
    metrics.observe_inference(entry.name, time.perf_counter() - started)
    tensors = dict(zip(raw_names, raw, strict=True))
    batch = int(next(iter(feeds.values())).shape[0])
    decisions: list[Decision] = []
    areas: list[int] = []
    if options.postprocess:
        extra, decisions, areas = _postprocess(entry, raw[0], batch, options)
        tensors.update(extra)
        if card.ood is not None and entry.input_name is not None:
            tensors.update(_ood_outputs(entry, raw[-1], feeds[entry.input_name]))

    head: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version}
    if request_id is not None:
        head["id"] = request_id
    if options.postprocess:
        head["parameters"] = {"operating_point": options.operating_point}
    outputs = [OutputTensor(name, tensors[name], binary) for name, binary in chosen]
    out_body, out_header_length = encode_response(head, outputs)
    encoding = response_encoding(accept_encoding)
    if encoding is not None:
        out_body = _compress(out_body, encoding)
    digest = hashlib.sha256()
    for name in sorted(feeds):
        digest.update(feeds[name].tobytes())
    return V2Result(
        out_body, out_header_length, encoding, digest.hexdigest(), batch, decisions, areas
    )
