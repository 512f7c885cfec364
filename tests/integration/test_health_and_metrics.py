"""Liveness, Prometheus metrics (counting the requests just made) and X-Request-ID."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration import media
from tests.integration.contract import REQUEST_ID, assert_problem, describe
from tests.integration.service import ENDPOINTS, Service, metric, parse_metrics


def scrape(anon: httpx.Client) -> list[tuple[str, dict[str, str], float]]:
    r = anon.get("/metrics")
    assert r.status_code == 200, describe(r)
    return parse_metrics(r.text)


def test_live(anon: httpx.Client) -> None:
    r = anon.get("/health/live")
    assert r.status_code == 200, describe(r)
    assert r.json() == {"status": "ok"}
    assert REQUEST_ID.match(r.headers["x-request-id"])


def test_metrics_exposition(anon: httpx.Client, models: dict[str, dict[str, Any]]) -> None:
    r = anon.get("/metrics")
    assert r.status_code == 200, describe(r)
    assert r.headers["content-type"].startswith("text/plain"), r.headers["content-type"]
    text = r.text
    for family, kind in (
        ("medserve_requests_total", "counter"),
        ("medserve_request_duration_seconds", "histogram"),
        ("medserve_inference_duration_seconds", "histogram"),
        ("medserve_model_ready", "gauge"),
    ):
        assert f"# TYPE {family} {kind}" in text, f"no {kind} {family} in /metrics"
    samples = parse_metrics(text)
    for name, m in models.items():
        assert metric(samples, "medserve_model_ready", model=name) == (1.0 if m["ready"] else 0.0)


def test_metrics_count_the_requests_just_made(
    service: Service, client: httpx.Client, anon: httpx.Client
) -> None:
    if service.workers > 1:
        pytest.skip(f"{service.workers} workers: each process counts only its own requests")
    exact = service.managed  # a shared service may serve others meanwhile: then at least

    def check(delta: float, want: int, what: str) -> None:
        assert delta == want if exact else delta >= want, f"{what}: counted {delta}, made {want}"

    before = scrape(anon)
    for _ in range(3):
        assert client.get("/models").status_code == 200
    assert client.get("/no/such/path").status_code == 404
    assert anon.get("/models").status_code in (200, 401)  # 401 when keys are configured
    after = scrape(anon)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    total = "medserve_requests_total"
    check(delta(total, endpoint="/models", status="200") + delta(total, status="401"), 4, "/models")
    check(delta(total, status="404"), 1, "404s")
    durations = delta("medserve_request_duration_seconds_count", endpoint="/models")
    assert durations == delta(total, endpoint="/models") >= 3, "one duration per request"
    check(delta(total, endpoint="/metrics", status="200"), 1, "the scrape before")


def _minimal_sample(name: str) -> tuple[bytes, str]:
    if name == "covid_ct":
        return media.ct_nifti(compressed=False), "application/octet-stream"
    if name == "phantom_tumor_xray":
        return media.png16(media.blob_image(128, 128, max_value=60000)).data, "image/png"
    return media.png8(media.chest_like(128, 128, max_value=255)).data, "image/png"


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_metrics_count_inferences(
    name: str,
    service: Service,
    client: httpx.Client,
    anon: httpx.Client,
    deployed: Any,
) -> None:
    deployed(name)
    if service.workers > 1:
        pytest.skip(f"{service.workers} workers: each process counts only its own requests")
    data, ctype = _minimal_sample(name)
    before = scrape(anon)
    r = client.post(ENDPOINTS[name], content=data, headers={"Content-Type": ctype})
    assert r.status_code == 200, describe(r)
    after = scrape(anon)
    count = "medserve_inference_duration_seconds_count"
    assert metric(after, count, model=name) - metric(before, count, model=name) >= 1
    total = "medserve_requests_total"
    labels = {"endpoint": ENDPOINTS[name], "status": "200"}
    assert metric(after, total, **labels) - metric(before, total, **labels) >= 1


# --------------------------------------------------------------------------- X-Request-ID


def test_request_id_round_trip(client: httpx.Client, anon: httpx.Client) -> None:
    rid = "itest-0123.abc:XYZ_9"
    r = anon.get("/health/live", headers={"X-Request-ID": rid})
    assert r.headers["x-request-id"] == rid
    r = client.get("/no/such/path", headers={"X-Request-ID": rid})
    body = assert_problem(r, 404, "not_found")
    assert body["request_id"] == rid


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "semi;colon", "ünï"])
def test_unacceptable_request_id_is_replaced(anon: httpx.Client, bad: str) -> None:
    r = anon.get("/health/live", headers={"X-Request-ID": bad.encode()})
    rid = r.headers["x-request-id"]
    assert rid != bad and REQUEST_ID.match(rid), rid


def test_request_id_generated_when_absent(anon: httpx.Client) -> None:
    ids = {anon.get("/health/live").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(REQUEST_ID.match(i) for i in ids), ids
