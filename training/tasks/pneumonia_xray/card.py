"""The pneumonia_xray card template: labels, intended use, limitations, DICOM codes, routing,
the preprocessing and the conformance section (what the Kermany films are)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.imaging.card import Coded, DicomCodes, Intensity, Preprocessing, Routing
from training.core.card import CardTemplate
from training.core.dicom_codes import ABSENT, PRESENT

PNEUMONIA_DICOM = DicomCodes(
    procedure=Coded(value="399208008", scheme="SCT", meaning="Plain X-ray of chest"),
    finding=Coded(value="233604007", scheme="SCT", meaning="Pneumonia"),
    present=PRESENT,
    absent=ABSENT,
)
# Routing uses modality and the minimum instance count only (conformance ranges stay warnings).
PNEUMONIA_ROUTING = Routing(modalities=["CR", "DX"])

PNEUMONIA_CARD = CardTemplate(
    name="pneumonia_xray",
    task="binary_classification",
    modality="XR",
    labels=("NORMAL", "PNEUMONIA"),
    dataset="kermany_chest_xray",
    intended_use=(
        "Research and demonstration: flags frontal (AP/PA) paediatric chest radiographs that may "
        "show pneumonia, as a second reader or for worklist triage. Not a diagnostic device; "
        "every output needs review by a qualified clinician."
    ),
    limitations=(
        "Trained for frontal chest radiographs of children aged about 1-5 years (Kermany "
        "et al., one centre in Guangzhou); adults, lateral views, other sites and devices are "
        "outside its training distribution.",
        "Binary NORMAL/PNEUMONIA only: it does not separate bacterial from viral pneumonia and "
        "says nothing about other findings (effusion, pneumothorax, lines, tubes, masses).",
        "Inputs are 8-bit film-like images; 12/16-bit DICOM is windowed by percentiles, which is "
        "not how the training JPEGs were rendered.",
        "Operating points and calibration were fitted on a validation split of the same source; "
        "prevalence and calibration shift at other sites.",
    ),
    dicom=PNEUMONIA_DICOM,
    routing=PNEUMONIA_ROUTING,
)


def image_side_range(root: Path, pattern: str) -> tuple[int, int]:
    """Smallest and largest image side among the files under ``root`` (headers only)."""
    from PIL import Image

    sides: list[int] = []
    for path in root.glob(pattern):
        with Image.open(path) as img:
            sides.extend(img.size)
    if not sides:
        raise FileNotFoundError(f"no {pattern} under {root}")
    return min(sides), max(sides)


def pneumonia_conformance(data_dir: Path) -> dict[str, Any]:
    """What the Kermany films are: frontal CR/DX of children aged 1-5, at the sizes trained on."""
    return {
        "modalities": ["CR", "DX"],
        "view_positions": ["AP", "PA"],
        "age_range_years": [1, 5],
        "image_side_range": list(image_side_range(Path(data_dir), "chest_xray/*/*/*.jpeg")),
    }


def pneumonia_preprocessing(size: int | tuple[int, int], channels: int) -> Preprocessing:
    """The card's preprocessing for chest films.

    Intensity: per-image 0.5/99.5 percentile window rather than min-max. Films differ in
    exposure and carry burned-in side markers, text and collimator edges; min-max would let one
    white marker pixel or black border set the whole scale, while percentiles ignore the extreme
    0.5 % at either end and map the body's own range to [0, 1] the same way for every film.
    Resize: ``area`` (box) because films arrive at 1000-2500 px and are reduced 8-20×: averaging
    every source pixel avoids the aliasing (rib edges, noise) of point sampling.
    """
    h, w = (size, size) if isinstance(size, int) else size
    return Preprocessing(
        kind="image2d",
        size=[int(h), int(w)],
        channels=channels,
        intensity=Intensity(method="percentile", low=0.5, high=99.5),
        resize="area",
        expected_bits=8,
    )
