"""``evaluate_artifact``: re-check an exported artifact's figures on a data folder, as the
service runs it (the registry loads it: sha256 check, self-test; the card's preprocessing
made the inputs; ONNX runs them), for both task kinds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import CARD_FILE, ModelCard, Preprocessing
from training.core.calibrate import CalibrationResult
from training.core.metrics import sigmoid
from training.core.progress import progress
from training.core.seg_metrics import evaluate_segmentation
from training.evaluate import evaluate_probabilities, predict_logits

CHANNELS_FIRST = {"NCHW": (0, 3, 1, 2), "NCDHW": (0, 4, 1, 2, 3)}


def read_card(model_dir: Path) -> ModelCard:
    return ModelCard.model_validate(json.loads((Path(model_dir) / CARD_FILE).read_bytes()))


def load_ready(model_dir: Path) -> Any:
    """The registry's entry for ``model_dir`` (``RuntimeError`` unless it is ready)."""
    from app.config import Settings
    from app.registry import load_entry

    model_dir = Path(model_dir).resolve()
    card = read_card(model_dir)
    entry = load_entry(card.name, model_dir, Settings(model_dir=model_dir.parent.parent))
    if not entry.ready:
        raise RuntimeError(f"model not ready: {entry.reason}")
    return entry


def evaluate_artifact(
    model_dir: Path, load: Callable[[Preprocessing], Any], *, batch: int = 16
) -> dict[str, Any]:
    """Card-style metrics of ``model_dir`` on ``load(card.input.preprocessing)``: a split with
    ``x`` (N, ..., C) model inputs and ``y`` (N,) labels (classification) or ``masks`` (N truth
    masks at each input's resolution, segmentation), at the card's temperature, operating points
    and pixel threshold."""
    entry = load_ready(model_dir)
    card: ModelCard = entry.card
    split = load(card.input.preprocessing)
    x = split.x
    if card.input.layout in CHANNELS_FIRST:
        x = np.transpose(x, CHANNELS_FIRST[card.input.layout])
    if card.task == "binary_classification":
        chunks = [
            predict_logits(entry.run, x[i : i + batch], batch)
            for i in progress(range(0, len(x), batch), "evaluate", unit="batch")
        ]
        logits = np.concatenate(chunks) if chunks else np.zeros((0,), np.float64)
        thresholds = {k: v.threshold for k, v in card.operating_points.items()}
        metrics = evaluate_probabilities(
            split.y,
            sigmoid(logits / card.calibration.temperature),
            sigmoid(logits),
            thresholds,
            card.default_operating_point,
        )
    else:
        from app.imaging.postprocess import probability_map

        assert card.pixel_threshold is not None
        h, w = card.input.preprocessing.size
        probs = np.empty((len(split), h, w), dtype=np.float32)
        for i in progress(range(len(split)), "evaluate", unit="case"):
            probs[i] = probability_map(entry.run(x[i : i + 1]), card)
        cal = CalibrationResult(
            temperature=card.calibration.temperature,
            ece_before=float("nan"),
            ece_after=float("nan"),
            operating_points={k: v.model_dump() for k, v in card.operating_points.items()},
            default_operating_point=card.default_operating_point,
        )
        metrics = evaluate_segmentation(probs, split.masks, card.pixel_threshold, cal)
    metrics["model"] = {"name": card.name, "version": card.version, "sha256": card.model_sha256}
    return metrics
