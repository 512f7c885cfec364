"""What readers return: a 2D image or a 3D volume, with spacing and conformance metadata.

Metadata is for conformance checks (warnings) only; it is never logged or echoed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

SourceFormat = Literal["png", "jpeg", "tiff", "dicom", "nifti", "dicom_series"]


@dataclass(frozen=True)
class Meta:
    """What the file says about itself, where it says it (None = not stated)."""

    format: SourceFormat
    modality: str | None = None
    photometric: str | None = None
    view_position: str | None = None
    bits_stored: int | None = None
    patient_age_known: bool = False
    patient_age_years: float | None = None
    series_description: str | None = None
    slice_thickness_mm: float | None = None
    body_part: str | None = None
    # Free-form extras a reader wants to pass to conformance checks (never echoed).
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DicomSource:
    """The uploaded DICOM instances' headers, pixel data dropped once decoded, in slice order
    (``Volume`` axis 0 before any reorientation). Only DICOM results (SEG/SR) read them: they
    hold patient data and are never logged or echoed."""

    datasets: tuple[Dataset, ...]


@dataclass(frozen=True, init=False)
class Image2D:
    """``pixels``: (H, W) or (H, W, C) float32 in the file's own value range (16-bit kept).

    ``spacing``: (row, column) pixel size in mm, or None where the file does not say.

    ``stored``: the decoded samples as uint8 / uint16, (H, W), where ``pixels`` is exactly
    their float32 copy (a gray 8/16-bit file without any value transform), else None. It
    lets preprocessing rank the values from a histogram and window them without the float32
    copy; a reader that gives ``stored`` may leave ``pixels`` None, and the float32 copy is
    then made the first time ``pixels`` is read.
    """

    _pixels: np.ndarray | None
    spacing: tuple[float, float] | None
    meta: Meta
    dicom: DicomSource | None
    stored: np.ndarray | None

    def __init__(
        self,
        pixels: np.ndarray | None,
        spacing: tuple[float, float] | None,
        meta: Meta,
        dicom: DicomSource | None = None,
        stored: np.ndarray | None = None,
    ) -> None:
        if pixels is None and stored is None:
            raise ValueError("an Image2D needs its pixels or its stored samples")
        object.__setattr__(self, "_pixels", pixels)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "dicom", dicom)
        object.__setattr__(self, "stored", stored)

    @property
    def pixels(self) -> np.ndarray:
        if self._pixels is None:
            assert self.stored is not None
            object.__setattr__(self, "_pixels", self.stored.astype(np.float32))
        assert self._pixels is not None
        return self._pixels

    @property
    def shape(self) -> tuple[int, int]:
        array = self._pixels if self._pixels is not None else self.stored
        assert array is not None
        return (int(array.shape[0]), int(array.shape[1]))


@dataclass(frozen=True)
class Volume:
    """``voxels``: (S, H, W) float32 (Hounsfield units for CT), or integers where that holds
    the same values: a NIfTI's own 8/16-bit integers where they need no scaling (a read-only,
    possibly strided view of the decoded bytes: no float copy of a large volume is made), a
    DICOM series' whole-number HU as int16; preprocessing converts slices as it goes.

    Canonical axis order whatever the file's: axis 0 runs inferior → superior, axis 1
    anterior → posterior (rows, top of the image is anterior), axis 2 patient right → left
    (columns, the radiological display convention). ``spacing``: (slice, row, column) in mm.
    """

    voxels: np.ndarray
    spacing: tuple[float, float, float] | None
    meta: Meta
    dicom: DicomSource | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.voxels.shape
        return (int(s[0]), int(s[1]), int(s[2]))
