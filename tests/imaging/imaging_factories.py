"""Builders for test inputs: DICOM slices/series, NIfTI, zips, PNG headers. All in memory."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
CANARY_NAME = "CANARY^SECRET"
CANARY_ID = "CANARY-ID-123"


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=preamble, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def image_dataset(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    modality: str = "CR",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.1",
    **tags: object,
) -> Dataset:
    """A single- or multi-frame grayscale data set holding ``stored`` ((R, C) or (F, R, C))."""
    stored = np.asarray(stored)
    bits_allocated = stored.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = CANARY_NAME
    ds.PatientID = CANARY_ID
    ds.Modality = modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    if stored.ndim == 3:
        ds.NumberOfFrames = int(stored.shape[0])
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds


def ct_slice(
    hu: np.ndarray,
    z: float,
    *,
    series_uid: str,
    instance: int,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-100.0, -120.0),
    spacing: Sequence[float] = (0.7, 0.8),
    slope: float = 2.0,
    intercept: float = -1024.0,
    position: Sequence[float] | None = None,
) -> Dataset:
    """One CT slice whose modality LUT gives back ``hu`` exactly (hu = stored*slope+intercept)."""
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    ds = image_dataset(
        stored,
        signed=True,
        modality="CT",
        sop_class=CT_IMAGE,
        RescaleSlope=slope,
        RescaleIntercept=intercept,
        SeriesInstanceUID=series_uid,
        InstanceNumber=instance,
        ImageOrientationPatient=[float(v) for v in orientation],
        ImagePositionPatient=[float(v) for v in (position or (origin[0], origin[1], z))],
        PixelSpacing=[float(spacing[0]), float(spacing[1])],
        SliceThickness=2.5,
        SeriesDescription="CHEST",
    )
    return ds


def ct_volume(slices: int = 6, rows: int = 5, cols: int = 4, seed: int = 0) -> np.ndarray:
    """A (S, R, C) HU volume where every voxel differs (sorting mistakes show)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(-1000, 1000, size=(slices, rows, cols)) * 2  # even: exact with slope 2
    return base.astype(np.float32)


def ct_series(
    volume: np.ndarray, *, z0: float = 10.0, dz: float = 2.5, series_uid: str | None = None
) -> list[bytes]:
    """Axial slices of ``volume`` (axis 0 inferior → superior), in acquisition order."""
    uid = series_uid or generate_uid()
    return [
        dicom_bytes(ct_slice(volume[k], z0 + k * dz, series_uid=uid, instance=k + 1))
        for k in range(volume.shape[0])
    ]


def zip_bytes(entries: Sequence[tuple[str, bytes]], *, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def enhanced_ct(volume: np.ndarray, order: Sequence[int], *, dz: float = 3.0) -> bytes:
    """An enhanced CT (multi-frame) storing the slices of ``volume`` in frame ``order``,
    positions per frame, rescale per frame (frame-specific intercepts), spacing shared."""
    frames = []
    per_frame = []
    for frame_index, k in enumerate(order):
        intercept = -1024.0 + 2 * frame_index
        frames.append(np.round((volume[k] - intercept) / 1.0).astype(np.int16))
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, 50.0 + k * dz]
        item.PlanePositionSequence = DicomSequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope = 1.0
        pvt.RescaleIntercept = intercept
        item.PixelValueTransformationSequence = DicomSequence([pvt])
        per_frame.append(item)
    shared = Dataset()
    ori = Dataset()
    ori.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = DicomSequence([ori])
    meas = Dataset()
    meas.PixelSpacing = [0.5, 0.6]
    meas.SliceThickness = dz
    shared.PixelMeasuresSequence = DicomSequence([meas])
    ds = image_dataset(
        np.stack(frames),
        signed=True,
        modality="CT",
        sop_class=ENHANCED_CT,
        SeriesInstanceUID=generate_uid(),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    return dicom_bytes(ds)


def nifti_like_series(
    volume: np.ndarray,
    *,
    z0: float = 10.0,
    dz: float = 2.5,
    origin: Sequence[float] = (-100.0, -120.0),
    spacing: Sequence[float] = (0.7, 0.8),
    ras_storage: bool = False,
    version: int = 1,
) -> bytes:
    """The NIfTI of the same anatomy as ``ct_series(volume)`` with ``ct_slice`` defaults.

    DICOM voxel (s, r, c) lies at LPS (x0 + c*dc, y0 + r*dr, z0 + s*dz), i.e. RAS
    (-(x0 + c*dc), -(y0 + r*dr), z0 + s*dz). Stored as (i, j, k) = (c, r, s), or with
    ``ras_storage`` flipped to increase towards R and A (what many converters write).
    """
    dr, dc = spacing
    data = volume.transpose(2, 1, 0)  # (c, r, s)
    affine = np.diag([-dc, -dr, dz, 1.0])
    affine[:3, 3] = [-origin[0], -origin[1], z0]
    if ras_storage:
        data = data[::-1, ::-1, :]
        ncol, nrow = volume.shape[2], volume.shape[1]
        affine = np.diag([dc, dr, dz, 1.0])
        affine[:3, 3] = [-(origin[0] + (ncol - 1) * dc), -(origin[1] + (nrow - 1) * dr), z0]
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    img = klass(np.ascontiguousarray(data).astype(np.int16), affine)
    img.header.set_xyzt_units("mm")
    return bytes(img.to_bytes())


def nifti_bytes(data: np.ndarray, affine: np.ndarray | None = None, **header: object) -> bytes:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    for key, value in header.items():
        img.header[key] = value
    return bytes(img.to_bytes())


def png_header_only(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A PNG signature + IHDR declaring ``width`` × ``height`` and a tiny (wrong) IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
