"""DICOM results from the committed demo models: ``Accept: application/dicom`` on a DICOM upload
gives a DICOM Segmentation (segmenters) or a Comprehensive 3D SR (classifiers) that pydicom and
highdicom read, that dciodvfy accepts without errors, whose mask / probability equal the JSON
answer for the same upload, and that reference the source instances of the source's study.

Inputs: pydicom's ``MR_small.dcm`` and ``CT_small.dcm``, an anonymised CR film and a 16-bit DX
phantom frame made here (no Frame of Reference, no Type 2 patient/study attributes), and a
40-slice CT series (zip and loose parts) from the project's generator.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as cocomask
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.config import Settings
from app.imaging.card import CARD_FILE, ModelCard
from app.main import create_app
from app.pipeline import OOD_WARNING
from tests.ct_series import series_from_volume, zip_files
from tests.imaging.imaging_factories import image_dataset
from tests.tiny_model import write_tiny_model
from tests.tools import require_tool
from training.synthetic import covid_ct as synth_ct
from training.synthetic import phantom

MODELS = Path(__file__).resolve().parents[2] / "models"
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "json_1_0_0"
CANARY = "CANARY^DICOMRESULT"
DICOM = {"Accept": "application/dicom"}
MULTIPART = {"Accept": 'multipart/related; type="application/dicom"'}
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as c:
        yield c


def card(name: str) -> ModelCard:
    folder = max((MODELS / name).iterdir(), key=lambda p: tuple(map(int, p.name.split("."))))
    return ModelCard.model_validate_json((folder / CARD_FILE).read_text())


# --------------------------------------------------------------------------- inputs


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def anonymised_projection(pixels: np.ndarray, sop_class: str, modality: str, bits: int) -> bytes:
    """A projection radiograph as anonymised files often are: identifiers and the canary
    patient name, but no Frame of Reference and none of the Type 2 patient/study attributes
    (birth date, sex, study date/time/ID, accession number, referring physician)."""
    ds = image_dataset(
        np.asarray(pixels).astype(np.uint16),
        modality=modality,
        sop_class=sop_class,
        bits_stored=bits,
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        ImagerPixelSpacing=[0.388, 0.388],
    )
    ds.PatientName, ds.PatientID = CANARY, "CANARY-ID-77"
    return _part10(ds)


@pytest.fixture(scope="module")
def phantom_frame() -> tuple[bytes, phantom.Frame]:
    """A held-out 768 x 1024 16-bit phantom frame with an insert, as an anonymised DX."""
    cfg = phantom.SynthConfig(n=1, seed=2024)
    for s in range(10):
        has_tumour, fr = phantom.render_one(cfg, s, 2)
        if has_tumour:
            return anonymised_projection(fr.image, DX_STORAGE, "DX", 16), fr
    raise AssertionError("no sequence with an insert")


@pytest.fixture(scope="module")
def cr_film() -> bytes:
    rng = np.random.default_rng(5)
    film = rng.normal(1800, 300, (600, 500)).clip(0, 4095)
    return anonymised_projection(film, CR_STORAGE, "CR", 12)


@pytest.fixture(scope="module")
def ct_series() -> list[bytes]:
    """40 slices of an unseen synthetic chest CT (one series)."""
    cfg = synth_ct.SynthConfig(n=400, seed=99, size=128, slices=(40, 40))
    item = next(i for i in synth_ct.plan(cfg) if i.category == "CT-2")
    study = synth_ct.render_study(cfg, item)
    return series_from_volume(study.hu, study.spacing)


def pydicom_file(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


# --------------------------------------------------------------------------- reading results


def multipart_parts(response: Any) -> list[bytes]:
    """The bodies of a ``multipart/related`` answer, each checked to be application/dicom."""
    ctype = response.headers["content-type"]
    assert ctype.startswith('multipart/related; type="application/dicom"'), ctype
    boundary = ctype.split("boundary=")[1].strip('"').encode()
    parts = []
    for chunk in response.content.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, body = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom" in head
        parts.append(body[: -len(b"\r\n")])
    return parts


def dciodvfy_errors(data: bytes, tmp_path: Path) -> list[str]:
    tool = require_tool("dciodvfy", "dicom3tools")
    path = tmp_path / f"result_{generate_uid()}.dcm"
    path.write_bytes(data)
    run = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def json_mask(body: dict[str, Any]) -> np.ndarray:
    rle = body["mask"]["rle"]
    height, width = rle["size"]
    compressed = cocomask.frPyObjects({"size": rle["size"], "counts": rle["counts"]}, height, width)
    return cocomask.decode(compressed).astype(bool)


def content_items(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)


def named(ds: Dataset, value: str, scheme: str) -> list[Dataset]:
    return [
        item
        for item in content_items(ds)
        if "ConceptNameCodeSequence" in item
        and item.ConceptNameCodeSequence[0].CodeValue == value
        and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == scheme
    ]


def number(sr: Dataset, value: str, scheme: str) -> float:
    (item,) = named(sr, value, scheme)
    return float(item.MeasuredValueSequence[0].NumericValue)


def referenced_sops(sr: Dataset) -> set[str]:
    """SOP Instance UIDs the SR's content references (IMAGE items and their sources)."""
    return {
        ref.ReferencedSOPInstanceUID
        for item in content_items(sr)
        for ref in item.get("ReferencedSOPSequence", [])
    }


def evidence_sops(ds: Dataset) -> set[str]:
    return {
        sop.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


def assert_result_identity(result: Dataset, source: Dataset, model: ModelCard) -> None:
    """Same study and patient, new series and instance, medserve and the model named."""
    assert result.StudyInstanceUID == source.StudyInstanceUID
    assert result.PatientName == source.PatientName
    assert result.PatientID == source.PatientID
    assert result.SeriesInstanceUID != source.SeriesInstanceUID
    assert result.SOPInstanceUID != source.SOPInstanceUID
    assert result.Manufacturer == "medserve"
    assert result.SoftwareVersions
    (equipment,) = [e for e in result.ContributingEquipmentSequence if e.Manufacturer == "medserve"]
    assert equipment.ManufacturerModelName == model.name
    assert equipment.SoftwareVersions == model.version
    pydicom.uid.UID(equipment.DeviceUID).is_valid  # noqa: B018
    assert equipment.DeviceUID.startswith("2.25.")


def decision_matches(sr: Dataset, body: dict[str, Any], model: ModelCard) -> None:
    """The SR's numbers and finding are the JSON answer's."""
    point = body["operating_point"]
    assert number(sr, "122157", "DCM") == pytest.approx(body["probability"], abs=1e-6)
    assert number(sr, "UNCAL_PROB", "99MEDSERVE") == pytest.approx(
        body["uncalibrated_probability"], abs=1e-6
    )
    assert number(sr, "122411", "DCM") == pytest.approx(point["threshold"], abs=1e-9)
    assert number(sr, "111088", "DCM") == pytest.approx(point["sensitivity"], abs=1e-9)
    assert number(sr, "111090", "DCM") == pytest.approx(point["specificity"], abs=1e-9)
    assert 0 <= number(sr, "122157", "DCM") <= 1
    (name,) = named(sr, "111081", "DCM")
    assert name.TextValue == point["name"]
    assert model.dicom is not None
    finding = model.dicom.finding
    (evaluation,) = [
        i for i in named(sr, finding.value, finding.scheme) if "ConceptCodeSequence" in i
    ]
    expected = model.dicom.present if body["positive"] else model.dicom.absent
    assert evaluation.ConceptCodeSequence[0].CodeValue == expected.value
    comments = [i.TextValue for i in named(sr, "121106", "DCM")]
    assert comments == [f"{w['code']}: {w['detail']}" for w in body["warnings"]]


# --------------------------------------------------------------------------- segmentation


def check_seg(
    data: bytes, source: bytes, body: dict[str, Any], model: ModelCard, tmp_path: Path
) -> Dataset:
    src = pydicom.dcmread(io.BytesIO(source))
    seg = hd.seg.segread(io.BytesIO(data))
    assert seg.SOPClassUID == SEG_STORAGE and seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns, int(seg.NumberOfFrames)) == (src.Rows, src.Columns, 1)
    frames = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(bool)
    assert frames.shape == (src.Rows, src.Columns)
    assert np.array_equal(frames, json_mask(body))
    assert [uid for _, _, uid in seg.get_source_image_uids()] == [src.SOPInstanceUID]
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == src.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert model.dicom is not None and model.dicom.segment is not None
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == model.dicom.segment.label
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == (
        model.dicom.segment.category.value
    )
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == model.dicom.segment.type.value
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert algorithm.AlgorithmName == model.name and algorithm.AlgorithmVersion == model.version
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert_result_identity(seg, src, model)
    if body["warnings"]:
        assert all(w["code"] in seg.ImageComments for w in body["warnings"])
    assert dciodvfy_errors(data, tmp_path) == []
    return seg


def test_seg_from_mr_small_equals_the_json_mask(client: TestClient, tmp_path: Path) -> None:
    source = pydicom_file("MR_small.dcm")
    body = client.post("/segment/mri", content=source).json()
    r = client.post("/segment/mri", content=source, headers=DICOM)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    check_seg(r.content, source, body, card("brain_tumor_mri"), tmp_path)


def test_phantom_dx_seg_and_sr_reference_each_other(
    client: TestClient, phantom_frame: tuple[bytes, phantom.Frame], tmp_path: Path
) -> None:
    source, _ = phantom_frame
    model = card("phantom_tumor_xray")
    body = client.post("/segment/xray", content=source).json()
    assert body["mask"]["area_px"] > 0 and body["positive"]
    assert body["mask"]["area_mm2"] is not None
    only_seg = client.post("/segment/xray", content=source, headers=DICOM)
    check_seg(only_seg.content, source, body, model, tmp_path)

    r = client.post("/segment/xray", content=source, headers=MULTIPART)
    assert r.status_code == 200
    seg_bytes, sr_bytes = multipart_parts(r)
    seg = check_seg(seg_bytes, source, body, model, tmp_path)
    sr = hd.sr.srread(io.BytesIO(sr_bytes))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert_result_identity(sr, pydicom.dcmread(io.BytesIO(source)), model)
    decision_matches(sr, body, model)
    assert seg.SOPInstanceUID in referenced_sops(sr)
    assert seg.SOPInstanceUID in evidence_sops(sr)
    assert number(sr, "42798000", "SCT") == pytest.approx(body["mask"]["area_mm2"], rel=1e-6)
    (center,) = [i for i in content_items(sr) if i.get("GraphicType") == "POINT"]
    x, y = body["mask"]["centroid"]
    assert [float(v) for v in center.GraphicData] == pytest.approx([x + 0.5, y + 0.5])
    assert dciodvfy_errors(sr_bytes, tmp_path) == []


def test_empty_mask_keeps_its_frame(client: TestClient, tmp_path: Path) -> None:
    """A frame without a lesion still gets its (empty) SEG frame, and the SR has no point."""
    flat = anonymised_projection(np.full((768, 1024), 9000), DX_STORAGE, "DX", 16)
    body = client.post("/segment/xray", content=flat).json()
    assert body["mask"]["area_px"] == 0
    seg_bytes, sr_bytes = multipart_parts(
        client.post("/segment/xray", content=flat, headers=MULTIPART)
    )
    check_seg(seg_bytes, flat, body, card("phantom_tumor_xray"), tmp_path)
    sr = pydicom.dcmread(io.BytesIO(sr_bytes))
    assert not [i for i in content_items(sr) if i.get("GraphicType") == "POINT"]
    assert number(sr, "42798000", "SCT") == 0.0
    assert dciodvfy_errors(sr_bytes, tmp_path) == []


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("which", ["CT_small", "cr_film"])
def test_pneumonia_sr_equals_the_json_answer(
    client: TestClient, cr_film: bytes, which: str, tmp_path: Path
) -> None:
    source = pydicom_file("CT_small.dcm") if which == "CT_small" else cr_film
    model = card("pneumonia_xray")
    point = sorted(model.operating_points)[0]
    params = {"operating_point": point}
    body = client.post("/classify/xray", content=source, params=params).json()
    r = client.post("/classify/xray", content=source, params=params, headers=DICOM)
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
    sr = hd.sr.srread(io.BytesIO(r.content))
    src = pydicom.dcmread(io.BytesIO(source))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR
    assert_result_identity(sr, src, model)
    decision_matches(sr, body, model)
    assert body["operating_point"]["name"] == point
    assert referenced_sops(sr) == {src.SOPInstanceUID} == evidence_sops(sr)
    assert model.dicom is not None
    procedure = sr.ContentSequence
    assert any(
        i.get("ConceptCodeSequence", [Dataset()])[0].get("CodeValue") == model.dicom.procedure.value
        for i in procedure
    )
    assert dciodvfy_errors(r.content, tmp_path) == []


@pytest.mark.parametrize("form", ["zip", "parts"])
def test_covid_sr_references_every_slice(
    client: TestClient, ct_series: list[bytes], form: str, tmp_path: Path
) -> None:
    if form == "zip":
        kwargs: dict[str, Any] = {"content": zip_files(ct_series)}
    else:
        files = [("file", (f"IM{k:04d}", f, "application/dicom")) for k, f in enumerate(ct_series)]
        kwargs = {"files": files}
    body = client.post("/classify/ct", **kwargs).json()
    r = client.post("/classify/ct", headers=DICOM, **kwargs)
    assert r.status_code == 200, r.text
    sr = hd.sr.srread(io.BytesIO(r.content))
    slices = [pydicom.dcmread(io.BytesIO(f)) for f in ct_series]
    uids = {s.SOPInstanceUID for s in slices}
    assert len(uids) == 40
    assert referenced_sops(sr) == uids == evidence_sops(sr)
    model = card("covid_ct")
    assert_result_identity(sr, slices[0], model)
    decision_matches(sr, body, model)
    assert dciodvfy_errors(r.content, tmp_path) == []


def test_device_uid_follows_the_model_file(
    client: TestClient, cr_film: bytes, tmp_path: Path
) -> None:
    """The same model gives the same Device UID every time; another model another one."""

    def device(path: str, data: bytes) -> str:
        ds = pydicom.dcmread(io.BytesIO(client.post(path, content=data, headers=DICOM).content))
        (equipment,) = [e for e in ds.ContributingEquipmentSequence if e.Manufacturer == "medserve"]
        return str(equipment.DeviceUID)

    mr = pydicom_file("MR_small.dcm")
    first = device("/classify/xray", cr_film)
    assert device("/classify/xray", cr_film) == first
    assert device("/segment/mri", mr) != first
    assert device("/segment/mri", mr) == device("/segment/mri", mr)


# --------------------------------------------------------------------------- refusals


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _nifti() -> bytes:
    img = nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4))
    return bytes(img.to_bytes())


def assert_406(r: Any, words: str) -> None:
    assert r.status_code == 406, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "not_acceptable" and words in body["detail"]


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/classify/xray", "png"),
        ("/segment/mri", "png"),
        ("/segment/xray", "png"),
        ("/classify/ct", "nifti"),
    ],
)
def test_a_non_dicom_upload_cannot_have_a_dicom_result(
    client: TestClient, path: str, data: str
) -> None:
    upload = _png(np.full((64, 64), 80, np.uint8)) if data == "png" else _nifti()
    for accept in (DICOM, MULTIPART) if path.startswith("/segment") else (DICOM,):
        assert_406(client.post(path, content=upload, headers=accept), "need a DICOM upload")


def test_an_accept_the_endpoint_cannot_serve_is_406(client: TestClient) -> None:
    source = pydicom_file("CT_small.dcm")
    assert_406(client.post("/classify/xray", content=source, headers={"Accept": "text/csv"}), "")
    assert_406(client.post("/classify/xray", content=source, headers=MULTIPART), "")
    assert_406(client.post("/classify/ct", content=source, headers={"Accept": "image/png"}), "")
    refused = {"Accept": "application/json;q=0, application/dicom;q=0"}
    assert_406(client.post("/segment/mri", content=source, headers=refused), "")


def test_a_source_without_geometry_is_406_not_500(client: TestClient) -> None:
    """An MR slice without its Frame of Reference cannot be referenced by a SEG."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.FrameOfReferenceUID
    data = _part10(ds)
    assert client.post("/segment/mri", content=data).status_code == 200
    assert_406(client.post("/segment/mri", content=data, headers=DICOM), "cannot be referenced")


def test_a_card_without_dicom_codes_is_406(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, name="pneumonia_xray", dicom=None)
    with TestClient(create_app(Settings(model_dir=tmp_path))) as c:
        source = pydicom_file("CT_small.dcm")
        assert c.post("/classify/xray", content=source).status_code == 200
        assert_406(c.post("/classify/xray", content=source, headers=DICOM), "no DICOM codes")


# --------------------------------------------------------------------------- JSON unchanged


def _golden_inputs() -> dict[str, tuple[str, bytes, dict[str, str]]]:
    film = (np.random.default_rng(3).random((300, 260)) * 255).astype(np.uint8)
    return {
        "segment_mri_MR_small": (
            "/segment/mri",
            pydicom_file("MR_small.dcm"),
            {"mask_format": "both"},
        ),
        "classify_xray_CT_small": ("/classify/xray", pydicom_file("CT_small.dcm"), {}),
        "classify_xray_png": ("/classify/xray", _png(film), {}),
        "segment_xray_MR_small": ("/segment/xray", pydicom_file("MR_small.dcm"), {}),
    }


def _committed_version(name: str) -> str:
    """The one version folder committed for demo model ``name`` (the one served)."""
    (folder,) = [p for p in (MODELS / name).iterdir() if (p / CARD_FILE).is_file()]
    return folder.name


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k not in ("timing_ms", "request_id")}
    out["model"] = {k: v for k, v in body["model"].items() if k != "version"}
    return out


@pytest.mark.parametrize("name", sorted(_golden_inputs()))
def test_json_answers_are_those_of_the_1_0_0_release(client: TestClient, name: str) -> None:
    """Recorded from commit 5792a38 (models 1.0.0): only timings, request ids and
    ``model.version`` may differ; ``Accept`` of JSON, ``*/*`` or none give the same answer.
    From 1.2.0 the answer adds ``ood`` (and, when out, the ``out_of_distribution`` warning),
    and ``model.sha256`` is that of the model with the OOD features output: the card's
    ``derived_from`` lineage names the model the goldens were recorded with. A model retrained
    since (no such lineage: phantom_tumor_xray 1.3.0, other weights) answers with other
    numbers; for it the answer keeps the golden's fields and input block."""
    path, data, params = _golden_inputs()[name]
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert golden["model"]["version"] == "1.0.0"
    version = _committed_version(golden["model"]["name"])
    model_card = json.loads((MODELS / golden["model"]["name"] / version / CARD_FILE).read_text())
    expected = _comparable(golden)
    lineage, step = [], model_card.get("derived_from")
    while step:
        lineage.append(step["model_sha256"])
        step = step.get("derived_from")
    if expected["model"]["sha256"] not in lineage:
        body = client.post(path, content=data, params=params).json()
        assert body["model"]["version"] == version and body["input"] == expected["input"]
        assert set(body) == set(expected) | {"ood", "timing_ms", "request_id"}
        assert set(body["mask"]) == set(expected["mask"])
        assert body["label"] in model_card["output"]["labels"]
        return
    expected["model"]["sha256"] = model_card["files"]["model.onnx"]
    for accept in (None, "application/json", "*/*", "text/html,application/xml;q=0.9,*/*;q=0.8"):
        headers = {"Accept": accept} if accept else {}
        body = client.post(path, content=data, params=params, headers=headers).json()
        assert body["model"]["version"] == version
        ood = body.pop("ood")
        assert set(ood) == {"score", "threshold", "in_distribution"}
        want = dict(expected)
        if not ood["in_distribution"]:
            want["warnings"] = [*expected["warnings"], dict(OOD_WARNING)]
        assert _comparable(body) == want
