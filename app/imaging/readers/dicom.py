"""DICOM data sets → pixel arrays in meaningful units, with what the file says about itself.

Value pipeline for grayscale (MONOCHROME1/2) frames, in this order:

1. decode the stored values (pydicom 3 decoders; BitsStored respected: unused high bits are
   masked, signed data sign-extended, as pydicom does);
2. MONOCHROME1 only: invert the *stored* values within their BitsStored range
   (unsigned ``v → 2**BitsStored - 1 - v``, signed ``v → -1 - v``), so a MONOCHROME1 file
   holding ``2**BitsStored - 1 - v`` gives exactly the array of a MONOCHROME2 file holding
   ``v`` (high value = bright, whatever the photometric interpretation);
3. modality LUT (RescaleSlope/Intercept → e.g. Hounsfield units for CT, or a Modality LUT);
4. only when asked (``apply_voi_lut=True``, 2D display values): the VOI LUT / window. A
   MONOCHROME1 file with a VOI then skips step 2 (its window is defined on the original
   values) and its VOI output is mirrored within the VOI output range instead.

Colour: RGB / YBR_* → RGB (H, W, 3); PALETTE COLOR → RGB through its palette.
Tag values are read into ``Meta`` only; they never reach an error ``detail``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGExtended12Bit,
)

from app.errors import ImageTooLarge, InvalidDicom, UnsupportedTransferSyntax
from app.imaging.limits import DecodeLimits
from app.imaging.types import DicomSource, Image2D, Meta, SourceFormat

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_MONO = ("MONOCHROME1", "MONOCHROME2")
_RGB_LIKE = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def read_dataset(data: bytes) -> Dataset:
    """Parse DICOM bytes (with or without the 128-byte preamble + ``DICM``).

    Raises InvalidDicom when pydicom cannot parse them; the parser's message (which can
    quote the input) is dropped.
    """
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception:
        raise InvalidDicom("data is not parseable as DICOM") from None
    # pydicom keeps the source stream, which would keep the upload's bytes alive next to the
    # parsed element values (a whole series twice over); every value is already read.
    ds.buffer = None
    return ds


def drop_pixels(ds: Dataset) -> Dataset:
    """Delete the pixel data element once decoded (its bytes are freed at once); the header
    stays for DICOM results."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in ds:
            del ds[keyword]
    return ds


def has_pixels(ds: Dataset) -> bool:
    """Whether the data set holds any pixel data element."""
    return any(k in ds for k in _PIXEL_KEYWORDS)


def get(ds: Dataset, keyword: str) -> Any:
    """A tag's value, or None when absent or malformed (pydicom parses values lazily)."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    return None if value is None or value == "" else value


def as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def as_floats(value: Any, n: int) -> list[float] | None:
    """``n`` finite floats from a multi-valued element, else None."""
    try:
        items = list(value)
    except TypeError:
        return None
    if len(items) != n:
        return None
    out = [as_float(v) for v in items]
    return None if any(v is None for v in out) else [float(v) for v in out if v is not None]


def as_str(value: Any) -> str | None:
    return None if value is None else (str(value).strip() or None)


@dataclass(frozen=True)
class PixelInfo:
    """The Image Pixel module, validated."""

    rows: int
    cols: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str
    keyword: str

    @property
    def is_mono(self) -> bool:
        return self.photometric in _MONO


def _int_tag(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = get(ds, keyword)
    if value is None:
        if default is None:
            raise InvalidDicom(f"required element {keyword} is missing")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidDicom(f"element {keyword} is malformed") from None


def pixel_info(ds: Dataset) -> PixelInfo:
    """Validate the Image Pixel module; InvalidDicom for missing/absurd values."""
    keyword = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
    if keyword is None:
        raise InvalidDicom("DICOM file has no pixel data")
    rows = _int_tag(ds, "Rows")
    cols = _int_tag(ds, "Columns")
    frames = _int_tag(ds, "NumberOfFrames", 1)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    bits_allocated = _int_tag(ds, "BitsAllocated")
    bits_stored = _int_tag(ds, "BitsStored", bits_allocated)
    pixel_rep = _int_tag(ds, "PixelRepresentation", 0)
    photometric = as_str(get(ds, "PhotometricInterpretation"))
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise InvalidDicom("DICOM image has zero size")
    if samples not in (1, 3) or bits_allocated not in (1, 8, 16, 32, 64):
        raise InvalidDicom("DICOM pixel format is not supported")
    if not 1 <= bits_stored <= bits_allocated or pixel_rep not in (0, 1):
        raise InvalidDicom("DICOM pixel description is inconsistent")
    if photometric is None:
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
    photometric = photometric.upper()
    if photometric in _MONO or photometric == "PALETTE COLOR":
        if samples != 1:
            raise InvalidDicom("DICOM photometric interpretation does not match its samples")
    elif photometric in _RGB_LIKE:
        if samples != 3:
            raise InvalidDicom("DICOM photometric interpretation does not match its samples")
    else:
        raise InvalidDicom("DICOM photometric interpretation is not supported")
    return PixelInfo(
        rows, cols, frames, samples, bits_allocated, bits_stored, pixel_rep, photometric, keyword
    )


def _transfer_syntax(ds: Dataset) -> str:
    """The pixel data's transfer syntax UID; inferred from the encoding when the file meta
    lacks it (only possible for native, i.e. not encapsulated, pixel data)."""
    meta = getattr(ds, "file_meta", None)
    uid = get(meta, "TransferSyntaxUID") if meta is not None else None
    if uid is not None:
        return str(uid)
    try:
        encapsulated = bool(ds["PixelData"].is_undefined_length) if "PixelData" in ds else False
    except Exception:
        encapsulated = True
    if encapsulated:
        raise InvalidDicom("compressed pixel data without a transfer syntax")
    implicit, little = ds.original_encoding
    if little is False:
        inferred = ExplicitVRBigEndian
    else:
        inferred = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = inferred
    return str(inferred)


def pixel_decoder(ds: Dataset, info: PixelInfo) -> Decoder:
    """The installed decoder for the data set's transfer syntax, after the length check.

    UnsupportedTransferSyntax when no installed plugin reads the syntax (or this variant of
    it: JPEG Extended with 12-bit samples needs pylibjpeg-libjpeg, which is not installed);
    InvalidDicom when native pixel data is shorter than Rows × Columns × Frames declare.
    """
    uid = _transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        raise UnsupportedTransferSyntax(
            "no installed decoder reads this DICOM transfer syntax"
        ) from None
    if not decoder.is_available:
        raise UnsupportedTransferSyntax("no installed decoder reads this DICOM transfer syntax")
    if (
        uid == JPEGExtended12Bit
        and info.bits_stored > 8
        and "pylibjpeg" not in decoder.available_plugins
    ):
        raise UnsupportedTransferSyntax(
            "JPEG Extended with 12-bit samples: no installed decoder reads it"
        )
    if decoder.is_native:
        expected = info.rows * info.cols * info.samples * info.frames
        expected = (
            (expected + 7) // 8
            if info.bits_allocated == 1
            else expected * (info.bits_allocated // 8)
        )
        if info.photometric == "YBR_FULL_422":
            expected = expected // 3 * 2
        try:
            actual = len(ds[info.keyword].value)
        except Exception:
            raise InvalidDicom("DICOM pixel data is malformed") from None
        if actual < expected:
            raise InvalidDicom("DICOM pixel data is shorter than Rows × Columns × Frames declare")
    return decoder


def iter_frames(
    ds: Dataset, decoder: Decoder, indices: list[int] | None = None
) -> Iterator[np.ndarray]:
    """Decoded frames one at a time, (rows, cols) or (rows, cols, 3) (YBR already → RGB)."""
    try:
        for arr, props in decoder.iter_array(ds, indices=indices, as_rgb=True):
            converted = props.get("photometric_interpretation")
            if arr.ndim == 3 and converted in ("YBR_FULL", "YBR_FULL_422"):
                raise InvalidDicom("DICOM colour data could not be converted to RGB")
            yield arr
    except InvalidDicom:
        raise
    except MemoryError:
        raise
    except Exception:  # decoder plugins' messages can quote the input
        raise InvalidDicom("DICOM pixel data could not be decoded") from None


def invert_stored(arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    """MONOCHROME1 → MONOCHROME2 on stored values, exact for integers (see module doc)."""
    out: np.ndarray
    if arr.dtype.kind == "f":
        out = -arr
    elif info.pixel_representation == 1:
        out = -1 - arr.astype(np.int64)
    else:
        out = (2**info.bits_stored - 1) - arr.astype(np.int64)
    return out


def _has_voi(ds: Dataset) -> bool:
    return bool(get(ds, "VOILUTSequence")) or (
        get(ds, "WindowCenter") is not None and get(ds, "WindowWidth") is not None
    )


def _voi_range(ds: Dataset, info: PixelInfo) -> tuple[float, float]:
    """The output range of ``apply_voi_lut`` (LUT: 0..2**bits-1; window: the value range)."""
    seq = get(ds, "VOILUTSequence")
    if seq:
        try:
            bits = int(seq[0].LUTDescriptor[2])
            return 0.0, float(2**bits - 1)
        except Exception:
            pass
    seq = get(ds, "ModalityLUTSequence")
    if seq:
        try:
            return 0.0, float(2 ** int(seq[0].LUTDescriptor[2]) - 1)
        except Exception:
            pass
    if info.pixel_representation == 0:
        lo, hi = 0.0, float(2**info.bits_stored - 1)
    else:
        lo, hi = float(-(2 ** (info.bits_stored - 1))), float(2 ** (info.bits_stored - 1) - 1)
    slope = as_float(get(ds, "RescaleSlope"))
    inter = as_float(get(ds, "RescaleIntercept"))
    if slope is not None and inter is not None:
        lo, hi = sorted((lo * slope + inter, hi * slope + inter))
    return lo, hi


def gray_values(
    frame: np.ndarray,
    ds: Dataset,
    info: PixelInfo,
    *,
    voi: bool = False,
    rescale: tuple[float, float] | None = None,
) -> np.ndarray:
    """A decoded grayscale frame → float values (see the module doc for the order of steps).

    ``rescale`` overrides the data set's modality LUT with (slope, intercept), e.g. from an
    enhanced multi-frame functional group.
    """
    use_voi = voi and _has_voi(ds)
    invert = info.photometric == "MONOCHROME1"
    if not (use_voi or invert or rescale is not None):
        exact = _integer_rescale(frame, ds, info)
        if exact is not None:
            return exact
    values: np.ndarray = frame
    try:
        if invert and not use_voi:
            values = invert_stored(values, info)
        if rescale is not None:
            values = values.astype(np.float64) * rescale[0] + rescale[1]
        elif info.keyword == "PixelData":
            values = apply_modality_lut(values, ds)
        if use_voi:
            values = apply_voi_lut(values, ds)
            if invert:
                lo, hi = _voi_range(ds, info)
                values = (lo + hi) - values.astype(np.float64)
    except Exception:
        raise InvalidDicom("DICOM value transform (LUT, window) is malformed") from None
    return np.asarray(values, dtype=np.float32)


def _integer_rescale(frame: np.ndarray, ds: Dataset, info: PixelInfo) -> np.ndarray | None:
    """The modality rescale in float32 where that is exact, else None: 8/16-bit integer
    samples, a whole-number slope and intercept, results within float32's 24-bit integers.
    It gives what ``apply_modality_lut``'s float64 pass rounded to float32 gives (every value
    is an integer float32 holds exactly), without the float64 volume."""
    if frame.dtype.kind not in "ui" or frame.dtype.itemsize > 2 or info.keyword != "PixelData":
        return None
    if get(ds, "ModalityLUTSequence"):
        return None
    present = ("RescaleSlope" in ds, "RescaleIntercept" in ds)
    if not all(present):  # pydicom rescales only when both are present
        return None if any(present) else frame.astype(np.float32)
    raw_slope, raw_inter = get(ds, "RescaleSlope"), get(ds, "RescaleIntercept")
    slope, inter = as_float(raw_slope), as_float(raw_inter)
    if slope is None or inter is None or not (slope.is_integer() and inter.is_integer()):
        return None
    if abs(slope) * 65536 + abs(inter) >= 2**24:
        return None
    out = frame.astype(np.float32)
    if slope != 1.0:
        out *= np.float32(slope)
    if inter != 0.0:
        out += np.float32(inter)
    return out


def int16_rescale(ds: Dataset, info: PixelInfo) -> tuple[int, int] | None:
    """(slope, intercept) when ``gray_values`` of this image's frames are whole numbers (a CT
    slice's HU): MONOCHROME2, 8/16-bit integer samples, no modality LUT sequence, a
    whole-number rescale (or none). None otherwise. Whether they fit int16 is for
    ``write_int16`` to tell, frame by frame (a signed 16-bit CT with intercept -1024 could
    reach -33792 in principle; its actual HU never do)."""
    if info.photometric != "MONOCHROME2" or info.keyword != "PixelData" or info.samples != 1:
        return None
    if info.bits_allocated not in (8, 16) or get(ds, "ModalityLUTSequence"):
        return None
    present = ("RescaleSlope" in ds, "RescaleIntercept" in ds)
    if not any(present):
        return 1, 0
    if not all(present):  # pydicom rescales only when both are present
        return None
    slope, inter = as_float(get(ds, "RescaleSlope")), as_float(get(ds, "RescaleIntercept"))
    if slope is None or inter is None or not (slope.is_integer() and inter.is_integer()):
        return None
    if abs(slope) > 2**15 or abs(inter) > 2**30:
        return None
    return int(slope), int(inter)


_INT16 = np.iinfo(np.int16)


def write_int16(out: np.ndarray, frame: np.ndarray, slope: int, inter: int) -> bool:
    """``out`` (an int16 slice of a volume) ← ``frame * slope + inter``, the values
    ``gray_values`` gives (see ``int16_rescale``); False, with ``out`` untouched, when one of
    them does not fit int16."""
    if frame.dtype.kind not in "ui" or frame.dtype.itemsize > 2:
        return False
    low, high = int(frame.min()), int(frame.max())
    ends = (low * slope + inter, high * slope + inter)
    if min(ends) < _INT16.min or max(ends) > _INT16.max:
        return False
    if slope == 1 and frame.dtype.itemsize == 2:
        # every result fits int16, so 16-bit wrap-around arithmetic gives it exactly (the
        # sum is the same modulo 2**16): no int32 pass, no casting loop
        np.add(frame.view(np.int16), np.int16(_wrap16(inter)), out=out)
    else:
        np.add(np.multiply(frame, np.int32(slope), dtype=np.int32), np.int32(inter), out=out,
               casting="unsafe")  # fmt: skip
    return True


def _wrap16(value: int) -> int:
    """``value`` modulo 2**16 as a signed 16-bit number."""
    return (value + 2**15) % 2**16 - 2**15


def untransformed(frame: np.ndarray, ds: Dataset, info: PixelInfo, *, voi: bool = False) -> bool:
    """Whether ``gray_values`` would give the stored 8/16-bit samples unchanged (as float32):
    MONOCHROME2, no modality LUT or an identity rescale, no VOI applied."""
    if frame.ndim != 2 or frame.dtype not in (np.uint8, np.uint16):
        return False
    if info.photometric != "MONOCHROME2" or info.keyword != "PixelData":
        return False
    if (voi and _has_voi(ds)) or get(ds, "ModalityLUTSequence"):
        return False
    slope, inter = get(ds, "RescaleSlope"), get(ds, "RescaleIntercept")
    return (slope is None or as_float(slope) == 1.0) and (inter is None or as_float(inter) == 0.0)


def colour_values(frame: np.ndarray, ds: Dataset, info: PixelInfo) -> np.ndarray:
    """A decoded colour frame → (H, W, 3) float32 RGB."""
    if info.photometric == "PALETTE COLOR":
        try:
            frame = np.asarray(apply_color_lut(frame, ds))
        except Exception:
            raise InvalidDicom("DICOM palette is malformed") from None
        frame = frame[..., :3]
    out: np.ndarray = np.asarray(frame, dtype=np.float32)
    return out


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        values = as_floats(get(ds, keyword), 2)
        if values is not None and values[0] > 0 and values[1] > 0:
            return values[0], values[1]
    return None


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, col) spacing in mm: PixelSpacing, else ImagerPixelSpacing, else the shared
    functional group's PixelMeasures (enhanced multi-frame), else None."""
    found = _pixel_spacing(ds)
    if found is None:
        measures = functional(ds, "PixelMeasuresSequence")
        if measures is not None:
            found = _pixel_spacing(measures)
    return found


def functional(ds: Dataset, sequence: str, frame: int | None = None) -> Dataset | None:
    """The first item of ``sequence`` in the per-frame functional group of ``frame``, else in
    the shared functional group, else None (enhanced multi-frame objects)."""
    groups: list[Any] = []
    if frame is not None:
        per_frame = get(ds, "PerFrameFunctionalGroupsSequence")
        if per_frame is not None and frame < len(per_frame):
            groups.append(per_frame[frame])
    shared = get(ds, "SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        seq = get(group, sequence)
        if seq:
            item: Dataset = seq[0]
            return item
    return None


def parse_age(value: Any) -> float | None:
    """DICOM AS (``"005Y"``, ``"018M"``, ``"010W"``, ``"020D"``) → years, else None."""
    text = as_str(value)
    if text is None:
        return None
    match = _AGE.match(text.upper())
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]


def dicom_meta(ds: Dataset, info: PixelInfo, fmt: SourceFormat, **extra: object) -> Meta:
    """Conformance metadata (never PatientName/PatientID)."""
    age = parse_age(get(ds, "PatientAge"))
    thickness = as_float(get(ds, "SliceThickness"))
    if thickness is None:
        measures = functional(ds, "PixelMeasuresSequence", 0)
        thickness = as_float(get(measures, "SliceThickness")) if measures is not None else None
    return Meta(
        format=fmt,
        modality=as_str(get(ds, "Modality")),
        photometric=info.photometric,
        view_position=as_str(get(ds, "ViewPosition")),
        bits_stored=info.bits_stored,
        patient_age_known=age is not None,
        patient_age_years=age,
        series_description=as_str(get(ds, "SeriesDescription")),
        slice_thickness_mm=thickness,
        body_part=as_str(get(ds, "BodyPartExamined")),
        extra=dict(extra),
    )


def frame_values(
    frame: np.ndarray, ds: Dataset, info: PixelInfo, *, voi: bool = False
) -> np.ndarray:
    """Gray → (H, W) float32, colour → (H, W, 3) float32."""
    if info.is_mono:
        return gray_values(frame, ds, info, voi=voi)
    return colour_values(frame, ds, info)


def decode_dicom_image(
    ds: Dataset, info: PixelInfo, limits: DecodeLimits, *, apply_voi_lut: bool = False
) -> Image2D:
    """A single-frame DICOM data set → Image2D.

    ``pixels``: (Rows, Columns) float32 after the modality LUT (and the VOI LUT when
    ``apply_voi_lut``), MONOCHROME1 inverted; (Rows, Columns, 3) float32 RGB for colour.
    ``spacing``: (row, col) mm from PixelSpacing, else ImagerPixelSpacing, else None.
    """
    if info.frames != 1:
        raise InvalidDicom(f"DICOM holds {info.frames} frames; one 2D image was expected")
    if info.rows * info.cols > limits.max_image_pixels:
        raise ImageTooLarge(
            f"image has {info.rows * info.cols} pixels; the limit is {limits.max_image_pixels}"
        )
    decoder = pixel_decoder(ds, info)
    # the decoded frame and its float values
    limits.reserve(info.rows * info.cols * info.samples * (4 + max(1, info.bits_allocated // 8)))
    frame = next(iter_frames(ds, decoder, [0]))
    # untransformed 8/16-bit samples: kept as they are (what frame_values gives is their
    # float32 copy, made by Image2D when first read)
    stored = (
        np.ascontiguousarray(frame) if untransformed(frame, ds, info, voi=apply_voi_lut) else None
    )
    pixels = None if stored is not None else frame_values(frame, ds, info, voi=apply_voi_lut)
    meta = dicom_meta(ds, info, "dicom", transfer_syntax=str(ds.file_meta.TransferSyntaxUID))
    return Image2D(
        pixels=None if pixels is None else np.ascontiguousarray(pixels),
        spacing=pixel_spacing(ds),
        meta=meta,
        dicom=DicomSource((drop_pixels(ds),)),
        stored=stored,
    )
