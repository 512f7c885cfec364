"""POST /classify/xray (pneumonia_xray): every accepted format, raw body and multipart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration import media
from tests.integration.contract import assert_prediction, describe, post_upload

NAME = "pneumonia_xray"
PATH = "/classify/xray"
H, W = 300, 256

SAMPLES: dict[str, Callable[[], media.Sample]] = {
    "png_8bit": lambda: media.png8(media.chest_like(H, W, max_value=255)),
    "png_16bit": lambda: media.png16(media.chest_like(H, W, max_value=65535)),
    "jpeg": lambda: media.jpeg(media.chest_like(H, W, max_value=255)),
    "tiff_8bit": lambda: media.tiff8(media.chest_like(H, W, max_value=255)),
    "tiff_16bit": lambda: media.tiff16(media.chest_like(H, W, max_value=65535)),
    "dicom_dx": lambda: media.dicom_dx(media.chest_like(H, W, max_value=4095)),
}


@pytest.fixture(scope="module")
def model(deployed: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return deployed(NAME)


@pytest.fixture(scope="module")
def labels(model: dict[str, Any], cards: dict[str, dict[str, Any]]) -> list[str]:
    return list(cards[NAME]["output"]["labels"])


@pytest.mark.parametrize("transport", ["raw", "multipart"])
@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_accepts_each_format(
    client: httpx.Client, model: dict[str, Any], labels: list[str], kind: str, transport: str
) -> None:
    sample = SAMPLES[kind]()
    r = post_upload(
        client, PATH, sample.data, transport=transport, content_type=sample.content_type
    )
    body = assert_prediction(
        r,
        summary=model,
        labels=labels,
        upload=sample.data,
        fmt=sample.format,
        shape=sample.shape,
        spacing_mm=sample.spacing_mm,
    )
    if sample.spacing_mm is None:
        assert body["input"]["spacing_mm"] is None, body["input"]


def test_format_comes_from_the_bytes_not_the_declared_type(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    sample = SAMPLES["png_8bit"]()
    r = post_upload(client, PATH, sample.data, content_type="application/dicom")
    assert_prediction(
        r, summary=model, labels=labels, upload=sample.data, fmt="png", shape=sample.shape
    )


def test_same_pixels_same_answer(client: httpx.Client, model: dict[str, Any]) -> None:
    """The same 16-bit pixels as PNG and TIFF, raw and multipart, twice: one probability."""
    pixels = media.chest_like(H, W, max_value=65535)
    answers = []
    for sample in (media.png16(pixels), media.tiff16(pixels)):
        for transport in ("raw", "multipart", "raw"):
            r = post_upload(client, PATH, sample.data, transport=transport)
            assert r.status_code == 200, describe(r)
            answers.append(r.json()["probability"])
    assert max(answers) - min(answers) < 1e-5, answers


def test_every_operating_point(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    sample = SAMPLES["dicom_dx"]()
    probabilities = set()
    for point in model["operating_points"]:
        r = post_upload(client, PATH, sample.data, params={"operating_point": point})
        body = assert_prediction(
            r,
            summary=model,
            labels=labels,
            upload=sample.data,
            fmt="dicom",
            shape=sample.shape,
            operating_point=point,
        )
        probabilities.add(body["probability"])
    assert len(probabilities) == 1, "the operating point must change the decision, not the score"


def test_request_id_is_echoed_in_the_answer(client: httpx.Client, model: dict[str, Any]) -> None:
    sample = SAMPLES["png_8bit"]()
    r = post_upload(client, PATH, sample.data, headers={"X-Request-ID": "itest-xray-1"})
    assert r.status_code == 200, describe(r)
    assert r.headers["x-request-id"] == "itest-xray-1" == r.json()["request_id"]
