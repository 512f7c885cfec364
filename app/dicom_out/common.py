"""What the SEG and SR writers share: the source header, the device, the codes."""

from __future__ import annotations

import copy
import logging
import uuid
from dataclasses import dataclass
from io import BytesIO

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from app import __version__
from app.errors import NotAcceptable
from app.imaging.card import Coded, DicomCodes, ModelCard
from app.imaging.types import DicomSource, Image2D, Volume

log = logging.getLogger("medserve.dicom_out")
# highdicom logs what it copies at INFO, quoting the source's UIDs and attribute values: tag
# values never reach medserve's logs, so its loggers (children included) are silenced.
logging.getLogger("highdicom").setLevel(logging.CRITICAL + 1)

MANUFACTURER = "medserve"
# Type 2 attributes of the patient, study and general image modules that anonymised files
# often lack; highdicom reads them from the source, so a copy gets them present and empty.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
# Device UIDs are name-based UUIDs (RFC 9562 v5) of the model file's sha256, written as
# ISO/IEC 9834-8 "2.25." UIDs.
_DEVICE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:medserve:model-device")
_RESULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:medserve:result")
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def require_codes(card: ModelCard) -> DicomCodes:
    """The card's ``dicom`` section, or 406: without it no DICOM result can be coded."""
    if card.dicom is None:
        raise NotAcceptable("this model's card has no DICOM codes; DICOM results are unavailable")
    return card.dicom


def require_source(item: Image2D | Volume) -> DicomSource:
    """The upload's DICOM headers, or 406 for NIfTI and rasters."""
    if item.dicom is None:
        raise NotAcceptable(
            "DICOM results need a DICOM upload (one DICOM file, several DICOM slices or a zip "
            "of one series); this upload is not DICOM"
        )
    for ds in item.dicom.datasets:
        if any(not str(ds.get(k) or "") for k in _REQUIRED_UIDS):
            raise NotAcceptable(
                "the DICOM upload lacks the study, series or instance UIDs a DICOM result "
                "must reference"
            )
    return item.dicom


@dataclass(frozen=True)
class ResultUIDs:
    """The Series and SOP Instance UIDs of one result object."""

    series: str
    instance: str

    @classmethod
    def new(cls) -> ResultUIDs:
        return cls(str(hd.UID()), str(hd.UID()))

    @classmethod
    def derived(cls, seed: str) -> ResultUIDs:
        """The same UIDs every time for the same ``seed`` (a job's series and model): a job
        taken up again after a crash stores the same instance, which the PACS keeps once."""
        return cls(
            f"2.25.{uuid.uuid5(_RESULT_NAMESPACE, seed + '/series').int}",
            f"2.25.{uuid.uuid5(_RESULT_NAMESPACE, seed + '/instance').int}",
        )


def study_header(ds: Dataset) -> Dataset:
    """A copy of a source header with every Type 2 patient/study attribute present."""
    out = copy.deepcopy(ds)
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, None)
    return out


def device_uid(model_sha256: str) -> str:
    """A UID derived from the model file's sha256: the same model always gets the same UID,
    a retrained one a new UID (pydicom's ``generate_uid(prefix=None)`` ignores its entropy
    sources, so it cannot do this)."""
    return f"2.25.{uuid.uuid5(_DEVICE_NAMESPACE, model_sha256).int}"


def coded(code: Coded) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def contributing_equipment(card: ModelCard) -> hd.ContributingEquipment:
    """The algorithm as Contributing Equipment: model name, version and Device UID."""
    equipment = hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=card.name,
        software_versions=card.version,
        device_serial_number=serial_number(card),
        contribution_description=f"medserve {__version__}: {card.name} {card.version}",
    )
    equipment.DeviceUID = device_uid(card.model_sha256)
    return equipment


def serial_number(card: ModelCard) -> str:
    """The model file's identity where DICOM asks for a serial number (first 16 hex digits)."""
    return card.model_sha256[:16]


def series_description(card: ModelCard, kind: str) -> str:
    return f"medserve {card.name} {card.version} {kind}"[:64]


def warning_texts(warnings: list[dict[str, str]]) -> list[str]:
    """``code: detail`` per warning (details never quote tag values)."""
    return [f"{w['code']}: {w['detail']}" for w in warnings]


def unreferencable(kind: str, exc: Exception) -> NotAcceptable:
    """highdicom refused the source: 406 with a fixed detail (its message can quote values)."""
    log.info("dicom_out: %s not built from this source (%s)", kind, type(exc).__name__)
    return NotAcceptable(
        f"this DICOM source cannot be referenced by a DICOM {kind}: it lacks geometry the "
        "object must copy (such as the Frame of Reference, image orientation or pixel "
        "spacing); ask for JSON instead"
    )


def encode(ds: Dataset) -> bytes:
    """A DICOM object as a Part 10 file (preamble, file meta)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
