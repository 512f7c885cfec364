"""DICOM series (zip or several parts) and multi-frame DICOM → Volume."""

from __future__ import annotations

import io
import os
import random
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from imaging_factories import (
    ct_series,
    ct_slice,
    ct_volume,
    dicom_bytes,
    enhanced_ct,
    image_dataset,
    nifti_like_series,
    zip_bytes,
)
from pydicom.uid import generate_uid

from app.errors import (
    InconsistentSeries,
    InvalidDicom,
    InvalidVolume,
    MedserveError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode, decode_volume
from app.imaging.types import Volume

LIMITS = DecodeLimits()


def shuffled(items: list[bytes], seed: int = 3) -> list[bytes]:
    out = list(items)
    random.Random(seed).shuffle(out)
    assert out != items
    return out


def as_zip(slices: list[bytes]) -> bytes:
    # Names sort in an order that is neither anatomical nor acquisition order.
    return zip_bytes([(f"IMG{(7 * i) % 11:04d}.dcm", s) for i, s in enumerate(slices)])


def test_shuffled_zip_sorts_by_position_and_gives_hu() -> None:
    volume = ct_volume()
    vol = decode_volume([as_zip(shuffled(ct_series(volume)))], LIMITS)
    assert isinstance(vol, Volume)
    np.testing.assert_array_equal(vol.voxels, volume)
    assert vol.voxels.dtype == np.int16  # whole-number HU in int16's range
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert vol.meta.format == "dicom_series"
    assert vol.meta.modality == "CT"
    assert vol.meta.slice_thickness_mm == 2.5
    assert vol.meta.series_description == "CHEST"
    assert vol.meta.extra["geometry"] == "positions"


def _series_of(volume: np.ndarray, slopes: list[float], intercept: float = -1024.0) -> list[bytes]:
    uid = generate_uid()
    return [
        dicom_bytes(
            ct_slice(volume[k], 10.0 + 2.5 * k, series_uid=uid, instance=k + 1,
                     slope=slopes[k], intercept=intercept)
        )
        for k in range(volume.shape[0])
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        ("hu", np.int16),  # signed 16-bit stored, intercept -1024: HU fit int16
        ("beyond_int16", np.float32),  # one slice's values do not: widened mid-way
        ("fractional_slope", np.float32),  # not whole numbers
    ],
)
def test_series_volume_is_int16_where_the_hu_fit_and_the_same_values_as_float32(
    case: str, dtype: type
) -> None:
    """A series is kept as int16 when every slice's rescale gives whole numbers that int16
    holds: the same values as the float32 volume (compared with the data sets' own modality
    LUT), in half the memory; a slice that does not fit widens the volume to float32 with the
    slices already written kept; and the CT model's input tensor is the same either way."""
    from pydicom import dcmread
    from pydicom.pixels import apply_modality_lut

    from app.imaging.card import Intensity, Preprocessing
    from app.imaging.preprocess import preprocess

    volume = ct_volume(slices=6, rows=6, cols=5, seed=21)
    slopes = [2.0] * 6
    if case == "beyond_int16":
        volume[3] = 34000 + 2 * np.arange(30, dtype=np.float32).reshape(6, 5)  # past int16
    if case == "fractional_slope":
        slopes = [0.5] * 6
        volume = volume / 4
    slices = _series_of(volume, slopes)
    vol = decode_volume(shuffled(slices), LIMITS)
    assert vol.voxels.dtype == dtype
    expected = np.stack(
        [apply_modality_lut(ds.pixel_array, ds) for ds in (dcmread(io.BytesIO(b)) for b in slices)]
    )
    np.testing.assert_array_equal(vol.voxels, expected.astype(np.float32))
    prep = Preprocessing(
        kind="volume3d", size=[4, 4, 4], channels=1,
        intensity=Intensity(method="window", low=-1000, high=400), resize="trilinear",
    )  # fmt: skip
    as_float = Volume(np.asarray(vol.voxels, dtype=np.float32), vol.spacing, vol.meta)
    np.testing.assert_allclose(
        preprocess(vol, prep, "NDHWC"), preprocess(as_float, prep, "NDHWC"), atol=1e-6
    )


def test_several_parts_same_as_zip() -> None:
    volume = ct_volume(seed=1)
    parts = shuffled(ct_series(volume), seed=5)
    np.testing.assert_array_equal(decode_volume(parts, LIMITS).voxels, volume)
    assert isinstance(decode(parts, LIMITS), Volume)


def test_instance_numbers_do_not_decide_the_order() -> None:
    volume = ct_volume(seed=2)
    uid = generate_uid()
    # Instance numbers run opposite to the anatomy: positions must win.
    slices = [
        dicom_bytes(ct_slice(volume[k], 10.0 + 2.5 * k, series_uid=uid, instance=100 - k))
        for k in range(volume.shape[0])
    ]
    np.testing.assert_array_equal(decode_volume(shuffled(slices), LIMITS).voxels, volume)


@pytest.mark.parametrize("ras_storage", [False, True])
@pytest.mark.parametrize("version", [1, 2])
def test_series_matches_equivalent_nifti(ras_storage: bool, version: int) -> None:
    volume = ct_volume(slices=5, rows=6, cols=3, seed=4)
    series = decode_volume([as_zip(shuffled(ct_series(volume)))], LIMITS)
    nifti = decode_volume(
        [nifti_like_series(volume, ras_storage=ras_storage, version=version)], LIMITS
    )
    np.testing.assert_array_equal(series.voxels, nifti.voxels)
    assert series.spacing == pytest.approx(nifti.spacing)


def test_patient_orientation_is_canonicalised() -> None:
    """Rows running posterior→anterior, columns left→right and slices stored head first:
    the volume still comes out inferior→superior, anterior→posterior, right→left."""
    canonical = ct_volume(slices=4, rows=5, cols=6, seed=6)
    uid = generate_uid()
    slices = []
    for k in range(4):
        # Row direction cosines -x (towards patient right), column cosines -y (anterior).
        stored = canonical[k, ::-1, ::-1]
        slices.append(
            dicom_bytes(
                ct_slice(
                    stored,
                    0.0,
                    series_uid=uid,
                    instance=k + 1,
                    orientation=(-1, 0, 0, 0, -1, 0),
                    position=(50.0, 60.0, 100.0 - 5.0 * (3 - k)),
                )
            )
        )
    vol = decode_volume(shuffled(slices), LIMITS)
    np.testing.assert_array_equal(vol.voxels, canonical)
    assert vol.spacing == pytest.approx((5.0, 0.7, 0.8))


def test_sagittal_series_is_reordered_to_canonical_axes() -> None:
    """Sagittal slices (rows along -z... i.e. head at the top, columns anterior→posterior),
    slices stepping right→left: canonical axes are a permutation of the stored ones."""
    rng = np.random.default_rng(7)
    nx, ny, nz = 3, 4, 5  # canonical (S, H, W) = (nz, ny, nx)
    canonical = (rng.integers(-500, 500, size=(nz, ny, nx)) * 2).astype(np.float32)
    uid = generate_uid()
    slices = []
    for x in range(nx):  # slice k at patient x (right → left is +x in LPS)
        # Stored rows go superior → inferior (column cosines -z), columns go +y (posterior).
        plane = canonical[::-1, :, x]  # (z descending, y)
        slices.append(
            dicom_bytes(
                ct_slice(
                    plane,
                    0.0,
                    series_uid=uid,
                    instance=x + 1,
                    orientation=(0, 1, 0, 0, 0, -1),
                    position=(10.0 + 2.0 * x, 0.0, 40.0),
                    spacing=(1.5, 1.0),
                )
            )
        )
    vol = decode_volume(shuffled(slices), LIMITS)
    np.testing.assert_array_equal(vol.voxels, canonical)
    assert vol.spacing == pytest.approx((1.5, 1.0, 2.0))


def test_two_series_mixed() -> None:
    a = ct_series(ct_volume(slices=3, seed=1))
    b = ct_series(ct_volume(slices=3, seed=2), z0=20.0)
    with pytest.raises(InconsistentSeries, match="2 series"):
        decode_volume([as_zip(shuffled(a + b))], LIMITS)


def test_missing_slice() -> None:
    slices = ct_series(ct_volume(slices=6))
    del slices[3]
    with pytest.raises(InconsistentSeries, match="gap of 2 slices"):
        decode_volume([as_zip(slices)], LIMITS)


def test_duplicate_position() -> None:
    slices = ct_series(ct_volume(slices=4))
    with pytest.raises(InconsistentSeries, match="share a position"):
        decode_volume([*slices, slices[1]], LIMITS)


def test_mixed_sizes() -> None:
    uid = generate_uid()
    slices = [
        dicom_bytes(ct_slice(np.zeros((4, 4), np.float32), 0.0, series_uid=uid, instance=1)),
        dicom_bytes(ct_slice(np.zeros((4, 5), np.float32), 2.0, series_uid=uid, instance=2)),
    ]
    with pytest.raises(InconsistentSeries, match="mixed sizes"):
        decode_volume(slices, LIMITS)


def test_mixed_orientations() -> None:
    uid = generate_uid()
    plane = np.zeros((4, 4), np.float32)
    slices = [
        dicom_bytes(ct_slice(plane, 0.0, series_uid=uid, instance=1)),
        dicom_bytes(
            ct_slice(plane, 2.0, series_uid=uid, instance=2, orientation=(0, 1, 0, 0, 0, -1))
        ),
    ]
    with pytest.raises(InconsistentSeries, match="orientations"):
        decode_volume(slices, LIMITS)


def test_instance_number_fallback_without_positions() -> None:
    volume = ct_volume(slices=4, seed=8)
    uid = generate_uid()
    slices = []
    for k in range(4):
        ds = ct_slice(volume[k], 0.0, series_uid=uid, instance=k + 1)
        del ds.ImagePositionPatient
        slices.append(dicom_bytes(ds))
    vol = decode_volume(shuffled(slices), LIMITS)
    np.testing.assert_array_equal(vol.voxels, volume)
    assert vol.meta.extra["geometry"] == "instance_number"
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))  # SliceThickness as slice spacing


def test_no_positions_no_instance_numbers() -> None:
    uid = generate_uid()
    slices = []
    for _ in range(3):
        ds = ct_slice(np.zeros((3, 3), np.float32), 0.0, series_uid=uid, instance=1)
        del ds.ImagePositionPatient, ds.InstanceNumber
        slices.append(dicom_bytes(ds))
    with pytest.raises(InconsistentSeries, match="neither positions"):
        decode_volume(slices, LIMITS)


def test_enhanced_multiframe_ct() -> None:
    volume = ct_volume(slices=5, seed=9)
    order = [3, 0, 4, 1, 2]  # frames stored out of anatomical order
    vol = decode_volume([enhanced_ct(volume, order)], LIMITS)
    np.testing.assert_array_equal(vol.voxels, volume)
    assert vol.spacing == pytest.approx((3.0, 0.5, 0.6))
    assert vol.meta.format == "dicom"
    assert isinstance(decode([enhanced_ct(volume, order)], LIMITS), Volume)


def test_multiframe_without_geometry_uses_frame_order() -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    data = dicom_bytes(image_dataset(frames, modality="NM", SpacingBetweenSlices=4.0))
    vol = decode_volume([data], LIMITS)
    np.testing.assert_array_equal(vol.voxels, frames.astype(np.float32))
    assert vol.spacing is None  # no PixelSpacing
    assert vol.meta.extra["orientation_known"] is False


def test_zip_entry_names_are_never_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = ct_volume(slices=3, seed=10)
    slices = ct_series(volume)
    names = ["../evil.dcm", "/abs/evil2.dcm", "..\\..\\evil3.dcm"]
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir("."))
    parent_before = set(os.listdir(".."))
    vol = decode_volume([zip_bytes(list(zip(names, slices, strict=True)))], LIMITS)
    np.testing.assert_array_equal(vol.voxels, volume)  # the entries were read as bytes
    assert set(os.listdir(".")) == before
    assert set(os.listdir("..")) == parent_before


def test_zip_ignores_non_dicom_entries() -> None:
    volume = ct_volume(slices=3, seed=11)
    slices = ct_series(volume)
    dicomdir = image_dataset(np.zeros((2, 2), np.uint8))
    del dicomdir.PixelData
    entries = [
        ("DICOMDIR", dicom_bytes(dicomdir)),
        ("__MACOSX/._IMG1", b"\x00\x05\x16\x07junk"),
        (".DS_Store", b"\x00\x00\x00\x01Bud1"),
        ("readme.txt", b"hello"),
        ("sub/", b""),
        *[(f"sub/{i}", s) for i, s in enumerate(slices)],
    ]
    vol = decode_volume([zip_bytes(entries)], LIMITS)
    np.testing.assert_array_equal(vol.voxels, volume)


def test_zip_without_dicom() -> None:
    with pytest.raises(UnsupportedMediaType, match="no DICOM"):
        decode_volume([zip_bytes([("a.txt", b"hello")])], LIMITS)


def test_corrupt_zip() -> None:
    data = as_zip(ct_series(ct_volume(slices=2)))
    with pytest.raises(InvalidDicom, match="zip"):
        decode_volume([data[:-30]], LIMITS)  # central directory cut off


def _first_entry_data_offset(data: bytes) -> tuple[zipfile.ZipInfo, int]:
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    name_len, extra_len = struct.unpack_from("<HH", data, info.header_offset + 26)
    return info, info.header_offset + 30 + name_len + extra_len


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_zip_entry_whose_bytes_do_not_match_the_directory_is_corrupt(method: int) -> None:
    """Entries are inflated from the upload's bytes (not through zipfile's reader): a flipped
    byte (CRC-32 or deflate error), a local header that is not one, and a size the directory
    overstates are all a corrupt archive (422), never a 500 or a wrong volume."""
    data = zip_bytes([(f"{i}.dcm", s) for i, s in enumerate(ct_series(ct_volume(slices=2)))],
                     method=method)  # fmt: skip
    info, begin = _first_entry_data_offset(data)
    flipped = bytearray(data)
    flipped[begin + info.compress_size // 2] ^= 0xFF
    second = zipfile.ZipFile(io.BytesIO(data)).infolist()[1]
    no_header = bytearray(data)  # the second entry's local header overwritten
    no_header[second.header_offset : second.header_offset + 4] = b"XXXX"
    for bad in (bytes(flipped), bytes(no_header)):
        with pytest.raises(InvalidDicom, match="zip archive is corrupt"):
            decode_volume([bad], LIMITS)


def test_zip_written_as_a_stream_reads_like_any_other() -> None:
    """A zip written to a pipe (sizes and CRC in data descriptors after each entry, as
    streaming archivers write them) gives the same volume."""
    volume = ct_volume(slices=3, seed=12)

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self.out = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.out += b
            return len(b)

    pipe = Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, s in enumerate(ct_series(volume)):
            with zf.open(f"{i}.dcm", "w") as entry:
                entry.write(s)
    data = bytes(pipe.out)
    assert zipfile.ZipFile(io.BytesIO(data)).infolist()[0].flag_bits & 0x08  # data descriptor
    np.testing.assert_array_equal(decode_volume([data], LIMITS).voxels, volume)


def test_truncated_deflate_entry_is_corrupt() -> None:
    data = zip_bytes([("0.dcm", ct_series(ct_volume(slices=1))[0])])
    info, _ = _first_entry_data_offset(data)
    # the directory says the entry is shorter than its deflate stream: inflation stops early
    cut = data[: info.header_offset + 18] + struct.pack("<I", info.compress_size // 2)
    cut += data[info.header_offset + 22 :]
    directory = cut.rfind(b"PK\x01\x02")
    fixed = bytearray(cut)
    struct.pack_into("<I", fixed, directory + 20, info.compress_size // 2)
    with pytest.raises(InvalidDicom, match="zip archive is corrupt"):
        decode_volume([bytes(fixed)], LIMITS)


def test_zip_bomb_ratio() -> None:
    bomb = zip_bytes([("bomb.dcm", b"\x00" * (8 << 20))])  # 8 MiB of zeros: ~1000:1
    assert len(bomb) < 64 << 10
    with pytest.raises(PayloadTooLarge, match="200:1"):
        decode_volume([bomb], LIMITS)


def test_zip_total_decompressed_cap() -> None:
    slices = ct_series(ct_volume(slices=4))
    stored = zip_bytes([(f"{i}.dcm", s) for i, s in enumerate(slices)], method=zipfile.ZIP_STORED)
    limits = DecodeLimits(max_decompressed_bytes=sum(len(s) for s in slices[:2]) + 10)
    with pytest.raises(PayloadTooLarge):
        decode_volume([stored], limits)


def test_zip_entry_count_cap() -> None:
    slices = ct_series(ct_volume(slices=5))
    with pytest.raises(PayloadTooLarge, match="entries"):
        decode_volume([as_zip(slices)], DecodeLimits(max_archive_entries=4))


def test_voxel_limit() -> None:
    slices = ct_series(ct_volume(slices=4))
    with pytest.raises(InvalidVolume, match="limit"):
        decode_volume(slices, DecodeLimits(max_volume_voxels=50))


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        pytest.param(
            lambda: [dicom_bytes(image_dataset(np.zeros((4, 4), np.uint16)))],
            UnsupportedMediaType,
            id="one-2d-dicom",
        ),
        pytest.param(lambda: [b"\x89PNG\r\n\x1a\n" + b"\0" * 40], UnsupportedMediaType, id="png"),
        pytest.param(lambda: [b"hello world, no magic here"], UnsupportedMediaType, id="unknown"),
        pytest.param(lambda: [b""], InvalidVolume, id="empty"),
        pytest.param(
            lambda: [*ct_series(ct_volume(slices=2)), b"plain text"],
            UnsupportedMediaType,
            id="non-dicom-part",
        ),
        pytest.param(
            lambda: [as_zip(ct_series(ct_volume(slices=1)))], InvalidVolume, id="zip-of-one"
        ),
    ],
)
def test_volume_endpoint_refusals(parts: object, error: type[MedserveError]) -> None:
    assert callable(parts)
    with pytest.raises(error):
        decode_volume(parts(), LIMITS)


def test_colour_multiframe_is_not_a_volume() -> None:
    rgb = np.zeros((2, 3, 3, 3), np.uint8)
    ds = image_dataset(rgb[..., 0])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.PixelData = rgb.tobytes()
    with pytest.raises(InvalidVolume, match="colour"):
        decode_volume([dicom_bytes(ds)], LIMITS)
