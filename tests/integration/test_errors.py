"""The error contract on bad input: every error is problem+json with the contract's code."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration import media
from tests.integration.contract import assert_problem, describe
from tests.integration.service import ENDPOINTS, MODEL_OF, MiB, Service

IMAGE_ENDPOINTS = ["/classify/xray", "/segment/mri", "/segment/xray"]
SEGMENT_ENDPOINTS = ["/segment/mri", "/segment/xray"]
# Random bytes that start with no accepted magic number.
NOISE = b"NOT-AN-IMAGE" + os.urandom(4096)


def valid_upload(path: str) -> tuple[bytes, str]:
    """A small input every model behind ``path`` accepts."""
    if path == "/classify/ct":
        return media.ct_nifti(compressed=True), "application/gzip"
    if path == "/segment/xray":
        return media.png16(media.blob_image(96, 96, max_value=60000)).data, "image/png"
    return media.png8(media.chest_like(96, 96, max_value=255)).data, "image/png"


@pytest.fixture
def ready_endpoint(request: pytest.FixtureRequest, deployed: Any) -> str:
    path: str = request.param
    deployed(MODEL_OF[path])
    return path


def _indirect(paths: list[str]) -> Any:
    return pytest.mark.parametrize("ready_endpoint", paths, indirect=True)


# --------------------------------------------------------------------------- routing


def test_unknown_path_is_404(client: httpx.Client) -> None:
    assert_problem(client.get("/no/such/path"), 404, "not_found")
    assert_problem(client.post("/classify/mammo", content=b"x"), 404, "not_found")


def test_wrong_method_is_405_problem(client: httpx.Client) -> None:
    r = client.get("/classify/xray")
    assert_problem(r, 405, "bad_request")
    assert "POST" in r.headers.get("allow", ""), dict(r.headers)


@pytest.mark.parametrize("path", SEGMENT_ENDPOINTS)
def test_bad_query_parameter_is_validation_error(client: httpx.Client, path: str) -> None:
    data, ctype = valid_upload(path)
    r = client.post(
        path, params={"mask_format": "jpeg"}, content=data, headers={"Content-Type": ctype}
    )
    body = assert_problem(r, 422, "validation_error")
    assert "mask_format" in body["detail"], body


# --------------------------------------------------------------------------- bad bodies


@_indirect(sorted(ENDPOINTS.values()))
def test_random_bytes_are_415(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(ready_endpoint, content=NOISE, headers={"Content-Type": "image/png"})
    assert_problem(r, 415, "unsupported_media_type")
    r = client.post(ready_endpoint, files={"file": ("scan.png", NOISE, "image/png")})
    assert_problem(r, 415, "unsupported_media_type")


@_indirect(IMAGE_ENDPOINTS)
def test_empty_body_is_invalid_image(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(ready_endpoint, content=b"", headers={"Content-Type": "image/png"})
    assert_problem(r, 422, "invalid_image")


@_indirect(["/classify/ct"])
def test_empty_body_is_422_for_volumes(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(ready_endpoint, content=b"", headers={"Content-Type": "application/gzip"})
    assert r.status_code == 422, describe(r)
    assert r.json()["code"] in ("invalid_image", "invalid_volume"), describe(r)


@_indirect(IMAGE_ENDPOINTS)
def test_truncated_png_is_invalid_image(client: httpx.Client, ready_endpoint: str) -> None:
    data = media.png8(media.chest_like(128, 128, max_value=255)).data
    r = client.post(ready_endpoint, content=data[: len(data) // 2])
    body = assert_problem(r, 422, "invalid_image")
    assert "scan" not in body["detail"]


@_indirect(["/classify/xray"])
def test_dicom_without_pixels_is_invalid_dicom(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(
        ready_endpoint,
        files={
            "file": ("Synthetic^Integration.dcm", media.dicom_without_pixels(), "application/dicom")
        },
    )
    body = assert_problem(r, 422, "invalid_dicom")
    for leak in ("Synthetic", "Integration", "ITEST", ".dcm"):
        assert leak not in body["detail"], body


@_indirect(["/classify/ct"])
def test_a_single_slice_is_no_volume(client: httpx.Client, ready_endpoint: str) -> None:
    """One single-frame slice is not a format this endpoint takes (415), or too few slices
    for a volume (422 invalid_volume); never a 500 or an answer."""
    r = client.post(ready_endpoint, content=media.ct_series()[0])
    assert (r.status_code, r.json().get("code")) in {
        (415, "unsupported_media_type"),
        (422, "invalid_volume"),
    }, describe(r)


@_indirect(["/classify/ct"])
def test_slices_from_two_series_are_inconsistent(client: httpx.Client, ready_endpoint: str) -> None:
    slices = media.ct_series()[:6] + media.ct_series(series=7)[6:12]
    r = client.post(
        ready_endpoint,
        files=[("file", (f"s{i}", s, "application/dicom")) for i, s in enumerate(slices)],
    )
    assert_problem(r, 422, "inconsistent_series")


@_indirect(sorted(ENDPOINTS.values()))
def test_unknown_operating_point_lists_the_names(
    client: httpx.Client, models: dict[str, dict[str, Any]], ready_endpoint: str
) -> None:
    data, ctype = valid_upload(ready_endpoint)
    r = client.post(
        ready_endpoint,
        params={"operating_point": "no_such_point"},
        content=data,
        headers={"Content-Type": ctype},
    )
    body = assert_problem(r, 422, "unknown_operating_point")
    for name in models[MODEL_OF[ready_endpoint]]["operating_points"]:
        assert name in body["detail"], body


@_indirect(sorted(ENDPOINTS.values()))
def test_multipart_without_file_is_400(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(
        ready_endpoint, data={"note": "no file here"}, files={"attachment": ("a", b"x")}
    )
    assert_problem(r, 400, "bad_request")


@_indirect(["/classify/xray"])
def test_broken_multipart_is_400(client: httpx.Client, ready_endpoint: str) -> None:
    r = client.post(
        ready_endpoint,
        content=b'--abc\r\nContent-Disposition: form-data; name="file"\r\n\r\nxyz',
        headers={"Content-Type": "multipart/form-data; boundary=abc"},
    )
    assert_problem(r, 400, "bad_request")


# --------------------------------------------------------------------------- size limit


def _declared_only(service: Service, path: str, length: int) -> tuple[int, dict[str, Any]]:
    """Send headers announcing ``length`` bytes and no body; (status, JSON body)."""
    url = urlsplit(service.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(length))
        for k, v in service.auth_headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        response = conn.getresponse()
        assert response.getheader("Content-Type", "").startswith("application/problem+json")
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("path", sorted(ENDPOINTS.values()))
def test_declared_body_over_the_limit_is_413_at_once(service: Service, path: str) -> None:
    status, body = _declared_only(service, path, service.max_upload_bytes + 1)
    assert status == 413 and body["code"] == "payload_too_large", body


def test_body_over_the_limit_is_413(service: Service, client: httpx.Client) -> None:
    if service.max_upload_bytes > 64 * MiB:
        pytest.skip(f"the upload limit is {service.max_upload_bytes} bytes; not sending that much")
    body = b"\0" * (service.max_upload_bytes + 1)
    r = client.post(
        "/classify/xray", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert_problem(r, 413, "payload_too_large")


@_indirect(["/classify/xray"])
def test_streamed_body_over_the_limit_is_413(
    service: Service, client: httpx.Client, ready_endpoint: str
) -> None:
    """Chunked transfer, no Content-Length: the limit is counted as the bytes arrive."""
    if service.max_upload_bytes > 64 * MiB:
        pytest.skip(f"the upload limit is {service.max_upload_bytes} bytes; not sending that much")
    chunk = b"\0" * MiB

    def chunks() -> Iterator[bytes]:
        for _ in range(service.max_upload_bytes // MiB + 2):
            yield chunk

    r = client.post(ready_endpoint, content=chunks(), headers={"Content-Type": "image/png"})
    assert_problem(r, 413, "payload_too_large")
