"""API keys: 401 problem+json with WWW-Authenticate on every protected route, checked before the
body is read; Bearer and X-API-Key both accepted; health and metrics open."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration import media
from tests.integration.contract import assert_problem, describe
from tests.integration.service import ENDPOINTS, Service

PROTECTED = [("POST", endpoint) for endpoint in ENDPOINTS.values()] + [
    ("GET", "/models"),
    ("GET", "/models/pneumonia_xray"),
]
PNG = media.png8(media.chest_like(64, 64, max_value=255)).data


def _bad_credentials(key: str) -> dict[str, dict[str, str]]:
    return {
        "none": {},
        "wrong_bearer": {"Authorization": "Bearer " + "x" * len(key)},
        "wrong_x_api_key": {"X-API-Key": key[:-1] + ("A" if key[-1] != "A" else "B")},
        "right_key_basic_scheme": {"Authorization": f"Basic {key}"},
        "bearer_without_token": {"Authorization": "Bearer"},
        "key_prefix": {"X-API-Key": key[:16]},
    }


CREDENTIAL_CASES = list(_bad_credentials("k" * 32))


def _send(anon: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    if method == "POST":
        return anon.post(path, content=PNG, headers={**headers, "Content-Type": "image/png"})
    return anon.get(path, headers=headers)


@pytest.mark.parametrize("case", CREDENTIAL_CASES)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_missing_or_wrong_key_is_401(
    keyed: Service, anon: httpx.Client, method: str, path: str, case: str
) -> None:
    assert keyed.api_key
    r = _send(anon, method, path, _bad_credentials(keyed.api_key)[case])
    body = assert_problem(r, 401, "unauthorized")
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer"), dict(r.headers)
    assert keyed.api_key not in r.text and keyed.api_key not in body["detail"]


@pytest.mark.parametrize("style", ["bearer", "x_api_key"])
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_right_key_passes(
    keyed: Service, anon: httpx.Client, method: str, path: str, style: str
) -> None:
    assert keyed.api_key
    headers = (
        {"Authorization": f"Bearer {keyed.api_key}"}
        if style == "bearer"
        else {"X-API-Key": keyed.api_key}
    )
    r = _send(anon, method, path, headers)
    assert r.status_code != 401, describe(r)
    if path == "/models":
        assert r.status_code == 200, describe(r)


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics"])
def test_health_and_metrics_need_no_key(anon: httpx.Client, path: str) -> None:
    r = anon.get(path)
    assert r.status_code in (200, 503) if path == "/health/ready" else r.status_code == 200, (
        describe(r)
    )


@pytest.mark.parametrize("path", sorted(ENDPOINTS.values()))
def test_key_is_checked_before_the_body_is_read(keyed: Service, path: str) -> None:
    """Headers announcing 10 GiB and no body at all: the answer must still come, and be 401."""
    url = urlsplit(keyed.url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(10 * 1024**3))
        conn.putheader("X-API-Key", "not-the-key-0123456789")
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 401
        assert response.getheader("WWW-Authenticate", "").lower().startswith("bearer")
    finally:
        conn.close()
