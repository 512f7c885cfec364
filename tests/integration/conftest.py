"""Fixtures of the black-box suite: the service (given or started), clients, what /models lists.

- ``MEDSERVE_URL`` set: the suite tests that service. Its key is ``MEDSERVE_TEST_API_KEY``, else
  the first of ``MEDSERVE_API_KEYS``, else none (a service without keys). Optional:
  ``MEDSERVE_TEST_MAX_UPLOAD_BYTES`` (its upload limit, default 256 MiB) and
  ``MEDSERVE_TEST_SERVER_WORKERS`` (its worker processes, default 1).
- unset: a session fixture starts ``python -m app.cli serve`` on a free port with the models of
  this checkout, a generated key and a 64 MiB upload limit, and stops it (SIGTERM) at the end.

A model that is not deployed (no folder under models/, so absent from /models) has its happy
paths skipped with that reason; a model that is listed must serve.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.integration.service import (
    DEFAULT_MAX_UPLOAD_BYTES,
    ENDPOINTS,
    REPO_ROOT,
    MiB,
    Service,
    running_service,
    service_env,
    wait_live,
)

MANAGED_MAX_UPLOAD_BYTES = 64 * MiB


def _remote_key() -> str | None:
    key = os.environ.get("MEDSERVE_TEST_API_KEY", "").strip()
    if key:
        return key
    keys = [k.strip() for k in os.environ.get("MEDSERVE_API_KEYS", "").split(",") if k.strip()]
    return keys[0] if keys else None


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    url = os.environ.get("MEDSERVE_URL", "").strip().rstrip("/")
    if url:
        wait_live(url, None, None)
        yield Service(
            url=url,
            api_key=_remote_key(),
            max_upload_bytes=int(
                os.environ.get("MEDSERVE_TEST_MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES
            ),
            managed=False,
            workers=int(os.environ.get("MEDSERVE_TEST_SERVER_WORKERS") or 1),
        )
        return
    key = secrets.token_urlsafe(32)
    env = service_env(
        MEDSERVE_MODEL_DIR=str(REPO_ROOT / "models"),
        MEDSERVE_API_KEYS=key,
        MEDSERVE_MAX_UPLOAD_BYTES=str(MANAGED_MAX_UPLOAD_BYTES),
        MEDSERVE_WORKERS="1",
    )
    log = tmp_path_factory.mktemp("medserve") / "service.log"
    with running_service(env, log) as (base, _proc):
        yield Service(
            url=base,
            api_key=key,
            max_upload_bytes=MANAGED_MAX_UPLOAD_BYTES,
            managed=True,
            workers=1,
        )


@pytest.fixture(scope="session")
def client(service: Service) -> Iterator[httpx.Client]:
    """Authenticated (Bearer) client."""
    with httpx.Client(base_url=service.url, headers=service.auth_headers, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="session")
def anon(service: Service) -> Iterator[httpx.Client]:
    """Client without any credentials."""
    with httpx.Client(base_url=service.url, timeout=60.0) as c:
        yield c


@pytest.fixture(scope="session")
def keyed(service: Service) -> Service:
    """The service, for tests of the authentication rules (skipped when it has no key)."""
    if not service.api_key:
        pytest.skip("no API key for the service under test (MEDSERVE_TEST_API_KEY unset)")
    return service


@pytest.fixture(scope="session")
def models(client: httpx.Client) -> dict[str, dict[str, Any]]:
    """What GET /models lists, by name."""
    r = client.get("/models")
    assert r.status_code == 200, r.text
    return {m["name"]: m for m in r.json()}


@pytest.fixture(scope="session")
def cards(client: httpx.Client, models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """GET /models/{name} for every listed model."""
    out = {}
    for name in models:
        r = client.get(f"/models/{name}")
        assert r.status_code == 200, r.text
        out[name] = r.json()
    return out


def _deployed(models: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in models:
        listed = ", ".join(sorted(models)) or "none"
        pytest.skip(
            f"{name} is not deployed: GET /models does not list it (listed: {listed}); "
            f"{ENDPOINTS[name]} cannot be exercised"
        )
    summary = models[name]
    if not summary["ready"]:
        pytest.fail(f"{name} is listed by /models but not ready: {summary.get('reason')}")
    return summary


@pytest.fixture(scope="session")
def deployed(models: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any]]:
    """``deployed(name)``: the /models entry of a ready model; skips (with the reason read from
    /models) when the model is absent, fails when it is listed but not ready."""
    return lambda name: _deployed(models, name)


@pytest.fixture(scope="session")
def managed(service: Service) -> Service:
    """The service, for tests that need one started by this suite (skipped with MEDSERVE_URL)."""
    if not service.managed:
        pytest.skip("needs the suite's own service process; MEDSERVE_URL points elsewhere")
    return service


def pytest_report_header(config: pytest.Config) -> str:
    url = os.environ.get("MEDSERVE_URL", "").strip()
    return f"medserve under test: {url or 'a local process started by the suite (models/)'}"
