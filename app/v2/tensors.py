"""Open Inference Protocol tensors: JSON and binary (Triton's binary tensor data extension).

Pure numpy: no FastAPI. A request body becomes ``(header, inputs)``; outputs become a response
body plus the ``Inference-Header-Content-Length`` it needs. Every malformed request raises
``BadRequest`` with a message written from what the code knows (never an echo of the input).

Binary form: the JSON header is the first ``Inference-Header-Content-Length`` bytes of the body;
the raw data of each input with ``parameters.binary_data_size`` follows, in the order of the
inputs in the header, row-major, little-endian; a BYTES element is a 4-byte little-endian length
and its bytes; a BOOL element is one byte.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.errors import BadRequest, PayloadTooLarge

# The protocol's datatypes and their numpy dtypes (little-endian); BYTES is an object array.
NP_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*NP_DTYPES, "BYTES")

# ONNX tensor element types (as onnxruntime names them) → the protocol's names.
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

MAX_DIMS = 8
_LEN = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """The protocol's datatype of a numpy array (object/str/bytes arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, dtype in NP_DTYPES.items():
        if array.dtype.newbyteorder("<") == dtype:
            return name
    raise TypeError(f"no protocol datatype for numpy dtype {array.dtype}")


# --------------------------------------------------------------------------- request body


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip, deflate — zlib or raw — or identity),
    inflated at most to ``limit`` bytes (413 past it)."""
    name = (encoding or "identity").strip().lower()
    if name in ("", "identity"):
        return body
    if name in ("gzip", "x-gzip"):
        candidates = [16 + zlib.MAX_WBITS]
    elif name == "deflate":
        candidates = [zlib.MAX_WBITS, -zlib.MAX_WBITS]  # RFC 9110 says zlib; some send raw
    else:
        raise BadRequest(f"unsupported Content-Encoding {name[:32]!r}: use gzip or deflate")
    for wbits in candidates:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"the request body inflates past the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"the {name} request body is truncated")
        return out
    raise BadRequest(f"the request body is not valid {name} data")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """(JSON header, binary rest) by ``Inference-Header-Content-Length``; all JSON without it."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not text.isdigit():
        raise BadRequest("Inference-Header-Content-Length must be a non-negative integer")
    length = int(text)
    if length > len(body):
        raise BadRequest(
            f"Inference-Header-Content-Length ({length}) is past the end of the body "
            f"({len(body)} bytes)"
        )
    view = memoryview(body)
    return body[:length], view[length:]


def parse_header(data: bytes) -> dict[str, Any]:
    """The inference request's JSON object."""
    try:
        header = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadRequest("the inference request is not valid JSON") from None
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    return header


def parameters_of(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """An object's ``parameters`` (a JSON object of string, number or boolean values)."""
    params = obj.get("parameters", {})
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: parameters must be a JSON object")
    for key, value in params.items():
        if not isinstance(value, str | int | float | bool):
            raise BadRequest(f"{where}: parameter {key[:64]!r} must be a string, number or bool")
    return params


@dataclass
class InputTensor:
    """One ``$request_input``, its data decoded to ``array`` with the declared shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise BadRequest(f"{where}: shape must be a list of at most {MAX_DIMS} integers")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"{where}: shape must hold non-negative integers")
    return tuple(value)


def _count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _bytes_from_binary(raw: memoryview, count: int, where: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: BYTES data ends inside element {i}")
        (size,) = _LEN.unpack_from(raw, pos)
        pos += 4
        if pos + size > len(raw):
            raise BadRequest(f"{where}: BYTES data ends inside element {i}")
        out[i] = bytes(raw[pos : pos + size])
        pos += size
    if pos != len(raw):
        raise BadRequest(f"{where}: BYTES data has bytes after its last element")
    return out


def _from_binary(raw: memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = _count(shape)
    if datatype == "BYTES":
        return _bytes_from_binary(raw, count, where).reshape(shape)
    dtype = NP_DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise BadRequest(
            f"{where}: binary_data_size is {len(raw)} bytes; shape {list(shape)} of {datatype} "
            f"needs {count * dtype.itemsize}"
        )
    if datatype == "BOOL":
        flags: np.ndarray = np.frombuffer(raw, dtype=np.uint8) != 0
        return flags.reshape(shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _from_json(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"{where}: data must be a JSON array (or use binary_data_size)")
    count = _count(shape)
    try:
        if datatype == "BYTES":
            flat = np.asarray(data, dtype=object).ravel()
            if not all(isinstance(x, str) for x in flat):
                raise ValueError
            array = np.array([x.encode("utf-8") for x in flat], dtype=object)
        else:
            array = np.asarray(data)
            if array.dtype.kind not in "biuf":
                raise ValueError
            array = array.astype(NP_DTYPES[datatype]).ravel()
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"{where}: data holds values that are not {datatype}") from None
    if array.size != count:
        raise BadRequest(
            f"{where}: data has {array.size} elements; shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def decode_inputs(header: dict[str, Any], binary: memoryview) -> list[InputTensor]:
    """The request's inputs, JSON ``data`` or binary, checked against their shape and datatype;
    the binary part must be used exactly (no bytes missing, none left over)."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("the inference request needs a non-empty inputs list")
    out: list[InputTensor] = []
    pos = 0
    for index, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{index}] must be a JSON object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{index}] needs a name")
        where = f"input {name[:64]!r}"
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise BadRequest(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
        shape = _shape(item.get("shape"), where)
        params = parameters_of(item, where)
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            if "data" in item:
                raise BadRequest(f"{where}: give data or binary_data_size, not both")
            if pos + size > len(binary):
                raise BadRequest(
                    f"{where}: binary data is truncated ({len(binary) - pos} of {size} bytes "
                    "after the header)"
                )
            array = _from_binary(binary[pos : pos + size], datatype, shape, where)
            pos += size
        else:
            if "data" not in item:
                raise BadRequest(f"{where}: needs data or parameters.binary_data_size")
            array = _from_json(item["data"], datatype, shape, where)
        out.append(InputTensor(name, datatype, shape, array, params))
    if pos != len(binary):
        raise BadRequest(
            f"the body has {len(binary) - pos} bytes after the inputs' binary data "
            "(binary_data_size and Inference-Header-Content-Length disagree)"
        )
    return out


# --------------------------------------------------------------------------- response body


@dataclass
class OutputTensor:
    name: str
    array: np.ndarray
    binary: bool = False


def _binary_bytes(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        chunks = []
        for value in array.ravel():
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            chunks += [_LEN.pack(len(data)), data]
        return b"".join(chunks)
    if datatype == "BOOL":
        return np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return np.ascontiguousarray(array, dtype=NP_DTYPES[datatype]).tobytes()


def _json_data(array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()
        ]
    return np.ascontiguousarray(array.ravel())


def encode_response(head: dict[str, Any], outputs: list[OutputTensor]) -> tuple[bytes, int | None]:
    """(body, header length): JSON alone, or the JSON header followed by the binary outputs
    in the order listed (the length is then ``Inference-Header-Content-Length``)."""
    described, blobs = [], []
    for out in outputs:
        datatype = datatype_of(out.array)
        tensor: dict[str, Any] = {
            "name": out.name,
            "datatype": datatype,
            "shape": list(out.array.shape),
        }
        if out.binary:
            blob = _binary_bytes(out.array, datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(out.array, datatype)
        described.append(tensor)
    header = orjson.dumps({**head, "outputs": described}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
