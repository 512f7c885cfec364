"""The COVID-19 chest CT slice end to end: MosMedData layout → 3D CNN → ``covid_ct`` artifact.

``train_covid_ct`` loads the chosen severity categories through the service's readers and
``preprocess_volume``, trains ``training.models.cnn3d`` with ``training.augment3d`` in the
``tf.data`` pipeline, and hands over to ``training.pipeline.run_binary_classification``
(calibration, operating points, evaluation plots, ONNX export, card, registry check), adding
the card's ``conformance`` section from what the training studies looked like.

Model input, 32 × 64 × 64 (D × H × W) instead of the reference's 64 × 128 × 128: training on 2
shared CPU cores must fit in about 20 minutes, and one 3D convolution costs in proportion to
the voxels (8× fewer here). At 64 px over a ~350 mm field of view a voxel is ~5.5 mm in-plane
— the patchy, lobular ground glass the model must see spans several centimetres, while
vessels and airways (the confounders) blur as they would at any coarse resolution; 32 slices
over ~300 mm keep the ~8 mm spacing of the source studies (so the depth axis is barely
resampled). Smaller opacities (CT-1) are the ones a coarser input loses first.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import Intensity, Preprocessing
from training.dicom_codes import COVID_CT_DICOM, COVID_CT_ROUTING
from training.pipeline import CardTemplate, RunInfo, run_binary_classification
from training.train import TrainConfig

log = logging.getLogger("medserve.training")

NAME = "covid_ct"
DEFAULT_SIZE = (32, 64, 64)  # (D, H, W)
HU_WINDOW = (-1000.0, 400.0)
# Adult lungs span roughly 200-300 mm cranio-caudally: a series shorter than 200 mm at the
# thickest slices the model saw cannot hold both lungs.
LUNG_SPAN_MM = 200.0

COVID_CT_CARD = CardTemplate(
    name=NAME,
    task="binary_classification",
    modality="CT",
    endpoint="/classify/ct",
    labels=("NEGATIVE", "COVID19"),
    dataset="mosmeddata",
    layout="NDHWC",
    intended_use=(
        "Research and demonstration: flags non-contrast chest CT studies of adults that may show "
        "COVID-19 pneumonia of moderate extent (ground glass and consolidation in about 25-75 % "
        "of the lung), for worklist triage or as a second reader. Not a diagnostic device; "
        "every output needs review by a qualified radiologist."
    ),
    limitations=(
        "Trained on CT-0 (no findings) against CT-2 and CT-3 (25-75 % of the lung involved), as "
        "the keras.io reference: mild disease (CT-1, < 25 %) was never shown as positive and is "
        "likely to be missed; critical disease (CT-4) was not shown either.",
        "Ground glass and consolidation are not specific to COVID-19: other viral and "
        "bacterial pneumonias, oedema, haemorrhage and fibrosis look alike, and the model says "
        "nothing about other findings (nodules, effusion, emphysema).",
        "Input is reduced to 32 × 64 × 64 voxels (about 5.5 mm in-plane, 9 mm between slices): "
        "small or faint opacities can vanish; thin-slice series are averaged to thick slices.",
        "MosMedData comes from one city's hospitals (Moscow, 2020), non-contrast, one scanner "
        "vendor mix; other sites, contrast phases, children and reconstruction kernels are "
        "outside its training distribution.",
        "Operating points and calibration were fitted on a validation split of the same source; "
        "prevalence and calibration shift at other sites.",
    ),
    dicom=COVID_CT_DICOM,
    routing=COVID_CT_ROUTING,
)


def covid_ct_preprocessing(size: Sequence[int] = DEFAULT_SIZE) -> Preprocessing:
    """The card's preprocessing for chest CT volumes.

    HU clipped to [-1000, 400] and scaled to [0, 1] (air 0, bone from 400 HU up 1): the window
    of the keras.io reference, wide enough for lung, ground glass, consolidation and soft
    tissue. Resize per axial slice (bilinear, antialiased when shrinking) to H × W, then
    linearly along the slices to D (``app.imaging.preprocess.preprocess_volume``); the readers
    have already put every study in one canonical orientation ("LPS" voxel axes: columns
    towards the patient's left, rows towards posterior, slices towards superior).
    """
    d, h, w = (int(v) for v in size)
    return Preprocessing(
        kind="volume3d",
        size=[d, h, w],
        channels=1,
        intensity=Intensity(method="window", low=HU_WINDOW[0], high=HU_WINDOW[1]),
        resize="trilinear",
        orientation="LPS",
    )


def conformance_from(spacing: np.ndarray, slices: np.ndarray) -> dict[str, Any]:
    """The card's ``conformance`` from the training studies' decoded geometry.

    ``spacing``: (N, 3) (slice, row, col) mm; ``slices``: (N,). The slice-thickness range is
    the seen spacing range widened by 10 % (rounded outward to 0.5 mm); ``min_slices`` is the
    count that covers ``LUNG_SPAN_MM`` at the thickest slices seen.
    """
    dz = spacing[:, 0][np.isfinite(spacing[:, 0])]
    out: dict[str, Any] = {"modalities": ["CT"]}
    if dz.size:
        lo = math.floor(float(dz.min()) * 0.9 * 2) / 2
        hi = math.ceil(float(dz.max()) * 1.1 * 2) / 2
        out["slice_thickness_range_mm"] = [lo, hi]
        out["min_slices"] = max(2, math.ceil(LUNG_SPAN_MM / float(dz.max())))
    elif slices.size:
        out["min_slices"] = max(2, int(slices.min()) // 2)
    return out


def limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's thread pools (call before TensorFlow runs anything)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised: keep what it has
        log.warning("TensorFlow already initialised; thread limits not applied")


def train_covid_ct(
    data_dir: Path,
    out_root: Path = Path("models"),
    version: str = "1.0.0",
    *,
    size: Sequence[int] = DEFAULT_SIZE,
    width: float = 0.5,
    epochs: int = 20,
    batch_size: int = 8,
    learning_rate: float = 1e-3,
    seed: int = 0,
    synthetic: bool = False,
    test_data: Path | None = None,
    run_dir: Path | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 0.15,
    negative: Sequence[str] = ("CT-0",),
    positive: Sequence[str] = ("CT-2", "CT-3"),
    augment: bool = True,
    flip_lr: float = 0.5,
    rotation_deg: float = 10.0,
    early_stopping_patience: int = 6,
    cache: bool = True,
    threads: int | None = None,
    overwrite: bool = False,
    verbose: int = 2,
) -> Path:
    """Train, calibrate, evaluate and export ``covid_ct``; returns ``out_root/covid_ct/<version>``.

    ``size``: model input (D, H, W); ``width``: filter multiplier of the reference 3D CNN;
    ``test_data``: take the test split from another folder (e.g. another seed); ``cache``:
    keep the preprocessed arrays in ``run_dir/cache``; ``threads``: TensorFlow thread cap
    (default ``MEDSERVE_TRAIN_THREADS``, else TensorFlow's own choice).
    """
    from training.augment3d import Augment3DConfig, make_augment_fn
    from training.datasets import covid_ct as dataset
    from training.models import cnn3d

    limit_threads(threads or int(os.environ.get("MEDSERVE_TRAIN_THREADS", "0") or 0))
    prep = covid_ct_preprocessing(size)
    run_dir = Path(run_dir) if run_dir else Path("runs") / NAME / version
    splits = dataset.load(
        Path(data_dir),
        prep,
        negative=negative,
        positive=positive,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        test_root=Path(test_data) if test_data else None,
        cache_dir=run_dir / "cache" if cache else None,
    )
    log.info("splits %s, class weights %s", splits.sizes, splits.class_weight)
    shape = (prep.size[0], prep.size[1], prep.size[2], prep.channels)
    aug = Augment3DConfig(rotation_deg=rotation_deg, flip_lr=flip_lr, seed=seed)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        augment=augment,
        rotation_deg=rotation_deg,
        zoom=0.0,
        contrast=aug.contrast,
        early_stopping_patience=early_stopping_patience,
        verbose=verbose,
    )
    seen = np.concatenate([splits.train.spacing, splits.val.spacing])
    seen_slices = np.concatenate([splits.train.slices, splits.val.slices])
    info = RunInfo(
        synthetic=synthetic,
        seed=seed,
        arch="cnn3d",
        arch_options={
            "width": width,
            "filters": list(cnn3d.REFERENCE_FILTERS),
            "padding": "same",
            "bn_momentum": 0.9,
        },
        extra={
            "categories": {"negative": list(negative), "positive": list(positive)},
            "studies_per_category": dataset.category_counts(splits),
            "split": (
                "by study (one study per patient), stratified by category; "
                + (
                    "test from a separate folder"
                    if test_data
                    else "test split from the same folder"
                )
            ),
            "val_fraction": val_fraction,
            "augmentation": aug.as_dict() if augment else None,
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
        build_fn=lambda: cnn3d.build(shape, width=width),
        config=config,
        out_root=Path(out_root),
        version=version,
        run_dir=run_dir,
        info=info,
        class_weight=splits.class_weight,
        overwrite=overwrite,
        augment_fn=make_augment_fn(aug) if augment else None,
        conformance=conformance_from(seen, seen_slices),
    )


def evaluate_covid_ct(
    model_dir: Path,
    data_dir: Path,
    *,
    negative: Sequence[str] = ("CT-0",),
    positive: Sequence[str] = ("CT-2", "CT-3"),
) -> dict[str, Any]:
    """Re-check an exported artifact on every chosen study of ``data_dir`` (e.g. a held-out
    synthetic set of another seed): the registry loads it as the service does (hashes,
    self-test), the card's preprocessing feeds it, and card-style metrics come back."""
    import json

    from app.config import Settings
    from app.imaging.card import CARD_FILE, ModelCard
    from app.registry import load_entry
    from training.datasets.covid_ct import load_test
    from training.evaluate import evaluate_probabilities, predict_logits
    from training.metrics import sigmoid

    model_dir = Path(model_dir).resolve()
    card = ModelCard.model_validate(json.loads((model_dir / CARD_FILE).read_bytes()))
    entry = load_entry(card.name, model_dir, Settings(model_dir=model_dir.parent.parent))
    if not entry.ready:
        raise RuntimeError(f"model not ready: {entry.reason}")
    split = load_test(
        Path(data_dir), card.input.preprocessing, negative=negative, positive=positive
    )
    logits = predict_logits(entry.run, split.x, batch=16)
    thresholds = {k: v.threshold for k, v in card.operating_points.items()}
    metrics = evaluate_probabilities(
        split.y,
        sigmoid(logits / card.calibration.temperature),
        sigmoid(logits),
        thresholds,
        card.default_operating_point,
    )
    metrics["model"] = {"name": card.name, "version": card.version, "sha256": card.model_sha256}
    metrics["categories"] = {"negative": list(negative), "positive": list(positive)}
    return metrics
