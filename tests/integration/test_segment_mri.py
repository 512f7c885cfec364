"""POST /segment/mri (brain_tumor_mri): PNG, TIFF, JPEG (gray or 3-channel), DICOM MR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration import media
from tests.integration.segmentation import check_mask_formats, check_png_answer, segment

NAME = "brain_tumor_mri"
PATH = "/segment/mri"
H, W = 240, 208

SAMPLES: dict[str, Callable[[], media.Sample]] = {
    "png_gray": lambda: media.png8(media.blob_image(H, W, max_value=255)),
    "png_rgb": lambda: media.png_rgb(media.blob_image(H, W, max_value=255)),
    "png_16bit": lambda: media.png16(media.blob_image(H, W, max_value=4000)),
    "tiff_gray": lambda: media.tiff8(media.blob_image(H, W, max_value=255)),
    "tiff_3channel": lambda: media.tiff8(media.blob_image(H, W, max_value=255), rgb=True),
    "jpeg_gray": lambda: media.jpeg(media.blob_image(H, W, max_value=255)),
    "jpeg_rgb": lambda: media.jpeg(media.blob_image(H, W, max_value=255), rgb=True),
    "dicom_mr": lambda: media.dicom_mr(media.blob_image(H, W, max_value=3000)),
}


@pytest.fixture(scope="module")
def model(deployed: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return deployed(NAME)


@pytest.fixture(scope="module")
def labels(model: dict[str, Any], cards: dict[str, dict[str, Any]]) -> list[str]:
    return list(cards[NAME]["output"]["labels"])


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_accepts_each_format(
    client: httpx.Client, model: dict[str, Any], labels: list[str], kind: str
) -> None:
    segment(client, PATH, SAMPLES[kind](), model, labels)


@pytest.mark.parametrize("kind", ["png_gray", "dicom_mr"])
def test_multipart(
    client: httpx.Client, model: dict[str, Any], labels: list[str], kind: str
) -> None:
    segment(client, PATH, SAMPLES[kind](), model, labels, transport="multipart")


def test_mask_formats_agree(client: httpx.Client, model: dict[str, Any], labels: list[str]) -> None:
    check_mask_formats(client, PATH, SAMPLES["png_gray"](), model, labels)


def test_png_answer_and_overlay(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    check_png_answer(client, PATH, SAMPLES["dicom_mr"](), model, labels)


def test_every_operating_point(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    sample = SAMPLES["png_gray"]()
    for point in model["operating_points"]:
        r = client.post(PATH, content=sample.data, params={"operating_point": point})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["operating_point"]["name"] == point
        assert body["positive"] == (
            body["probability"] >= model["operating_points"][point]["threshold"]
        )
