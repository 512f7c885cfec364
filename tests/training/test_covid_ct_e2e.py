"""Tiny end to end: synthetic MosMedData → 3D CNN (1 epoch, 16³) → calibrate → export → the
registry loads it → POST /classify/ct answers with the contract's shape, and the card's
conformance section drives the service's warnings."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("tensorflow")

from fastapi.testclient import TestClient

from app.config import Settings
from app.imaging.card import CARD_FILE, MODEL_FILE, ModelCard
from app.main import create_app
from app.registry import load_entry
from tests.ct_series import series_from_volume, zip_files
from tests.integration.contract import assert_prediction
from training.cli import main
from training.synthetic import covid_ct as synth

TINY = synth.SynthConfig(
    n=80, seed=3, size=32, slices=(10, 14), categories=("CT-0", "CT-2", "CT-3")
)
HELD_OUT = synth.SynthConfig(n=40, seed=4, size=32, slices=(10, 14), categories=("CT-0", "CT-3"))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("covid_e2e")
    synth.generate(base / "train", TINY)
    synth.generate(base / "test", HELD_OUT)
    assert main(["train", "covid_ct", "--data", str(base / "train"),
                 "--out", str(base / "models"), "--version", "0.0.1",
                 "--test-data", str(base / "test"), "--run-dir", str(base / "run"),
                 "--volume-shape", "16", "16", "16", "--width", "0.125", "--epochs", "1",
                 "--batch-size", "8", "--seed", "0", "--synthetic", "--threads", "2",
                 "--verbose", "0", "--ood-per-kind", "0"]) == 0  # fmt: skip
    return base / "models" / "covid_ct" / "0.0.1"


@pytest.fixture(scope="module")
def client(artifact: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=artifact.parent.parent))) as c:
        yield c


@pytest.fixture(scope="module")
def summary(client: TestClient) -> dict[str, Any]:
    models = {m["name"]: m for m in client.get("/models").json()}
    return models["covid_ct"]


def test_artifact_is_complete_and_servable(artifact: Path) -> None:
    card = ModelCard.model_validate(json.loads((artifact / CARD_FILE).read_text()))
    assert card.input.layout == "NDHWC" and card.input.shape == [None, 16, 16, 16, 1]
    assert card.input.preprocessing.kind == "volume3d"
    assert card.input.preprocessing.intensity.low == -1000
    assert card.input.preprocessing.intensity.high == 400
    assert card.output.labels == ("NEGATIVE", "COVID19") and card.output.activation == "logit"
    assert card.modality == "CT" and card.endpoint == "/classify/ct"
    assert card.training.synthetic and "SYNTHETIC" in card.limitations[0]
    assert card.conformance.modalities == ["CT"]
    assert card.conformance.slice_thickness_range_mm and card.conformance.min_slices
    assert {"roc.png", "reliability.png", "confusion_matrix.png", "training_curves.png"} <= set(
        card.files
    )
    assert (artifact / MODEL_FILE).stat().st_size < 15 * 1024 * 1024
    assert load_entry("covid_ct", artifact, Settings(model_dir=artifact.parent.parent)).ready


def test_classify_a_generated_study(
    client: TestClient, summary: dict[str, Any], tmp_path: Path
) -> None:
    item = synth.plan(HELD_OUT)[-1]
    study = synth.render_study(HELD_OUT, item)
    data = gzip.compress(synth.to_nifti(study.hu, study.spacing, "RAS").to_bytes())
    r = client.post("/classify/ct", content=data, headers={"Content-Type": "application/gzip"})
    body = assert_prediction(
        r,
        summary=summary,
        labels=["NEGATIVE", "COVID19"],
        upload=data,
        fmt="nifti",
        shape=study.hu.shape,
        spacing_mm=study.spacing,
    )
    assert body["warnings"] == []  # in distribution: nothing to warn about


def _codes(r: Any) -> set[str]:
    assert r.status_code == 200, r.text
    return {w["code"] for w in r.json()["warnings"]}


def test_conformance_warnings_through_http(client: TestClient, artifact: Path) -> None:
    card = json.loads((artifact / CARD_FILE).read_text())["conformance"]
    lo, hi = card["slice_thickness_range_mm"]
    study = synth.render_study(HELD_OUT, synth.plan(HELD_OUT)[0])
    dz = (lo + hi) / 2
    ok = series_from_volume(study.hu, (dz, *study.spacing[1:]))
    assert _codes(client.post("/classify/ct", content=zip_files(ok))) == set()
    thin = series_from_volume(study.hu, (lo / 4, *study.spacing[1:]))
    assert "unexpected_slice_thickness" in _codes(
        client.post("/classify/ct", content=zip_files(thin))
    )
    few = series_from_volume(study.hu[: card["min_slices"] - 1], (dz, *study.spacing[1:]))
    assert "too_few_slices" in _codes(client.post("/classify/ct", content=zip_files(few)))
    mr = series_from_volume(study.hu, (dz, *study.spacing[1:]), modality="MR")
    assert "unexpected_modality" in _codes(client.post("/classify/ct", content=zip_files(mr)))
    np.testing.assert_array_less(0, len(ok))


def test_evaluate_reproduces_the_card(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:

    held_out = artifact.parents[2] / "test"
    assert main(["evaluate", "covid_ct", "--model", str(artifact), "--data", str(held_out)]) == 0
    out = json.loads(capsys.readouterr().out)
    card = json.loads((artifact / CARD_FILE).read_text())["metrics"]
    assert out["n"] == card["n"]
    assert abs(out["auc"] - card["auc"]) < 1e-6
    assert out["confusion_matrix"] == card["confusion_matrix"]
