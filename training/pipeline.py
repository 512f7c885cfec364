"""train → calibrate → evaluate → export, in one call.

``run_binary_classification`` is generic (arrays + a builder + a card template) so the other
slices reuse it; ``train_pneumonia`` wires the chest X-ray slice and returns the artifact folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.imaging.card import MODEL_FILE, DicomCodes, Intensity, Preprocessing, Routing
from training.calibrate import DEFAULT_OPERATING_POINT, calibrate
from training.dicom_codes import PNEUMONIA_DICOM, PNEUMONIA_ROUTING
from training.evaluate import evaluate_probabilities, predict_logits, write_plots
from training.export import (
    Staging,
    code_revision,
    export_onnx,
    export_saved_model,
    framework_versions,
    onnx_runner,
    onnx_session,
    write_card,
)
from training.metrics import sigmoid
from training.train import TrainConfig, train_classifier

log = logging.getLogger("medserve.training")


@dataclass(frozen=True)
class CardTemplate:
    """The parts of a model card that describe the task rather than one training run."""

    name: str
    task: str
    modality: str
    endpoint: str
    labels: tuple[str, str]
    dataset: str
    intended_use: str
    limitations: tuple[str, ...]
    dicom: DicomCodes
    routing: Routing
    layout: str = "NHWC"
    default_operating_point: str = DEFAULT_OPERATING_POINT
    synthetic_limitation: str = (
        "Trained and evaluated on SYNTHETIC images from the project's generator, not on patient "
        "data: its figures say nothing about performance on real studies. Demonstration only."
    )


PNEUMONIA_CARD = CardTemplate(
    name="pneumonia_xray",
    task="binary_classification",
    modality="XR",
    endpoint="/classify/xray",
    labels=("NORMAL", "PNEUMONIA"),
    dataset="kermany_chest_xray",
    intended_use=(
        "Research and demonstration: flags frontal (AP/PA) paediatric chest radiographs that may "
        "show pneumonia, as a second reader or for worklist triage. Not a diagnostic device; "
        "every output needs review by a qualified clinician."
    ),
    limitations=(
        "Trained for frontal chest radiographs of children aged about 1-5 years (Kermany "
        "et al., one centre in Guangzhou); adults, lateral views, other sites and devices are "
        "outside its training distribution.",
        "Binary NORMAL/PNEUMONIA only: it does not separate bacterial from viral pneumonia and "
        "says nothing about other findings (effusion, pneumothorax, lines, tubes, masses).",
        "Inputs are 8-bit film-like images; 12/16-bit DICOM is windowed by percentiles, which is "
        "not how the training JPEGs were rendered.",
        "Operating points and calibration were fitted on a validation split of the same source; "
        "prevalence and calibration shift at other sites.",
    ),
    dicom=PNEUMONIA_DICOM,
    routing=PNEUMONIA_ROUTING,
)


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
    return {
        "name": template.name,
        "version": version,
        "task": template.task,
        "modality": template.modality,
        "endpoint": template.endpoint,
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
        "dicom": template.dicom.model_dump(exclude_none=True),
        "routing": template.routing.model_dump(exclude_none=True),
    }


def image_side_range(root: Path, pattern: str) -> tuple[int, int]:
    """Smallest and largest image side among the files under ``root`` (headers only)."""
    from PIL import Image

    sides = []
    for path in root.glob(pattern):
        with Image.open(path) as img:
            sides.extend(img.size)
    if not sides:
        raise FileNotFoundError(f"no {pattern} under {root}")
    return min(sides), max(sides)


def pneumonia_conformance(data_dir: Path) -> dict[str, Any]:
    """What the Kermany films are: frontal CR/DX of children aged 1-5, at the sizes trained on."""
    return {
        "modalities": ["CR", "DX"],
        "view_positions": ["AP", "PA"],
        "age_range_years": [1, 5],
        "image_side_range": list(image_side_range(Path(data_dir), "chest_xray/*/*/*.jpeg")),
    }


def pneumonia_preprocessing(size: int | tuple[int, int], channels: int) -> Preprocessing:
    """The card's preprocessing for chest films.

    Intensity: per-image 0.5/99.5 percentile window rather than min-max. Films differ in
    exposure and carry burned-in side markers, text and collimator edges; min-max would let one
    white marker pixel or black border set the whole scale, while percentiles ignore the extreme
    0.5 % at either end and map the body's own range to [0, 1] the same way for every film.
    Resize: ``area`` (box) because films arrive at 1000-2500 px and are reduced 8-20×: averaging
    every source pixel avoids the aliasing (rib edges, noise) of point sampling.
    """
    h, w = (size, size) if isinstance(size, int) else size
    return Preprocessing(
        kind="image2d",
        size=[int(h), int(w)],
        channels=channels,  # type: ignore[arg-type]
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
        expected_bits=8,
    )


class _SplitLike(Protocol):
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int: ...


class SplitsLike(Protocol):
    train: _SplitLike
    val: _SplitLike
    test: _SplitLike

    @property
    def sizes(self) -> dict[str, int]: ...


@dataclass
class RunInfo:
    """What the card's ``training`` section records beyond the template."""

    synthetic: bool
    seed: int
    arch: str
    arch_options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


Runner = Callable[[np.ndarray], np.ndarray]
Describe = Callable[[Path, Any, Runner, float], tuple[dict[str, Any], list[str]]]


def publish_artifact(
    model: Any,
    name: str,
    version: str,
    out_root: Path,
    probe: np.ndarray,
    seed: int,
    overwrite: bool,
    describe: Describe,
) -> Path:
    """Export a trained Keras ``model`` as ``out_root/<name>/<version>`` and return the folder.

    In a hidden staging folder: ONNX export, checked against Keras on ``probe`` and on uniform
    noise of its shape; ``describe(folder, session, run, max_diff)`` evaluates the ONNX graph
    (``run``: batch → logits), writes its plots into ``folder`` and returns the card fields and
    the plot file names; then the SavedModel and the card. The folder is moved into place only
    once complete (removed on any error) and then loaded with ``app.registry.load_entry``: a
    ``RuntimeError`` if the service would not serve it."""
    from app.config import Settings
    from app.registry import load_entry

    staging = Staging(Path(out_root), name, version)
    try:
        rand = np.random.default_rng(seed).uniform(0, 1, probe.shape).astype(np.float32)
        max_diff = export_onnx(model, staging.dir / MODEL_FILE, [probe, rand])
        session = onnx_session(staging.dir / MODEL_FILE)
        fields, plots = describe(staging.dir, session, onnx_runner(session), max_diff)
        export_saved_model(model, staging.dir)
        write_card(staging.dir, fields, plots, session)
        final = staging.commit(overwrite)
    except BaseException:
        staging.discard()
        raise
    entry = load_entry(name, final, Settings(model_dir=Path(out_root)))
    if not entry.ready:
        raise RuntimeError(f"exported artifact is not servable: {entry.reason}")
    return final


def run_binary_classification(
    *,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SplitsLike,
    build_fn: Any,
    config: TrainConfig,
    out_root: Path,
    version: str,
    run_dir: Path,
    info: RunInfo,
    class_weight: dict[int, float] | None = None,
    overwrite: bool = False,
    augment_fn: Any = None,
    conformance: dict[str, Any] | None = None,
) -> Path:
    """Train, calibrate on validation, evaluate on test, export; returns the version folder.

    The folder appears only once complete; it is then loaded with ``app.registry.load_entry``
    and a ``RuntimeError`` is raised if the service would not serve it. The card's input shape
    is ``[None, *prep.size, channels]``: (N, H, W, C) for 2D, (N, D, H, W, C) for volumes.
    ``augment_fn``: a batch augmentation for ``train_classifier`` (None: its 2D augmenter);
    ``conformance``: the card's ``conformance`` section (what the training data looked like).
    """
    result = train_classifier(
        build_fn,
        splits.train.x,
        splits.train.y,
        splits.val.x,
        splits.val.y,
        config,
        run_dir,
        class_weight=class_weight,
        augment_fn=augment_fn,
    )

    def describe(
        folder: Path, session: Any, run: Runner, max_diff: float
    ) -> tuple[dict[str, Any], list[str]]:
        # Calibrate and evaluate on what the service will run: the ONNX graph's logits.
        val_logits = predict_logits(run, splits.val.x)
        test_logits = predict_logits(run, splits.test.x)
        cal = calibrate(
            val_logits, splits.val.y, default_operating_point=template.default_operating_point
        )
        thresholds = {k: float(v["threshold"]) for k, v in cal.operating_points.items()}  # type: ignore[arg-type]
        p_cal, p_unc = cal.probability(test_logits), sigmoid(test_logits)
        metrics = evaluate_probabilities(
            splits.test.y, p_cal, p_unc, thresholds, cal.default_operating_point
        )
        plots = write_plots(
            folder,
            history=result.history,
            y_test=splits.test.y,
            p_uncalibrated=p_unc,
            p_calibrated=p_cal,
            thresholds=thresholds,
            default_operating_point=cal.default_operating_point,
            labels=template.labels,
        )
        fields = card_fields(
            template=template,
            version=version,
            prep=prep,
            session=session,
            cal=cal,
            info=info,
            result=result,
            config=config,
            metrics=metrics,
            max_diff=max_diff,
            split_sizes=splits.sizes,
        )
        fields["training"].update(
            class_weight={str(k): v for k, v in (class_weight or {}).items()},
            split="train+val pooled and re-split by patient; test kept",
        )
        fields["training"].update(info.extra)  # later keys win
        if conformance is not None:
            fields["conformance"] = conformance
        return fields, plots

    probe = splits.val.x[: min(32, len(splits.val))]
    return publish_artifact(
        result.model, template.name, version, out_root, probe, info.seed, overwrite, describe
    )


def train_pneumonia(
    data_dir: Path,
    out_root: Path = Path("models"),
    version: str = "1.0.0",
    *,
    arch: str = "cnn",
    size: int = 128,
    channels: int = 1,
    epochs: int = 15,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    seed: int = 0,
    synthetic: bool = False,
    test_data: Path | None = None,
    run_dir: Path | None = None,
    val_fraction: float = 0.2,
    width: float | None = None,
    weights: str | None = None,
    fine_tune_epochs: int = 0,
    augment: bool = True,
    early_stopping_patience: int = 5,
    overwrite: bool = False,
    verbose: int = 2,
) -> Path:
    """The chest X-ray slice end to end; returns ``out_root/pneumonia_xray/<version>``."""
    from training.datasets.pneumonia import load
    from training.models import get_builder

    prep = pneumonia_preprocessing(size, channels)
    splits = load(Path(data_dir), prep, val_fraction=val_fraction, seed=seed, test_root=test_data)
    log.info("splits %s, class weights %s", splits.sizes, splits.class_weight)
    options: dict[str, Any] = {}
    if arch == "cnn" and width is not None:
        options["width"] = width
    if arch == "efficientnetb0":
        options["weights"] = weights
    builder = get_builder(arch)
    shape = (prep.size[0], prep.size[1], channels)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        augment=augment,
        early_stopping_patience=early_stopping_patience,
        fine_tune_epochs=fine_tune_epochs,
        verbose=verbose,
    )
    run_dir = Path(run_dir) if run_dir else Path("runs") / PNEUMONIA_CARD.name / version
    info = RunInfo(
        synthetic=synthetic,
        seed=seed,
        arch=arch,
        arch_options={k: v for k, v in options.items() if v is not None},
        extra={
            "val_fraction": val_fraction,
            "test_data": "separate folder" if test_data else "test/ of the training folder",
        },
    )
    return run_binary_classification(
        template=PNEUMONIA_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: builder(shape, **options),
        config=config,
        out_root=Path(out_root),
        version=version,
        run_dir=run_dir,
        info=info,
        class_weight=splits.class_weight,
        overwrite=overwrite,
        conformance=pneumonia_conformance(Path(data_dir)),
    )
