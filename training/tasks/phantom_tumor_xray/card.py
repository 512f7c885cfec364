"""The phantom_tumor_xray card template (labels, intended use, limitations, DICOM codes,
routing), its preprocessing and its conformance section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast, get_args

from app.imaging.card import (
    Coded,
    DicomCodes,
    Intensity,
    Order,
    Preprocessing,
    Routing,
    SegmentCodes,
)
from training.core.card import CardTemplate
from training.core.dicom_codes import ABNORMAL_STRUCTURE, ABSENT, NEOPLASM, PRESENT

PHANTOM_DICOM = DicomCodes(
    procedure=Coded(value="168537006", scheme="SCT", meaning="Plain radiography"),
    finding=NEOPLASM,
    present=PRESENT,
    absent=ABSENT,
    segment=SegmentCodes(label="Tumour insert", category=ABNORMAL_STRUCTURE, type=NEOPLASM),
)
# Routing uses modality and the minimum instance count only (conformance ranges stay warnings).
PHANTOM_ROUTING = Routing(modalities=["DX", "RF", "RTIMAGE"])

NAME = "phantom_tumor_xray"
DEFAULT_INPUT_SIZE = (192, 256)
NORMALISATIONS = ("percentile", "window")
ORDERS: tuple[str, ...] = get_args(Order)  # the card's own values
PERCENTILES = (0.5, 99.5)

PHANTOM_CARD = CardTemplate(
    name=NAME,
    task="binary_segmentation",
    modality="XR",
    labels=("NO_TUMOUR", "TUMOUR"),
    dataset="xray_phantom_tumour",
    intended_use=(
        "Research and demonstration of markerless tumour tracking: outlines a tumour insert and "
        "reports its centroid on single 16-bit kV X-ray frames of a thorax motion phantom, e.g. "
        "to study tracking during radiotherapy. Not a medical device; it must not gate or steer "
        "a treatment beam."
    ),
    limitations=(
        "One frame at a time: no temporal model of the breathing motion, so a frame where the "
        "insert is hidden (spine, diaphragm, heart) is not bridged from its neighbours.",
        "Trained on one phantom design, one projection direction (antero-posterior) and one "
        "frame size (768 x 1024); other anatomy, gantry angles, MV portal images or patients are "
        "outside its training distribution.",
        "The centroid is that of the thresholded mask in pixels of the input; millimetres need "
        "the DICOM pixel spacing and are at the detector plane, not at the isocentre.",
        "The model runs at a quarter of the frame's resolution; sub-pixel centroid accuracy "
        "comes from the bilinearly resized probability map and is measured, not guaranteed.",
    ),
    dicom=PHANTOM_DICOM,
    routing=PHANTOM_ROUTING,
)

CONFORMANCE: dict[str, Any] = {
    # RTIMAGE: kV/MV images from a treatment machine; DX/CR/RF: radiography and fluoroscopy.
    "modalities": ["RTIMAGE", "DX", "CR", "RF"],
    "image_side_range": (768, 1024),
}


def phantom_preprocessing(
    size: Sequence[int] = DEFAULT_INPUT_SIZE,
    normalisation: str = "percentile",
    order: str = "window_then_resize",
) -> Preprocessing:
    """The card's preprocessing for 16-bit phantom frames.

    ``percentile``: per frame, the 0.5th..99.5th percentile window → [0, 1]; it cancels the
    exposure and detector-gain differences between sequences (an offset and a scale of the
    log-processed values) and ignores the extreme 1 % of pixels (collimator edges, dead or hot
    pixels). ``window``: the fixed 0..65535 range, the literal 16-bit scale. Both are measured on
    validation by ``normalisation_study``. Resize: ``area`` (box) because frames are reduced
    4x per side and averaging every source pixel also averages the quantum noise.
    ``expected_bits`` = 16: an 8-bit file is served with a ``rescaled_input`` warning.
    ``order``: the percentile window found on the full frame and then the frame reduced
    (``window_then_resize``), or the frame reduced and the window found on the reduced frame
    (``resize_then_window``: a histogram of 49k values instead of 786k; the demo model since
    1.3.0, issue #18).
    """
    if normalisation == "percentile":
        intensity = Intensity(method="percentile", low=PERCENTILES[0], high=PERCENTILES[1])
    elif normalisation == "window":
        intensity = Intensity(method="window", low=0.0, high=65535.0)
    else:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}")
    return Preprocessing(
        kind="image2d",
        size=[int(size[0]), int(size[1])],
        channels=1,
        intensity=intensity,
        resize="area",
        expected_bits=16,
        order=cast(Order, order),  # checked against ORDERS above
    )
