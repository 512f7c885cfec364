"""The brain_tumor_mri card template (labels, intended use, limitations, DICOM codes, routing),
its preprocessing and the conformance section made from the training slices."""

from __future__ import annotations

from typing import Any

from app.imaging.card import Coded, DicomCodes, Intensity, Preprocessing, Routing, SegmentCodes
from training.core.card import CardTemplate
from training.core.dicom_codes import ABNORMAL_STRUCTURE, ABSENT, NEOPLASM, PRESENT
from training.core.seg_train import SegSplits

FLAIR_CHANNEL = 1  # kaggle_3m RGB = (pre-contrast, FLAIR, post-contrast)
SERIES_PATTERN = r"flair|t2.?fl|dark.?fluid"

BRAIN_MRI_DICOM = DicomCodes(
    procedure=Coded(value="816077007", scheme="SCT", meaning="MRI of brain"),
    finding=NEOPLASM,
    present=PRESENT,
    absent=ABSENT,
    segment=SegmentCodes(label="FLAIR abnormality", category=ABNORMAL_STRUCTURE, type=NEOPLASM),
)
# Routing uses modality and the minimum instance count only (conformance ranges stay warnings).
BRAIN_MRI_ROUTING = Routing(modalities=["MR"])

BRAIN_CARD = CardTemplate(
    name="brain_tumor_mri",
    task="binary_segmentation",
    modality="MR",
    labels=("NO_LESION", "LESION"),
    dataset="kaggle_3m_lgg_flair",
    default_operating_point="balanced",
    intended_use=(
        "Research and demonstration: outlines FLAIR-hyperintense abnormality (lower-grade "
        "glioma) on one axial brain MRI FLAIR slice, and says whether the slice shows any. "
        "Not a diagnostic device; every mask needs review by a qualified reader."
    ),
    limitations=(
        "Reads the FLAIR image only: a 3-channel image is taken as (pre-contrast, FLAIR, "
        "post-contrast) and its second channel is used; a gray image or an MR DICOM slice is "
        "used as it is, whatever its sequence (a warning names a series description that does "
        "not look like FLAIR).",
        "One axial slice at a time, no 3D context; intensities are scaled per slice between "
        "the 0.5th and 99.5th percentiles, so a slice that is nearly all background or all "
        "lesion is scaled differently from the training slices.",
        "Trained for lower-grade glioma FLAIR abnormality (Buda et al., TCGA/TCIA layout); "
        "other lesions that are bright on FLAIR (demyelination, infarcts, oedema around "
        "metastases, small-vessel disease) may be outlined too, and enhancing high-grade "
        "tumour cores are out of scope.",
        "The mask comes from a low-resolution probability map resized bilinearly to the "
        "input's size: borders are smooth and lesions under a few pixels across at the model "
        "resolution may be missed.",
        "Operating points and calibration were fitted on a validation split of the same "
        "source; prevalence and calibration shift on other scanners and sites.",
    ),
    dicom=BRAIN_MRI_DICOM,
    routing=BRAIN_MRI_ROUTING,
)


def brain_preprocessing(size: int | tuple[int, int]) -> Preprocessing:
    """The card's preprocessing: the FLAIR channel, a per-slice 0.5/99.5 percentile window
    (MR intensities have no absolute scale; percentiles ignore single hot pixels that would set
    a min-max scale), bilinear resize to ``size`` (a 256 slice is halved for the 128 demo)."""
    h, w = (size, size) if isinstance(size, int) else size
    return Preprocessing(
        kind="image2d",
        size=[int(h), int(w)],
        channels=1,
        channel_index=FLAIR_CHANNEL,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="bilinear",
        expected_bits=8,
    )


def brain_conformance(splits: SegSplits) -> dict[str, Any]:
    """What the training slices looked like: MR, FLAIR, and the image sides seen."""
    sides = [s for split in (splits.train, splits.val) for shape in split.shapes for s in shape]
    return {
        "modalities": ["MR"],
        "series_description_pattern": SERIES_PATTERN,
        "image_side_range": [min(sides), max(sides)],
    }
