"""Single DICOM images → Image2D: value pipeline, metadata, errors, privacy."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_factories import (
    CANARY_ID,
    CANARY_NAME,
    ct_series,
    ct_volume,
    dicom_bytes,
    image_dataset,
    nifti_bytes,
    zip_bytes,
)
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from app.errors import (
    ImageTooLarge,
    InconsistentSeries,
    InvalidDicom,
    MedserveError,
    UnsupportedTransferSyntax,
)
from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode, decode_image, decode_volume, sniff
from app.imaging.readers.dicom import parse_age

LIMITS = DecodeLimits()
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"


def test_ct_rescale_gives_hounsfield_units() -> None:
    stored = np.array([[0, 1000], [2000, 3000]], np.int16)
    ds = image_dataset(
        stored, signed=True, modality="CT", RescaleSlope=1.0, RescaleIntercept=-1024.0
    )
    img = decode_image([dicom_bytes(ds)], LIMITS)
    np.testing.assert_array_equal(img.pixels, stored.astype(np.float32) - 1024)
    assert img.pixels.dtype == np.float32
    assert img.meta.format == "dicom" and img.meta.modality == "CT"


@pytest.mark.parametrize(("bits", "signed"), [(12, False), (16, False), (12, True), (8, False)])
def test_monochrome1_equals_inverted_monochrome2(bits: int, signed: bool) -> None:
    rng = np.random.default_rng(bits)
    if signed:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        v = rng.integers(lo, hi + 1, size=(8, 9)).astype(np.int16)
        inverted = (-1 - v.astype(np.int32)).astype(np.int16)
    else:
        dtype = np.uint8 if bits == 8 else np.uint16
        v = rng.integers(0, 2**bits, size=(8, 9)).astype(dtype)
        inverted = ((2**bits - 1) - v.astype(np.int64)).astype(dtype)
    tags = {"RescaleSlope": 0.5, "RescaleIntercept": 7.0}
    mono2 = image_dataset(v, bits_stored=bits, signed=signed, **tags)
    mono1 = image_dataset(
        inverted, bits_stored=bits, signed=signed, photometric="MONOCHROME1", **tags
    )
    a = decode_image([dicom_bytes(mono2)], LIMITS).pixels
    b = decode_image([dicom_bytes(mono1)], LIMITS).pixels
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, v.astype(np.float64) * 0.5 + 7.0)


def test_monochrome1_is_bright_where_stored_low() -> None:
    stored = np.array([[0, 4095]], np.uint16)
    ds = image_dataset(stored, bits_stored=12, photometric="MONOCHROME1")
    px = decode_image([dicom_bytes(ds)], LIMITS).pixels
    assert px[0, 0] == 4095.0 and px[0, 1] == 0.0


def test_bits_stored_masks_high_bits() -> None:
    stored = np.array([[0xF123, 0x0FFF]], np.uint16)  # garbage in the 4 unused bits
    px = decode_image([dicom_bytes(image_dataset(stored, bits_stored=12))], LIMITS).pixels
    np.testing.assert_array_equal(px, [[0x123, 0xFFF]])


def test_voi_lut_window_on_request() -> None:
    stored = np.arange(0, 4096, 64, dtype=np.uint16).reshape(8, 8)
    ds = image_dataset(stored, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    data = dicom_bytes(ds)
    raw = decode_image([data], LIMITS).pixels
    windowed = decode_image([data], LIMITS, apply_voi_lut=True).pixels
    np.testing.assert_array_equal(raw, stored.astype(np.float32))
    ref = apply_voi_lut(apply_modality_lut(stored, ds), ds)
    np.testing.assert_allclose(windowed, ref.astype(np.float32))
    assert windowed.min() == 0 and windowed.max() == 4095


def test_voi_on_monochrome1_is_mirrored_to_bright_high() -> None:
    stored = np.array([[0, 2048, 4095]], np.uint16)
    mono1 = image_dataset(
        stored, bits_stored=12, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096
    )
    px = decode_image([dicom_bytes(mono1)], LIMITS, apply_voi_lut=True).pixels
    assert px[0, 0] > px[0, 1] > px[0, 2]  # low stored values are bright in MONOCHROME1


def test_spacing_and_meta() -> None:
    ds = image_dataset(
        np.zeros((4, 6), np.uint16),
        modality="DX",
        ImagerPixelSpacing=[0.15, 0.2],
        ViewPosition="PA",
        PatientAge="045Y",
        BodyPartExamined="CHEST",
        SeriesDescription="PA chest",
    )
    img = decode_image([dicom_bytes(ds)], LIMITS)
    assert img.shape == (4, 6)
    assert img.spacing == pytest.approx((0.15, 0.2))
    meta = img.meta
    assert (meta.modality, meta.view_position, meta.body_part) == ("DX", "PA", "CHEST")
    assert meta.patient_age_known and meta.patient_age_years == 45.0
    assert meta.bits_stored == 16 and meta.photometric == "MONOCHROME2"
    ds.PixelSpacing = [0.1, 0.1]  # PixelSpacing wins over ImagerPixelSpacing
    assert decode_image([dicom_bytes(ds)], LIMITS).spacing == pytest.approx((0.1, 0.1))
    del ds.PixelSpacing, ds.ImagerPixelSpacing, ds.PatientAge
    img = decode_image([dicom_bytes(ds)], LIMITS)
    assert img.spacing is None and not img.meta.patient_age_known


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("005Y", 5.0),
        ("018M", 1.5),
        ("010W", 70 / 365.25),
        ("020D", 20 / 365.25),
        ("", None),
        ("abc", None),
        ("12", None),
    ],
)
def test_parse_age(text: str, years: float | None) -> None:
    got = parse_age(text)
    assert got == (None if years is None else pytest.approx(years))


def test_without_preamble() -> None:
    ds = image_dataset(np.arange(12, dtype=np.uint16).reshape(3, 4))
    data = dicom_bytes(ds, preamble=False)
    assert data[128:132] != b"DICM"
    assert sniff(data) == "dicom"
    np.testing.assert_array_equal(decode_image([data], LIMITS).pixels, np.arange(12).reshape(3, 4))


def test_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, size=(4, 5, 3), dtype=np.uint8)
    ds = image_dataset(rgb[..., 0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = rgb.tobytes()
    img = decode_image([dicom_bytes(ds)], LIMITS)
    np.testing.assert_array_equal(img.pixels, rgb.astype(np.float32))


def test_multiframe_refused_by_2d_endpoint() -> None:
    data = dicom_bytes(image_dataset(np.zeros((3, 4, 4), np.uint16)))
    with pytest.raises(InvalidDicom, match="3 frames; one 2D image was expected"):
        decode_image([data], LIMITS)
    one = dicom_bytes(image_dataset(np.ones((1, 4, 4), np.uint16)))  # multi-frame with 1 frame
    assert decode_image([one], LIMITS).shape == (4, 4)


def test_no_pixel_data() -> None:
    ds = image_dataset(np.zeros((4, 4), np.uint16))
    del ds.PixelData
    with pytest.raises(InvalidDicom, match="no pixel data"):
        decode_image([dicom_bytes(ds)], LIMITS)


def test_short_pixel_data() -> None:
    ds = image_dataset(np.zeros((4, 4), np.uint16))
    ds.PixelData = ds.PixelData[:20]
    with pytest.raises(InvalidDicom, match="shorter"):
        decode_image([dicom_bytes(ds)], LIMITS)


def test_garbage_after_dicm() -> None:
    with pytest.raises(InvalidDicom):
        decode_image([b"\0" * 128 + b"DICM" + os.urandom(64)], LIMITS)


def mpeg2(**tags: object) -> bytes:
    """A data set claiming MPEG2 (no installed decoder), pixel data encapsulated."""
    ds = image_dataset(np.zeros((4, 4), np.uint8), **tags)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 12])
    return dicom_bytes(ds)


def test_unknown_transfer_syntax() -> None:
    data = mpeg2()
    with pytest.raises(UnsupportedTransferSyntax):
        decode_image([data], LIMITS)


def test_jpeg_extended_12bit_has_no_installed_decoder() -> None:
    with pytest.raises(UnsupportedTransferSyntax):
        decode_image([(TEST_FILES / "JPGExtended.dcm").read_bytes()], LIMITS)


def test_pixel_limit_checked_from_header() -> None:
    data = dicom_bytes(image_dataset(np.zeros((100, 100), np.uint8)))
    with pytest.raises(ImageTooLarge):
        decode_image([data], DecodeLimits(max_image_pixels=9999))


@pytest.mark.filterwarnings("ignore:The pixel data is 8320 bytes long")
def test_same_image_in_every_transfer_syntax() -> None:
    """MR_small in native LE/BE, implicit, RLE, JPEG 2000 and JPEG-LS lossless: one array."""
    names = [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_padded.dcm",
    ]
    arrays = [decode_image([(TEST_FILES / n).read_bytes()], LIMITS).pixels for n in names]
    for name, arr in zip(names[1:], arrays[1:], strict=True):
        np.testing.assert_array_equal(arr, arrays[0], err_msg=name)


def _canary_inputs() -> list[tuple[list[bytes], type[MedserveError] | None]]:
    good = image_dataset(np.zeros((4, 4), np.uint16), PatientAge="030Y")
    short = image_dataset(np.zeros((4, 4), np.uint16))
    short.PixelData = short.PixelData[:10]
    nopix = image_dataset(np.zeros((4, 4), np.uint16))
    del nopix.PixelData
    multi = image_dataset(np.zeros((2, 4, 4), np.uint16))
    series = ct_series(ct_volume(slices=3))
    gapped = ct_series(ct_volume(slices=5))
    del gapped[2]
    return [
        ([dicom_bytes(good)], None),
        ([dicom_bytes(short)], InvalidDicom),
        ([dicom_bytes(nopix)], InvalidDicom),
        ([mpeg2()], UnsupportedTransferSyntax),
        ([dicom_bytes(multi)], None),  # decode(): a multi-frame object is a volume
        ([dicom_bytes(good), dicom_bytes(good)], InconsistentSeries),  # no geometry
        # Canary entry names too: a file name must never reach a detail either.
        ([zip_bytes([(f"{CANARY_NAME}/{CANARY_ID}-{i}", s) for i, s in enumerate(series)])], None),
        ([zip_bytes([(f"{CANARY_ID}-{i}", s) for i, s in enumerate(gapped)])], InconsistentSeries),
    ]


def test_canary_never_in_errors_or_meta_and_nothing_on_disk() -> None:
    tmp = tempfile.gettempdir()
    before = set(os.listdir(tmp))
    seen = 0
    for parts, error in _canary_inputs():
        try:
            out = decode(parts, LIMITS)
            texts = [repr(out.meta)]
            assert error is None
        except MedserveError as exc:
            assert error is not None and isinstance(exc, error), repr(exc)
            texts = [str(exc), exc.detail or "", repr(exc.args)]
            seen += 1
        for text in texts:
            assert CANARY_NAME not in text and "CANARY" not in text, text
            assert CANARY_ID not in text
    assert seen == 5
    assert set(os.listdir(tmp)) == before


def test_nothing_written_for_any_reader() -> None:
    tmp = tempfile.gettempdir()
    before = set(os.listdir(tmp))
    decode_volume([zip_bytes([(f"{i}", s) for i, s in enumerate(ct_series(ct_volume()))])], LIMITS)
    decode_volume([nifti_bytes(np.zeros((3, 3, 3), np.int16))], LIMITS)
    assert set(os.listdir(tmp)) == before


@pytest.mark.parametrize(
    ("slope", "intercept", "dtype", "bits"),
    [(1, -1024, np.uint16, 12), (1, 0, np.uint16, 16), (2, -3000, np.uint16, 12),
     (1, -1024, np.int16, 16), (1, 5, np.uint8, 8), (0.5, -1024, np.uint16, 12),
     (1, -1024.5, np.uint16, 12), (300, 0, np.uint16, 16), (None, None, np.uint16, 16)],
)  # fmt: skip
def test_float32_rescale_equals_pydicoms_modality_lut(
    slope: float | None, intercept: float | None, dtype: type, bits: int
) -> None:
    """Whole-number rescales are applied in float32 (exact there); the others, and results
    past float32's integers, take pydicom's float64 pass. Both give the same float32 values."""
    from pydicom.pixels.processing import apply_modality_lut

    from app.imaging.readers.dicom import gray_values, pixel_info

    rng = np.random.default_rng(bits)
    info = np.iinfo(dtype)
    top = min(int(info.max), 2**bits - 1)
    stored = rng.integers(max(int(info.min), -(2 ** (bits - 1))), top + 1, (23, 17)).astype(dtype)
    tags = {} if slope is None else {"RescaleSlope": slope, "RescaleIntercept": intercept}
    ds = image_dataset(stored, bits_stored=bits, signed=np.dtype(dtype).kind == "i", **tags)
    frame = stored.copy()
    got = gray_values(frame, ds, pixel_info(ds))
    expected = np.asarray(apply_modality_lut(frame, ds), dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
