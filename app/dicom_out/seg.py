"""A segmenter's mask as a DICOM Segmentation (SEG IOD, BINARY, one segment)."""

from __future__ import annotations

from collections.abc import Sequence

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
    require_codes,
    serial_number,
    series_description,
    study_header,
    unreferencable,
    warning_texts,
)
from app.imaging.card import ModelCard

SEG_SERIES_NUMBER = 9901


def segmentation(
    sources: Sequence[Dataset],
    card: ModelCard,
    masks: Sequence[np.ndarray],
    warnings: list[dict[str, str]],
    uids: ResultUIDs | None = None,
) -> Dataset:
    """The SEG of ``masks`` (one (Rows, Columns) bool mask per single-frame source instance of
    one series, the JSON answers' masks): one frame per source, empty or not, referencing the
    sources; segment label and codes from the card, algorithm identification (name, version,
    family AI)."""
    dicom = require_codes(card)
    segment = dicom.segment
    assert segment is not None  # the card validator requires it for segmenters
    uids = uids or ResultUIDs.new()
    headers = [study_header(sources[0]), *sources[1:]]
    source = headers[0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=card.name, version=card.version, family=codes.DCM.ArtificialIntelligence
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment.label,
        segmented_property_category=coded(segment.category),
        segmented_property_type=coded(segment.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    texts = warning_texts(warnings)
    try:
        seg = hd.seg.Segmentation(
            source_images=headers,
            pixel_array=np.stack([np.asarray(m, dtype=bool) for m in masks]),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=uids.series,
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=uids.instance,
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=card.name,
            software_versions=__version__,
            device_serial_number=serial_number(card),
            omit_empty_frames=False,
            content_label="MEDSERVE",
            content_description=f"{card.name} {card.version}"[:64],
            series_description=series_description(card, "SEG"),
            contributing_equipment=[contributing_equipment(card)],
        )
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise unreferencable("Segmentation", exc) from None
    if texts:
        seg.ImageComments = "warnings: " + "; ".join(texts)
    if "PatientOrientation" not in seg and not _has_plane_orientation(seg):
        # General Image: Type 2C where the image has no patient orientation of its own (a
        # projection radiograph without a Frame of Reference).
        seg.PatientOrientation = source.get("PatientOrientation") or None
    return seg


def _has_plane_orientation(seg: Dataset) -> bool:
    shared = seg.get("SharedFunctionalGroupsSequence")
    return bool(shared) and "PlaneOrientationSequence" in shared[0]
