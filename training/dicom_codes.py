"""The DICOM-facing card sections of each model: the codes its DICOM results use (``dicom``)
and the series it takes when a study is analysed (``routing``).

SNOMED CT (``SCT``) and DICOM (``DCM``) concepts, as listed in pydicom's code dictionary where
it has them. The service reads both from the card and types none itself.
"""

from __future__ import annotations

from app.imaging.card import Coded, DicomCodes, Routing, SegmentCodes

PRESENT = Coded(value="52101004", scheme="SCT", meaning="Present")
ABSENT = Coded(value="272519000", scheme="SCT", meaning="Absent")
ABNORMAL_STRUCTURE = Coded(
    value="49755003", scheme="SCT", meaning="Morphologically abnormal structure"
)
NEOPLASM = Coded(value="108369006", scheme="SCT", meaning="Neoplasm")

PNEUMONIA_DICOM = DicomCodes(
    procedure=Coded(value="399208008", scheme="SCT", meaning="Plain X-ray of chest"),
    finding=Coded(value="233604007", scheme="SCT", meaning="Pneumonia"),
    present=PRESENT,
    absent=ABSENT,
)

COVID_CT_DICOM = DicomCodes(
    procedure=Coded(value="169069000", scheme="SCT", meaning="CT of chest"),
    finding=Coded(value="840539006", scheme="SCT", meaning="COVID-19"),
    present=PRESENT,
    absent=ABSENT,
)

BRAIN_MRI_DICOM = DicomCodes(
    procedure=Coded(value="816077007", scheme="SCT", meaning="MRI of brain"),
    finding=NEOPLASM,
    present=PRESENT,
    absent=ABSENT,
    segment=SegmentCodes(label="FLAIR abnormality", category=ABNORMAL_STRUCTURE, type=NEOPLASM),
)

PHANTOM_DICOM = DicomCodes(
    procedure=Coded(value="168537006", scheme="SCT", meaning="Plain radiography"),
    finding=NEOPLASM,
    present=PRESENT,
    absent=ABSENT,
    segment=SegmentCodes(label="Tumour insert", category=ABNORMAL_STRUCTURE, type=NEOPLASM),
)

# Routing uses modality and the minimum instance count only (conformance ranges stay warnings).
PNEUMONIA_ROUTING = Routing(modalities=["CR", "DX"])
COVID_CT_ROUTING = Routing(modalities=["CT"], min_instances=22)
BRAIN_MRI_ROUTING = Routing(modalities=["MR"])
PHANTOM_ROUTING = Routing(modalities=["DX", "RF", "RTIMAGE"])
