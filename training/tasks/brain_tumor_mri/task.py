"""The brain_tumor_mri task: LGG FLAIR abnormality segmentation (``/segment/mri``).

Loader ``training.datasets.brain_mri`` (kaggle_3m ``<patient>/<patient>_<n>.tif`` with its
``_mask.tif``, split by patient), generator ``training.synthetic.brain_mri``, a U-Net
(``training.models.unet``), the binary-segmentation kind of ``training.core``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.core.card import RunInfo
from training.core.options import NoOptions, opt
from training.core.task import Task, TrainRequest
from training.tasks.brain_tumor_mri.card import BRAIN_CARD, brain_conformance, brain_preprocessing

log = logging.getLogger("medserve.training")

LOSSES = ("bce", "dice", "bce_dice")


@dataclass(frozen=True)
class SynthOptions:
    n: int = opt(600, "number of slices")
    seed: int = opt(0, "random seed")


@dataclass(frozen=True)
class TrainOptions:
    size: int = opt(128, "model input height and width")
    base_filters: int = opt(16, "U-Net filters at full size")
    depth: int = opt(4, "U-Net down-samplings (levels)")
    dropout: float = opt(0.1, "U-Net dropout at the bottom")
    batch_norm: bool = opt(True, "U-Net with batch normalisation")
    loss: str = opt("bce_dice", "segmentation loss", choices=LOSSES)
    epochs: int = opt(20, "training epochs (at most)")
    batch_size: int = opt(16, "batch size")
    learning_rate: float = opt(1e-3, "Adam learning rate")
    patience: int = opt(6, "early-stopping patience (epochs)")
    max_shift: float = opt(0.0, "augmentation: random joint shift, fraction of each side")
    augment: bool = opt(True, "flips and gain/gamma jitter on training batches")
    val_fraction: float = opt(0.2, "share of patients kept for validation")
    test_fraction: float = opt(0.15, "test share of patients when --test-data is not given")
    threads: int = opt(2, "TensorFlow intra-op threads (0: all)")
    seed: int = opt(0, "random seed (splits, weights, augmentation)")
    synthetic: bool = opt(False, "the data are synthetic (the card says so)")
    verbose: int = opt(2, "Keras fit verbosity", choices=(0, 1, 2))


def synth(out: Path, o: SynthOptions, overwrite: bool) -> dict[str, Any]:
    from training.synthetic import brain_mri

    files = brain_mri.generate(out, brain_mri.SynthConfig(n=o.n, seed=o.seed), overwrite=overwrite)
    return {"written": len(files), "counts": brain_mri.counts(out)}


def _train_config(o: TrainOptions) -> Any:
    from training.core.seg_train import SegTrainConfig

    return SegTrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=o.seed,
        loss=o.loss,
        augment=o.augment,
        max_shift=o.max_shift,
        early_stopping_patience=o.patience,
        threads=o.threads or None,
        verbose=o.verbose,
    )


def _arch_options(o: TrainOptions) -> dict[str, Any]:
    return {
        "depth": o.depth,
        "base_filters": o.base_filters,
        "batch_norm": o.batch_norm,
        "dropout": o.dropout,
        "upsampling": "transpose",
    }


def recorded(o: TrainOptions) -> dict[str, Any]:
    return {
        "training": {
            "config": _train_config(o).as_dict(),
            "architecture": "unet",
            "architecture_options": _arch_options(o),
            "seed": o.seed,
            "synthetic": o.synthetic,
            "val_fraction": o.val_fraction,
        },
        "preprocessing": brain_preprocessing(o.size).model_dump(),
    }


def train(req: TrainRequest, o: TrainOptions) -> Path:
    """The brain-MRI task end to end; returns ``<out>/brain_tumor_mri/<version>``."""
    from training.core.segmentation import run_binary_segmentation
    from training.datasets.brain_mri import load
    from training.models.unet import build

    config = _train_config(o)
    prep = brain_preprocessing(o.size)
    splits = load(
        req.data,
        prep,
        val_fraction=o.val_fraction,
        test_fraction=o.test_fraction,
        seed=o.seed,
        test_root=req.test_data,
    )
    log.info("splits %s", splits.sizes)
    options = _arch_options(o)
    shape = (prep.size[0], prep.size[1], prep.channels)
    info = RunInfo(
        synthetic=o.synthetic,
        seed=o.seed,
        arch="unet",
        arch_options=options,
        extra={
            "val_fraction": o.val_fraction,
            "test_data": "separate folder" if req.test_data else "patients of the training folder",
            "input_channel": "FLAIR (channel 1 of pre/FLAIR/post)",
        },
    )
    return run_binary_segmentation(
        template=BRAIN_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: build(shape, **options),
        config=config,
        request=req,
        info=info,
        conformance=brain_conformance(splits),
    )


def evaluate(model_dir: Path, data: Path, _: NoOptions) -> dict[str, Any]:
    """Every slice of ``data`` (a ``kaggle_3m`` folder) through the exported artifact."""
    from training.core.evaluate import evaluate_artifact
    from training.datasets.brain_mri import load_all

    metrics = evaluate_artifact(model_dir, lambda prep: load_all(data, prep))
    metrics["split"] = "all slices of the folder"
    metrics.pop("operating_points", None)
    return metrics


def summary(card: dict[str, Any]) -> dict[str, Any]:
    keys = ("dice", "iou", "dice_all", "dice_pooled", "auc", "sensitivity", "specificity")
    return {
        "pixel_threshold": card["pixel_threshold"],
        "metrics": {k: card["metrics"][k] for k in keys},
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
        "training_seconds": card["training"]["training_seconds"],
    }


TASK = Task(
    name=BRAIN_CARD.name,
    kind="segmentation",
    description="brain MRI FLAIR slice: lower-grade glioma abnormality mask (kaggle_3m layout)",
    template=BRAIN_CARD,
    folder=Path(__file__).resolve().parent,
    synth_options=SynthOptions,
    synth=synth,
    train_options=TrainOptions,
    train=train,
    recorded=recorded,
    evaluate=evaluate,
    summary=summary,
    aliases=("brain_mri",),
)
