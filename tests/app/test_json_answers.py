"""The upload endpoints' JSON answers (written from plain dicts by orjson,
``app.routes.common``) are their documented response models to the field: every field, in
the models' order, of the models' types, nothing else; the optional ``ood``, ``explanation``
and ``timing_ms.explain`` only where they apply. On the committed models, for every kind of
JSON answer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.schemas import ClassificationResponse, SegmentationResponse

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _film(height: int, width: int, top: int) -> np.ndarray:
    rng = np.random.default_rng(height + width)
    yy, xx = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((yy - height / 2) ** 2 + (xx - width / 3) ** 2) / (0.02 * height * width)))
    return np.clip((0.3 + 0.6 * blob + 0.05 * rng.random((height, width))) * top, 0, top)


def _nifti() -> bytes:
    rng = np.random.default_rng(4)
    vol = (rng.random((48, 40, 12)) * 1400 - 1000).astype(np.int16)
    img = nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0]))
    return img.to_bytes()


Answer = type[ClassificationResponse] | type[SegmentationResponse]


def _as_documented(model: Answer, body: bytes) -> str:
    """``body`` read by its response model and written back as pydantic writes it, with the
    fields the answers leave out when absent left out; json.dumps of both sides compares
    fields, order and types (256 and 256.0 differ)."""
    parsed = model.model_validate_json(body, strict=False)
    exclude: dict[str, object] = {}
    if parsed.ood is None:
        exclude["ood"] = True
    if parsed.explanation is None:
        exclude["explanation"] = True
    if parsed.timing_ms.explain is None:
        exclude["timing_ms"] = {"explain"}
    return json.dumps(json.loads(parsed.model_dump_json(exclude=exclude or None)))


CASES = [
    ("/classify/xray", "", "xray8", ClassificationResponse),
    ("/classify/xray", "?explain=occlusion", "xray8", ClassificationResponse),
    ("/classify/ct", "", "ct", ClassificationResponse),
    ("/segment/mri", "", "mri", SegmentationResponse),
    ("/segment/mri", "?mask_format=both&explain=occlusion", "mri", SegmentationResponse),
    ("/segment/mri", "?mask_format=none", "mri", SegmentationResponse),
    ("/segment/xray", "?mask_format=png", "xray16", SegmentationResponse),
]


def _upload(kind: str) -> bytes:
    if kind == "xray8":
        return _png(_film(300, 260, 255).astype(np.uint8))
    if kind == "xray16":
        return _png(_film(384, 512, 60000).astype(np.uint16))
    if kind == "mri":
        return _png(_film(256, 256, 255).astype(np.uint8))
    return _nifti()


@pytest.mark.parametrize(("path", "query", "kind", "model"), CASES)
def test_each_json_answer_is_its_response_model_to_the_field(
    client: TestClient, path: str, query: str, kind: str, model: Answer
) -> None:
    r = client.post(path + query, content=_upload(kind))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert json.dumps(r.json()) == _as_documented(model, r.content)
    body = r.json()
    assert ("explanation" in body) == ("explain" in query)
    assert ("explain" in body["timing_ms"]) == ("explain" in query)
    assert "ood" in body  # every committed model has an OOD check
    if kind == "ct":
        assert body["input"]["spacing_mm"] == [2.5, 0.8, 0.8]
    if model is SegmentationResponse:
        mask = body["mask"]
        assert (mask["rle"] is None) == ("mask_format=none" in query or "png" in query)
        assert (mask["png_base64"] is None) != ("both" in query or "=png" in query)


def test_the_comparison_sees_a_missing_field_an_extra_one_a_type_and_the_order() -> None:
    client_body = {
        "request_id": "r",
        "model": {"name": "m", "version": "1", "sha256": "0" * 64},
        "input": {"format": "png", "shape": [2, 2], "spacing_mm": None, "sha256": "1" * 64},
        "probability": 0.5,
        "uncalibrated_probability": 0.5,
        "positive": True,
        "label": "X",
        "operating_point": {
            "name": "p",
            "threshold": 0.5,
            "sensitivity": 0.9,
            "specificity": 0.8,
            "precision": None,
        },
        "warnings": [],
        "timing_ms": {
            "decode": 1.0,
            "preprocess": 1.0,
            "inference": 1.0,
            "postprocess": 1.0,
            "total": 4.0,
        },
    }

    def same(body: dict[str, object]) -> bool:
        text = json.dumps(body)
        return text == _as_documented(ClassificationResponse, text.encode())

    assert same(client_body)
    missing = {k: v for k, v in client_body.items() if k != "warnings"}
    extra = {**client_body, "spare": 1}
    typed = {**client_body, "input": {**client_body["input"], "shape": [2.0, 2.0]}}  # type: ignore[dict-item]
    order = dict(reversed(list(client_body.items())))
    for changed in (extra, typed, order):
        assert not same(changed)
    with pytest.raises(ValueError):
        same(missing)
