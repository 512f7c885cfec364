"""A tiny end-to-end run: synthetic data → train → calibrate → evaluate → export → the service's
registry loads the artifact and reports it ready; the evaluate CLI reproduces the card's figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
pytest.importorskip("keras")

from app.config import Settings
from app.imaging.card import ModelCard
from app.registry import load_entry
from training.cli import main
from training.core.options import NoOptions
from training.evaluate import PLOT_FILES
from training.tasks import get


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    assert main(["synth", "pneumonia", "--out", str(data), "--n", "48", "--seed", "3",
                 "--size-range", "40", "56"]) == 0  # fmt: skip
    assert main(["train", "pneumonia", "--data", str(data), "--out", str(root / "models"),
                 "--version", "0.0.1", "--run-dir", str(root / "run"), "--size", "32",
                 "--channels", "1", "--epochs", "2", "--batch-size", "16", "--width", "0.25",
                 "--seed", "0", "--synthetic", "--verbose", "0",
                 "--ood-per-kind", "4"]) == 0  # fmt: skip
    path = root / "models" / "pneumonia_xray" / "0.0.1"
    return path, data


def test_artifact_is_complete_and_ready(artifact: tuple[Path, Path]) -> None:
    path, _ = artifact
    assert path.name == "0.0.1" and path.parent.name == "pneumonia_xray"
    card = ModelCard.model_validate(json.loads((path / "model_card.json").read_text()))
    assert card.output.activation == "logit"
    assert card.output.labels == ("NORMAL", "PNEUMONIA")
    assert card.input.shape == [None, 32, 32, 1] and card.input.layout == "NHWC"
    assert card.input.preprocessing.intensity.method == "percentile"
    # the OOD check, fitted in staging on the run's own splits (training/ood/publish.py)
    assert card.ood is not None and "ood_stats.npz" in card.files
    assert card.ood.auroc is not None and 0.0 <= card.ood.auroc <= 1.0
    assert card.calibration.method == "temperature" and card.calibration.ece_after is not None
    assert set(card.operating_points) == {"balanced", "high_sensitivity", "high_specificity"}
    assert card.default_operating_point == "high_sensitivity"
    assert card.training.synthetic is True and "SYNTHETIC" in card.limitations[0]
    assert set(card.files) == {"model.onnx", "ood_stats.npz", *PLOT_FILES.values()}
    assert (path / "saved_model").is_dir()
    for key in ("auc", "accuracy", "precision", "recall", "f1", "confusion_matrix", "ece"):
        assert key in card.metrics
    assert not list(path.parent.parent.glob(".staging-*"))  # staging cleaned up
    assert (path.parent.parent.parent / "run" / "checkpoints" / "best.weights.h5").is_file()

    entry = load_entry("pneumonia_xray", path, Settings(model_dir=path.parent.parent))
    assert entry.ready, entry.reason


def test_evaluate_reproduces_the_card(
    artifact: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, data = artifact
    card = json.loads((path / "model_card.json").read_text())
    metrics = get("pneumonia_xray").evaluate(path, data, NoOptions())
    assert metrics["auc"] == pytest.approx(card["metrics"]["auc"], abs=1e-6)
    assert metrics["confusion_matrix"] == card["metrics"]["confusion_matrix"]
    assert main(["evaluate", "pneumonia", "--model", str(path), "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == card["metrics"]["n"]


def test_cli_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "pneumonia", "--model", str(tmp_path), "--data", str(tmp_path)]) == 1
    assert "error" in capsys.readouterr().err
