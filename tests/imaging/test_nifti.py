"""NIfTI-1/2 (.nii, .nii.gz) → Volume: nibabel's real files, generated edge cases, bombs."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from imaging_factories import nifti_bytes
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from nibabel.testing import data_path

from app.errors import InvalidVolume, PayloadTooLarge, UnsupportedMediaType
from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode, decode_image, decode_volume, sniff

LIMITS = DecodeLimits()
DATA = Path(data_path)

# nibabel's own test files: canonical (S, H, W) shape and spacing, or the error code.
NIBABEL_FILES: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]] | str] = {
    "anatomical.nii": ((25, 41, 33), (2.0, 2.0, 2.0)),
    "reoriented_anat_moved.nii": ((22, 26, 21), (4.0, 4.0, 4.0)),
    "standard.nii.gz": ((7, 5, 4), (2.0, 3.0, 1.0)),
    "example4d.nii.gz": "invalid_volume",  # 4D, 2 volumes
    "example_nifti2.nii.gz": "invalid_volume",  # NIfTI-2, 4D, 2 volumes
    "functional.nii": "invalid_volume",  # 4D, 20 volumes
    "resampled_anat_moved.nii": "invalid_volume",  # holds NaN voxels
    "row_major.dconn.nii": "invalid_volume",  # CIFTI-2: 6 dimensions
}


def canonical_reference(img: nib.Nifti1Image) -> np.ndarray:
    """What the reader should give: nibabel's get_fdata, reoriented with nibabel."""
    data = img.get_fdata(dtype=np.float32)
    data = data[..., 0] if data.ndim == 4 else data
    ornt = ornt_transform(io_orientation(img.affine), axcodes2ornt(("L", "P", "S")))
    return np.ascontiguousarray(apply_orientation(data, ornt).transpose(2, 1, 0))


def test_table_covers_every_nifti_file_nibabel_ships() -> None:
    shipped = {p.name for p in DATA.iterdir() if p.name.endswith((".nii", ".nii.gz"))}
    assert shipped == set(NIBABEL_FILES)


@pytest.mark.parametrize("name", sorted(NIBABEL_FILES))
def test_nibabel_files(name: str) -> None:
    data = (DATA / name).read_bytes()
    expected = NIBABEL_FILES[name]
    if isinstance(expected, str):
        with pytest.raises(InvalidVolume) as info:
            decode_volume([data], LIMITS)
        assert info.value.code == expected
        return
    vol = decode_volume([data], LIMITS)
    shape, spacing = expected
    assert vol.shape == shape
    assert vol.spacing == pytest.approx(spacing)
    voxels = vol.voxels
    if voxels.dtype.kind in "ui":  # unscaled 8/16-bit data: a view of the file's integers
        assert voxels.dtype.itemsize <= 2 and not voxels.flags.writeable
    else:
        assert voxels.dtype == np.float32 and voxels.flags.c_contiguous
    assert vol.meta.format == "nifti" and vol.meta.modality is None
    np.testing.assert_allclose(vol.voxels, canonical_reference(nib.load(DATA / name)), rtol=1e-6)


def test_nifti2_single_volume_from_real_file() -> None:
    img = nib.load(DATA / "example_nifti2.nii.gz")
    first = nib.Nifti2Image(np.asanyarray(img.dataobj)[..., :1], img.affine, img.header)
    data = gzip.compress(bytes(first.to_bytes()))
    assert sniff(data) == "gzip"
    vol = decode_volume([data], LIMITS)
    assert vol.shape == (12, 20, 32)
    assert vol.spacing == pytest.approx((2.2, 2.0, 2.0), rel=1e-5)
    np.testing.assert_allclose(vol.voxels, canonical_reference(first))
    assert vol.meta.extra["nifti_version"] == 2


def test_orientation_axes() -> None:
    """A RAS-stored array comes out inferior→superior, anterior→posterior, right→left."""
    data = np.zeros((4, 5, 6), np.int16)  # (i, j, k) increasing towards R, A, S
    data[3, 0, 0] = 1  # the most right-ward voxel
    data[0, 4, 0] = 2  # the most anterior
    data[0, 0, 5] = 3  # most superior
    vol = decode_volume([nifti_bytes(data, np.diag([1.0, 2.0, 3.0, 1.0]))], LIMITS)
    assert vol.shape == (6, 5, 4)
    assert vol.spacing == pytest.approx((3.0, 2.0, 1.0))
    # x index 3 is the most right-ward voxel → column 0 (columns run right → left).
    assert vol.voxels[0, 4, 0] == 1
    # y index 4 is the most anterior → row 0 (rows run anterior → posterior).
    assert vol.voxels[0, 0, 3] == 2
    # z index 5 is the most superior → last slice (slices run inferior → superior).
    assert vol.voxels[5, 4, 3] == 3


def test_scaling_applied() -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    data = bytes(img.to_bytes())
    vol = decode_volume([data], LIMITS)
    assert vol.voxels.min() == -10.0 and vol.voxels.max() == pytest.approx(-10 + 23 * 0.5)
    np.testing.assert_allclose(vol.voxels, canonical_reference(nib.Nifti1Image.from_bytes(data)))


@pytest.mark.parametrize(
    ("shape", "match"),
    [((4, 5), "2D"), ((3, 4, 5, 2), "2 volumes"), ((3, 4, 5, 1, 2), "5 dimensions")],
)
def test_wrong_dimensions(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(InvalidVolume, match=match):
        decode_volume([nifti_bytes(np.zeros(shape, np.int16))], LIMITS)


def test_4d_with_one_volume_is_fine() -> None:
    vol = decode_volume([nifti_bytes(np.ones((3, 4, 5, 1), np.int16))], LIMITS)
    assert vol.shape == (5, 4, 3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(bad: float) -> None:
    data = np.zeros((3, 4, 5), np.float32)
    data[1, 2, 3] = bad
    with pytest.raises(InvalidVolume, match="NaN or infinite"):
        decode_volume([nifti_bytes(data)], LIMITS)


def _raw_header(dims: list[int]) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    raw = bytearray(hdr.binaryblock)
    struct.pack_into("<8h", raw, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    return bytes(raw) + b"\x00" * 4  # extension flag, then no data at all


def test_absurd_dims_rejected_before_allocation() -> None:
    data = _raw_header([32767, 32767, 32767])
    tracemalloc.start()
    try:
        with pytest.raises(InvalidVolume, match="limit"):
            decode_volume([data], LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


@pytest.mark.parametrize("dims", [[0, 4, 4], [-3, 4, 4]])
def test_zero_or_negative_dims(dims: list[int]) -> None:
    with pytest.raises(InvalidVolume, match="zero or negative"):
        decode_volume([_raw_header(dims)], LIMITS)


def test_absurd_dims_inside_gzip_stop_early() -> None:
    data = gzip.compress(_raw_header([32767, 32767, 32767]) + b"\x00" * (4 << 20))
    with pytest.raises(InvalidVolume, match="limit"):
        decode_volume([data], DecodeLimits(max_decompressed_bytes=1 << 20))


def test_data_shorter_than_header() -> None:
    data = nifti_bytes(np.ones((8, 8, 8), np.int16))
    with pytest.raises(InvalidVolume, match="shorter"):
        decode_volume([data[:-100]], LIMITS)


def test_gzip_bomb() -> None:
    """A valid-looking .nii.gz that inflates past the cap: 413 as soon as it passes it."""
    big = nifti_bytes(np.zeros((128, 128, 128), np.int16))  # 4 MiB of voxels
    bomb = gzip.compress(big)
    assert len(bomb) < 64 << 10
    with pytest.raises(PayloadTooLarge):
        decode_volume([bomb], DecodeLimits(max_decompressed_bytes=1 << 20))
    zeros = gzip.compress(b"\x00" * (4 << 20))  # not even NIfTI: still 413, never inflated
    with pytest.raises(PayloadTooLarge):
        decode_volume([zeros], DecodeLimits(max_decompressed_bytes=1 << 20))


def test_truncated_and_corrupt_gzip() -> None:
    data = gzip.compress(nifti_bytes(np.ones((8, 8, 8), np.int16)))
    with pytest.raises(InvalidVolume, match="truncated"):
        decode_volume([data[: len(data) // 2]], LIMITS)
    with pytest.raises(InvalidVolume, match="corrupt"):
        decode_volume([data[:10] + b"\xff" * 50], LIMITS)  # invalid deflate block type


def test_gzip_of_something_else() -> None:
    with pytest.raises(UnsupportedMediaType, match="no NIfTI"):
        decode_volume([gzip.compress(b"just text" * 100)], LIMITS)


def test_header_only_pair_refused() -> None:
    data = bytearray(nifti_bytes(np.ones((2, 2, 2), np.int16)))
    data[344:348] = b"ni1\x00"
    with pytest.raises(InvalidVolume, match="pair"):
        decode_volume([bytes(data)], LIMITS)


def test_nifti_is_not_a_2d_image_but_decode_dispatches() -> None:
    data = nifti_bytes(np.ones((2, 3, 4), np.uint8))
    with pytest.raises(UnsupportedMediaType):
        decode_image([data], LIMITS)
    assert decode([data], LIMITS).shape == (4, 3, 2)
    assert sniff(data) == "nifti"


def _affines() -> list[np.ndarray]:
    """Every axis permutation with every combination of flips (48 orientations)."""
    import itertools

    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            affine = np.zeros((4, 4))
            for axis, (target, sign) in enumerate(zip(perm, signs, strict=True)):
                affine[target, axis] = sign * (axis + 1) * 0.5
            affine[3, 3] = 1.0
            out.append(affine)
    return out


def test_canonical_view_reads_what_source_view_writes() -> None:
    from app.imaging.readers.orient import canonical_view, plan, source_view

    source = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    for affine in _affines():
        canon = plan(source.shape, affine, (1.0, 1.0, 1.0))
        filled = np.empty(canon.shape, np.float32)
        source_view(filled, canon)[...] = source
        np.testing.assert_array_equal(canonical_view(source, canon), filled)


@pytest.mark.parametrize(
    ("gz", "diagonal"),
    [(False, (-0.7, 0.8, 2.0)), (True, (-0.7, 0.8, 2.0)), (False, (0.7, -0.8, -2.0))],
)
def test_unscaled_integer_volume_is_a_view_with_the_float_paths_tensor(
    gz: bool, diagonal: tuple[float, float, float]
) -> None:
    """int16 without scl_slope: voxels are the upload's integers (no float copy), and the
    model input equals the one made from the float32 volume (the path with scaling)."""
    from app.imaging.card import Intensity, Preprocessing
    from app.imaging.preprocess import preprocess_volume
    from app.imaging.types import Volume

    rng = np.random.default_rng(7)
    hu = rng.integers(-1200, 1500, (37, 41, 23)).astype(np.int16)
    affine = np.diag([*diagonal, 1.0])  # flips rows; columns and slices
    img = nib.Nifti1Image(hu, affine)
    img.header.set_slope_inter(np.nan, np.nan)
    data = bytes(img.to_bytes())
    vol = decode_volume([gzip.compress(data) if gz else data], LIMITS)
    assert vol.voxels.dtype == np.int16 and not vol.voxels.flags.writeable
    np.testing.assert_array_equal(vol.voxels, canonical_reference(img))
    scaled = nib.Nifti1Image(hu, affine)
    scaled.header.set_slope_inter(1.0, 0.0)  # identity scaling: also the view
    assert decode_volume([bytes(scaled.to_bytes())], LIMITS).voxels.dtype == np.int16
    scaled.header.set_slope_inter(1.0, -0.5)  # a real scaling: the float32 volume
    assert decode_volume([bytes(scaled.to_bytes())], LIMITS).voxels.dtype == np.float32
    floats = Volume(np.ascontiguousarray(vol.voxels, np.float32), vol.spacing, vol.meta)
    for size, resize in (((16, 32, 16), "trilinear"), ((64, 41, 23), "trilinear")):
        prep = Preprocessing(
            kind="volume3d",
            size=size,
            channels=1,
            intensity=Intensity(method="window", low=-1000, high=400),
            resize=resize,
        )
        np.testing.assert_allclose(
            preprocess_volume(vol, prep, "NDHWC"),
            preprocess_volume(floats, prep, "NDHWC"),
            rtol=0,
            atol=1e-6,
        )
