"""Checks shared by the two segmentation endpoints: mask formats, the PNG answer, the overlay."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from tests.integration.contract import (
    assert_mask,
    assert_prediction,
    describe,
    media_type,
    post_upload,
)
from tests.integration.media import Sample, read_png


def segment(
    client: httpx.Client,
    path: str,
    sample: Sample,
    model: dict[str, Any],
    labels: list[str],
    *,
    transport: str = "raw",
    mask_format: str | None = None,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One JSON segmentation answer, fully checked; (body, decoded mask or None)."""
    params = {"mask_format": mask_format} if mask_format else None
    r = post_upload(
        client,
        path,
        sample.data,
        transport=transport,
        content_type=sample.content_type,
        params=params,
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
    fmt = mask_format or "rle"
    mask = assert_mask(body, rle=fmt in ("rle", "both"), png=fmt in ("png", "both"))
    return body, mask


def check_mask_formats(
    client: httpx.Client, path: str, sample: Sample, model: dict[str, Any], labels: list[str]
) -> None:
    """rle (default), png, both and none describe one and the same mask."""
    masks = {}
    summaries = {}
    for fmt in ("rle", "png", "both", "none"):
        body, mask = segment(client, path, sample, model, labels, mask_format=fmt)
        summaries[fmt] = {k: body["mask"][k] for k in ("area_px", "bbox", "centroid")}
        if mask is not None:
            masks[fmt] = mask
    assert all(s == summaries["rle"] for s in summaries.values()), summaries
    assert all(np.array_equal(m, masks["rle"]) for m in masks.values())


def check_png_answer(
    client: httpx.Client, path: str, sample: Sample, model: dict[str, Any], labels: list[str]
) -> None:
    """``Accept: image/png``: the 0/255 mask at the input's size, equal to the JSON's RLE mask;
    with ``overlay=true`` an image of the input's size."""
    _, expected = segment(client, path, sample, model, labels)
    assert expected is not None
    height, width = sample.shape
    r = post_upload(client, path, sample.data, headers={"Accept": "image/png"})
    assert r.status_code == 200, describe(r)
    assert media_type(r) == "image/png", describe(r)
    pixels = read_png(r.content)
    assert pixels.shape == (height, width), pixels.shape
    assert set(np.unique(pixels).tolist()) <= {0, 255}
    assert np.array_equal(pixels == 255, expected), "PNG answer and JSON mask differ"

    r = post_upload(
        client, path, sample.data, headers={"Accept": "image/png"}, params={"overlay": "true"}
    )
    assert r.status_code == 200, describe(r)
    assert media_type(r) == "image/png", describe(r)
    overlay = read_png(r.content)
    assert overlay.shape[:2] == (height, width), overlay.shape
