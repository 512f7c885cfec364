"""The model card: a task's template, the fields every exported model has, and the one writer.

``write_card`` hashes ``model.onnx`` and the listed files, computes the self-test, validates the
whole card against ``app.imaging.card.ModelCard`` and refuses a top-level field that neither
the card model declares nor ``EXTRA_FIELDS`` (or a publish hook) names, so a misspelt field
never reaches an artifact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.endpoints import path_of
from app.imaging.card import (
    CARD_FILE,
    MODEL_FILE,
    DicomCodes,
    ModelCard,
    Preprocessing,
    Routing,
    sha256_file,
)
from training.core.calibrate import DEFAULT_OPERATING_POINT
from training.core.export import code_revision, framework_versions, make_self_test

# Top-level fields the contract allows beyond the ones ``ModelCard`` declares.
EXTRA_FIELDS = frozenset(
    {
        "output_shape",
        "output_description",
        "pixel_threshold_selection",
        "operating_point_selection",
        "service_latency",
    }
)


@dataclass(frozen=True)
class CardTemplate:
    """The parts of a model card that describe the task rather than one training run."""

    name: str
    task: str
    modality: str
    labels: tuple[str, str]
    dataset: str
    intended_use: str
    limitations: tuple[str, ...]
    dicom: DicomCodes | None = None
    routing: Routing | None = None
    layout: str = "NHWC"
    default_operating_point: str = DEFAULT_OPERATING_POINT
    synthetic_limitation: str = (
        "Trained and evaluated on SYNTHETIC images from the project's generator, not on patient "
        "data: its figures say nothing about performance on real studies. Demonstration only."
    )


@dataclass
class RunInfo:
    """What the card's ``training`` section records beyond the template."""

    synthetic: bool
    seed: int
    arch: str
    arch_options: dict[str, Any]
    extra: dict[str, Any]


def card_fields(
    *,
    template: CardTemplate,
    version: str,
    prep: Preprocessing,
    session: Any,
    cal: Any,
    info: RunInfo,
    result: Any,
    config: Any,
    metrics: dict[str, Any],
    max_diff: float,
    split_sizes: dict[str, int],
) -> dict[str, Any]:
    """The card fields every exported model has, from one training run (a classifier or a
    segmenter adds its own on top): identity, input/output, calibration, operating points,
    test metrics, provenance, intended use and limitations."""
    limitations = list(template.limitations)
    if info.synthetic:
        limitations.insert(0, template.synthetic_limitation)
    fields: dict[str, Any] = {
        "name": template.name,
        "version": version,
        "task": template.task,
        "modality": template.modality,
        "endpoint": path_of(template.name),  # the endpoint table's row (app/endpoints.py)
        "input": {
            "layout": template.layout,
            "shape": [None, *prep.size, prep.channels],
            "dtype": "float32",
            "name": session.get_inputs()[0].name,
            "preprocessing": prep.model_dump(),
        },
        "output": {
            "labels": list(template.labels),
            "activation": "logit",
            "name": session.get_outputs()[0].name,
        },
        "calibration": {
            "method": "temperature",
            "temperature": cal.temperature,
            "ece_before": cal.ece_before,
            "ece_after": cal.ece_after,
        },
        "operating_points": cal.operating_points,
        "default_operating_point": cal.default_operating_point,
        "metrics": metrics,
        "training": {
            "dataset": template.dataset,
            "synthetic": info.synthetic,
            "split_sizes": split_sizes,
            "epochs": result.epochs_run,
            "best_epoch": result.best_epoch,
            "seed": info.seed,
            "framework_versions": framework_versions(),
            "code_revision": code_revision(),
            "architecture": info.arch,
            "architecture_options": info.arch_options,
            "config": config.as_dict(),
            "distribute_strategy": result.strategy,
            "training_seconds": round(result.seconds, 1),
            "onnx_max_abs_diff": max_diff,
            "calibration_split": "val",
        },
        "intended_use": template.intended_use,
        "limitations": limitations,
    }
    if template.dicom is not None:
        fields["dicom"] = template.dicom.model_dump(exclude_none=True)
    if template.routing is not None:
        fields["routing"] = template.routing.model_dump(exclude_none=True)
    return fields


def check_fields(fields: dict[str, Any], allowed_extra: Iterable[str] = ()) -> None:
    """``ValueError`` naming any top-level field that is neither a ``ModelCard`` field nor in
    ``EXTRA_FIELDS`` / ``allowed_extra``."""
    known = set(ModelCard.model_fields) | EXTRA_FIELDS | set(allowed_extra)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown model card field(s): {', '.join(unknown)}")


def write_card(
    folder: Path,
    fields: dict[str, Any],
    file_names: Sequence[str],
    session: Any,
    allowed_extra: Iterable[str] = (),
) -> ModelCard:
    """Hash ``model.onnx`` and ``file_names`` (files in ``folder``), compute the self-test on
    ``session``, validate (no unknown top-level field), write ``folder/model_card.json``."""
    check_fields(fields, allowed_extra)
    files = {MODEL_FILE: sha256_file(folder / MODEL_FILE)}
    for fname in file_names:
        if fname != MODEL_FILE:
            files[fname] = sha256_file(folder / fname)
    shape = fields["input"]["shape"]
    full = {
        **fields,
        "files": files,
        "self_test": make_self_test(session, shape).model_dump(),
    }
    card = ModelCard.model_validate(full)
    text = json.dumps(card.model_dump(mode="json"), indent=2, allow_nan=False)
    (folder / CARD_FILE).write_text(text + "\n")
    return card
