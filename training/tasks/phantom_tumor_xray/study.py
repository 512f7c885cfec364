"""The normalisation study: the same network trained with the two 16-bit input normalisations
the card can express (fixed window 0..65535 vs per-image percentile window), measured on the
validation split (``medserve-train study phantom_tumor_xray``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from training.core.progress import progress
from training.core.seg_metrics import (
    choose_pixel_threshold,
    dice_iou,
    predicted_mask,
    probability_maps,
)
from training.core.seg_train import SegTrainConfig, train_segmenter
from training.tasks.phantom_tumor_xray.card import (
    DEFAULT_INPUT_SIZE,
    NORMALISATIONS,
    phantom_preprocessing,
)
from training.tasks.phantom_tumor_xray.tracking import centroid_errors

log = logging.getLogger("medserve.training")


def normalisation_study(
    data_dir: Path,
    *,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    build_fn: Callable[[tuple[int, int, int]], Any],
    config: SegTrainConfig,
    run_dir: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    order: str = "window_then_resize",
) -> dict[str, Any]:
    """Train the same network once per normalisation on the same train/val split (by sequence)
    and report validation Dice and centroid error at the Dice-best pixel threshold (Keras model,
    masks and centroids at full resolution as served)."""
    from training.core.splits import split_by_group
    from training.datasets.phantom import list_items, load_split

    items = list_items(data_dir)
    parts = split_by_group([it.sequence for it in items], [1.0 - val_fraction], seed, by_items=True)
    train_items, val_items = ([items[i] for i in p] for p in parts)
    out: dict[str, Any] = {
        "data": str(data_dir),
        "split_sizes": {"train": len(train_items), "val": len(val_items)},
        "input_size": [int(input_size[0]), int(input_size[1])],
        "order": order,
        "config": config.as_dict(),
        "results": {},
    }
    for norm in progress(NORMALISATIONS, "study phantom_tumor_xray", unit="normalisation"):
        prep = phantom_preprocessing(input_size, norm, order)
        train, val = load_split(train_items, prep), load_split(val_items, prep)
        shape = (prep.size[0], prep.size[1], 1)
        result = train_segmenter(partial(build_fn, shape), train, val, config, Path(run_dir) / norm)
        model = result.model
        probs = probability_maps(partial(model.predict, verbose=0), val.x)
        threshold, table = choose_pixel_threshold(probs, val.masks)
        track = centroid_errors(probs, val.masks, threshold)
        track.pop("errors_px")
        has = val.has_lesion.astype(bool)
        dice_lesion = _mean_dice(
            probs[has], [m for m, h in zip(val.masks, has, strict=True) if h], threshold
        )
        out["results"][norm] = {
            "intensity": prep.intensity.model_dump(),
            "val_dice_tumour_frames": dice_lesion,
            "val_mean_dice_all_frames": float(max(table["mean_dice"])),
            "pixel_threshold": threshold,
            "centroid": track,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs_run,
            "training_seconds": round(result.seconds, 1),
        }
        log.info("normalisation %s: %s", norm, out["results"][norm])
    return out


def _mean_dice(
    prob_maps: np.ndarray, masks: Sequence[np.ndarray], threshold: float
) -> float | None:
    values = [
        dice_iou(predicted_mask(p, m.shape, threshold), m)[0]
        for p, m in zip(prob_maps, masks, strict=True)
    ]
    return float(np.mean(values)) if values else None


def study_summary(study: dict[str, Any]) -> dict[str, Any]:
    return {
        norm: {
            "val_dice_tumour_frames": r["val_dice_tumour_frames"],
            "val_centroid_median_px": r["centroid"]["median_px"],
            "val_centroid_p95_px": r["centroid"]["p95_px"],
        }
        for norm, r in study["results"].items()
    } | {
        "split_sizes": study["split_sizes"],
        "epochs": study["config"]["epochs"],
        "input_size": study.get("input_size"),
        "measured_on": "validation split (by sequence), masks and centroids at full resolution",
    }
