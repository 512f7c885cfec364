"""The covid_ct task: MosMedData layout → 3D CNN → ``/classify/ct``.

``train`` loads the chosen severity categories through the service's readers and
``preprocess_volume`` (``training.datasets.covid_ct``, split by study and stratified by
category), trains ``training.models.cnn3d`` with ``training.augment3d`` in the ``tf.data``
pipeline, and hands over to the binary-classification kind of ``training.core`` (calibration,
operating points, plots, ONNX export, card, hooks, registry check), adding the card's
``conformance`` section from what the training studies looked like. Generator:
``training.synthetic.covid_ct``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.core.card import RunInfo
from training.core.options import opt
from training.core.task import Task, TrainRequest
from training.tasks.covid_ct.card import (
    COVID_CT_CARD,
    DEFAULT_SIZE,
    conformance_from,
    covid_ct_preprocessing,
)

log = logging.getLogger("medserve.training")

CATEGORIES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")


@dataclass(frozen=True)
class SynthOptions:
    n: int = opt(600, "number of studies")
    seed: int = opt(0, "random seed")
    volume_size: int = opt(128, "rows = columns per slice (512 = MosMedData; same field of view)")
    slices: tuple[int, int] = opt(
        (36, 44), "slices per study (coverage stays ~270-330 mm)", metavar=("MIN", "MAX")
    )
    categories: tuple[str, ...] = opt(
        CATEGORIES, "categories to write (study numbers stay those of the full set)",
        choices=CATEGORIES,
    )  # fmt: skip
    preview: str | None = opt(None, "also write a preview PNG here")


@dataclass(frozen=True)
class TrainOptions:
    volume_shape: tuple[int, int, int] = opt(
        DEFAULT_SIZE, "model input slices, rows, columns", metavar=("D", "H", "W")
    )
    width: float = opt(0.5, "filter multiplier of the reference 3D CNN")
    epochs: int = opt(15, "training epochs (at most)")
    batch_size: int = opt(8, "batch size")
    learning_rate: float = opt(1e-3, "Adam learning rate")
    patience: int = opt(5, "early-stopping patience (epochs)")
    val_fraction: float = opt(0.2, "share of studies (per category) kept for validation")
    test_fraction: float = opt(0.15, "test share when --test-data is not given")
    negative: tuple[str, ...] = opt(("CT-0",), "categories that are negative", choices=CATEGORIES)
    positive: tuple[str, ...] = opt(
        ("CT-2", "CT-3"), "categories that are positive", choices=CATEGORIES
    )
    augment: bool = opt(True, "3D augmentation of training batches")
    flip_lr: float = opt(0.5, "left-right flip rate")
    rotation_deg: float = opt(10.0, "largest axial rotation (degrees)")
    cache: bool = opt(True, "keep the preprocessed arrays in <run dir>/cache")
    threads: int = opt(2, "TensorFlow intra-op threads (0: MEDSERVE_TRAIN_THREADS or all)")
    seed: int = opt(0, "random seed (splits, weights, augmentation)")
    synthetic: bool = opt(False, "the data are synthetic (the card says so)")
    verbose: int = opt(2, "Keras fit verbosity", choices=(0, 1, 2))


@dataclass(frozen=True)
class EvaluateOptions:
    negative: tuple[str, ...] = opt(("CT-0",), "categories that are negative", choices=CATEGORIES)
    positive: tuple[str, ...] = opt(
        ("CT-2", "CT-3"), "categories that are positive", choices=CATEGORIES
    )


def synth(out: Path, o: SynthOptions, overwrite: bool) -> dict[str, Any]:
    from training.synthetic import covid_ct

    cfg = covid_ct.SynthConfig(
        n=o.n, seed=o.seed, size=o.volume_size, slices=o.slices, categories=o.categories
    )
    files = covid_ct.generate(out, cfg, overwrite=overwrite)
    if o.preview:
        covid_ct.preview(Path(o.preview), cfg)
    return {"written": len(files), "counts": covid_ct.counts(out)}


def _augment(o: TrainOptions) -> Any:
    from training.augment3d import Augment3DConfig

    return Augment3DConfig(rotation_deg=o.rotation_deg, flip_lr=o.flip_lr, seed=o.seed)


def _train_config(o: TrainOptions) -> Any:
    from training.core.classification import TrainConfig

    return TrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=o.seed,
        augment=o.augment,
        rotation_deg=o.rotation_deg,
        zoom=0.0,
        contrast=_augment(o).contrast,
        early_stopping_patience=o.patience,
        verbose=o.verbose,
    )


def _arch_options(o: TrainOptions) -> dict[str, Any]:
    from training.models import cnn3d

    return {
        "width": o.width,
        "filters": list(cnn3d.REFERENCE_FILTERS),
        "padding": "same",
        "bn_momentum": 0.9,
    }


def recorded(o: TrainOptions) -> dict[str, Any]:
    return {
        "training": {
            "config": _train_config(o).as_dict(),
            "architecture": "cnn3d",
            "architecture_options": _arch_options(o),
            "seed": o.seed,
            "synthetic": o.synthetic,
            "val_fraction": o.val_fraction,
            "categories": {"negative": list(o.negative), "positive": list(o.positive)},
            "augmentation": _augment(o).as_dict() if o.augment else None,
        },
        "preprocessing": covid_ct_preprocessing(o.volume_shape).model_dump(),
    }


def train(req: TrainRequest, o: TrainOptions) -> Path:
    """Train, calibrate, evaluate and export ``covid_ct``; returns ``<out>/covid_ct/<version>``."""
    from training.augment3d import make_augment_fn
    from training.core.classification import run_binary_classification
    from training.core.threads import limit_threads
    from training.datasets import covid_ct as dataset
    from training.models import cnn3d

    limit_threads(o.threads or int(os.environ.get("MEDSERVE_TRAIN_THREADS", "0") or 0))
    prep = covid_ct_preprocessing(o.volume_shape)
    run_dir = req.run_folder(COVID_CT_CARD.name)
    splits = dataset.load(
        req.data,
        prep,
        negative=o.negative,
        positive=o.positive,
        val_fraction=o.val_fraction,
        test_fraction=o.test_fraction,
        seed=o.seed,
        test_root=req.test_data,
        cache_dir=run_dir / "cache" if o.cache else None,
    )
    log.info("splits %s, class weights %s", splits.sizes, splits.class_weight)
    shape = (prep.size[0], prep.size[1], prep.size[2], prep.channels)
    aug = _augment(o)
    seen = np.concatenate([splits.train.spacing, splits.val.spacing])
    seen_slices = np.concatenate([splits.train.slices, splits.val.slices])
    test_from = (
        "test from a separate folder" if req.test_data else "test split from the same folder"
    )
    info = RunInfo(
        synthetic=o.synthetic,
        seed=o.seed,
        arch="cnn3d",
        arch_options=_arch_options(o),
        extra={
            "categories": {"negative": list(o.negative), "positive": list(o.positive)},
            "studies_per_category": dataset.category_counts(splits),
            "split": "by study (one study per patient), stratified by category; " + test_from,
            "val_fraction": o.val_fraction,
            "augmentation": aug.as_dict() if o.augment else None,
            "input_size_reason": (
                f"{'x'.join(map(str, prep.size))} (D x H x W) instead of the reference 64x128x128: "
                "fewer voxels keep CPU training near 20 minutes; opacities span centimetres, and "
                "32 slices keep the source's ~8 mm slice spacing"
            ),
            "seen_slice_spacing_mm": [float(np.nanmin(seen[:, 0])), float(np.nanmax(seen[:, 0]))],
            "seen_pixel_spacing_mm": [float(np.nanmin(seen[:, 1])), float(np.nanmax(seen[:, 1]))],
            "seen_slices": [int(seen_slices.min()), int(seen_slices.max())],
        },
    )
    return run_binary_classification(
        template=COVID_CT_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: cnn3d.build(shape, width=o.width),
        config=_train_config(o),
        request=req,
        info=info,
        class_weight=splits.class_weight,
        augment_fn=make_augment_fn(aug) if o.augment else None,
        conformance=conformance_from(seen, seen_slices),
    )


def evaluate(model_dir: Path, data: Path, o: EvaluateOptions) -> dict[str, Any]:
    """Every chosen study of ``data`` (e.g. a held-out synthetic set of another seed) through
    the exported artifact."""
    from training.core.evaluate import evaluate_artifact
    from training.datasets.covid_ct import load_test

    metrics = evaluate_artifact(
        model_dir,
        lambda prep: load_test(data, prep, negative=o.negative, positive=o.positive),
        batch=16,
    )
    metrics["categories"] = {"negative": list(o.negative), "positive": list(o.positive)}
    return metrics


def summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("auc", "accuracy", "precision", "recall", "f1", "ece")
    return {
        "metrics": {k: card["metrics"][k] for k in keys},
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
        "conformance": card["conformance"],
    }


TASK = Task(
    name=COVID_CT_CARD.name,
    kind="classification",
    description="chest CT volume: COVID-19 pneumonia (CT-2/3) vs none (MosMedData layout)",
    template=COVID_CT_CARD,
    folder=Path(__file__).resolve().parent,
    synth_options=SynthOptions,
    synth=synth,
    train_options=TrainOptions,
    train=train,
    recorded=recorded,
    evaluate=evaluate,
    evaluate_options=EvaluateOptions,
    summary=summary,
)
