"""The pneumonia_xray task: Kermany ``chest_xray/`` layout → 2D CNN → ``/classify/xray``.

Loader ``training.datasets.pneumonia`` (train+val pooled and re-split by patient, test kept),
generator ``training.synthetic.pneumonia``, architectures ``training.models`` (``cnn``,
``densenet121``, ``efficientnetb0``), the binary-classification kind of ``training.core``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.card import RunInfo
from training.core.options import NoOptions, opt
from training.core.task import Task, TrainRequest
from training.tasks.pneumonia_xray.card import (
    PNEUMONIA_CARD,
    pneumonia_conformance,
    pneumonia_preprocessing,
)

log = logging.getLogger("medserve.training")

ARCHS = ("cnn", "densenet121", "efficientnetb0")


@dataclass(frozen=True)
class SynthOptions:
    n: int = opt(600, "number of images")
    seed: int = opt(0, "random seed")
    size_range: tuple[int, int] = opt(
        (192, 320), "smallest and largest image side (px)", metavar=("MIN", "MAX")
    )
    test_fraction: float = opt(0.12, "share of images in test/")


@dataclass(frozen=True)
class TrainOptions:
    arch: str = opt("cnn", "architecture", choices=ARCHS)
    size: int = opt(128, "model input height and width")
    channels: int = opt(1, "model input channels", choices=(1, 3))
    width: float | None = opt(None, "cnn: filter/unit multiplier (1.0 = reference)")
    weights: str = opt("none", "efficientnetb0: imagenet | PATH | none")
    fine_tune_epochs: int = opt(0, "epochs with the backbone thawed, after a frozen-base phase")
    epochs: int = opt(15, "training epochs (at most)")
    batch_size: int = opt(32, "batch size")
    learning_rate: float = opt(1e-3, "Adam learning rate")
    patience: int = opt(5, "early-stopping patience (epochs)")
    val_fraction: float = opt(0.2, "share of train+val patients kept for validation")
    seed: int = opt(0, "random seed (splits, weights, augmentation)")
    synthetic: bool = opt(False, "the data are synthetic (the card says so)")
    augment: bool = opt(True, "rotation/zoom/contrast jitter on training batches")
    verbose: int = opt(2, "Keras fit verbosity", choices=(0, 1, 2))


def synth(out: Path, o: SynthOptions, overwrite: bool) -> dict[str, Any]:
    from training.synthetic import pneumonia

    cfg = pneumonia.SynthConfig(
        n=o.n, seed=o.seed, size_range=o.size_range, test_fraction=o.test_fraction
    )
    files = pneumonia.generate(out, cfg, overwrite=overwrite)
    return {"written": len(files), "counts": pneumonia.counts(out)}


def _arch_options(o: TrainOptions) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if o.arch == "cnn" and o.width is not None:
        options["width"] = o.width
    if o.arch == "efficientnetb0":
        options["weights"] = o.weights
    return options


def _train_config(o: TrainOptions) -> Any:
    from training.core.classification import TrainConfig

    return TrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=o.seed,
        augment=o.augment,
        early_stopping_patience=o.patience,
        fine_tune_epochs=o.fine_tune_epochs,
        verbose=o.verbose,
    )


def recorded(o: TrainOptions) -> dict[str, Any]:
    return {
        "training": {
            "config": _train_config(o).as_dict(),
            "architecture": o.arch,
            "architecture_options": {k: v for k, v in _arch_options(o).items() if v is not None},
            "seed": o.seed,
            "synthetic": o.synthetic,
            "val_fraction": o.val_fraction,
        },
        "preprocessing": pneumonia_preprocessing(o.size, o.channels).model_dump(),
    }


def train(req: TrainRequest, o: TrainOptions) -> Path:
    """The chest X-ray task end to end; returns ``<out>/pneumonia_xray/<version>``."""
    from training.core.classification import run_binary_classification
    from training.datasets.pneumonia import load
    from training.models import get_builder

    prep = pneumonia_preprocessing(o.size, o.channels)
    splits = load(req.data, prep, val_fraction=o.val_fraction, seed=o.seed, test_root=req.test_data)
    log.info("splits %s, class weights %s", splits.sizes, splits.class_weight)
    options = _arch_options(o)
    builder = get_builder(o.arch)
    shape = (prep.size[0], prep.size[1], o.channels)
    info = RunInfo(
        synthetic=o.synthetic,
        seed=o.seed,
        arch=o.arch,
        arch_options={k: v for k, v in options.items() if v is not None},
        extra={
            "val_fraction": o.val_fraction,
            "test_data": "separate folder" if req.test_data else "test/ of the training folder",
        },
    )
    return run_binary_classification(
        template=PNEUMONIA_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: builder(shape, **options),
        config=_train_config(o),
        request=req,
        info=info,
        class_weight=splits.class_weight,
        conformance=pneumonia_conformance(req.data),
    )


def evaluate(model_dir: Path, data: Path, _: NoOptions) -> dict[str, Any]:
    """The ``test/`` images of ``data`` through the exported artifact."""
    from training.core.evaluate import evaluate_artifact
    from training.datasets.pneumonia import load_test

    return evaluate_artifact(model_dir, lambda prep: load_test(data, prep), batch=64)


def summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("auc", "accuracy", "precision", "recall", "f1", "ece")
    return {
        "metrics": {k: card["metrics"][k] for k in keys},
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
    }


TASK = Task(
    name=PNEUMONIA_CARD.name,
    kind="classification",
    description="paediatric chest X-ray: NORMAL vs PNEUMONIA (Kermany chest_xray/ layout)",
    template=PNEUMONIA_CARD,
    folder=Path(__file__).resolve().parent,
    synth_options=SynthOptions,
    synth=synth,
    train_options=TrainOptions,
    train=train,
    recorded=recorded,
    evaluate=evaluate,
    summary=summary,
    aliases=("pneumonia",),
)
