"""decode → preprocess → infer → postprocess (→ dicom_out) for one request (blocking; runs in
the pool).

Everything model-specific comes from the card; this module only chains ``app.imaging``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from app import dicom_out
from app.errors import OutOfDistribution
from app.imaging.conformance import conformance_warnings
from app.imaging.encode import mask_png, overlay_png, rle_encode
from app.imaging.explain import Explanation, occlusion, probability_explanation
from app.imaging.limits import DecodeLimits
from app.imaging.postprocess import (
    Decision,
    MaskSummary,
    classification_logit,
    decide,
    lesion_logit,
    mask_at,
    probability_map,
    summarize_mask,
)
from app.imaging.preprocess import preprocess, select_channel
from app.imaging.readers import decode_image, decode_volume
from app.imaging.types import Image2D, Volume
from app.metrics import Metrics
from app.registry import ModelEntry


@dataclass
class Timer:
    """Named stage durations in milliseconds."""

    stages: dict[str, float] = field(default_factory=dict)
    _last: float = field(default_factory=time.perf_counter)
    _start: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.stages[name] = round((now - self._last) * 1000, 3)
        self._last = now

    def total(self) -> dict[str, float]:
        return {**self.stages, "total": round((time.perf_counter() - self._start) * 1000, 3)}


@dataclass(frozen=True)
class OodResult:
    """The card's OOD check on one input: higher score = further from the training data."""

    score: float
    threshold: float
    in_distribution: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "in_distribution": self.in_distribution,
        }


OOD_WARNING = {
    "code": "out_of_distribution",
    "detail": "the input lies outside the model's training data (OOD score above the "
    "model card's threshold); the answer may not be trustworthy",
}


def assess_ood(
    entry: ModelEntry,
    batch: np.ndarray,
    features: np.ndarray | None,
    policy: str,
    statistics: np.ndarray | None = None,
) -> OodResult | None:
    """The ood step: score the input from the model's features and its tensor (``statistics``
    its input statistics when already taken); None for a card without an ``ood`` section.
    Under ``policy`` ``refuse`` an input found out of distribution raises
    ``OutOfDistribution`` (422) with the score."""
    card = entry.card
    if card is None or card.ood is None or features is None:
        return None
    value = entry.ood_score(features[0], batch[0], statistics)
    result = OodResult(value, card.ood.threshold, value <= card.ood.threshold)
    if not result.in_distribution and policy == "refuse":
        raise OutOfDistribution(
            f"the input is out of the model's distribution: OOD score {value:.4g} is above "
            f"the threshold {card.ood.threshold:.4g}",
            extra={"ood": result.as_dict()},
        )
    return result


def ood_warnings(result: OodResult | None) -> list[dict[str, str]]:
    return [] if result is None or result.in_distribution else [dict(OOD_WARNING)]


@dataclass
class Classified:
    item: Image2D | Volume
    upload_sha256: str
    decision: Decision
    warnings: list[dict[str, str]]
    timing_ms: dict[str, float]
    dicom: list[bytes] = field(default_factory=list)
    explanation: Explanation | None = None
    ood: OodResult | None = None


def upload_sha256(parts: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


_HASH_IN_THREAD_BYTES = 1 << 20
_hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="medserve-sha256")


class Hashed:
    """A small upload's sha256, hashed at once, read as ``upload_digest``'s future is read (a
    ``concurrent.futures.Future`` makes a lock and a condition: 200 bytecodes a request)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def result(self, timeout: float | None = None) -> str:
        return self._value


def upload_digest(parts: Sequence[bytes]) -> Future[str] | Hashed:
    """The upload's sha256, computed next to decoding: hashlib releases the GIL while it hashes
    a large buffer, so on a second core it costs the request nothing (small uploads are hashed
    at once)."""
    if sum(len(p) for p in parts) < _HASH_IN_THREAD_BYTES:
        return Hashed(upload_sha256(parts))
    return _hasher.submit(upload_sha256, parts)


def decode_for(entry: ModelEntry, parts: Sequence[bytes], limits: DecodeLimits) -> Image2D | Volume:
    """Decode what the model's card says it takes: a 2D image or a volume."""
    assert entry.card is not None
    prep = entry.card.input.preprocessing
    if prep.kind == "volume3d":
        return decode_volume(parts, limits)
    return decode_image(parts, limits, apply_voi_lut=prep.apply_voi_lut)


def _run(
    entry: ModelEntry,
    parts: Sequence[bytes],
    limits: DecodeLimits,
    metrics: Metrics,
    timer: Timer,
    dicom: bool,
    ood_policy: str = "warn",
) -> tuple[Image2D | Volume, np.ndarray, np.ndarray, OodResult | None]:
    """decode → preprocess → the model's run (→ the ood step), each stage timed; the input, the
    model-input batch, the raw output 0 and the OOD result (None for a card without an ``ood``
    section).

    With ``dicom`` (a DICOM result is wanted) the card's codes and a DICOM upload are checked
    before any work is spent on the model (406 otherwise)."""
    card = entry.card
    assert card is not None
    if dicom:
        dicom_out.require_codes(card)
    item = decode_for(entry, parts, limits)
    if dicom:
        dicom_out.require_source(item)
    timer.lap("decode")
    batch = preprocess(item, card.input.preprocessing, card.input.layout)
    # the OOD check's input statistics while the tensor is in the cache (after the model's
    # run, which evicts it, the MRI slice's took 0.27 ms instead of 0.14; issue 18)
    statistics = entry.ood_statistics(batch[0])
    timer.lap("preprocess")
    output, features = entry.run_with_features(batch)
    timer.lap("inference")
    metrics.observe_inference(entry.name, timer.stages["inference"] / 1000)
    ood = assess_ood(entry, batch, features, ood_policy, statistics)
    return item, batch, output, ood


def classify(
    entry: ModelEntry,
    parts: Sequence[bytes],
    operating_point: str,
    limits: DecodeLimits,
    metrics: Metrics,
    dicom: bool = False,
    explain_budget_ms: float | None = None,
    ood_policy: str = "warn",
) -> Classified:
    """One classification request, stage by stage, with timings; with ``dicom`` also the
    decision as an SR (Part 10 bytes); with ``explain_budget_ms`` an occlusion map computed
    within that budget."""
    card = entry.card
    assert card is not None
    timer = Timer()
    digest = upload_digest(parts)
    item, batch, output, ood = _run(entry, parts, limits, metrics, timer, dicom, ood_policy)
    decision = decide(classification_logit(output, card), card, operating_point)
    warnings = conformance_warnings(item, card) + ood_warnings(ood)
    timer.lap("postprocess")
    explanation = None
    if explain_budget_ms is not None:
        explanation = _occlusion(entry, item, batch, decision, explain_budget_ms)
        timer.lap("explain")
    objects = []
    if dicom:
        sources = dicom_out.require_source(item).datasets
        report = dicom_out.classification_report(sources, card, decision, warnings, ood=ood)
        objects.append(dicom_out.encode(report))
        timer.lap("dicom_out")
    return Classified(
        item,
        digest.result(),
        decision,
        warnings,
        timer.total(),
        objects,
        explanation=explanation,
        ood=ood,
    )


def _display_plane(item: Image2D | Volume, channel_index: int | None) -> np.ndarray:
    """What an explanation is drawn over: the image's model channel, or a volume's middle
    slice; (H, W), any dtype (a NIfTI volume may be a view of its stored integers)."""
    if isinstance(item, Volume):
        middle: np.ndarray = item.voxels[item.shape[0] // 2]
        return middle
    return select_channel(item.pixels, channel_index)


def _occlusion(
    entry: ModelEntry,
    item: Image2D | Volume,
    batch: np.ndarray,
    decision: Decision,
    budget_ms: float,
) -> Explanation:
    """The occlusion map of one classification (the grid chosen from the budget and the
    latency measured at load)."""
    card = entry.card
    assert card is not None
    plane = _display_plane(item, card.input.preprocessing.channel_index)
    return occlusion(
        entry.run,
        batch,
        card.input.layout,
        plane,
        card,
        decision.probability,
        entry.explain_ms_per_item,
        entry.explain_batch,
        budget_ms,
    )


@dataclass
class Segmented:
    item: Image2D
    upload_sha256: str
    decision: Decision
    summary: MaskSummary
    encoded: dict[str, Any]
    warnings: list[dict[str, str]]
    timing_ms: dict[str, float]
    dicom: list[bytes] = field(default_factory=list)
    explanation: Explanation | None = None
    ood: OodResult | None = None


def segment(
    entry: ModelEntry,
    parts: Sequence[bytes],
    operating_point: str,
    encodings: frozenset[str],
    limits: DecodeLimits,
    metrics: Metrics,
    dicom: frozenset[str] = frozenset(),
    explain: bool = False,
    ood_policy: str = "warn",
) -> Segmented:
    """One segmentation request: the mask at the input's resolution plus the encodings asked
    for (any of ``rle``, ``png``, ``png_bytes``, ``overlay_bytes``), and the DICOM results in
    ``dicom`` (``seg``, and ``sr`` for an SR referencing the SEG) as Part 10 bytes; with
    ``explain`` the probability map drawn over the input as the explanation."""
    card = entry.card
    assert card is not None and card.pixel_threshold is not None
    timer = Timer()
    digest = upload_digest(parts)
    item, _, output, ood = _run(entry, parts, limits, metrics, timer, bool(dicom), ood_policy)
    assert isinstance(item, Image2D)
    probs = probability_map(output, card)
    decision = decide(lesion_logit(probs), card, operating_point)
    summary = summarize_mask(mask_at(probs, item.shape, card.pixel_threshold), item.spacing)
    encoded: dict[str, Any] = {}
    if "rle" in encodings:
        encoded["rle"] = rle_encode(summary.mask)
    if "png" in encodings:
        encoded["png_base64"] = base64.b64encode(mask_png(summary.mask)).decode("ascii")
    if "png_bytes" in encodings:
        encoded["png_bytes"] = mask_png(summary.mask)
    if "overlay_bytes" in encodings:
        plane = select_channel(item.pixels, card.input.preprocessing.channel_index)
        encoded["overlay_bytes"] = overlay_png(plane, summary.mask)
    warnings = conformance_warnings(item, card) + ood_warnings(ood)
    timer.lap("postprocess")
    explanation = None
    if explain:
        plane = _display_plane(item, card.input.preprocessing.channel_index)
        explanation = probability_explanation(plane, probs)
        timer.lap("explain")
    objects = []
    if dicom:
        sources = dicom_out.require_source(item).datasets
        seg = dicom_out.segmentation(sources, card, [summary.mask], warnings)
        objects.append(dicom_out.encode(seg))
        if "sr" in dicom:
            report = dicom_out.segmentation_report(
                sources[0], card, decision, summary, seg, warnings, ood=ood
            )
            objects.append(dicom_out.encode(report))
        timer.lap("dicom_out")
    return Segmented(
        item,
        digest.result(),
        decision,
        summary,
        encoded,
        warnings,
        timer.total(),
        objects,
        explanation,
        ood,
    )


@dataclass
class SeriesResult:
    """One model on one DICOM series of a study (a PACS job): the DICOM result to store and
    the summary the job reports."""

    dicom: bytes
    summary: dict[str, Any]
    timing_ms: dict[str, float]


def _summary(decision: Decision, warnings: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "probability": round(decision.probability, 6),
        "uncalibrated_probability": round(decision.uncalibrated_probability, 6),
        "positive": decision.positive,
        "label": decision.label,
        "operating_point": decision.operating_point,
        "warnings": warnings,
    }


def analyze_series(
    entry: ModelEntry,
    parts: Sequence[bytes],
    operating_point: str,
    limits: DecodeLimits,
    metrics: Metrics,
    uids: dicom_out.ResultUIDs,
) -> SeriesResult:
    """A series (its instances as Part 10 bytes) through the upload pipeline: a volume model
    reads the series as one volume (one SR); a 2D model reads each instance — a segmenter's
    masks become one SEG with a frame per instance, a classifier's SR reports the instance with
    the highest calibrated probability (the series is positive when any image is) and
    references them all."""
    card = entry.card
    assert card is not None
    timer = Timer()
    if card.input.preprocessing.kind == "volume3d":
        result = classify(entry, parts, operating_point, limits, metrics)
        sources = dicom_out.require_source(result.item).datasets
        report = dicom_out.classification_report(
            sources, card, result.decision, result.warnings, uids, ood=result.ood
        )
        summary = {**_summary(result.decision, result.warnings), "instances": len(sources)}
        timer.lap("series")
        return SeriesResult(dicom_out.encode(report), summary, timer.total())
    headers: list[Dataset] = []
    if card.task == "binary_segmentation":
        masks, decisions, areas = [], [], []
        warnings: list[dict[str, str]] = []
        for part in parts:
            seg = segment(entry, [part], operating_point, frozenset(), limits, metrics)
            headers.extend(dicom_out.require_source(seg.item).datasets)
            masks.append(seg.summary.mask)
            decisions.append(seg.decision)
            areas.append(seg.summary.area_px)
            warnings.extend(w for w in seg.warnings if w not in warnings)
        best = max(range(len(decisions)), key=lambda i: decisions[i].probability)
        obj = dicom_out.segmentation(headers, card, masks, warnings, uids)
        summary = {
            **_summary(decisions[best], warnings),
            "instances": len(headers),
            "positive_instances": sum(d.positive for d in decisions),
            "mask_area_px": sum(areas),
        }
    else:
        classified = []
        for part in parts:
            one = classify(entry, [part], operating_point, limits, metrics)
            headers.extend(dicom_out.require_source(one.item).datasets)
            classified.append(one)
        top = max(classified, key=lambda c: c.decision.probability)
        obj = dicom_out.classification_report(
            headers, card, top.decision, top.warnings, uids, ood=top.ood
        )
        summary = {
            **_summary(top.decision, top.warnings),
            "instances": len(headers),
            "positive_instances": sum(c.decision.positive for c in classified),
        }
    timer.lap("series")
    return SeriesResult(dicom_out.encode(obj), summary, timer.total())
