"""One input through the service's own stages, split where Ray Data splits them.

``prepare`` (a task): bytes → ``pipeline.decode_for`` → conformance warnings →
``imaging.preprocess`` → the model's input for a batch of one. ``infer`` (the actor): the
prepared inputs of a Ray batch in one run of the model where the graph's batch dimension is free.
``finish`` (a task): the output → ``imaging.postprocess`` → one row, the same figures (rounded
the same way) as the upload endpoint's JSON answer. Any ``MedserveError`` becomes the row's
``error_code`` (the code the HTTP endpoint answers with); anything else is ``internal_error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from app import dicom_out
from app.errors import MedserveError
from app.imaging.conformance import conformance_warnings
from app.imaging.encode import rle_encode
from app.imaging.limits import DecodeLimits
from app.imaging.postprocess import (
    classification_logit,
    decide,
    lesion_logit,
    mask_at,
    probability_map,
    summarize_mask,
)
from app.imaging.preprocess import preprocess
from app.metrics import Metrics
from app.pipeline import OodResult, analyze_series, decode_for, ood_warnings, upload_sha256
from app.registry import ModelEntry

log = logging.getLogger("medserve.batch")

Row = dict[str, Any]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The row's error columns: the domain error's code and detail, or ``internal_error`` with
    no detail (the exception type is logged, never its message: decoders can quote input)."""
    if isinstance(exc, MedserveError):
        return {"error_code": exc.code, "error_detail": exc.detail or exc.title}
    log.error("batch row failed", extra={"event": "batch", "error": type(exc).__name__})
    return {"error_code": "internal_error", "error_detail": None}


def prepare(
    entry: ModelEntry, data: bytes, limits: DecodeLimits
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """File bytes → (the model input for a batch of one in the card's layout, or None on an
    error; the row's input columns, warnings, timings and error columns)."""
    card = entry.card
    assert card is not None
    info: dict[str, Any] = {"input_sha256": upload_sha256([data])}
    start = time.perf_counter()
    try:
        item = decode_for(entry, [data], limits)
        info["timing_decode_ms"] = _ms(start)
        info["input_format"] = item.meta.format
        info["input_shape"] = list(item.shape)
        info["input_spacing_mm"] = (
            [round(float(s), 6) for s in item.spacing] if item.spacing else None
        )
        info["warnings"] = conformance_warnings(item, card)
        start = time.perf_counter()
        tensor = preprocess(item, card.input.preprocessing, card.input.layout)
        info["timing_preprocess_ms"] = _ms(start)
    except Exception as exc:
        info.update(error_fields(exc))
        return None, info
    return tensor, info


def batched(entry: ModelEntry) -> bool:
    """Whether the graph's batch dimension is free (None or a symbolic name), so that several
    inputs go through one run."""
    assert entry.session is not None
    first = entry.session.get_inputs()[0].shape[0]
    return not isinstance(first, int)


def infer(
    entry: ModelEntry, tensors: Sequence[np.ndarray]
) -> tuple[list[np.ndarray], list[float | None], float]:
    """Model outputs (a batch of one each, as ``entry.run`` gives them) for prepared inputs,
    in one call where the graph takes a batch; the OOD score of each (None for a card without
    an OOD check); and the inference time per input in ms."""
    if not tensors:
        return [], [], 0.0
    start = time.perf_counter()
    if batched(entry) and len(tensors) > 1:
        out, feats = entry.run_with_features(np.concatenate(tensors, axis=0))
        outputs = [out[i : i + 1] for i in range(len(tensors))]
        features = [None if feats is None else feats[i : i + 1] for i in range(len(tensors))]
    else:
        pairs = [entry.run_with_features(t) for t in tensors]
        outputs, features = [o for o, _ in pairs], [f for _, f in pairs]
    ms = round((time.perf_counter() - start) * 1000 / len(tensors), 3)
    scores: list[float | None] = [
        None if f is None else entry.ood_score(f[0], t[0])
        for f, t in zip(features, tensors, strict=True)
    ]
    return outputs, scores, ms


def finish(
    entry: ModelEntry,
    info: dict[str, Any],
    output: np.ndarray,
    operating_point: str,
    ood_score: float | None = None,
) -> Row:
    """A model output → the row's decision (and mask) columns, as the upload endpoint answers
    (with ``ood_score``, the OOD columns and warning too)."""
    card = entry.card
    assert card is not None
    start = time.perf_counter()
    row: Row = dict(info)
    if ood_score is not None and card.ood is not None:
        ood = OodResult(ood_score, card.ood.threshold, ood_score <= card.ood.threshold)
        row.update(ood_score=round(ood_score, 4), ood_in_distribution=ood.in_distribution)
        row["warnings"] = [*row.get("warnings", []), *ood_warnings(ood)]
    try:
        if card.task == "binary_segmentation":
            assert card.pixel_threshold is not None
            probs = probability_map(output, card)
            decision = decide(lesion_logit(probs), card, operating_point)
            height, width = info["input_shape"]
            spacing = info["input_spacing_mm"]
            summary = summarize_mask(
                mask_at(probs, (height, width), card.pixel_threshold),
                (spacing[0], spacing[1]) if spacing else None,
            )
            row.update(
                mask_height=height,
                mask_width=width,
                mask_area_px=summary.area_px,
                mask_area_mm2=summary.area_mm2,
                mask_bbox=summary.bbox,
                mask_centroid=summary.centroid,
                mask_centroid_mm=summary.centroid_mm,
                mask_rle_counts=rle_encode(summary.mask)["counts"],
            )
        else:
            decision = decide(classification_logit(output, card), card, operating_point)
    except Exception as exc:
        row.update(error_fields(exc))
        return row
    row.update(
        probability=round(decision.probability, 6),
        uncalibrated_probability=round(decision.uncalibrated_probability, 6),
        positive=decision.positive,
        label=decision.label,
        operating_point=decision.operating_point,
        threshold=decision.point.threshold,
        timing_postprocess_ms=_ms(start),
    )
    return row


def series_uids(entry: ModelEntry, study: str, series: str) -> dicom_out.ResultUIDs:
    """The result's UIDs, derived from (study, series, model): a batch run again, or resumed
    after a kill, stores the same instance, which the PACS keeps once."""
    return dicom_out.ResultUIDs.derived(f"batch/{study}/{series}/{entry.name}/{entry.sha256}")


def analyze(
    entry: ModelEntry,
    parts: Sequence[bytes],
    operating_point: str,
    limits: DecodeLimits,
    metrics: Metrics,
    study: str,
    series: str,
) -> tuple[Row, bytes | None]:
    """A PACS series through ``pipeline.analyze_series`` (as the jobs run it): the row and the
    SEG/SR to store (None on an error)."""
    start = time.perf_counter()
    row: Row = {"input_sha256": upload_sha256(parts), "input_format": "dicom_series"}
    try:
        result = analyze_series(
            entry, parts, operating_point, limits, metrics, series_uids(entry, study, series)
        )
    except Exception as exc:
        row.update(error_fields(exc))
        return row, None
    s = result.summary
    card = entry.card
    assert card is not None
    row.update(
        probability=s["probability"],
        uncalibrated_probability=s["uncalibrated_probability"],
        positive=s["positive"],
        label=s["label"],
        operating_point=s["operating_point"],
        threshold=card.operating_points[s["operating_point"]].threshold,
        warnings=s["warnings"],
        instances=s.get("instances"),
        timing_inference_ms=_ms(start),
    )
    if "mask_area_px" in s:
        row["mask_area_px"] = s["mask_area_px"]
    return row, result.dicom
