"""The phantom_tumor_xray task: markerless tumour tracking on 16-bit kV frames (``/segment/xray``).

Loader ``training.datasets.phantom`` (``phantom/images`` + ``labels``, split by sequence),
generator ``training.synthetic.phantom``, a slim ResNet-18 segmenter
(``training.models.resnet18_seg``), the binary-segmentation kind of ``training.core`` with the
tracking report as a publish hook (``tracking.tracking_hook``: it runs in staging, before the
artifact is moved into place) and the normalisation study (``study.py``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from training.core.card import RunInfo
from training.core.options import NoOptions, opt
from training.core.task import Task, TrainRequest
from training.tasks.phantom_tumor_xray.card import (
    CONFORMANCE,
    DEFAULT_INPUT_SIZE,
    NORMALISATIONS,
    ORDERS,
    PHANTOM_CARD,
    phantom_preprocessing,
)

log = logging.getLogger("medserve.training")

LOSSES = ("bce", "dice", "bce_dice")


@dataclass(frozen=True)
class SynthOptions:
    n: int = opt(600, "number of frames")
    seed: int = opt(0, "random seed")
    image_size: tuple[int, int] = opt(
        (768, 1024), "frame rows and columns (same field of view)", metavar=("H", "W")
    )
    format: str = opt("tif", "file type", choices=("tif", "png"))
    frames_per_sequence: tuple[int, int] = opt(
        (4, 8), "frames per breathing sequence", metavar=("MIN", "MAX")
    )
    empty_fraction: float = opt(0.15, "share of sequences without the tumour insert")
    workers: int = opt(1, "processes rendering sequences in parallel (same files as with one)")


@dataclass(frozen=True)
class TrainOptions:
    input_size: tuple[int, int] = opt(
        DEFAULT_INPUT_SIZE, "model input rows, columns (multiples of 32)", metavar=("H", "W")
    )
    normalisation: str = opt(
        "percentile", "per-frame 0.5-99.5 percentile window or the fixed 0..65535 window",
        choices=NORMALISATIONS,
    )  # fmt: skip
    order: str = opt(
        "window_then_resize", "window on the full frame then reduce, or reduce then window",
        choices=ORDERS,
    )  # fmt: skip
    base_filters: int = opt(16, "ResNet filters of the first stage")
    stages: int = opt(4, "ResNet stages (down-samplings after the stem)")
    blocks_per_stage: int = opt(2, "residual blocks per stage")
    loss: str = opt("bce_dice", "segmentation loss", choices=LOSSES)
    epochs: int = opt(20, "training epochs (at most)")
    batch_size: int = opt(16, "batch size")
    learning_rate: float = opt(1e-3, "Adam learning rate")
    patience: int = opt(6, "early-stopping patience (epochs)")
    max_shift: float = opt(0.0, "augmentation: random joint shift, fraction of each side")
    augment: bool = opt(True, "left-right flips, shifts and gain/gamma jitter")
    val_fraction: float = opt(0.2, "share of frames (whole sequences) kept for validation")
    normalisation_study: str | None = opt(None, "study JSON to summarise in the card")
    latency_frames: int = opt(10, "test frames timed through the service pipeline (0: none)")
    threads: int = opt(2, "TensorFlow intra-op threads (0: all)")
    seed: int = opt(0, "random seed (splits, weights, augmentation)")
    synthetic: bool = opt(False, "the data are synthetic (the card says so)")
    verbose: int = opt(2, "Keras fit verbosity", choices=(0, 1, 2))


@dataclass(frozen=True)
class StudyOptions:
    input_size: tuple[int, int] = opt(
        DEFAULT_INPUT_SIZE, "model input rows, columns (multiples of 32)", metavar=("H", "W")
    )
    order: str = opt(
        "window_then_resize", "window on the full frame then reduce, or reduce then window",
        choices=ORDERS,
    )  # fmt: skip
    base_filters: int = opt(16, "ResNet filters of the first stage")
    epochs: int = opt(12, "epochs per normalisation (no early stop)")
    batch_size: int = opt(8, "batch size")
    val_fraction: float = opt(0.2, "share of frames (whole sequences) for validation")
    threads: int = opt(2, "TensorFlow intra-op threads (0: all)")
    seed: int = opt(0, "random seed")
    run_dir: str = opt("runs/phantom_norm_study", "checkpoints of the study runs")


def synth(out: Path, o: SynthOptions, overwrite: bool) -> dict[str, Any]:
    from training.synthetic import phantom

    cfg = phantom.SynthConfig(
        n=o.n,
        seed=o.seed,
        size=o.image_size,
        frames_per_sequence=o.frames_per_sequence,
        empty_fraction=o.empty_fraction,
        image_format="png" if o.format == "png" else "tif",
    )
    files = phantom.generate(out, cfg, overwrite=overwrite, workers=o.workers)
    sequences = len({p.stem.split("_")[0] for p in files})
    return {"written": len(files), "sequences": sequences, "size": list(cfg.size)}


def _builder(
    base_filters: int, stages: int, blocks_per_stage: int
) -> Callable[[tuple[int, int, int]], Any]:
    def build(shape: tuple[int, int, int]) -> Any:
        from training.models.resnet18_seg import build as resnet18_seg

        return resnet18_seg(shape, base_filters=base_filters, blocks=(blocks_per_stage,) * stages)

    return build


def _train_config(o: TrainOptions) -> Any:
    from training.core.seg_train import SegTrainConfig

    return SegTrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        learning_rate=o.learning_rate,
        seed=o.seed,
        loss=o.loss,
        augment=o.augment,
        flip_lr=True,
        flip_ud=False,
        max_shift=o.max_shift,
        early_stopping_patience=o.patience,
        threads=o.threads or None,
        verbose=o.verbose,
    )


def _arch_options(o: TrainOptions) -> dict[str, Any]:
    return {
        "base_filters": o.base_filters,
        "blocks": [o.blocks_per_stage] * o.stages,
        "skips": True,
        "input_skip": True,
    }


def recorded(o: TrainOptions) -> dict[str, Any]:
    return {
        "training": {
            "config": _train_config(o).as_dict(),
            "architecture": "resnet18_seg",
            "architecture_options": _arch_options(o),
            "seed": o.seed,
            "synthetic": o.synthetic,
            "val_fraction": o.val_fraction,
            "normalisation": o.normalisation,
        },
        "preprocessing": phantom_preprocessing(o.input_size, o.normalisation, o.order).model_dump(),
    }


def train(req: TrainRequest, o: TrainOptions) -> Path:
    """The phantom task end to end; returns ``<out>/phantom_tumor_xray/<version>``: the
    segmentation kind trains, calibrates and exports, and the tracking hook adds the centroid
    figures, the tracking plot and the service latency in staging."""
    from training.core.segmentation import run_binary_segmentation
    from training.datasets.phantom import load
    from training.tasks.phantom_tumor_xray.study import study_summary
    from training.tasks.phantom_tumor_xray.tracking import tracking_hook

    config = _train_config(o)
    prep = phantom_preprocessing(o.input_size, o.normalisation, o.order)
    splits = load(req.data, prep, val_fraction=o.val_fraction, seed=o.seed, test_root=req.test_data)
    log.info("phantom splits %s", splits.sizes)
    shape = (prep.size[0], prep.size[1], 1)
    build = _builder(o.base_filters, o.stages, o.blocks_per_stage)
    study = json.loads(Path(o.normalisation_study).read_text()) if o.normalisation_study else None
    test_from = "; test: separate folder" if req.test_data else "; test: held-out sequences"
    info = RunInfo(
        synthetic=o.synthetic,
        seed=o.seed,
        arch="resnet18_seg",
        arch_options=_arch_options(o),
        extra={
            "split": "train/val by sequence (consecutive frames kept together)" + test_from,
            "val_fraction": o.val_fraction,
            "input_size_choice": (
                f"{prep.size[0]}x{prep.size[1]}: a quarter of 768x1024 per side keeps CPU "
                "training under ~20 minutes; the centroid is measured at full resolution"
            ),
            "normalisation": o.normalisation,
            **({"normalisation_study": study_summary(study)} if study else {}),
        },
    )
    hooks = (tracking_hook(o.latency_frames), *req.hooks)
    return run_binary_segmentation(
        template=PHANTOM_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: build(shape),
        config=config,
        request=replace(req, hooks=hooks),
        info=info,
        conformance=CONFORMANCE,
    )


def evaluate(model_dir: Path, data: Path, _: NoOptions) -> dict[str, Any]:
    """Every frame of ``data`` through the exported artifact (service registry and ONNX), with
    the centroid errors at full resolution."""
    from training.core.evaluate import evaluate_artifact, read_card
    from training.core.export import onnx_runner, onnx_session
    from training.core.seg_metrics import probability_maps
    from training.datasets.phantom import list_items, load_split
    from training.tasks.phantom_tumor_xray.tracking import centroid_errors

    card = read_card(model_dir)
    split = load_split(list_items(data), card.input.preprocessing)
    metrics = evaluate_artifact(model_dir, lambda _prep: split)
    assert card.pixel_threshold is not None
    probs = probability_maps(onnx_runner(onnx_session(model_dir / "model.onnx")), split.x)
    track = centroid_errors(probs, split.masks, card.pixel_threshold)
    track.pop("errors_px")
    metrics["centroid"] = track
    metrics.pop("operating_points", None)
    return metrics


def study(data: Path, out: Path, o: StudyOptions) -> dict[str, Any]:
    """The normalisation study; writes its JSON to ``out`` and returns the card's summary."""
    from training.core.seg_train import SegTrainConfig
    from training.tasks.phantom_tumor_xray.study import normalisation_study, study_summary

    config = SegTrainConfig(
        epochs=o.epochs,
        batch_size=o.batch_size,
        seed=o.seed,
        threads=o.threads or None,
        early_stopping_patience=100,
    )
    result = normalisation_study(
        data,
        input_size=o.input_size,
        build_fn=_builder(o.base_filters, 4, 2),
        config=config,
        run_dir=Path(o.run_dir),
        val_fraction=o.val_fraction,
        seed=o.seed,
        order=o.order,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return study_summary(result)


def summary(card: dict[str, Any]) -> dict[str, Any]:
    m = card["metrics"]
    keys = ("dice", "iou", "dice_all", "pixel_accuracy", "auc", "sensitivity", "specificity")
    return {
        "metrics": {k: m.get(k) for k in keys},
        "centroid": m["centroid"],
        "pixel_threshold": card["pixel_threshold"],
        "service_latency": card.get("service_latency"),
    }


TASK = Task(
    name=PHANTOM_CARD.name,
    kind="segmentation",
    description="16-bit X-ray phantom frames: tumour insert mask and centroid (tracking)",
    template=PHANTOM_CARD,
    folder=Path(__file__).resolve().parent,
    synth_options=SynthOptions,
    synth=synth,
    train_options=TrainOptions,
    train=train,
    recorded=recorded,
    evaluate=evaluate,
    summary=summary,
    study_options=StudyOptions,
    study=study,
    aliases=("phantom",),
)
