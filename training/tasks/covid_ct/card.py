"""The covid_ct card template (labels, intended use, limitations, DICOM codes, routing), its
preprocessing and the conformance section made from the training studies.

Model input, 32 × 64 × 64 (D × H × W) instead of the reference's 64 × 128 × 128: training on 2
shared CPU cores must fit in about 20 minutes, and one 3D convolution costs in proportion to
the voxels (8× fewer here). At 64 px over a ~350 mm field of view a voxel is ~5.5 mm in-plane
— the patchy, lobular ground glass the model must see spans several centimetres, while
vessels and airways (the confounders) blur as they would at any coarse resolution; 32 slices
over ~300 mm keep the ~8 mm spacing of the source studies (so the depth axis is barely
resampled). Smaller opacities (CT-1) are the ones a coarser input loses first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.imaging.card import Coded, DicomCodes, Intensity, Preprocessing, Routing
from training.core.card import CardTemplate
from training.core.dicom_codes import ABSENT, PRESENT

NAME = "covid_ct"
DEFAULT_SIZE = (32, 64, 64)  # (D, H, W)
HU_WINDOW = (-1000.0, 400.0)
# Adult lungs span roughly 200-300 mm cranio-caudally: a series shorter than 200 mm at the
# thickest slices the model saw cannot hold both lungs.
LUNG_SPAN_MM = 200.0

COVID_CT_DICOM = DicomCodes(
    procedure=Coded(value="169069000", scheme="SCT", meaning="CT of chest"),
    finding=Coded(value="840539006", scheme="SCT", meaning="COVID-19"),
    present=PRESENT,
    absent=ABSENT,
)
# Routing uses modality and the minimum instance count only (conformance ranges stay warnings).
COVID_CT_ROUTING = Routing(modalities=["CT"], min_instances=22)

COVID_CT_CARD = CardTemplate(
    name=NAME,
    task="binary_classification",
    modality="CT",
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
