"""app.v2.tensors in-process: the binary and JSON forms, both ways, and their edge cases."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np
import orjson
import pytest

from app.errors import BadRequest, PayloadTooLarge
from app.v2.tensors import (
    NP_DTYPES,
    OutputTensor,
    decode_inputs,
    decompress,
    encode_response,
    split_body,
)


def _binary_request(arrays: dict[str, tuple[str, np.ndarray, bytes]]) -> tuple[bytes, str]:
    inputs = [
        {
            "name": n,
            "datatype": dt,
            "shape": list(a.shape),
            "parameters": {"binary_data_size": len(b)},
        }
        for n, (dt, a, b) in arrays.items()
    ]
    header = orjson.dumps({"inputs": inputs})
    return header + b"".join(b for _, _, b in arrays.values()), str(len(header))


def _split(body: bytes, length: str) -> tuple[dict[str, object], memoryview]:
    head, rest = split_body(body, length)
    return orjson.loads(head), rest


@pytest.mark.parametrize("datatype", sorted(NP_DTYPES))
def test_every_numeric_datatype_round_trips(datatype: str) -> None:
    a = (np.arange(12) % 3).astype(NP_DTYPES[datatype]).reshape(3, 4)
    raw = a.astype(np.uint8).tobytes() if datatype == "BOOL" else a.tobytes()
    body, length = _binary_request({"x": (datatype, a, raw)})
    head, rest = split_body(body, length)
    (t,) = decode_inputs(orjson.loads(head), rest)
    np.testing.assert_array_equal(t.array, a)
    out, header_length = encode_response({"model_name": "m"}, [OutputTensor("y", a, True)])
    assert header_length is not None and out[header_length:] == raw
    described = orjson.loads(out[:header_length])["outputs"][0]
    assert described["datatype"] == datatype and described["shape"] == [3, 4]
    json_out, none = encode_response({}, [OutputTensor("y", a, False)])
    assert none is None
    np.testing.assert_array_equal(
        np.array(orjson.loads(json_out)["outputs"][0]["data"], dtype=a.dtype).reshape(3, 4), a
    )


def test_bytes_binary_and_json() -> None:
    values = [b"ab", b"", "é".encode()]
    raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
    body, length = _binary_request({"s": ("BYTES", np.empty(3), raw)})
    head, rest = split_body(body, length)
    (t,) = decode_inputs(orjson.loads(head), rest)
    assert t.array.tolist() == values
    short, short_length = _binary_request({"s": ("BYTES", np.empty(3), raw[:-1])})
    with pytest.raises(BadRequest, match="ends inside"):
        decode_inputs(*_split(short, short_length))
    (j,) = decode_inputs(
        {"inputs": [{"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]},
        memoryview(b""),
    )
    assert j.array.tolist() == [b"a", b"b"]
    out, n = encode_response({}, [OutputTensor("s", np.array(values, dtype=object), True)])
    assert n is not None and out[n:] == raw


def test_json_data_nested_or_flat() -> None:
    for data in ([[1, 2], [3, 4]], [1, 2, 3, 4], [1.0, 2, True, 4]):
        (t,) = decode_inputs(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": data}]},
            memoryview(b""),
        )
        assert t.array.dtype == np.float32 and t.array.shape == (2, 2)
    with pytest.raises(BadRequest, match="elements"):
        decode_inputs(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2]}]},
            memoryview(b""),
        )


def test_split_body_and_binary_bookkeeping() -> None:
    a = np.ones((2,), np.float32)
    body, length = _binary_request({"x": ("FP32", a, a.tobytes())})
    with pytest.raises(BadRequest, match="past the end"):
        split_body(body, str(len(body) + 1))
    with pytest.raises(BadRequest, match="non-negative integer"):
        split_body(body, "-3")
    head, rest = split_body(body, length)
    with pytest.raises(BadRequest, match="truncated"):
        decode_inputs(orjson.loads(head), rest[:-1])
    with pytest.raises(BadRequest, match="after the inputs"):
        decode_inputs(orjson.loads(head), memoryview(bytes(rest) + b"z"))
    assert split_body(b"{}", None) == (b"{}", memoryview(b""))


def test_decompress() -> None:
    data = b"x" * 1000
    assert decompress(gzip.compress(data), "gzip", 2000) == data
    assert decompress(zlib.compress(data), "deflate", 2000) == data
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decompress(raw.compress(data) + raw.flush(), "deflate", 2000) == data
    assert decompress(data, None, 10) == data  # identity: the body limit applies elsewhere
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(data), "gzip", 999)
    with pytest.raises(BadRequest, match="truncated"):
        decompress(gzip.compress(data)[:-12], "gzip", 2000)
    with pytest.raises(BadRequest, match="unsupported"):
        decompress(data, "br", 2000)
