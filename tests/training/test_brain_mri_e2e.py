"""Tiny end to end: generate → train one epoch at 32×32 → calibrate → export → load with the
registry → serve → POST /segment/mri with a generated slice and a real MR DICOM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")
mask_utils = pytest.importorskip("pycocotools.mask")

from fastapi.testclient import TestClient  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from app.config import Settings  # noqa: E402
from app.imaging.card import CARD_FILE, ModelCard  # noqa: E402
from app.main import create_app  # noqa: E402
from app.registry import load_entry  # noqa: E402
from training.cli import main  # noqa: E402
from training.synthetic.brain_mri import SynthConfig, generate  # noqa: E402
from training.tasks.brain_tumor_mri.card import BRAIN_CARD  # noqa: E402


def _rle_mask(rle: dict) -> np.ndarray:
    encoded = mask_utils.frPyObjects({"size": rle["size"], "counts": rle["counts"]}, *rle["size"])
    return mask_utils.decode(encoded).astype(bool)


def test_generate_train_export_serve(tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = generate(data, SynthConfig(n=20, seed=11, slices_per_patient=(4, 4), size=64))
    out = tmp_path / "models"
    assert main(["train", "brain_tumor_mri", "--data", str(data), "--out", str(out),
                 "--version", "0.0.1", "--run-dir", str(tmp_path / "run"),
                 "--set", "size=32", "--set", "base_filters=4", "--set", "depth=2",
                 "--set", "epochs=1", "--set", "batch_size=8", "--set", "seed=0",
                 "--set", "verbose=0", "--set", "synthetic=true",
                 "--set", "val_fraction=0.2", "--set", "test_fraction=0.2",
                 "--ood-per-kind", "0"]) == 0  # fmt: skip
    path = out / BRAIN_CARD.name / "0.0.1"
    assert path == out / BRAIN_CARD.name / "0.0.1"
    card = ModelCard.model_validate(json.loads((path / CARD_FILE).read_text()))
    assert card.task == "binary_segmentation" and card.endpoint == "/segment/mri"
    assert card.input.shape == [None, 32, 32, 1]
    assert card.input.preprocessing.channel_index == 1
    assert card.output.activation == "logit"
    assert card.pixel_threshold is not None and 0 < card.pixel_threshold < 1
    assert card.training.synthetic and "SYNTHETIC" in card.limitations[0]
    assert card.conformance.modalities == ["MR"] and card.conformance.image_side_range == (64, 64)
    assert {"dice", "iou", "dice_all", "auc", "sensitivity", "specificity"} <= set(card.metrics)
    for plot in ("segmentation_examples.png", "pixel_threshold.png", "training_curves.png"):
        assert plot in card.files and (path / plot).is_file()
    assert load_entry(card.name, path, Settings(model_dir=out)).ready

    with TestClient(create_app(Settings(model_dir=out))) as client:
        r = client.post(
            "/segment/mri", content=files[0].read_bytes(), params={"mask_format": "both"}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["name"] == "brain_tumor_mri"
        assert body["input"]["shape"] == [64, 64] and body["input"]["format"] == "tiff"
        assert body["label"] in ("NO_LESION", "LESION")
        assert body["positive"] == (body["probability"] >= body["operating_point"]["threshold"])
        mask = body["mask"]
        assert (mask["height"], mask["width"]) == (64, 64)
        decoded = _rle_mask(mask["rle"])
        assert decoded.shape == (64, 64) and int(decoded.sum()) == mask["area_px"]

        dcm = Path(get_testdata_file("MR_small.dcm"))
        r = client.post("/segment/mri", content=dcm.read_bytes())
        assert r.status_code == 200, r.text
        assert r.json()["mask"]["rle"]["size"] == [64, 64]

        r = client.post(
            "/segment/mri", content=files[1].read_bytes(), headers={"Accept": "image/png"}
        )
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
