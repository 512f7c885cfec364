"""The committed demo model ``models/pneumonia_xray`` through HTTP (TestClient on models/).

Films come from the synthetic generator with a seed the model never saw; DICOMs are built from
the same pixels, so the service must give them the same probability as the JPEG/PNG.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from app.config import Settings
from app.main import create_app
from training.synthetic.pneumonia import SynthConfig, generate

MODELS = Path(__file__).resolve().parents[2] / "models"
pytestmark = pytest.mark.skipif(
    not any((MODELS / "pneumonia_xray").glob("*/model_card.json")),
    reason="models/pneumonia_xray is not there (make models)",
)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    """~40 films of an unseen seed, with their truth (1 = PNEUMONIA)."""
    out = tmp_path_factory.mktemp("pneumonia")
    paths = generate(out, SynthConfig(n=40, seed=777, test_fraction=0.0, val_images=4))
    return [(p, int(p.parent.name == "PNEUMONIA")) for p in sorted(paths)]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _dicom(pixels: np.ndarray, **tags: object) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.ViewPosition, ds.PatientAge = "DX", "AP", "003Y"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.ImagerPixelSpacing = [0.2, 0.2]
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, np.uint8).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_synthetic_films_are_classified(client: TestClient, films: list[tuple[Path, int]]) -> None:
    probabilities, truth, correct = [], [], 0
    for path, label in films:
        body = client.post("/classify/xray", content=path.read_bytes()).json()
        assert body["model"]["name"] == "pneumonia_xray" and body["input"]["format"] == "jpeg"
        assert body["label"] == ("PNEUMONIA" if body["positive"] else "NORMAL")
        probabilities.append(body["probability"])
        truth.append(label)
        correct += int(body["positive"] == bool(label))
    p, y = np.array(probabilities), np.array(truth)
    assert y.min() == 0 and y.max() == 1
    # The card's test figures (AUC ~0.98) leave room for an error or two in forty.
    assert correct / len(films) >= 0.85, (correct, len(films))
    assert p[y == 1].mean() > p[y == 0].mean() + 0.3


def test_dicom_of_a_film_gives_the_probability_of_its_png(
    client: TestClient, films: list[tuple[Path, int]]
) -> None:
    pixels = np.asarray(Image.open(films[0][0]).convert("L"))
    png = client.post("/classify/xray", content=_png(pixels)).json()
    dcm = client.post("/classify/xray", files={"file": ("x.dcm", _dicom(pixels))}).json()
    assert dcm["input"]["format"] == "dicom" and dcm["input"]["spacing_mm"] == [0.2, 0.2]
    assert dcm["probability"] == pytest.approx(png["probability"], abs=1e-6)
    assert dcm["warnings"] == [] and png["warnings"] == []


def test_out_of_distribution_dicom_gets_warnings_not_errors(
    client: TestClient, films: list[tuple[Path, int]]
) -> None:
    pixels = np.asarray(Image.open(films[0][0]).convert("L"))
    big = np.asarray(Image.fromarray(pixels).resize((1024, 1024)))
    resp = client.post(
        "/classify/xray", content=_dicom(big, Modality="CT", ViewPosition="LL", PatientAge="045Y")
    )
    assert resp.status_code == 200, resp.text
    codes = {w["code"] for w in resp.json()["warnings"]}
    assert codes == {
        "unexpected_modality",
        "unexpected_view",
        "outside_training_age_range",
        "rescaled_input",
    }
    details = " ".join(w["detail"] for w in resp.json()["warnings"])
    assert "45" not in details and "LL" not in details and "CT" not in details  # no tag values
