"""Every malformed input gets its contract status and code on every endpoint — never a 500.

The committed corpus is ``tests/data/bad/`` (regenerate with its ``make_corpus.py``); bombs and
oversized cases are generated here because they are large or cheap to make.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.data.bad.make_corpus import CANARY_ID, CANARY_NAME, dicom_slice

BAD = Path(__file__).parents[1] / "data" / "bad"
ENDPOINTS = ("/classify/xray", "/classify/ct", "/segment/mri", "/segment/xray")
TWO_D = ("/classify/xray", "/segment/mri", "/segment/xray")

UMT = (415, "unsupported_media_type")
# file -> (outcome on the 2D endpoints, outcome on /classify/ct)
EXPECTED: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {
    "empty.bin": ((422, "invalid_image"), (422, "invalid_volume")),
    "random.bin": (UMT, UMT),
    "truncated.png": ((422, "invalid_image"), UMT),
    "truncated.jpg": ((422, "invalid_image"), UMT),
    "truncated.tif": ((422, "invalid_image"), UMT),
    "truncated.dcm": ((422, "invalid_dicom"), UMT),  # one slice is no volume
    "truncated.nii.gz": (UMT, (422, "invalid_volume")),
    "no_pixels.dcm": ((422, "invalid_dicom"), (422, "invalid_dicom")),
    "mpeg2_no_decoder.dcm": ((415, "unsupported_transfer_syntax"), UMT),
    "absurd_dims.nii": (UMT, (422, "invalid_volume")),
    "nan_voxels.nii": (UMT, (422, "invalid_volume")),
    "four_d.nii": (UMT, (422, "invalid_volume")),
    "two_series.zip": (UMT, (422, "inconsistent_series")),
    "missing_slice.zip": (UMT, (422, "inconsistent_series")),
    # Entry names are never used as paths: the three slices are read as bytes and served.
    "zip_traversal.zip": (UMT, (200, "")),
}


def _check(resp: object, status: int, code: str) -> None:
    r = resp  # httpx.Response
    assert r.status_code == status, (r.status_code, r.text)  # type: ignore[attr-defined]
    text = r.text  # type: ignore[attr-defined]
    assert CANARY_NAME not in text and CANARY_ID not in text and "CANARY" not in text
    if status >= 400:
        assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
        assert r.json()["code"] == code  # type: ignore[attr-defined]


def test_corpus_is_complete() -> None:
    files = {p.name for p in BAD.iterdir() if p.suffix != ".py" and p.name != "__init__.py"}
    assert files == set(EXPECTED), "a corpus file without an expectation (or the reverse)"


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_corpus_file(app_client: TestClient, name: str, endpoint: str) -> None:
    two_d, volume = EXPECTED[name]
    status, code = volume if endpoint == "/classify/ct" else two_d
    data = (BAD / name).read_bytes()
    _check(app_client.post(endpoint, content=data), status, code)
    # The same file as a multipart upload gets the same answer.
    _check(app_client.post(endpoint, files={"file": (name, data)}), status, code)


def _png_bomb(side: int = 20_000) -> bytes:
    """A real PNG of side x side zero pixels: ~400 MB decoded from a few hundred KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\0" * (side + 1)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("endpoint", TWO_D)
def test_decompression_bomb_png(app_client: TestClient, endpoint: str) -> None:
    _check(app_client.post(endpoint, content=_png_bomb()), 422, "image_too_large")


def test_gzip_bomb_nifti(app_client: TestClient) -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024), compresslevel=9)  # 200 MB in ~200 KB
    assert len(bomb) < 1024 * 1024
    _check(app_client.post("/classify/ct", content=bomb), 413, "payload_too_large")


def test_zip_bomb_series(app_client: TestClient) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(3):
            zf.writestr(f"slice{i}.dcm", dicom_slice(z=float(i)) + b"\0" * (40 * 1024 * 1024))
    _check(app_client.post("/classify/ct", content=buf.getvalue()), 413, "payload_too_large")


def test_thousand_parts(app_client: TestClient) -> None:
    files = [("file", (f"{i}.dcm", b"x")) for i in range(1000)]
    files += [("note", (None, b"y"))] * 1100  # type: ignore[list-item]
    _check(app_client.post("/classify/ct", files=files), 400, "bad_request")


def test_hundred_megabyte_field_without_filename(app_client: TestClient) -> None:
    big = b"a" * (100 * 1024 * 1024)
    resp = app_client.post("/classify/xray", files=[("comment", (None, big))])  # type: ignore[list-item]
    _check(resp, 400, "bad_request")
    # A urlencoded form is no accepted format at all.
    resp = app_client.post("/classify/xray", data={"comment": "x" * 1000})
    _check(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=" + "-" * 70 + "; " * 5000,
        "multipart/form-data; " + "a=b; " * 10000 + "boundary=x",
        'multipart/form-data; boundary="' + "\\" * 20000 + '"',
        "multipart/form-data",
    ],
)
def test_hostile_content_type(app_client: TestClient, content_type: str) -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--x--\r\n'
    resp = app_client.post("/segment/mri", content=body, headers={"content-type": content_type})
    assert resp.status_code in (400, 415, 422), resp.text
    assert resp.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_wrong_operating_point(app_client: TestClient, endpoint: str) -> None:
    resp = app_client.post(f"{endpoint}?operating_point=%3Cscript%3E", content=b"x")
    _check(resp, 422, "unknown_operating_point")
    assert "<script>" not in resp.text


def test_good_series_as_parts_and_canary_never_echoed(app_client: TestClient) -> None:
    parts = [("file", (f"{i}.dcm", dicom_slice(z=5.0 * i))) for i in range(4)]
    resp = app_client.post("/classify/ct", files=parts)
    _check(resp, 200, "")
    assert resp.json()["input"]["shape"] == [4, 8, 8]
    assert np.isfinite(resp.json()["probability"])
