"""Mask encodings round-trip, and pycocotools reads our RLE unchanged."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.imaging.encode import mask_png, outline, overlay_png, rle_decode, rle_encode
from app.imaging.postprocess import summarize_mask


def _masks() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    single = np.zeros((7, 5), bool)
    single[3, 2] = True
    border = np.zeros((6, 9), bool)
    border[0, :] = True
    border[:, -1] = True
    return {
        "empty": np.zeros((4, 6), bool),
        "full": np.ones((5, 3), bool),
        "single": single,
        "border": border,
        "first_pixel": np.eye(4, dtype=bool),
        "random": rng.random((31, 17)) > 0.6,
    }


@pytest.mark.parametrize("name", list(_masks()))
def test_rle_round_trip(name: str) -> None:
    mask = _masks()[name]
    rle = rle_encode(mask)
    assert rle["order"] == "F" and rle["size"] == list(mask.shape)
    assert sum(rle["counts"]) == mask.size
    assert np.array_equal(rle_decode(rle), mask)


def test_rle_known_values() -> None:
    mask = np.array([[0, 1], [1, 1]], bool)  # column-major: 0,1,1,1
    assert rle_encode(mask)["counts"] == [1, 3]
    assert rle_encode(np.ones((2, 2), bool))["counts"] == [0, 4]
    assert rle_encode(np.zeros((2, 3), bool))["counts"] == [6]


@pytest.mark.parametrize("name", list(_masks()))
def test_pycocotools_decodes_our_rle(name: str) -> None:
    cocomask = pytest.importorskip("pycocotools.mask")
    mask = _masks()[name]
    rle = rle_encode(mask)
    compressed = cocomask.frPyObjects({"size": rle["size"], "counts": rle["counts"]}, *rle["size"])
    decoded = cocomask.decode(compressed)
    assert decoded.shape == mask.shape
    assert np.array_equal(decoded.astype(bool), mask)
    assert int(cocomask.area(compressed)) == int(mask.sum())


def test_png_and_overlay() -> None:
    mask = _masks()["random"]
    png = Image.open(io.BytesIO(mask_png(mask)))
    assert png.mode == "L" and png.size == (mask.shape[1], mask.shape[0])
    assert set(np.unique(np.asarray(png))) <= {0, 255}
    assert np.array_equal(np.asarray(png) == 255, mask)
    plane = np.linspace(0, 65535, mask.size, dtype=np.float32).reshape(mask.shape)
    over = np.asarray(Image.open(io.BytesIO(overlay_png(plane, mask))))
    assert over.shape == (*mask.shape, 3)
    edge = outline(mask)
    assert np.all(over[edge] == [255, 48, 48])
    assert np.all(over[~edge][:, 0] == over[~edge][:, 1])  # gray elsewhere


def test_outline_of_a_square() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    edge = outline(mask)
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()


def test_summary_with_and_without_spacing() -> None:
    mask = np.zeros((10, 20), bool)
    mask[2:4, 5:9] = True  # rows 2-3, cols 5-8
    s = summarize_mask(mask, (0.5, 0.25))
    assert s.area_px == 8 and s.bbox == [5, 2, 8, 3]
    assert s.centroid == [6.5, 2.5] and s.centroid_mm == [6.5 * 0.25, 2.5 * 0.5]
    assert s.area_mm2 == pytest.approx(8 * 0.125)
    empty = summarize_mask(np.zeros((3, 3), bool), None)
    assert empty.area_px == 0 and empty.bbox is None and empty.centroid is None
    assert empty.area_mm2 is None and empty.centroid_mm is None
