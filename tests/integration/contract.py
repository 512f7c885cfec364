"""Assertions of the HTTP contract (shared/api-contract.md, docs/api.md) on raw responses."""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

import httpx
import numpy as np

from tests.integration.media import decode_rle, read_png

PROBLEM_JSON = "application/problem+json"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TIMING_KEYS = {"decode", "preprocess", "inference", "postprocess", "total"}
PREDICTION_KEYS = {
    "request_id",
    "model",
    "input",
    "probability",
    "uncalibrated_probability",
    "positive",
    "label",
    "operating_point",
    "warnings",
    "timing_ms",
}
MASK_KEYS = {
    "height",
    "width",
    "area_px",
    "area_mm2",
    "bbox",
    "centroid",
    "centroid_mm",
    "rle",
    "png_base64",
}


def describe(r: httpx.Response) -> str:
    """One line for assertion messages: the request and what came back."""
    return f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:600]}"


def media_type(r: httpx.Response) -> str:
    return r.headers.get("content-type", "").split(";")[0].strip().lower()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with the contract's fields; returns the body."""
    assert r.status_code == status, describe(r)
    assert media_type(r) == PROBLEM_JSON, describe(r)
    body: dict[str, Any] = r.json()
    assert body["status"] == status, body
    assert body["code"] == code, body
    assert body["type"] == f"urn:medserve:error:{code}", body
    assert isinstance(body["title"], str) and body["title"], body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["request_id"] == r.headers.get("x-request-id"), (body, dict(r.headers))
    # detail never carries a stack trace or a path
    assert "Traceback" not in body["detail"] and "/work/" not in body["detail"], body
    return body


def assert_operating_points(points: dict[str, Any]) -> None:
    assert isinstance(points, dict) and points, points
    for name, point in points.items():
        assert isinstance(name, str) and name
        for key in ("threshold", "sensitivity", "specificity"):
            assert 0.0 <= float(point[key]) <= 1.0, (name, point)


def assert_prediction(
    r: httpx.Response,
    *,
    summary: dict[str, Any],
    labels: list[str],
    upload: bytes | list[bytes],
    fmt: str,
    shape: tuple[int, ...] | None,
    operating_point: str | None = None,
    spacing_mm: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """Every field of a successful inference answer, checked against /models and the upload.

    ``shape=None`` skips the exact shape check (the caller checks it); ``spacing_mm`` is compared
    when given, otherwise only its form is.
    """
    assert r.status_code == 200, describe(r)
    assert media_type(r) == "application/json", describe(r)
    body: dict[str, Any] = r.json()
    missing = PREDICTION_KEYS - body.keys()
    assert not missing, f"missing {sorted(missing)} in {body}"
    assert body["request_id"] == r.headers["x-request-id"]

    assert body["model"] == {
        "name": summary["name"],
        "version": summary["version"],
        "sha256": summary["sha256"],
    }

    parts = upload if isinstance(upload, list) else [upload]
    inp = body["input"]
    assert inp["format"] == fmt, inp
    assert inp["sha256"] == sha256(b"".join(parts)), inp
    assert all(isinstance(s, int) and s > 0 for s in inp["shape"]), inp
    if shape is not None:
        assert tuple(inp["shape"]) == shape, inp
    if inp["spacing_mm"] is not None:
        assert len(inp["spacing_mm"]) == len(inp["shape"]), inp
        assert all(s > 0 for s in inp["spacing_mm"]), inp
    if spacing_mm is not None:
        assert inp["spacing_mm"] is not None, inp
        assert np.allclose(inp["spacing_mm"], spacing_mm, rtol=1e-4), inp

    p, q = body["probability"], body["uncalibrated_probability"]
    assert isinstance(p, float | int) and 0.0 <= p <= 1.0, body
    assert isinstance(q, float | int) and 0.0 <= q <= 1.0, body

    op = body["operating_point"]
    name = operating_point or summary["default_operating_point"]
    expected = summary["operating_points"][name]
    assert op["name"] == name, op
    for key in ("threshold", "sensitivity", "specificity"):
        assert math.isclose(op[key], expected[key], abs_tol=1e-9), (op, expected)
    assert isinstance(body["positive"], bool)
    assert body["positive"] == (p >= op["threshold"]), body
    assert body["label"] == (labels[1] if body["positive"] else labels[0]), body

    assert isinstance(body["warnings"], list)
    for w in body["warnings"]:
        assert set(w) >= {"code", "detail"} and isinstance(w["code"], str), w

    timing = body["timing_ms"]
    assert set(timing) >= TIMING_KEYS, timing
    assert all(isinstance(v, float | int) and v >= 0 for v in timing.values()), timing
    stages = sum(timing[k] for k in TIMING_KEYS - {"total"})
    assert stages <= timing["total"] + 1.0, timing
    return body


def assert_mask(body: dict[str, Any], *, rle: bool, png: bool) -> np.ndarray | None:
    """The segmentation ``mask`` object: sizes, RLE (counts sum to H*W), PNG, and the summary
    figures recomputed from the mask itself. Returns the decoded (H, W) bool mask if any."""
    mask = body["mask"]
    missing = MASK_KEYS - mask.keys()
    assert not missing, f"missing {sorted(missing)} in mask {mask}"
    height, width = mask["height"], mask["width"]
    assert [height, width] == body["input"]["shape"][-2:], (mask, body["input"])

    decoded: np.ndarray | None = None
    if rle:
        enc = mask["rle"]
        assert enc is not None, mask
        assert enc["size"] == [height, width] and enc["order"] == "F", enc
        counts = enc["counts"]
        assert all(isinstance(c, int) and c >= 0 for c in counts), counts[:20]
        assert all(c > 0 for c in counts[1:]), "only the first run may be empty"
        assert sum(counts) == height * width, (sum(counts), height, width)
        decoded = decode_rle(counts, height, width)
    else:
        assert mask["rle"] is None, mask["rle"]
    if png:
        assert mask["png_base64"] is not None, mask
        pixels = read_png(base64.b64decode(mask["png_base64"]))
        assert pixels.shape == (height, width), pixels.shape
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        if decoded is not None:
            assert np.array_equal(pixels == 255, decoded), "PNG and RLE masks differ"
        decoded = pixels == 255
    else:
        assert mask["png_base64"] is None, "png_base64 sent though not asked for"

    if decoded is None:
        return None
    area = int(decoded.sum())
    assert mask["area_px"] == area, (mask["area_px"], area)
    spacing = body["input"]["spacing_mm"]
    if area == 0:
        assert mask["bbox"] is None and mask["centroid"] is None, mask
        assert mask["centroid_mm"] is None, mask
        if rle:
            assert mask["rle"]["counts"] == [height * width], mask["rle"]["counts"][:5]
    else:
        ys, xs = np.nonzero(decoded)
        assert mask["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
        assert np.allclose(mask["centroid"], [xs.mean(), ys.mean()], atol=0.51), mask
    if spacing is None:
        assert mask["area_mm2"] is None and mask["centroid_mm"] is None, mask
    else:
        row_mm, col_mm = spacing[-2], spacing[-1]
        assert math.isclose(mask["area_mm2"], area * row_mm * col_mm, rel_tol=1e-3, abs_tol=1e-3)
        if area:
            cx, cy = mask["centroid"]
            assert np.allclose(
                mask["centroid_mm"], [cx * col_mm, cy * row_mm], rtol=1e-3, atol=0.05
            )
    return decoded


def post_upload(
    client: httpx.Client,
    path: str,
    data: bytes | list[bytes],
    *,
    transport: str = "raw",
    content_type: str = "application/octet-stream",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST the file(s) as the raw body, or as multipart ``file`` parts whose names and declared
    types say nothing (the service must go by the bytes)."""
    if transport == "raw":
        assert isinstance(data, bytes), "several files need multipart"
        return client.post(
            path,
            content=data,
            params=params,
            headers={"Content-Type": content_type, **(headers or {})},
        )
    assert transport == "multipart", transport
    parts = data if isinstance(data, list) else [data]
    files = [("file", (f"part{i}.bin", p, "application/octet-stream")) for i, p in enumerate(parts)]
    return client.post(path, files=files, params=params, headers=headers)
