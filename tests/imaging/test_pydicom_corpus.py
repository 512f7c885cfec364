"""Every image-bearing file in pydicom's test data: decodes to the expected shape or raises the
expected contract error. Only files present locally are used (nothing is ever fetched)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.data.data_manager import get_data_dir
from pydicom.pixels import apply_modality_lut

from app.errors import MedserveError
from app.imaging.limits import DecodeLimits
from app.imaging.readers import decode
from app.imaging.types import Image2D

ROOT = Path(pydicom.data.__file__).parent / "test_files"
CACHE = Path(get_data_dir())  # files pydicom downloaded earlier, if any
LIMITS = DecodeLimits()

# name → ("Image2D" | "Volume", shape) or the contract error code. Generated once by running
# the readers, then checked by hand:
# - JPEG 2000, JPEG-LS, RLE, deflated, big endian, JPEG baseline/lossless all decode;
# - JPEG Extended 12-bit (JPEG-lossy, JPGExtended): GDCM and Pillow refuse 12-bit samples and
#   pylibjpeg-libjpeg is not installed → unsupported_transfer_syntax;
# - MR_truncated (short pixel data), badVR (NumberOfFrames "1A"), meta_missing_tsyntax and
#   nested_priv_SQ (no Rows), JPEG2000-embedded-sequence-delimiter (a broken codestream no
#   decoder reads) → invalid_dicom;
# - 2-frame RGB and the 30-frame ultrasound cine: multi-frame colour is not a volume;
# - RT dose (15 frames + GridFrameOffsetVector) → a volume.
EXPECTED: dict[str, tuple[str, tuple[int, ...]] | str] = {
    "693_J2KI.dcm": ("Image2D", (512, 512)),
    "CT_small.dcm": ("Image2D", (128, 128)),
    "ExplVR_BigEnd.dcm": ("Image2D", (60, 80, 3)),
    "GDCMJ2K_TextGBR.dcm": ("Image2D", (400, 400, 3)),
    "J2K_pixelrep_mismatch.dcm": ("Image2D", (512, 512)),
    "JPEG-lossy.dcm": "unsupported_transfer_syntax",
    "JPEG2000-embedded-sequence-delimiter.dcm": "invalid_dicom",
    "JPEG2000.dcm": ("Image2D", (1024, 256)),
    "JPEGLSNearLossless_08.dcm": ("Image2D", (45, 10)),
    "JPEGLSNearLossless_16.dcm": ("Image2D", (50, 10)),
    "JPGExtended.dcm": "unsupported_transfer_syntax",
    "MR_small.dcm": ("Image2D", (64, 64)),
    "MR_small_RLE.dcm": ("Image2D", (64, 64)),
    "MR_small_bigendian.dcm": ("Image2D", (64, 64)),
    "MR_small_expb.dcm": ("Image2D", (64, 64)),
    "MR_small_implicit.dcm": ("Image2D", (64, 64)),
    "MR_small_jp2klossless.dcm": ("Image2D", (64, 64)),
    "MR_small_jpeg_ls_lossless.dcm": ("Image2D", (64, 64)),
    "MR_small_padded.dcm": ("Image2D", (64, 64)),
    "MR_truncated.dcm": "invalid_dicom",
    "SC_jpeg_no_color_transform.dcm": ("Image2D", (256, 256, 3)),
    "SC_jpeg_no_color_transform_2.dcm": ("Image2D", (256, 256, 3)),
    "SC_rgb_dcmtk_+eb+cr.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+np.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_gdcm_KY.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_jls_lossy_line.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_jls_lossy_sample.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_jpeg.dcm": ("Image2D", (256, 256, 3)),
    "SC_rgb_jpeg_app14_dcmd.dcm": ("Image2D", (256, 256, 3)),
    "SC_rgb_jpeg_dcmd.dcm": ("Image2D", (256, 256, 3)),
    "SC_rgb_jpeg_dcmtk.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_jpeg_gdcm.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_jpeg_lossy_gdcm.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_rle.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_rle_16bit.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_rle_16bit_2frame.dcm": "invalid_volume",
    "SC_rgb_rle_2frame.dcm": "invalid_volume",
    "SC_rgb_rle_32bit.dcm": ("Image2D", (100, 100, 3)),
    "SC_rgb_rle_32bit_2frame.dcm": "invalid_volume",
    "SC_rgb_small_odd.dcm": ("Image2D", (3, 3, 3)),
    "SC_rgb_small_odd_big_endian.dcm": ("Image2D", (3, 3, 3)),
    "SC_rgb_small_odd_jpeg.dcm": ("Image2D", (3, 3, 3)),
    "SC_ybr_full_422_uncompressed.dcm": ("Image2D", (100, 100, 3)),
    "badVR.dcm": "invalid_dicom",
    "dicomdirtests/77654033/CR1/6154": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CR2/6247": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CR3/6278": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CT2/17106": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CT2/17136": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CT2/17166": ("Image2D", (16, 16)),
    "dicomdirtests/77654033/CT2/17196": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT2N/6293": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT2N/6924": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT5N/2062": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT5N/2392": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT5N/2693": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT5N/3023": ("Image2D", (16, 16)),
    "dicomdirtests/98892001/CT5N/3353": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR1/15820": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR1/4919": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR1/5641": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/15970": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/4950": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/4981": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/5011": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/6273": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/6605": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR2/6935": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4467": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4528": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4558": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4588": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4618": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4648": ("Image2D", (16, 16)),
    "dicomdirtests/98892003/MR700/4678": ("Image2D", (16, 16)),
    "examples_jpeg2k.dcm": ("Image2D", (480, 640, 3)),
    "examples_overlay.dcm": ("Image2D", (300, 484)),
    "examples_palette.dcm": ("Image2D", (350, 800, 3)),
    "examples_rgb_color.dcm": ("Image2D", (240, 320, 3)),
    "examples_ybr_color.dcm": "invalid_volume",
    "image_dfl.dcm": ("Image2D", (512, 512)),
    "liver_1frame.dcm": ("Image2D", (512, 512)),
    "liver_expb_1frame.dcm": ("Image2D", (512, 512)),
    "meta_missing_tsyntax.dcm": "invalid_dicom",
    "nested_priv_SQ.dcm": "invalid_dicom",
    "rtdose.dcm": ("Volume", (15, 10, 10)),
    "rtdose_1frame.dcm": ("Image2D", (10, 10)),
    "rtdose_expb.dcm": ("Volume", (15, 10, 10)),
    "rtdose_expb_1frame.dcm": ("Image2D", (10, 10)),
    "rtdose_rle.dcm": ("Volume", (15, 10, 10)),
    "rtdose_rle_1frame.dcm": ("Image2D", (10, 10)),
}


def _local_image_files() -> dict[str, Path]:
    """Files with pixel data under pydicom's data dir and its download cache."""
    found: dict[str, Path] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for base in (ROOT, CACHE):
            if not base.exists():
                continue
            for path in sorted(base.rglob("*")):
                if not path.is_file() or path.suffix in (".py", ".pyc"):
                    continue
                try:
                    ds = pydicom.dcmread(path, force=True, stop_before_pixels=False)
                except Exception:
                    continue
                if any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                    rel = path.relative_to(ROOT).as_posix() if base == ROOT else path.name
                    found[rel] = path
    return found


FILES = _local_image_files()


def test_every_local_image_file_is_in_the_table() -> None:
    unknown = sorted(set(FILES) - set(EXPECTED))
    assert not unknown, f"new pydicom test files to look at and add to EXPECTED: {unknown}"
    assert len(FILES) >= 90


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file(name: str) -> None:
    path = FILES.get(name)
    if path is None:
        pytest.skip("not present locally (downloadable test file); never fetched")
    expected = EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(MedserveError) as info:
            decode([path.read_bytes()], LIMITS)
        assert info.value.code == expected
        return
    out = decode([path.read_bytes()], LIMITS)
    kind, shape = expected
    assert type(out).__name__ == kind
    array = out.pixels if isinstance(out, Image2D) else out.voxels
    assert array.shape == shape
    assert array.dtype == np.float32
    assert np.isfinite(array).all()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small.dcm", "693_J2KI.dcm", "JPEG2000.dcm", "rtdose_1frame.dcm"]
)
def test_values_match_pydicom(name: str) -> None:
    ds = pydicom.dcmread(ROOT / name)
    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    out = decode([(ROOT / name).read_bytes()], LIMITS)
    assert isinstance(out, Image2D)
    np.testing.assert_array_equal(out.pixels, expected)


def test_counts() -> None:
    """The summary reported for the README: how many decode, how many per error code."""
    kinds = [v if isinstance(v, str) else v[0] for v in EXPECTED.values()]
    assert kinds.count("Image2D") == 81
    assert kinds.count("Volume") == 3
    assert kinds.count("invalid_dicom") == 5
    assert kinds.count("invalid_volume") == 4
    assert kinds.count("unsupported_transfer_syntax") == 2
