"""The committed demo model ``models/brain_tumor_mri`` through HTTP (TestClient on models/).

Inputs are synthetic slices from a seed the model never saw, a real MR DICOM from pydicom's test
files, and the masks are read back with pycocotools.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from training.synthetic.brain_mri import SynthConfig, plan, render_patient

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
NAME = "brain_tumor_mri"
mask_utils = pytest.importorskip("pycocotools.mask")

pytestmark = pytest.mark.skipif(
    not any((MODELS / NAME).glob("*/model_card.json")),
    reason="models/brain_tumor_mri is not there yet (make models-brain)",
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def slices() -> dict[str, tuple[bytes, np.ndarray]]:
    """A mid-tumour slice and an empty slice with ventricles, from an unseen seed, as TIFF."""
    cfg = SynthConfig(n=24, seed=4242, slices_per_patient=(24, 24))
    rendered = render_patient(plan(cfg)[0], cfg)
    with_lesion = [i for i, (_, m) in enumerate(rendered) if m.any()]
    empty = [i for i, (_, m) in enumerate(rendered) if not m.any()]
    assert with_lesion and empty
    picks = {"lesion": with_lesion[len(with_lesion) // 2], "empty": empty[len(empty) // 2]}
    out = {}
    for key, i in picks.items():
        img, mask = rendered[i]
        buf = io.BytesIO()
        Image.fromarray(img, mode="RGB").save(buf, format="TIFF")
        out[key] = (buf.getvalue(), mask)
    return out


def _rle(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    return mask_utils.decode(
        mask_utils.frPyObjects({"size": [h, w], "counts": rle["counts"]}, h, w)
    ).astype(bool)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.sum(a & b) / max(int(a.sum() + b.sum()), 1)


def test_card_is_served_and_describes_the_model(client: TestClient) -> None:
    r = client.get("/health/ready")
    assert r.json()["models"][NAME] == "ready", r.text
    card = client.get(f"/models/{NAME}").json()
    assert card["ready"] and card["task"] == "binary_segmentation" and card["modality"] == "MR"
    assert card["input"]["preprocessing"]["channel_index"] == 1
    assert card["output"]["activation"] == "logit" and card["output"]["labels"] == [
        "NO_LESION",
        "LESION",
    ]
    assert card["training"]["synthetic"] is True
    assert card["conformance"]["modalities"] == ["MR"]
    assert card["metrics"]["dice"] >= 0.8  # held-out synthetic test set, lesion slices
    version_dir = MODELS / NAME / card["version"]
    assert (version_dir / "model.onnx").stat().st_size < 15 * 2**20
    assert json.loads((version_dir / "model_card.json").read_text())["pixel_threshold"] > 0


def test_lesion_slice_mask_overlaps_the_truth(
    client: TestClient, slices: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    data, truth = slices["lesion"]
    r = client.post("/segment/mri", content=data, params={"mask_format": "both"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input"]["shape"] == [256, 256]
    assert body["positive"] is True and body["label"] == "LESION"
    mask = _rle(body["mask"]["rle"])
    assert mask.shape == truth.shape == (256, 256)
    assert _dice(mask, truth) >= 0.7, _dice(mask, truth)
    png = np.asarray(
        Image.open(io.BytesIO(__import__("base64").b64decode(body["mask"]["png_base64"])))
    )
    np.testing.assert_array_equal(png == 255, mask)
    ys, xs = np.nonzero(truth)
    cx, cy = body["mask"]["centroid"]
    assert abs(cx - xs.mean()) < 5 and abs(cy - ys.mean()) < 5  # x is the column, y the row


def test_empty_slice_gives_no_lesion(
    client: TestClient, slices: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    data, truth = slices["empty"]
    assert not truth.any()
    r = client.post("/segment/mri", content=data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["positive"] is False and body["label"] == "NO_LESION"
    assert body["mask"]["area_px"] <= 30


def test_png_answer_and_overlay(
    client: TestClient, slices: dict[str, tuple[bytes, np.ndarray]]
) -> None:
    data, _ = slices["lesion"]
    r = client.post("/segment/mri", content=data, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(r.content))).shape == (256, 256)
    assert r.headers["x-medserve-positive"] == "true"
    r = client.post(
        "/segment/mri", content=data, headers={"Accept": "image/png"}, params={"overlay": "true"}
    )
    assert r.status_code == 200
    assert np.asarray(Image.open(io.BytesIO(r.content))).shape[:2] == (256, 256)


def test_real_mr_dicom_gets_a_mask_at_its_size(client: TestClient) -> None:
    from pydicom.data import get_testdata_file

    dcm = Path(get_testdata_file("MR_small.dcm"))
    r = client.post("/segment/mri", content=dcm.read_bytes(), params={"mask_format": "both"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["input"]["format"] == "dicom" and body["input"]["shape"] == [64, 64]
    mask = _rle(body["mask"]["rle"])
    assert mask.shape == (64, 64) and int(mask.sum()) == body["mask"]["area_px"]
    assert body["mask"]["rle"]["order"] == "F" and sum(body["mask"]["rle"]["counts"]) == 64 * 64
    codes = {w["code"] for w in body["warnings"]}
    assert "rescaled_input" in codes  # 64 px is outside the 256 px sides seen in training
    if body["input"]["spacing_mm"] is not None and body["mask"]["area_px"]:
        assert body["mask"]["area_mm2"] is not None
