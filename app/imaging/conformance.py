"""Warnings for inputs that were accepted but lie outside what the model was trained on.

Each warning is ``{"code", "detail"}``; a detail names what the card expects, never what the file
holds (tag values are not echoed).
"""

from __future__ import annotations

import re

from app.imaging.card import ModelCard
from app.imaging.types import Image2D, Volume

Warning_ = dict[str, str]


def _warn(code: str, detail: str) -> Warning_:
    return {"code": code, "detail": detail}


def _not_in(value: str | None, allowed: list[str]) -> bool:
    return (value or "").upper() not in {a.upper() for a in allowed}


def conformance_warnings(item: Image2D | Volume, card: ModelCard) -> list[Warning_]:
    """The card-driven checks that apply to ``item``."""
    c = card.conformance
    meta = item.meta
    is_dicom = meta.format in ("dicom", "dicom_series")
    out: list[Warning_] = []
    if c.modalities and is_dicom and _not_in(meta.modality, c.modalities):
        expected = ", ".join(c.modalities)
        out.append(_warn("unexpected_modality", f"the model was trained on {expected} only"))
    if (
        c.view_positions
        and meta.format == "dicom"
        and _not_in(meta.view_position, c.view_positions)
    ):
        expected = ", ".join(c.view_positions)
        out.append(_warn("unexpected_view", f"the model was trained on {expected} views only"))
    age = meta.patient_age_years if meta.patient_age_known else None
    if (
        c.age_range_years
        and age is not None
        and not c.age_range_years[0] <= age <= c.age_range_years[1]
    ):
        lo, hi = c.age_range_years
        detail = f"the model was trained on patients aged {lo:g} to {hi:g} years"
        out.append(_warn("outside_training_age_range", detail))
    pattern, description = c.series_description_pattern, meta.series_description
    if pattern and description is not None and not re.search(pattern, description, re.IGNORECASE):
        detail = "the series description does not look like the sequence the model expects"
        out.append(_warn("unexpected_series", detail))
    if isinstance(item, Image2D):
        out.extend(_image_warnings(item, card))
    else:
        out.extend(_volume_warnings(item, card))
    return out


def _image_warnings(image: Image2D, card: ModelCard) -> list[Warning_]:
    out: list[Warning_] = []
    c, prep = card.conformance, card.input.preprocessing
    if c.image_side_range:
        lo, hi = c.image_side_range
        if min(image.shape) < lo or max(image.shape) > hi:
            out.append(
                _warn(
                    "rescaled_input",
                    f"image sides outside {lo}-{hi} px seen in training were rescaled",
                )
            )
    bits = image.meta.bits_stored
    if prep.expected_bits and bits and bits < prep.expected_bits:
        out.append(
            _warn(
                "rescaled_input",
                f"a {bits}-bit image was scaled for a model trained on "
                f"{prep.expected_bits}-bit data",
            )
        )
    return out


def _volume_warnings(volume: Volume, card: ModelCard) -> list[Warning_]:
    out: list[Warning_] = []
    c = card.conformance
    thickness = volume.meta.slice_thickness_mm or (volume.spacing[0] if volume.spacing else None)
    if c.slice_thickness_range_mm and thickness is not None:
        lo, hi = c.slice_thickness_range_mm
        if not lo <= thickness <= hi:
            out.append(
                _warn(
                    "unexpected_slice_thickness",
                    f"the model was trained on slices {lo:g}-{hi:g} mm thick",
                )
            )
    if c.min_slices and volume.shape[0] < c.min_slices:
        out.append(
            _warn(
                "too_few_slices",
                f"fewer than {c.min_slices} slices may not cover the lungs",
            )
        )
    return out
