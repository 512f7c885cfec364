"""Decisions as Comprehensive 3D SR objects holding a TID 1500 measurement report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from app import __version__
from app.dicom_out.common import (
    MANUFACTURER,
    ResultUIDs,
    coded,
    contributing_equipment,
    device_uid,
    require_codes,
    series_description,
    study_header,
    unreferencable,
    warning_texts,
)
from app.imaging.card import ModelCard
from app.imaging.postprocess import Decision, MaskSummary

SR_SERIES_NUMBER = 9902
# The report's own concepts (the structure of every medserve report; model-specific codes are
# the card's). The uncalibrated probability has no standard concept: a private scheme says so.
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
SQUARE_MM = hd.sr.CodedConcept("mm2", "UCUM", "square millimeter")
PROBABILITY = hd.sr.CodedConcept("122157", "DCM", "Probability")
UNCALIBRATED_PROBABILITY = hd.sr.CodedConcept(
    "UNCAL_PROB", "99MEDSERVE", "Uncalibrated probability"
)
THRESHOLD = hd.sr.CodedConcept("122411", "DCM", "Threshold Value")
SENSITIVITY = hd.sr.CodedConcept("111088", "DCM", "Case Sensitivity")
SPECIFICITY = hd.sr.CodedConcept("111090", "DCM", "Case Specificity")
OPERATING_POINT = hd.sr.CodedConcept("111081", "DCM", "CAD Operating Point Description")
AREA = hd.sr.CodedConcept("42798000", "SCT", "Area")
# The OOD check (issue 20): whether the input suits the algorithm (within its training data),
# with the score and its threshold. No standard concept names them: the private scheme says so;
# the answer is SNOMED CT's Yes / No.
OOD_SUITABLE = hd.sr.CodedConcept("OOD_SUITABLE", "99MEDSERVE", "Image suitable for the algorithm")
OOD_SCORE = hd.sr.CodedConcept("OOD_SCORE", "99MEDSERVE", "Out-of-distribution score")
OOD_THRESHOLD = hd.sr.CodedConcept("OOD_THRESHOLD", "99MEDSERVE", "Out-of-distribution threshold")
YES = hd.sr.CodedConcept("373066001", "SCT", "Yes")
NO = hd.sr.CodedConcept("373067005", "SCT", "No")


class OodLike(Protocol):
    """What the SR needs of the pipeline's OOD result."""

    @property
    def score(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def in_distribution(self) -> bool: ...


def ood_rows(
    ood: OodLike | None,
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """The OOD measurements (score, threshold) and the suitability evaluation; none without
    an OOD result."""
    if ood is None:
        return [], []
    measurements = [
        _number(OOD_SCORE, min(ood.score, 1e15), NO_UNITS),
        _number(OOD_THRESHOLD, ood.threshold, NO_UNITS),
    ]
    suitable = hd.sr.QualitativeEvaluation(
        name=OOD_SUITABLE, value=YES if ood.in_distribution else NO
    )
    return measurements, [suitable]


Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
)
G = TypeVar("G", bound=Group)


def _number(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit)


def decision_measurements(decision: Decision) -> list[hd.sr.Measurement]:
    """The calibrated and uncalibrated probability (fractions in [0, 1]) and the operating
    point's threshold, sensitivity and specificity."""
    point = decision.point
    return [
        _number(PROBABILITY, decision.probability, NO_UNITS),
        _number(UNCALIBRATED_PROBABILITY, decision.uncalibrated_probability, NO_UNITS),
        _number(THRESHOLD, point.threshold, NO_UNITS),
        _number(SENSITIVITY, point.sensitivity, NO_UNITS),
        _number(SPECIFICITY, point.specificity, NO_UNITS),
    ]


def _finding(card: ModelCard, decision: Decision) -> hd.sr.QualitativeEvaluation:
    dicom = require_codes(card)
    value = dicom.present if decision.positive else dicom.absent
    return hd.sr.QualitativeEvaluation(name=coded(dicom.finding), value=coded(value))


def _texts(decision: Decision, warnings: list[dict[str, str]]) -> list[hd.sr.TextContentItem]:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items = [
        hd.sr.TextContentItem(
            name=OPERATING_POINT, value=decision.operating_point, relationship_type=contains
        )
    ]
    items.extend(
        hd.sr.TextContentItem(name=codes.DCM.Comment, value=text, relationship_type=contains)
        for text in warning_texts(warnings)
    )
    return items


def _with_texts(group: G, texts: Sequence[hd.sr.TextContentItem]) -> G:
    """Add TEXT items (operating point, warnings) to a measurement group's container."""
    group[0].ContentSequence.extend(texts)
    return group


def _document(
    card: ModelCard,
    evidence: Sequence[Dataset],
    groups: Sequence[Group],
    uids: ResultUIDs | None,
) -> hd.sr.Comprehensive3DSR:
    dicom = require_codes(card)
    uids = uids or ResultUIDs.new()
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid(card.model_sha256),
            name=card.name,
            manufacturer_name=MANUFACTURER,
            model_name=f"{card.name} {card.version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=coded(dicom.procedure),
        imaging_measurements=list(groups),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=uids.series,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=uids.instance,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=card.name,
        software_versions=__version__,
        is_complete=True,
        series_description=series_description(card, "SR"),
        contributing_equipment=[contributing_equipment(card)],
    )


def _reference_frames_only(group: Group) -> None:
    """The SEG reference names its frame, not also its segment: the Image SOP Instance
    Reference Macro forbids Referenced Segment Number beside Referenced Frame Number (highdicom
    writes both; TID 1410 references a segmentation *frame*, whose segment the SEG states)."""
    for item in group[0].ContentSequence:
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber


def _algorithm(card: ModelCard) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(name=card.name, version=card.version)


def _tracking(card: ModelCard, what: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{card.name} {what}")


def classification_report(
    sources: Sequence[Dataset],
    card: ModelCard,
    decision: Decision,
    warnings: list[dict[str, str]],
    uids: ResultUIDs | None = None,
    ood: OodLike | None = None,
) -> Dataset:
    """A classifier's decision as an SR: the finding present/absent at the operating point,
    the probabilities and the point's figures, the OOD check (score, threshold, whether the
    image suits the algorithm) where the card has one, referencing every source instance
    (each slice of a series)."""
    ood_measurements, ood_evaluations = ood_rows(ood)
    try:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(card, "finding"),
            finding_type=coded(require_codes(card).finding),
            algorithm_id=_algorithm(card),
            measurements=decision_measurements(decision) + ood_measurements,
            qualitative_evaluations=[_finding(card, decision), *ood_evaluations],
            source_images=[
                hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in sources
            ],
        )
        evidence = [study_header(sources[0]), *sources[1:]]
        groups = [_with_texts(group, _texts(decision, warnings))]
        return _document(card, evidence, groups, uids)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise unreferencable("Structured Report", exc) from None


def segmentation_report(
    source: Dataset,
    card: ModelCard,
    decision: Decision,
    summary: MaskSummary,
    seg: Dataset,
    warnings: list[dict[str, str]],
    ood: OodLike | None = None,
) -> Dataset:
    """An SR referencing the SEG ``seg``: lesion present/absent with its probabilities, the
    area in mm² where spacing is known, the OOD check where the card has one, and the
    centroid as a point on the source image."""
    ood_measurements, ood_evaluations = ood_rows(ood)
    try:
        referenced = hd.sr.ReferencedSegmentationFrame(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            frame_number=1,
            segment_number=1,
            source_image=hd.sr.SourceImageForSegmentation.from_source_image(source),
        )
        measurements = decision_measurements(decision)
        if summary.area_mm2 is not None:
            measurements.append(_number(AREA, summary.area_mm2, SQUARE_MM))
        measurements.extend(ood_measurements)
        finding = coded(require_codes(card).finding)
        groups: list[Group] = [
            _with_texts(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=_tracking(card, "segment"),
                    referenced_segment=referenced,
                    finding_type=finding,
                    algorithm_id=_algorithm(card),
                    measurements=measurements,
                    qualitative_evaluations=[_finding(card, decision), *ood_evaluations],
                ),
                _texts(decision, warnings),
            )
        ]
        if summary.centroid is not None:
            # SCOORD image coordinates: the centre of the top-left pixel is (0.5, 0.5).
            point = np.array([[summary.centroid[0] + 0.5, summary.centroid[1] + 0.5]])
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=_tracking(card, "centroid"),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POINT,
                        graphic_data=point,
                        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
                    ),
                    geometric_purpose=codes.DCM.Center,
                    finding_type=finding,
                    algorithm_id=_algorithm(card),
                )
            )
        _reference_frames_only(groups[0])
        return _document(card, [study_header(source), seg], groups, None)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise unreferencable("Structured Report", exc) from None
