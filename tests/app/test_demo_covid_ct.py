"""The committed covid_ct demo model through HTTP (TestClient on the real models/ folder).

One synthetic study (a seed the demo never saw) sent as NIfTI (.nii, .nii.gz), as a zipped
DICOM series built from the same array, and as loose DICOM slices (repeated ``file`` parts)
must score alike; a series with a missing slice is refused; the card's conformance section
warns on thin slices, too few slices and a non-CT modality.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.imaging.card import CARD_FILE, MODEL_FILE, ModelCard
from app.main import create_app
from tests.ct_series import series_from_volume, zip_files
from tests.integration.contract import assert_prediction
from training.synthetic import covid_ct as synth

MODELS = Path(__file__).resolve().parents[2] / "models"
NAME = "covid_ct"
# the demo's geometry (Makefile models-ct: 128 px, 36-44 slices) with a seed it never saw
UNSEEN = synth.SynthConfig(n=400, seed=99, size=128, slices=(36, 44))


def _versions() -> list[Path]:
    root = MODELS / NAME
    return sorted(p for p in root.iterdir() if (p / CARD_FILE).exists()) if root.is_dir() else []


pytestmark = pytest.mark.skipif(
    not _versions(), reason="models/covid_ct/<version>/ not built yet (make models-ct)"
)


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.model_validate(json.loads((_versions()[-1] / CARD_FILE).read_text()))


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def summary(client: TestClient) -> dict[str, Any]:
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models[NAME]["ready"], models[NAME]
    return models[NAME]


def _study(category: str, index: int = 0) -> synth.Study:
    items = [i for i in synth.plan(UNSEEN) if i.category == category]
    return synth.render_study(UNSEEN, items[index])


@pytest.fixture(scope="module")
def positive() -> synth.Study:
    return _study("CT-3")


@pytest.fixture(scope="module")
def borderline(client: TestClient) -> synth.Study:
    """Of the first mild (CT-1) unseen studies, the one scored closest to 0.5: the encodings
    must agree where the probability is not saturated, or the comparison proves little."""
    best, gap = None, 1.0
    for k in range(4):
        s = _study("CT-1", k)
        p = _probability(client.post("/classify/ct", content=_nii_gz(s)))
        if abs(p - 0.5) < gap:
            best, gap = s, abs(p - 0.5)
    assert best is not None
    return best


def _nii_gz(s: synth.Study, storage: str = "LPS") -> bytes:
    return gzip.compress(synth.to_nifti(s.hu, s.spacing, storage).to_bytes())


def _probability(r: Any) -> float:
    assert r.status_code == 200, r.text
    return float(r.json()["probability"])


def _parts(files: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"IM{k:04d}.dcm", f, "application/dicom")) for k, f in enumerate(files)]


def test_artifact(card: ModelCard) -> None:
    folder = _versions()[-1]
    assert (folder / MODEL_FILE).stat().st_size < 15 * 1024 * 1024
    assert card.training.synthetic and any("SYNTHETIC" in x for x in card.limitations)
    assert card.input.layout == "NDHWC" and card.input.preprocessing.kind == "volume3d"
    assert card.conformance.modalities == ["CT"]
    assert card.conformance.slice_thickness_range_mm is not None
    assert card.conformance.min_slices is not None
    assert float(card.metrics["auc"]) >= 0.90  # type: ignore[arg-type]
    for plot in ("roc.png", "reliability.png", "confusion_matrix.png", "training_curves.png"):
        assert plot in card.files and (folder / plot).exists()


@pytest.mark.parametrize("which", ["positive", "borderline"])
def test_nifti_and_dicom_series_of_one_study_agree(
    client: TestClient, summary: dict[str, Any], which: str, request: pytest.FixtureRequest
) -> None:
    study: synth.Study = request.getfixturevalue(which)
    gz = _nii_gz(study, "RAS")
    series = zip_files(series_from_volume(study.hu, study.spacing))
    answers = {}
    for name, data, fmt in (("nifti_gz", gz, "nifti"), ("dicom_zip", series, "dicom_series")):
        r = client.post("/classify/ct", content=data)
        body = assert_prediction(
            r,
            summary=summary,
            labels=["NEGATIVE", "COVID19"],
            upload=data,
            fmt=fmt,
            shape=study.hu.shape,
            spacing_mm=study.spacing,
        )
        assert body["warnings"] == [], body["warnings"]
        answers[name] = body["probability"]
    assert abs(answers["nifti_gz"] - answers["dicom_zip"]) < 0.02, answers


def test_nii_gz_and_loose_slices_give_the_same_answer(
    client: TestClient, borderline: synth.Study
) -> None:
    nii = synth.to_nifti(borderline.hu, borderline.spacing, "LAS").to_bytes()
    files = series_from_volume(borderline.hu, borderline.spacing)
    shuffled = [files[i] for i in np.random.default_rng(1).permutation(len(files))]
    p = [
        _probability(client.post("/classify/ct", content=nii)),
        _probability(client.post("/classify/ct", content=gzip.compress(nii))),
        _probability(client.post("/classify/ct", files=_parts(shuffled))),
    ]
    assert max(p) - min(p) < 1e-5, p


def test_a_series_with_a_missing_slice_is_refused(
    client: TestClient, positive: synth.Study
) -> None:
    files = series_from_volume(positive.hu, positive.spacing)
    del files[len(files) // 2]
    for r in (
        client.post("/classify/ct", content=zip_files(files)),
        client.post("/classify/ct", files=_parts(files)),
    ):
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "inconsistent_series"


def _codes(r: Any) -> set[str]:
    assert r.status_code == 200, r.text
    return {w["code"] for w in r.json()["warnings"]}


def test_conformance_warnings(client: TestClient, card: ModelCard, positive: synth.Study) -> None:
    assert card.conformance.slice_thickness_range_mm and card.conformance.min_slices
    lo, hi = card.conformance.slice_thickness_range_mm
    row_col = positive.spacing[1:]
    thin = series_from_volume(positive.hu, (1.0, *row_col))  # a 1 mm reconstruction
    assert lo > 1.0 and "unexpected_slice_thickness" in _codes(
        client.post("/classify/ct", content=zip_files(thin))
    )
    few = positive.hu[: card.conformance.min_slices - 1]
    assert "too_few_slices" in _codes(
        client.post("/classify/ct", content=zip_files(series_from_volume(few, positive.spacing)))
    )
    mr = series_from_volume(positive.hu, positive.spacing, modality="MR")
    assert "unexpected_modality" in _codes(client.post("/classify/ct", content=zip_files(mr)))
    assert lo <= positive.spacing[0] <= hi


def test_unseen_studies_are_told_apart(client: TestClient, card: ModelCard) -> None:
    """Three normal and three CT-3 studies of an unseen seed: every positive scores above every
    negative, and the default operating point labels them right."""
    scores: dict[str, list[float]] = {"CT-0": [], "CT-3": []}
    for category in scores:
        for k in range(3):
            r = client.post("/classify/ct", content=_nii_gz(_study(category, k)))
            assert r.status_code == 200, r.text
            scores[category].append(r.json()["probability"])
            expected = "COVID19" if category == "CT-3" else "NEGATIVE"
            assert r.json()["label"] == expected, (category, k, r.json())
    assert min(scores["CT-3"]) > max(scores["CT-0"]), scores
