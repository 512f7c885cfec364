"""Explanations (issue #20) through HTTP on the committed demo models.

Films come from the pneumonia generator with one opacity placed in one lung
(``tests/explain/lesion.py``), with seeds the model never saw; the occlusion map must point at
it. A client with a budget no grid exceeds always uses the finest rung (the same grid on every
machine); a client with a budget of a microsecond must still answer, with the coarsest.
"""

from __future__ import annotations

import base64
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file

from app.config import Settings
from app.imaging.explain import LADDER, choose_grid, grid_for
from app.main import create_app
from tests.explain.lesion import LesionFilm, answer_grid, film_png, lesion_film, pointing
from training.synthetic import covid_ct as synth_ct

MODELS = Path(__file__).resolve().parents[2] / "models"
EXPLAIN = {"explain": "occlusion"}
PNG_ACCEPT = {"Accept": "image/png"}


@pytest.fixture(scope="module")
def fine() -> Iterator[TestClient]:
    """Every grid fits the budget: the finest rung, whatever the latency measured at load."""
    with TestClient(create_app(Settings(model_dir=MODELS, explain_budget_ms=1e9))) as c:
        yield c


@pytest.fixture(scope="module")
def tiny() -> Iterator[TestClient]:
    """No grid fits the budget: the coarsest rung."""
    with TestClient(create_app(Settings(model_dir=MODELS, explain_budget_ms=1e-3))) as c:
        yield c


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# The lesion's side, height and position across the lung differ between the two films.
FILMS: dict[str, dict[str, Any]] = {
    "right_lung": {"seed": 32, "side": 0, "along": 0.55, "across": 0.0, "sigma": 0.11},
    "left_lung": {"seed": 34, "side": 1, "along": 0.65, "across": 0.3, "sigma": 0.1},
}


@pytest.fixture(scope="module")
def films() -> dict[str, LesionFilm]:
    return {name: lesion_film(**params) for name, params in FILMS.items()}


# --------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("shape", [(256, 256), (240, 331), (900, 20), (1, 1), (3, 2)])
def test_every_rung_tiles_the_input_from_its_origin_to_its_far_edges(
    shape: tuple[int, int],
) -> None:
    cells = []
    for rung in LADDER:
        grid = grid_for(shape, rung)
        cells.append(grid.cells)
        assert grid.patch >= grid.stride >= 1
        covered = np.zeros(shape, dtype=bool)
        for i in range(grid.rows):
            for j in range(grid.cols):
                r0, r1, c0, c1 = grid.region(i, j)
                assert (r0, c0) == (i * grid.stride, j * grid.stride)
                assert 0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]
                covered[r0:r1, c0:c1] = True
        assert covered.all(), (shape, rung)
    assert cells == sorted(cells, reverse=True), cells  # finest first


def test_the_grid_is_the_finest_rung_that_fits_the_budget() -> None:
    shape = (256, 300)
    assert choose_grid(shape, 2.0, 1e9) == grid_for(shape, LADDER[0])
    assert choose_grid(shape, 2.0, 1e-3) == grid_for(shape, LADDER[-1])
    for budget in (5.0, 10.0, 60.0, 150.0, 400.0):
        fitting = [g for g in (grid_for(shape, r) for r in LADDER) if g.cells * 2.0 <= budget]
        expected = fitting[0] if fitting else grid_for(shape, LADDER[-1])
        assert choose_grid(shape, 2.0, budget) == expected, budget


def test_the_latency_is_measured_at_load_for_the_classifiers(fine: TestClient) -> None:
    models = fine.app.state.registry.models  # type: ignore[attr-defined]
    for name in ("pneumonia_xray", "covid_ct"):
        assert models[name].explain_ms_per_item > 0
        assert models[name].explain_batch == Settings().explain_batch


# --------------------------------------------------------------------------- chest films


@pytest.mark.parametrize("name", sorted(FILMS))
def test_the_maximum_of_the_occlusion_map_lies_on_the_lesion(
    fine: TestClient, films: dict[str, LesionFilm], name: str
) -> None:
    film = films[name]
    clear = fine.post("/classify/xray", content=film_png(film.clear)).json()
    r = fine.post("/classify/xray", content=film_png(film.pixels), params=EXPLAIN)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["positive"] and not clear["positive"], (body["probability"], clear["probability"])
    explanation = body["explanation"]
    assert explanation["method"] == "occlusion"
    grid, drops = answer_grid(explanation, film.pixels.shape)
    assert grid == grid_for(film.pixels.shape, LADDER[0])
    points = pointing(film, explanation)
    assert points.cell and points.side, points
    # the heat map's peak (mean drop of the cells over each pixel) is within a stride of it
    assert points.peak_distance <= points.stride, points
    assert drops.max() > 0.2  # masking the lesion changes the answer, not only its last digits
    overlay = _image(base64.b64decode(explanation["png_base64"]))
    assert overlay.mode == "RGB" and overlay.size == (film.pixels.shape[1], film.pixels.shape[0])


def test_the_map_is_deterministic_and_the_png_answer_is_its_overlay(
    fine: TestClient, films: dict[str, LesionFilm]
) -> None:
    data = film_png(films["left_lung"].pixels)
    first = fine.post("/classify/xray", content=data, params=EXPLAIN).json()
    second = fine.post("/classify/xray", content=data, params=EXPLAIN).json()
    assert first["explanation"] == second["explanation"]
    assert first["timing_ms"]["explain"] > 0
    r = fine.post("/classify/xray", content=data, params=EXPLAIN, headers=PNG_ACCEPT)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == base64.b64decode(first["explanation"]["png_base64"])
    assert float(r.headers["x-medserve-probability"]) == pytest.approx(first["probability"])
    assert r.headers["x-medserve-positive"] == "true"


def test_a_tiny_budget_gets_the_coarsest_grid_and_the_same_answer(
    tiny: TestClient, films: dict[str, LesionFilm]
) -> None:
    film = films["right_lung"]
    data = film_png(film.pixels)
    plain = tiny.post("/classify/xray", content=data).json()
    r = tiny.post("/classify/xray", content=data, params=EXPLAIN)
    assert r.status_code == 200, r.text
    body = r.json()
    grid, drops = answer_grid(body["explanation"], film.pixels.shape)
    assert grid == grid_for(film.pixels.shape, LADDER[-1])
    assert np.isfinite(drops).all() and drops.shape == (grid.rows, grid.cols)
    assert body["probability"] == plain["probability"] and body["label"] == plain["label"]
    assert pointing(film, body["explanation"]).side


def test_image_png_needs_explain_on_a_classifier(tiny: TestClient) -> None:
    data = film_png(np.full((64, 80), 90, np.uint8))
    r = tiny.post("/classify/xray", content=data, headers=PNG_ACCEPT)
    assert r.status_code == 406 and r.json()["code"] == "not_acceptable"
    assert r.headers["content-type"].startswith("application/problem+json")
    # JSON stays the default with explain, and */* is JSON too
    for headers in ({}, {"Accept": "*/*"}):
        r = tiny.post("/classify/xray", content=data, params=EXPLAIN, headers=headers)
        assert r.headers["content-type"] == "application/json" and "explanation" in r.json()


# --------------------------------------------------------------------------- CT volumes


def test_a_ct_volume_gets_a_grid_over_its_plane(tiny: TestClient) -> None:
    cfg = synth_ct.SynthConfig(n=400, seed=4243, size=96, slices=(30, 30))
    item = next(i for i in synth_ct.plan(cfg) if i.category == "CT-2")
    study = synth_ct.render_study(cfg, item)
    data = gzip.compress(synth_ct.to_nifti(study.hu, study.spacing, "LPS").to_bytes())
    r = tiny.post("/classify/ct", content=data, params=EXPLAIN)
    assert r.status_code == 200, r.text
    body = r.json()
    _, rows, cols = body["input"]["shape"]
    grid, drops = answer_grid(body["explanation"], (rows, cols))
    assert grid == grid_for((rows, cols), LADDER[-1])
    assert np.isfinite(drops).all() and (np.abs(drops) <= 1).all()
    overlay = _image(base64.b64decode(body["explanation"]["png_base64"]))
    assert overlay.mode == "RGB" and overlay.size == (cols, rows)
    png = tiny.post("/classify/ct", content=data, params=EXPLAIN, headers=PNG_ACCEPT)
    assert png.status_code == 200 and png.content == base64.b64decode(
        body["explanation"]["png_base64"]
    )


# --------------------------------------------------------------------------- segmenters


def _mr_small() -> bytes:
    return Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()


@pytest.mark.parametrize("path", ["/segment/mri", "/segment/xray"])
def test_a_segmenter_explains_with_its_probability_map(tiny: TestClient, path: str) -> None:
    data = _mr_small()
    plain = tiny.post(path, content=data, params={"mask_format": "both"}).json()
    r = tiny.post(path, content=data, params={"mask_format": "both", **EXPLAIN})
    assert r.status_code == 200, r.text
    body = r.json()
    explanation = body.pop("explanation")
    assert explanation["method"] == "probability_map"
    assert explanation["patch"] is None and explanation["grid"] is None
    height, width = body["input"]["shape"]
    overlay = _image(base64.b64decode(explanation["png_base64"]))
    assert overlay.mode == "RGB" and overlay.size == (width, height)
    for key in ("mask", "probability", "positive", "label"):
        assert body[key] == plain[key], key
    # the PNG answer of a segmenter stays its mask
    mask = tiny.post(path, content=data, params=EXPLAIN, headers=PNG_ACCEPT)
    assert mask.status_code == 200 and _image(mask.content).mode == "L"


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("path", ["/classify/xray", "/classify/ct", "/segment/mri"])
def test_a_bad_explain_value_is_a_422_problem(tiny: TestClient, path: str) -> None:
    r = tiny.post(path, content=b"\x89PNG", params={"explain": "foo"})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "validation_error" and "explain" in r.json()["detail"]


def test_an_answer_without_explain_has_no_explanation(tiny: TestClient) -> None:
    body = tiny.post("/classify/xray", content=film_png(np.full((50, 60), 80, np.uint8))).json()
    assert "explanation" not in body and "explain" not in body["timing_ms"]
    body = tiny.post("/segment/mri", content=_mr_small()).json()
    assert "explanation" not in body and "explain" not in body["timing_ms"]


def test_a_dicom_result_ignores_explain(tiny: TestClient) -> None:
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    r = tiny.post(
        "/classify/xray", content=data, params=EXPLAIN, headers={"Accept": "application/dicom"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"


def test_the_openapi_document_describes_the_parameter_and_the_field(tiny: TestClient) -> None:
    doc = tiny.get("/openapi.json").json()
    for path in ("/classify/xray", "/classify/ct", "/segment/mri", "/segment/xray"):
        params = {p["name"]: p for p in doc["paths"][path]["post"]["parameters"]}
        assert "occlusion" in str(params["explain"]["schema"]), path
        assert params["explain"]["description"]
    assert "image/png" in doc["paths"]["/classify/xray"]["post"]["responses"]["200"]["content"]
    schemas = doc["components"]["schemas"]
    fields = schemas["ExplanationOut"]["properties"]
    assert {"method", "patch", "stride", "grid", "png_base64"} <= set(fields)
    for response in ("ClassificationResponse", "SegmentationResponse"):
        assert "explanation" in schemas[response]["properties"], response
