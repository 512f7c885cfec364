"""Writes the malformed-input corpus next to this file (run it to regenerate; the files are
committed so that anyone can send them to a running service with curl).

Every DICOM here carries the canary PatientName ``CANARY^PATIENT`` and PatientID ``CANARY-0042``:
they must never appear in a response, a log line, a metric or a file on disk.

    python tests/data/bad/make_corpus.py
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).parent
CANARY_NAME = "CANARY^PATIENT"
CANARY_ID = "CANARY-0042"
_RNG = np.random.default_rng(20261122)


def _raster(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_RNG.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def dicom_slice(
    z: float = 0.0,
    series: str | None = None,
    pixels: bool = True,
    syntax: str = ExplicitVRLittleEndian,
    size: int = 8,
) -> bytes:
    """A small CT slice with the canary patient tags."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = CANARY_NAME
    ds.PatientID = CANARY_ID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series or "1.2.826.0.1.3680043.8.498.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 5.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    if pixels and syntax == ExplicitVRLittleEndian:
        ds.PixelData = np.full((size, size), -800, np.int16).tobytes()
    elif pixels:
        ds.PixelData = encapsulate([_RNG.bytes(200)])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _nifti(data: np.ndarray) -> bytes:
    img = nib.Nifti1Image(data, np.diag([0.7, 0.7, 5.0, 1.0]))
    return bytes(img.to_bytes())


def absurd_nifti_header() -> bytes:
    """A NIfTI-1 header claiming 32767 x 32767 x 32767 int16 voxels, and 64 bytes of data."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((100, 100, 100))
    raw = bytearray(header.binaryblock)
    struct.pack_into("<8h", raw, 40, 3, 32767, 32767, 32767, 1, 1, 1, 1)
    return bytes(raw) + b"\0" * 4 + b"\1" * 64


def corpus() -> dict[str, bytes]:
    png, jpeg, tiff = _raster("PNG"), _raster("JPEG"), _raster("TIFF")
    good_slice = dicom_slice()
    gz = gzip.compress(_nifti(np.full((8, 8, 8), -500, np.int16)))
    nan = np.zeros((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    return {
        "empty.bin": b"",
        "random.bin": _RNG.bytes(4096),
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.tif": tiff[: len(tiff) // 2],
        "truncated.dcm": good_slice[: len(good_slice) - 60],
        "truncated.nii.gz": gz[: len(gz) // 2],
        "no_pixels.dcm": dicom_slice(pixels=False),
        "mpeg2_no_decoder.dcm": dicom_slice(syntax=MPEG2MPML),
        "absurd_dims.nii": absurd_nifti_header(),
        "nan_voxels.nii": _nifti(nan),
        "four_d.nii": _nifti(np.zeros((4, 4, 4, 3), np.int16)),
        "zip_traversal.zip": _zip(
            {f"../../evil_{i}.dcm": dicom_slice(z=5.0 * i) for i in range(3)}
        ),
        "two_series.zip": _zip(
            {
                **{f"a{i}.dcm": dicom_slice(z=5.0 * i, series="1.2.3.1") for i in range(3)},
                **{f"b{i}.dcm": dicom_slice(z=5.0 * i, series="1.2.3.2") for i in range(3)},
            }
        ),
        "missing_slice.zip": _zip({f"s{i}.dcm": dicom_slice(z=5.0 * i) for i in (0, 1, 2, 4, 5)}),
    }


def main() -> None:
    for name, data in corpus().items():
        (HERE / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
