"""Coded concepts shared by the tasks' DICOM card sections (``dicom``: the codes a model's DICOM
results use; each task's ``card.py`` holds its own codes and its ``routing``).

SNOMED CT (``SCT``) and DICOM (``DCM``) concepts, as listed in pydicom's code dictionary where
it has them. The service reads both from the card and types none itself.
"""

from __future__ import annotations

from app.imaging.card import Coded

PRESENT = Coded(value="52101004", scheme="SCT", meaning="Present")
ABSENT = Coded(value="272519000", scheme="SCT", meaning="Absent")
ABNORMAL_STRUCTURE = Coded(
    value="49755003", scheme="SCT", meaning="Morphologically abnormal structure"
)
NEOPLASM = Coded(value="108369006", scheme="SCT", meaning="Neoplasm")
