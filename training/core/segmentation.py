"""The segmentation task kind end to end: ``run_binary_segmentation`` trains (or takes a
finished run's checkpoint), exports ONNX (Keras-vs-ONNX parity within 1e-4 + 1e-5 x the map's
largest |logit|, or nothing is written), calibrates the pixel threshold and the lesion
temperature / operating points on the VALIDATION split through the ONNX graph, evaluates on
test, writes the plots, the SavedModel and the validated card, runs the publish hooks, moves
the folder into place and checks that ``app.registry.load_entry`` reports it ready
(``RuntimeError`` otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from app.imaging.card import Preprocessing
from training.core.calibrate import calibrate
from training.core.card import CardTemplate, RunInfo, card_fields
from training.core.fit import TrainResult, result_from_checkpoint
from training.core.publish import Runner, TrainRequest, publish_run
from training.core.seg_metrics import (
    choose_pixel_threshold,
    evaluate_segmentation,
    lesion_logits,
    probability_maps,
)
from training.core.seg_plots import write_segmentation_plots
from training.core.seg_train import SegSplits, SegTrainConfig, train_segmenter
from training.core.threads import limit_threads

log = logging.getLogger("medserve.training")

LESION_PROBABILITY = (
    "peak pixel probability of the model-resolution map -> logit -> sigmoid(logit / temperature)"
)


def run_binary_segmentation(
    *,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SegSplits,
    build_fn: Callable[[], Any],
    config: SegTrainConfig,
    request: TrainRequest,
    info: RunInfo,
    conformance: Mapping[str, Any] | None = None,
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.95,
) -> Path:
    """Train (``request.from_checkpoint``: take the best checkpoint of the finished run in
    ``request``'s run folder instead), export, calibrate on validation (through ONNX), evaluate
    on test, write the artifact; returns ``<out>/<template.name>/<version>`` once
    ``app.registry.load_entry`` reports it ready (``RuntimeError`` if the service would not
    serve it)."""
    _check_inputs(template, splits)
    run_dir = request.run_folder(template.name)
    if request.from_checkpoint:
        limit_threads(config.threads)
        result = result_from_checkpoint(build_fn, run_dir)
    else:
        result = train_segmenter(build_fn, splits.train, splits.val, config, run_dir)
    return export_segmentation_artifact(
        result=result,
        template=template,
        prep=prep,
        splits=splits,
        config=config,
        request=request,
        info=info,
        conformance=conformance,
        min_sensitivity=min_sensitivity,
        min_specificity=min_specificity,
    )


def _check_inputs(template: CardTemplate, splits: SegSplits) -> None:
    if template.task != "binary_segmentation":
        raise ValueError("the template's task must be binary_segmentation")
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty")


def export_segmentation_artifact(
    *,
    result: TrainResult,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SegSplits,
    config: SegTrainConfig,
    request: TrainRequest,
    info: RunInfo,
    conformance: Mapping[str, Any] | None = None,
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.95,
) -> Path:
    """Everything of ``run_binary_segmentation`` after training, for a trained ``result``
    (e.g. a model rebuilt from a run's best checkpoint)."""
    _check_inputs(template, splits)

    def describe(
        folder: Path, session: Any, run: Runner, max_diff: float
    ) -> tuple[dict[str, Any], list[str]]:
        # Everything here runs the ONNX graph, the service's code path.
        val_probs = probability_maps(run, splits.val.x)
        pixel_threshold, table = choose_pixel_threshold(val_probs, splits.val.masks)
        val_logits, y_val = lesion_logits(val_probs), splits.val.has_lesion
        cal = calibrate(
            val_logits,
            y_val,
            default_operating_point=template.default_operating_point,
            min_sensitivity=min_sensitivity,
            min_specificity=min_specificity,
        )
        val_metrics = evaluate_segmentation(val_probs, splits.val.masks, pixel_threshold, cal)
        del val_probs
        test_probs = probability_maps(run, splits.test.x)
        metrics = evaluate_segmentation(test_probs, splits.test.masks, pixel_threshold, cal)
        metrics["validation"] = {
            k: val_metrics[k] for k in ("n", "n_with_lesion", "dice", "iou", "dice_all", "auc")
        }
        plots = write_segmentation_plots(
            folder,
            history=result.history,
            test=splits.test,
            test_probs=test_probs,
            calibration=cal,
            pixel_threshold=pixel_threshold,
            threshold_table=table,
            labels=template.labels,
        )
        fields = card_fields(
            template=template,
            version=request.version,
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
        fields["calibration"]["lesion_probability"] = LESION_PROBABILITY
        fields.update(
            output_shape=[None, *prep.size, 1],
            output_description=(
                "per-pixel lesion LOGITS at the model input size (NHWC, one channel); the "
                "service applies the sigmoid, resizes the probabilities bilinearly to the "
                "input's size and keeps pixels >= pixel_threshold"
            ),
            pixel_threshold=pixel_threshold,
            operating_point_selection=(
                "on validation, calibrated lesion probability: balanced = max Youden J; "
                f"high_sensitivity = best specificity with sensitivity >= {min_sensitivity:g}, "
                f"high_specificity = best sensitivity with specificity >= {min_specificity:g}, "
                "neither placed on the far side of balanced"
            ),
            pixel_threshold_selection=(
                "maximises mean per-slice Dice over all validation slices, masks at the input "
                "resolution (bilinear probability resize)"
            ),
            conformance=dict(conformance or {}),
        )
        fields["training"].update(
            split_cases_with_lesion={
                "train": int(splits.train.has_lesion.sum()),
                "val": int(splits.val.has_lesion.sum()),
                "test": int(splits.test.has_lesion.sum()),
            },
            split_groups={
                "train": len(set(splits.train.groups.tolist())),
                "val": len(set(splits.val.groups.tolist())),
                "test": len(set(splits.test.groups.tolist())),
            },
            parameters=int(result.model.count_params()),
            split="by patient",
        )
        fields["training"].update({**result.extra, **info.extra})  # later keys win
        return fields, plots

    probe = splits.val.x[: min(16, len(splits.val))]
    return publish_run(request, result.model, template.name, probe, info.seed, describe, splits)
