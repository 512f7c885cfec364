"""POST /classify/ct (covid_ct): NIfTI (.nii, .nii.gz), a zipped DICOM series, several DICOM
slices as repeated multipart ``file`` parts, and one multi-frame (Enhanced CT) object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration import media
from tests.integration.contract import assert_prediction, describe, post_upload

NAME = "covid_ct"
PATH = "/classify/ct"
SIZES = sorted((media.CT_SLICES, media.CT_ROWS, media.CT_COLS))

# name -> (upload, transport, reported format)
UPLOADS: dict[str, Callable[[], tuple[bytes | list[bytes], str, str]]] = {
    "nifti": lambda: (media.ct_nifti(compressed=False), "raw", "nifti"),
    "nifti_gz": lambda: (media.ct_nifti(compressed=True), "raw", "nifti"),
    "nifti_gz_multipart": lambda: (media.ct_nifti(compressed=True), "multipart", "nifti"),
    "dicom_series_zip": lambda: (media.ct_series_zip(), "raw", "dicom_series"),
    "dicom_series_zip_multipart": lambda: (media.ct_series_zip(), "multipart", "dicom_series"),
    "dicom_slices_multipart": lambda: (media.ct_series(), "multipart", "dicom_series"),
    "dicom_multiframe": lambda: (media.ct_multiframe(), "raw", "dicom"),
}


@pytest.fixture(scope="module")
def model(deployed: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return deployed(NAME)


@pytest.fixture(scope="module")
def labels(model: dict[str, Any], cards: dict[str, dict[str, Any]]) -> list[str]:
    return list(cards[NAME]["output"]["labels"])


@pytest.mark.parametrize("kind", sorted(UPLOADS))
def test_accepts_each_format(
    client: httpx.Client, model: dict[str, Any], labels: list[str], kind: str
) -> None:
    data, transport, fmt = UPLOADS[kind]()
    r = post_upload(client, PATH, data, transport=transport)
    body = assert_prediction(r, summary=model, labels=labels, upload=data, fmt=fmt, shape=None)
    inp = body["input"]
    # [slices, height, width] after the reader's canonical orientation: the same three sizes
    assert len(inp["shape"]) == 3 and sorted(inp["shape"]) == SIZES, inp
    assert inp["spacing_mm"] is not None, inp
    assert np.allclose(sorted(inp["spacing_mm"]), sorted(media.CT_SPACING), rtol=1e-3), inp


def test_every_encoding_of_one_volume_scores_alike(
    client: httpx.Client, model: dict[str, Any]
) -> None:
    """NIfTI, the zipped series, the loose slices and the multi-frame object hold the same HU
    volume: the model must see (nearly) the same input whichever way it came."""
    probabilities = {}
    for kind in ("nifti_gz", "dicom_series_zip", "dicom_slices_multipart", "dicom_multiframe"):
        data, transport, _ = UPLOADS[kind]()
        r = post_upload(client, PATH, data, transport=transport)
        assert r.status_code == 200, describe(r)
        probabilities[kind] = r.json()["probability"]
    spread = max(probabilities.values()) - min(probabilities.values())
    assert spread < 0.02, probabilities


def test_slice_order_does_not_matter(client: httpx.Client, model: dict[str, Any]) -> None:
    slices = media.ct_series()
    shuffled = [slices[i] for i in np.random.default_rng(9).permutation(len(slices))]
    answers = []
    for files in (slices, shuffled):
        r = post_upload(client, PATH, files, transport="multipart")
        assert r.status_code == 200, describe(r)
        answers.append(r.json()["probability"])
    assert abs(answers[0] - answers[1]) < 1e-6, answers


def test_every_operating_point(
    client: httpx.Client, model: dict[str, Any], labels: list[str]
) -> None:
    data = media.ct_nifti(compressed=True)
    for point in model["operating_points"]:
        r = post_upload(client, PATH, data, params={"operating_point": point})
        assert_prediction(
            r,
            summary=model,
            labels=labels,
            upload=data,
            fmt="nifti",
            shape=None,
            operating_point=point,
        )
