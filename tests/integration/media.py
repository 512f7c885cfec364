"""Synthetic inputs for the integration suite, built with numpy, Pillow, pydicom and nibabel only.

Nothing here imports ``app``: the suite checks the service from the outside, with files made the
way a hospital's systems make them. Every builder is deterministic (fixed seeds, fixed UIDs).
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

# SOP classes (PS3.4 B.5)
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"

_UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # a private test root; fixed UIDs keep inputs stable


@dataclass(frozen=True)
class Sample:
    """One upload: the bytes, the format the service must report, what it must decode to."""

    data: bytes
    format: str
    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...] | None
    content_type: str


def _uid(suffix: str) -> str:
    return _UID_ROOT + suffix


# --------------------------------------------------------------------------- pixel content


def chest_like(height: int, width: int, *, max_value: int, seed: int = 1) -> np.ndarray:
    """(H, W) float64 in [0, max_value]: bright mediastinum, dark lungs, smooth noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    yn, xn = (y - height / 2) / (height / 2), (x - width / 2) / (width / 2)
    img = 0.75 - 0.25 * yn
    for cx in (-0.45, 0.45):
        lung = ((xn - cx) / 0.32) ** 2 + ((yn + 0.05) / 0.7) ** 2 < 1
        img = np.where(lung, 0.25 + 0.05 * yn, img)
    img = img + rng.normal(0, 0.02, size=img.shape)
    return np.clip(img, 0, 1) * max_value


def blob_image(height: int, width: int, *, max_value: int, seed: int = 2) -> np.ndarray:
    """(H, W) float64 in [0, max_value]: a textured disc background with one bright blob."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    head = ((x - width / 2) / (0.42 * width)) ** 2 + ((y - height / 2) / (0.45 * height)) ** 2 < 1
    img = np.where(head, 0.35, 0.0) + rng.normal(0, 0.02, size=(height, width))
    blob = ((x - 0.62 * width) / (0.1 * width)) ** 2 + ((y - 0.4 * height) / (0.1 * height)) ** 2
    img = np.where(blob < 1, 0.95, img)
    return np.clip(img, 0, 1) * max_value


def ct_like(slices: int, height: int, width: int, seed: int = 3) -> np.ndarray:
    """(S, H, W) int16 Hounsfield units: air outside, a soft-tissue body, two air-filled lungs."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:slices, 0:height, 0:width]
    yn, xn = (y - height / 2) / (height / 2), (x - width / 2) / (width / 2)
    hu = np.full((slices, height, width), -1000.0)
    body = (xn / 0.9) ** 2 + (yn / 0.7) ** 2 < 1
    hu[body] = 40.0
    for cx in (-0.4, 0.4):
        lung = ((xn - cx) / 0.3) ** 2 + (yn / 0.5) ** 2 < 1
        hu[lung] = -850.0
    hu += rng.normal(0, 15, size=hu.shape) + 0 * z
    return np.clip(hu, -1024, 3000).astype(np.int16)


# --------------------------------------------------------------------------- raster files


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def png8(pixels: np.ndarray) -> Sample:
    """8-bit grayscale PNG of an (H, W) array in [0, 255]."""
    arr = np.asarray(pixels).round().astype(np.uint8)
    return Sample(_save(Image.fromarray(arr, "L"), "PNG"), "png", arr.shape, None, "image/png")


def png16(pixels: np.ndarray) -> Sample:
    """16-bit grayscale PNG of an (H, W) array in [0, 65535]."""
    arr = np.asarray(pixels).round().astype(np.uint16)
    data = _save(Image.fromarray(arr), "PNG")
    assert data[24] == 16, "Pillow did not write a 16-bit PNG"  # IHDR bit depth
    return Sample(data, "png", arr.shape, None, "image/png")


def png_rgb(pixels: np.ndarray) -> Sample:
    """8-bit RGB PNG: the (H, W) gray array repeated in three channels."""
    arr = np.repeat(np.asarray(pixels).round().astype(np.uint8)[..., None], 3, axis=2)
    return Sample(
        _save(Image.fromarray(arr, "RGB"), "PNG"), "png", arr.shape[:2], None, "image/png"
    )


def jpeg(pixels: np.ndarray, *, rgb: bool = False) -> Sample:
    """Baseline JPEG (quality 95), gray or RGB, of an (H, W) array in [0, 255]."""
    arr = np.asarray(pixels).round().astype(np.uint8)
    image = Image.fromarray(arr, "L")
    if rgb:
        image = image.convert("RGB")
    return Sample(_save(image, "JPEG", quality=95), "jpeg", arr.shape, None, "image/jpeg")


def tiff16(pixels: np.ndarray) -> Sample:
    """16-bit grayscale TIFF (uncompressed) of an (H, W) array in [0, 65535]."""
    arr = np.asarray(pixels).round().astype(np.uint16)
    data = _save(Image.fromarray(arr), "TIFF")
    check = Image.open(io.BytesIO(data))
    assert check.mode.startswith("I;16"), f"Pillow wrote a {check.mode} TIFF"
    return Sample(data, "tiff", arr.shape, None, "image/tiff")


def tiff8(pixels: np.ndarray, *, rgb: bool = False) -> Sample:
    """8-bit TIFF, gray or 3-channel, of an (H, W) array in [0, 255]."""
    arr = np.asarray(pixels).round().astype(np.uint8)
    image = Image.fromarray(arr, "L")
    if rgb:
        image = image.convert("RGB")
    return Sample(_save(image, "TIFF"), "tiff", arr.shape, None, "image/tiff")


# --------------------------------------------------------------------------- DICOM


def _dicom_dataset(
    sop_class: str, instance: str, series: str, modality: str, pixels: np.ndarray, bits_stored: int
) -> Dataset:
    """A single-frame MONOCHROME2 data set with synthetic patient/study attributes."""
    arr = np.ascontiguousarray(pixels.astype(np.uint16))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = _uid(instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(instance)
    ds.StudyInstanceUID = _uid("1")
    ds.SeriesInstanceUID = _uid("2." + series)
    ds.FrameOfReferenceUID = _uid("3")
    ds.Modality = modality
    ds.PatientName = "Synthetic^Integration"
    ds.PatientID = "ITEST-0001"
    ds.PatientAge = "045Y"
    ds.PatientSex = "O"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(s) for s in arr.shape[-2:])
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = arr.tobytes()
    return ds


def _dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def dicom_dx(pixels: np.ndarray, spacing: tuple[float, float] = (0.2, 0.25)) -> Sample:
    """Chest DX (for presentation), 12 bits stored, PA view, with (row, col) pixel spacing."""
    ds = _dicom_dataset(DX_FOR_PRESENTATION, "10.1", "1", "DX", np.asarray(pixels), 12)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = list(spacing)
    ds.PixelSpacing = list(spacing)
    shape = tuple(int(s) for s in ds.pixel_array.shape)
    return Sample(_dicom_bytes(ds), "dicom", shape, spacing, "application/dicom")


def dicom_mr(pixels: np.ndarray, spacing: tuple[float, float] = (0.9, 0.9)) -> Sample:
    """Axial FLAIR MR slice, 16 bits stored."""
    ds = _dicom_dataset(MR_IMAGE, "20.1", "2", "MR", np.asarray(pixels), 16)
    ds.SeriesDescription = "AX T2 FLAIR"
    ds.BodyPartExamined = "BRAIN"
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 5.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    shape = tuple(int(s) for s in ds.pixel_array.shape)
    return Sample(_dicom_bytes(ds), "dicom", shape, spacing, "application/dicom")


def dicom_xray_phantom(
    pixels: np.ndarray, spacing: tuple[float, float] | None = (0.15, 0.15)
) -> Sample:
    """16-bit DX frame of a phantom; without ``spacing`` the file says nothing of pixel size."""
    ds = _dicom_dataset(DX_FOR_PRESENTATION, "30.1", "3", "DX", np.asarray(pixels), 16)
    if spacing is not None:
        ds.ImagerPixelSpacing = list(spacing)
        ds.PixelSpacing = list(spacing)
    shape = tuple(int(s) for s in ds.pixel_array.shape)
    return Sample(_dicom_bytes(ds), "dicom", shape, spacing, "application/dicom")


def dicom_without_pixels() -> bytes:
    """A well-formed DX object that has no Pixel Data element (→ 422 invalid_dicom)."""
    ds = _dicom_dataset(DX_FOR_PRESENTATION, "40.1", "4", "DX", np.zeros((4, 4)), 12)
    del ds.PixelData
    return _dicom_bytes(ds)


# CT geometry shared by the series, the multi-frame object and the NIfTI volume
CT_SLICES, CT_ROWS, CT_COLS = 20, 48, 64
CT_SPACING = (2.5, 0.7, 0.8)  # (slice, row, col) mm


def ct_series(series: int = 5) -> list[bytes]:
    """One axial CT series as single-frame DICOM files (stored values + RescaleIntercept);
    ``series`` numbers the series (its UIDs), so two calls can make two different series."""
    hu = ct_like(CT_SLICES, CT_ROWS, CT_COLS)
    files = []
    for k in range(CT_SLICES):
        stored = hu[k].astype(np.int32) + 1024
        ds = _dicom_dataset(CT_IMAGE, f"{series}0.{k + 1}", str(series), "CT", stored, 12)
        ds.InstanceNumber = k + 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelSpacing = [CT_SPACING[1], CT_SPACING[2]]
        ds.SliceThickness = CT_SPACING[0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-22.4, -16.8, -100.0 + k * CT_SPACING[0]]
        ds.BodyPartExamined = "CHEST"
        ds.SeriesDescription = "CHEST AXIAL"
        files.append(_dicom_bytes(ds))
    return files


def ct_series_zip() -> bytes:
    """The CT series as a zip (deflated), one file per slice, in a folder, shuffled order."""
    buf = io.BytesIO()
    files = ct_series()
    order = np.random.default_rng(5).permutation(len(files))
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for k in order:
            zf.writestr(f"series/IM{k:04d}.dcm", files[k])
    return buf.getvalue()


def ct_multiframe() -> bytes:
    """The same volume as one Enhanced CT object: functional groups carry the geometry."""
    hu = ct_like(CT_SLICES, CT_ROWS, CT_COLS)
    ds = _dicom_dataset(ENHANCED_CT_IMAGE, "60.1", "6", "CT", hu.astype(np.int32) + 1024, 12)
    ds.NumberOfFrames = CT_SLICES
    ds.BodyPartExamined = "CHEST"
    measures = Dataset()
    measures.PixelSpacing = [CT_SPACING[1], CT_SPACING[2]]
    measures.SliceThickness = CT_SPACING[0]
    measures.SpacingBetweenSlices = CT_SPACING[0]
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform = Dataset()
    transform.RescaleIntercept = -1024
    transform.RescaleSlope = 1
    transform.RescaleType = "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(CT_SLICES):
        position = Dataset()
        position.ImagePositionPatient = [-22.4, -16.8, -100.0 + k * CT_SPACING[0]]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return _dicom_bytes(ds)


def ct_nifti(*, compressed: bool) -> bytes:
    """The volume as NIfTI-1 (RAS+ affine, voxel sizes CT_SPACING), .nii or .nii.gz bytes."""
    hu = ct_like(CT_SLICES, CT_ROWS, CT_COLS)
    # NIfTI stores (x, y, z) = (col, row, slice).
    data = np.ascontiguousarray(np.transpose(hu, (2, 1, 0)))
    affine = np.diag([CT_SPACING[2], CT_SPACING[1], CT_SPACING[0], 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if compressed else raw


# --------------------------------------------------------------------------- helpers


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    """COCO uncompressed RLE (column-major, background first) → (H, W) bool."""
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for run in counts:
        if value:
            flat[pos : pos + run] = True
        pos += run
        value = not value
    return flat.reshape((width, height)).T


def read_png(data: bytes) -> np.ndarray:
    """A PNG's pixels as a numpy array (gray → (H, W), colour → (H, W, C))."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG", image.format
        return np.asarray(image)
