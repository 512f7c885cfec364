"""The OOD check through HTTP on the committed models: the answer's ``ood`` field and the
``out_of_distribution`` warning, ``MEDSERVE_OOD_POLICY=refuse`` (422 with the score) against
``warn`` (200), inputs that must be answered and flagged rather than refused as invalid (blank,
saturated and constant images; constant and noise CT volumes), the README's preview montage,
the DICOM SR's suitability rows (dciodvfy-clean) and the V2 outputs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from tests.app.test_dicom_results import (
    CR_STORAGE,
    DICOM,
    anonymised_projection,
    content_items,
    dciodvfy_errors,
)
from training.synthetic.pneumonia import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
PREVIEW = ROOT / "docs" / "pneumonia_preview.png"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def refusing() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS, ood_policy="refuse"))) as c:
        yield c


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One synthetic film of an unseen seed (in distribution), as the JPEG the generator wrote."""
    out = tmp_path_factory.mktemp("films")
    paths = generate(out, SynthConfig(n=8, seed=31337, test_fraction=0.0, val_images=1))
    return sorted(paths)[0].read_bytes()


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _nifti(voxels: np.ndarray) -> bytes:
    img = nib.Nifti1Image(voxels.astype(np.int16), np.diag([0.7, 0.7, 5.0, 1.0]))
    return bytes(img.to_bytes())


def _flagged(body: dict[str, Any]) -> bool:
    ood = body["ood"]
    assert set(ood) == {"score", "threshold", "in_distribution"}
    warned = any(w["code"] == "out_of_distribution" for w in body["warnings"])
    assert warned == (not ood["in_distribution"])
    assert ood["in_distribution"] == (ood["score"] <= ood["threshold"])
    return not ood["in_distribution"]


def test_an_unseen_film_is_in_distribution(client: TestClient, film: bytes) -> None:
    r = client.post("/classify/xray", content=film)
    assert r.status_code == 200 and not _flagged(r.json())


def test_the_readme_preview_montage_is_flagged(client: TestClient) -> None:
    """The strip of three films the README shows (and its quick start sends)."""
    r = client.post("/classify/xray", content=PREVIEW.read_bytes())
    assert r.status_code == 200 and _flagged(r.json())


GRAY = {
    "blank": 0,
    "saturated": 255,
    "constant": 128,
}


@pytest.mark.parametrize("kind", sorted(GRAY))
@pytest.mark.parametrize("path", ["/classify/xray", "/segment/mri"])
def test_constant_images_are_answered_and_flagged(client: TestClient, path: str, kind: str) -> None:
    data = _png(np.full((256, 256), GRAY[kind], np.uint8))
    r = client.post(path, content=data)
    assert r.status_code == 200, r.text
    assert _flagged(r.json())


@pytest.mark.parametrize("value", [0, 65535, 30000])
def test_constant_16_bit_frames_are_answered_and_flagged(client: TestClient, value: int) -> None:
    data = _png(np.full((384, 512), value, np.uint16))
    r = client.post("/segment/xray", content=data)
    assert r.status_code == 200, r.text
    assert _flagged(r.json())


@pytest.mark.parametrize("kind", ["air", "water", "noise"])
def test_constant_and_noise_volumes_are_answered_and_flagged(client: TestClient, kind: str) -> None:
    shape = (40, 128, 128)
    if kind == "noise":
        voxels = np.random.default_rng(5).uniform(-1024, 1500, shape)
    else:
        voxels = np.full(shape, -1000 if kind == "air" else 0)
    r = client.post("/classify/ct", content=_nifti(voxels))
    assert r.status_code == 200, r.text
    assert _flagged(r.json())


def test_refuse_policy_is_422_with_the_score_and_warn_is_200(
    client: TestClient, refusing: TestClient, film: bytes
) -> None:
    blank = _png(np.zeros((256, 256), np.uint8))
    warned = client.post("/classify/xray", content=blank)
    assert warned.status_code == 200 and _flagged(warned.json())
    r = refusing.post("/classify/xray", content=blank)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "out_of_distribution" and body["type"].endswith(":out_of_distribution")
    assert body["ood"] == warned.json()["ood"]
    assert f"{body['ood']['score']:.4g}" in body["detail"]
    seg = refusing.post("/segment/mri", content=blank)
    assert seg.status_code == 422 and seg.json()["code"] == "out_of_distribution"
    ok = refusing.post("/classify/xray", content=film)
    assert ok.status_code == 200 and not _flagged(ok.json())


def _suitability(ds: pydicom.Dataset) -> tuple[str, float, float]:
    items = list(content_items(ds))
    (row,) = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "OOD_SUITABLE"]
    answer = str(row.ConceptCodeSequence[0].CodeMeaning)
    (score,) = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "OOD_SCORE"]
    (thr,) = [i for i in items if i.ConceptNameCodeSequence[0].CodeValue == "OOD_THRESHOLD"]
    values = [float(x.MeasuredValueSequence[0].NumericValue) for x in (score, thr)]
    return answer, values[0], values[1]


def test_sr_carries_the_suitability_rows(client: TestClient, tmp_path: Path) -> None:
    blank = anonymised_projection(np.zeros((256, 256)), CR_STORAGE, "CR", 8)
    body = client.post("/classify/xray", content=blank).json()
    r = client.post("/classify/xray", content=blank, headers=DICOM)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    answer, score, threshold = _suitability(pydicom.dcmread(io.BytesIO(r.content)))
    assert answer == ("Yes" if body["ood"]["in_distribution"] else "No") == "No"
    assert score == pytest.approx(body["ood"]["score"], rel=1e-3)
    assert threshold == pytest.approx(body["ood"]["threshold"], rel=1e-3)
    assert dciodvfy_errors(r.content, tmp_path) == []


def test_v2_lists_the_features_output_and_postprocess_carries_the_ood_flag(
    client: TestClient,
) -> None:
    meta = client.get("/v2/models/pneumonia_xray").json()
    names = [o["name"] for o in meta["outputs"]]
    assert names[-1] == "ood_features" and len(names) == 2
    shape = [2, 128, 128, 1]
    x = np.zeros(shape, np.float32)
    x[1] = np.random.default_rng(0).random(shape[1:])
    body = {
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": shape, "data": x.ravel().tolist()}
        ],
        "parameters": {"medserve_postprocess": True},
    }
    r = client.post("/v2/models/pneumonia_xray/infer", json=body)
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert {"ood_score", "in_distribution", "ood_features", "probability"} <= set(out)
    assert out["in_distribution"]["data"] == [False, False]
    threshold = client.get("/models/pneumonia_xray").json()["ood"]["threshold"]
    assert all(s > threshold for s in out["ood_score"]["data"])
