"""A CT volume in canonical order → an axial DICOM series of the same anatomy (in memory).

Canonical order (``app.imaging.types.Volume``): axis 0 inferior → superior, axis 1 anterior →
posterior, axis 2 patient right → left. In DICOM's patient coordinates (LPS: +x patient left,
+y posterior, +z superior) that is: along a row (increasing column) +x, down the rows +y,
slice k at z0 + k·dz, i.e. ``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``, ``PixelSpacing
= [row spacing, column spacing]``, ``ImagePositionPatient`` the centre of each slice's first
voxel. Stored values are ``(HU - intercept) / slope`` as signed 16-bit, so the reader's modality
LUT gives the HU back exactly.

Used by the covid_ct tests and by ``bench/ct_memory.py``.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def series_from_volume(
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    origin: tuple[float, float, float] = (-180.0, -180.0, -350.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_description: str = "CHEST AXIAL 8MM",
    modality: str = "CT",
) -> list[bytes]:
    """(S, H, W) HU in canonical order, (slice, row, col) mm → S DICOM files (Part 10 bytes).

    ``origin``: LPS position (mm) of voxel (0, 0, 0). HU must be representable: ``(HU -
    intercept) / slope`` integral and within int16.
    """
    hu = np.asarray(hu)
    dz, dy, dx = spacing
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("HU out of range for int16 with this slope/intercept")
    stored16 = stored.astype("<i2")
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(hu.shape[0]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName, ds.PatientID = "SYNTHETIC^CT", "SYNTH-0001"
        ds.Modality = modality
        ds.BodyPartExamined = "CHEST"
        ds.SeriesDescription = series_description
        ds.SeriesNumber, ds.InstanceNumber = 2, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * dz)]
        ds.SliceLocation = float(origin[2] + k * dz)
        ds.PixelSpacing = [float(dy), float(dx)]
        ds.SliceThickness = float(dz)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(hu.shape[1]), int(hu.shape[2])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        ds.PixelData = stored16[k].tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        files.append(buf.getvalue())
    return files


def zip_files(
    files: Sequence[bytes], *, shuffle_seed: int | None = 0, folder: str = "SERIES"
) -> bytes:
    """The files as one deflated zip, entry names ``FOLDER/IM0001`` … in a shuffled order
    (None keeps the order), so the reader must sort by position, not by name or entry order."""
    order = list(range(len(files)))
    if shuffle_seed is not None:
        order = [int(i) for i in np.random.default_rng(shuffle_seed).permutation(len(files))]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for i in order:
            zf.writestr(f"{folder}/IM{i + 1:04d}", files[i])
    return buf.getvalue()
