"""DICOM results: the answer as objects a PACS stores (highdicom).

- ``segmentation``: a DICOM Segmentation (SEG, BINARY, one segment) of a segmenter's mask;
- ``classification_report``: a Comprehensive 3D SR (TID 1500) of a classifier's decision;
- ``segmentation_report``: an SR that references a SEG (lesion present, area, centroid).

Every model-specific code comes from the card's ``dicom`` section. The objects copy the
source's patient and study modules (they belong to that study); nothing here logs a value.
"""

from app.dicom_out.common import ResultUIDs, encode, require_codes, require_source
from app.dicom_out.seg import segmentation
from app.dicom_out.sr import classification_report, segmentation_report

__all__ = [
    "ResultUIDs",
    "classification_report",
    "encode",
    "require_codes",
    "require_source",
    "segmentation",
    "segmentation_report",
]
