"""POST /segment/xray (phantom_tumor_xray): 16-bit PNG/TIFF and DICOM, with and without spacing
(``area_mm2`` and ``centroid_mm`` only where the file gives the pixel size)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration import media
from tests.integration.segmentation import check_mask_formats, check_png_answer, segment

NAME = "phantom_tumor_xray"
PATH = "/segment/xray"
H, W = 256, 224

SAMPLES: dict[str, Callable[[], media.Sample]] = {
    "png_16bit": lambda: media.png16(media.blob_image(H, W, max_value=60000)),
    "tiff_16bit": lambda: media.tiff16(media.blob_image(H, W, max_value=60000)),
    "dicom_with_spacing": lambda: media.dicom_xray_phantom(
        media.blob_image(H, W, max_value=60000), spacing=(0.15, 0.2)
    ),
    "dicom_without_spacing": lambda: media.dicom_xray_phantom(
        media.blob_image(H, W, max_value=60000), spacing=None
    ),
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
    body, _ = segment(client, PATH, SAMPLES[kind](), model, labels, transport=transport)
    mask = body["mask"]
    if kind == "dicom_with_spacing":
        assert mask["area_mm2"] is not None, mask
        assert (mask["centroid_mm"] is None) == (mask["area_px"] == 0), mask


def test_png_and_tiff_of_one_frame_agree(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    a, mask_a = segment(client, PATH, SAMPLES["png_16bit"](), model, labels)
    b, mask_b = segment(client, PATH, SAMPLES["tiff_16bit"](), model, labels)
    assert abs(a["probability"] - b["probability"]) < 1e-5
    assert mask_a is not None and mask_b is not None and (mask_a == mask_b).all()


def test_mask_formats_agree(client: httpx.Client, model: dict[str, Any], labels: list[str]) -> None:
    check_mask_formats(client, PATH, SAMPLES["dicom_with_spacing"](), model, labels)


def test_png_answer_and_overlay(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    check_png_answer(client, PATH, SAMPLES["png_16bit"](), model, labels)
