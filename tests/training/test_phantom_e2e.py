"""A tiny end-to-end run of the phantom slice: ``medserve-train synth phantom`` → train one epoch
at a tiny size → calibrate → export → tracking report added to the card → the service loads it
and ``POST /segment/xray`` answers in the contract's shape; ``evaluate phantom`` re-checks it."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("keras")

from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.imaging.card import ModelCard
from app.main import create_app
from training.cli import main
from training.core.seg_plots import SEG_PLOT_FILES
from training.tasks.phantom_tumor_xray.tracking import TRACKING_PLOT

NAME = "phantom_tumor_xray"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("phantom_e2e")
    data, test = root / "data", root / "test"
    common = ["--image-size", "96", "128", "--frames-per-sequence", "3", "5"]
    assert main(["synth", "phantom", "--out", str(data), "--n", "24", "--seed", "3",
                 "--empty-fraction", "0.3", *common]) == 0  # fmt: skip
    assert main(["synth", "phantom", "--out", str(test), "--n", "8", "--seed", "4",
                 "--format", "png", "--workers", "2", *common]) == 0  # fmt: skip
    assert main(["train", "phantom", "--data", str(data), "--out", str(root / "models"),
                 "--version", "0.0.1", "--test-data", str(test), "--run-dir", str(root / "run"),
                 "--input-size", "48", "64", "--base-filters", "4", "--stages", "2",
                 "--blocks-per-stage", "1", "--epochs", "1", "--batch-size", "8", "--seed", "0",
                 "--threads", "2", "--verbose", "0", "--synthetic",
                 "--latency-frames", "2", "--ood-per-kind", "0"]) == 0  # fmt: skip
    path = root / "models" / "phantom_tumor_xray" / "0.0.1"
    return path, test


@pytest.fixture(scope="module")
def client(artifact: tuple[Path, Path]) -> Iterator[TestClient]:
    path, _ = artifact
    with TestClient(create_app(Settings(model_dir=path.parent.parent))) as c:
        yield c


def test_card_has_the_tracking_report(artifact: tuple[Path, Path]) -> None:
    path, _ = artifact
    card = ModelCard.model_validate(json.loads((path / "model_card.json").read_text()))
    assert (card.task, card.endpoint, card.output.activation) == (
        "binary_segmentation", "/segment/xray", "logit"
    )  # fmt: skip
    assert card.input.shape == [None, 48, 64, 1]
    assert card.input.preprocessing.expected_bits == 16
    assert card.training.synthetic is True and "SYNTHETIC" in card.limitations[0]
    assert card.conformance.image_side_range == (768, 1024)
    assert {"model.onnx", TRACKING_PLOT, SEG_PLOT_FILES["examples"]} <= set(card.files)
    centroid = card.metrics["centroid"]
    assert isinstance(centroid, dict)
    assert centroid["n_with_tumour"] >= 1 and "definition" in centroid
    latency = json.loads((path / "model_card.json").read_text())["service_latency"]
    assert latency["frames"] == 2 and latency["frame_shape"] == [[96, 128]]
    assert latency["dominant_stage"] in {"decode", "preprocess", "inference", "postprocess"}
    assert "by sequence" in json.loads((path / "model_card.json").read_text())["training"]["split"]


def test_segment_xray_answers_in_contract_shape(
    artifact: tuple[Path, Path], client: TestClient
) -> None:
    _, test = artifact
    frame = sorted((test / "phantom" / "images").glob("*.png"))[0]
    r = client.post("/segment/xray", content=frame.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == NAME
    assert body["input"]["shape"] == [96, 128] and body["input"]["format"] == "png"
    mask = body["mask"]
    assert (mask["height"], mask["width"]) == (96, 128)
    assert sum(mask["rle"]["counts"]) == 96 * 128 and mask["rle"]["order"] == "F"
    assert set(mask) >= {"area_px", "bbox", "centroid", "centroid_mm"}
    assert (mask["centroid"] is None) == (mask["area_px"] == 0)
    assert 0.0 <= body["probability"] <= 1.0
    codes = {w["code"] for w in body["warnings"]}
    assert "rescaled_input" in codes  # 96 x 128 lies outside the 768-1024 px seen in training
    png = client.post("/segment/xray", content=frame.read_bytes(), headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (128, 96)


def test_evaluate_cli_reproduces_the_card(
    artifact: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, test = artifact
    card = json.loads((path / "model_card.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", "phantom", "--model", str(path), "--data", str(test)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == card["metrics"]["n"]
    assert out["dice_all"] == pytest.approx(card["metrics"]["dice_all"], abs=1e-6)
    assert out["centroid"]["missed"] == card["metrics"]["centroid"]["missed"]
    assert np.isfinite(out["pixel_accuracy"])
