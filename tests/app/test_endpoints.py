"""The endpoint table (app/endpoints.py) builds the routes and gates each card's readiness."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.endpoints import ENDPOINTS, Endpoint, card_disagreement, check_table, for_path
from app.main import create_app
from tests.tiny_model import SIZE, write_tiny_model, write_tiny_suite


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))).save(buf, format="PNG")
    return buf.getvalue()


def _edit_card(folder: Path, **changes: object) -> None:
    path = folder / "model_card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_every_row_is_a_route_with_its_description_and_each_model_is_ready(
    tmp_path: Path,
) -> None:
    write_tiny_suite(tmp_path)
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        paths = client.get("/openapi.json").json()["paths"]
        models = {m["name"]: m for m in client.get("/models").json()}
    for row in ENDPOINTS:
        assert paths[row.path]["post"]["description"] == row.description
        assert models[row.model]["ready"], models[row.model]["reason"]
        assert models[row.model]["endpoint"] == row.path
        assert models[row.model]["task"] == row.task
    upload_paths = {p for p in paths if p.startswith(("/classify", "/segment"))}
    assert upload_paths == {row.path for row in ENDPOINTS}


def test_a_card_whose_endpoint_or_task_disagrees_is_not_ready(tmp_path: Path) -> None:
    wrong_path = write_tiny_model(tmp_path, name="pneumonia_xray")
    _edit_card(wrong_path, endpoint="/classify/ct")
    write_tiny_model(tmp_path, name="covid_ct", segmenter=True, endpoint="/classify/ct")
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        models = {m["name"]: m for m in client.get("/models").json()}
        resp = client.post("/classify/xray", content=_png())
    xray = models["pneumonia_xray"]
    assert not xray["ready"]
    assert "disagrees with the endpoint table (/classify/xray)" in xray["reason"]
    assert not models["covid_ct"]["ready"]
    assert "card task binary_segmentation disagrees" in models["covid_ct"]["reason"]
    assert resp.status_code == 503 and resp.json()["code"] == "model_not_ready"


def test_a_model_outside_the_table_is_served_by_v2_only(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, name="knee_mri")  # no row: the card's endpoint is null
    claims = write_tiny_model(tmp_path, name="knee_ct")
    _edit_card(claims, endpoint="/classify/knee")
    with TestClient(create_app(Settings(model_dir=tmp_path))) as client:
        models = {m["name"]: m for m in client.get("/models").json()}
        assert client.post("/classify/knee", content=_png()).status_code == 404
        batch = np.full((1, SIZE, SIZE, 1), 0.25, np.float32)
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(batch.shape),
                    "datatype": "FP32",
                    "data": batch.ravel().tolist(),
                }
            ]
        }
        v2 = client.post("/v2/models/knee_mri/infer", json=body)
    assert models["knee_mri"]["ready"] and models["knee_mri"]["endpoint"] is None
    assert not models["knee_ct"]["ready"]
    assert "no row for it" in models["knee_ct"]["reason"]
    assert v2.status_code == 200, v2.text
    assert v2.json()["model_name"] == "knee_mri"


def test_an_extra_row_serves_a_fifth_model_at_its_path(tmp_path: Path) -> None:
    row = Endpoint("/classify/knee", "knee_mri", "binary_classification", "Knee effusion (test).")
    write_tiny_model(tmp_path, name="knee_mri", endpoint=row.path)
    with TestClient(create_app(Settings(model_dir=tmp_path), (*ENDPOINTS, row))) as client:
        resp = client.post(row.path, content=_png())
        summary = {m["name"]: m for m in client.get("/models").json()}["knee_mri"]
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"]["name"] == "knee_mri"
    assert summary["ready"] and summary["endpoint"] == row.path


def test_the_table_refuses_a_path_or_a_model_twice() -> None:
    first = ENDPOINTS[0]
    with pytest.raises(ValueError, match="twice"):
        check_table((*ENDPOINTS, Endpoint(first.path, "other", first.task, "")))
    with pytest.raises(ValueError, match="twice"):
        check_table((*ENDPOINTS, Endpoint("/other", first.model, first.task, "")))
    check_table(ENDPOINTS)
    assert for_path(first.path) is first
    assert card_disagreement(first.model, first.task, first.path) is None


def test_the_black_box_suite_states_the_same_table() -> None:
    from tests.integration.service import ENDPOINTS as CONTRACT

    assert {row.model: row.path for row in ENDPOINTS} == CONTRACT
