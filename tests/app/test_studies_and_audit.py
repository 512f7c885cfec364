"""The study/job and audit endpoints over HTTP (in process, SQLite): analyze records a job and
answers at once, idempotently; jobs are listed and read; named and admin keys; one audit row per
inference with no UID in clear. The PACS round trip itself is in tests/pacs (a real Orthanc)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from app.config import Settings
from app.main import create_app
from tests.app.test_dicom_results import pydicom_file
from tests.tiny_model import write_tiny_model, write_tiny_volume_classifier

KEY = "orthanc:orthanc-key-0123456789"
RIS = "ris-key-0123456789abcdef"
ADMIN = "auditor:admin-key-0123456789ab"
STUDY = "1.2.826.0.1.3680043.8.498.12345"


def _h(key: str) -> dict[str, str]:
    return {"X-API-Key": key.split(":", 1)[-1]}


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_tiny_model(root, name="pneumonia_xray", routing={"modalities": ["CR", "DX"]})
    write_tiny_volume_classifier(root, name="covid_ct")  # no routing: never takes a study
    return root


@pytest.fixture
def client(models: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_dir=models,
        data_dir=tmp_path / "data",
        api_keys=f"{KEY},{RIS}",  # type: ignore[arg-type]
        admin_keys=ADMIN,  # type: ignore[arg-type]
        dicomweb_url="http://127.0.0.1:9/dicom-web",
        job_workers=0,
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_without_a_pacs_the_study_endpoints_answer_503(models: Path, tmp_path: Path) -> None:
    settings = Settings(model_dir=models, data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as c:
        r = c.post(f"/studies/{STUDY}/analyze")
        assert r.status_code == 503 and r.json()["code"] == "pacs_not_configured"
        assert c.post("/classify/xray", content=pydicom_file("CT_small.dcm")).status_code == 200


def test_analyze_records_a_job_once(client: TestClient) -> None:
    r = client.post(f"/studies/{STUDY}/analyze", headers=_h(KEY))
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["study_instance_uid"] == STUDY
    assert r.headers["location"] == f"/jobs/{body['job_id']}"
    again = client.post(f"/studies/{STUDY}/analyze", headers=_h(RIS))
    assert again.status_code == 200 and again.json()["job_id"] == body["job_id"]
    forced = client.post(f"/studies/{STUDY}/analyze", params={"force": "true"}, headers=_h(KEY))
    assert forced.status_code == 202 and forced.json()["job_id"] != body["job_id"]
    job = client.get(f"/jobs/{body['job_id']}", headers=_h(RIS)).json()
    assert job["status"] == "queued" and job["attempts"] == 0 and job["results"] == []
    assert [m["name"] for m in job["models"]] == ["pneumonia_xray"]
    assert job["created"].endswith("Z")
    listed = client.get("/jobs", params={"status": "queued", "limit": 10}, headers=_h(KEY))
    assert [j["job_id"] for j in listed.json()["jobs"]] == [
        forced.json()["job_id"],
        body["job_id"],
    ]
    assert client.get("/jobs", params={"status": "done"}, headers=_h(KEY)).json()["jobs"] == []


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/studies/not-a-uid/analyze", {}, 422, "validation_error"),
        (f"/studies/{STUDY}/analyze", {"models": "covid_ct"}, 422, "validation_error"),
        (f"/studies/{STUDY}/analyze", {"models": "nope"}, 422, "validation_error"),
        (f"/studies/{STUDY}/analyze", {"force": "maybe"}, 422, "validation_error"),
    ],
)
def test_bad_analyze_requests(
    client: TestClient, path: str, params: dict[str, str], status: int, code: str
) -> None:
    r = client.post(path, params=params, headers=_h(KEY))
    assert r.status_code == status and r.json()["code"] == code
    assert r.headers["content-type"] == "application/problem+json"


def test_jobs_404_and_bad_queries(client: TestClient) -> None:
    r = client.get("/jobs/0123456789abcdef", headers=_h(KEY))
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert client.get("/jobs", params={"status": "lost"}, headers=_h(KEY)).status_code == 422
    assert client.get("/jobs", params={"limit": "0"}, headers=_h(KEY)).status_code == 422
    assert client.get("/jobs").status_code == 401


def test_audit_needs_an_admin_key_and_holds_no_uid(client: TestClient) -> None:
    source = pydicom_file("CT_small.dcm")
    assert client.post("/classify/xray", content=source, headers=_h(KEY)).status_code == 200
    bad = client.post("/classify/xray", content=b"not an image", headers=_h(RIS))
    assert bad.status_code == 415
    # an admin key authenticates everywhere by itself
    assert client.post("/classify/xray", content=source, headers=_h(ADMIN)).status_code == 200
    denied = client.get("/audit", headers=_h(KEY))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert client.get("/audit").status_code == 401
    rows = client.get("/audit", params={"limit": 10}, headers=_h(ADMIN)).json()["rows"]
    assert [(r["key_name"], r["status"]) for r in rows] == [
        ("auditor", "ok"),
        ("key2", "unsupported_media_type"),
        ("orthanc", "ok"),
    ]
    ok = rows[-1]
    assert ok["endpoint"] == "/classify/xray" and ok["model"]["name"] == "pneumonia_xray"
    assert ok["model"]["sha256"] and len(ok["upload_sha256"]) == 64
    assert set(ok["summary"]) >= {"probability", "label", "positive", "operating_point"}
    assert ok["request_id"]
    text = str(rows)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert uid not in text
    assert str(ds.PatientName) not in text


def test_key_names_and_lengths_are_validated() -> None:
    with pytest.raises(ValueError):
        Settings(api_keys="orthanc:short")  # type: ignore[arg-type]
    settings = Settings(
        api_keys="orthanc:orthanc-key-0123456789,bare-key-0123456789abc",  # type: ignore[arg-type]
        admin_keys="admin-key-0123456789abcd",  # type: ignore[arg-type]
    )
    assert settings.named_keys() == {
        "orthanc-key-0123456789": ("orthanc", False),
        "bare-key-0123456789abc": ("key2", False),
        "admin-key-0123456789abcd": ("admin1", True),
    }


def test_a_failed_audit_write_is_logged_and_the_answer_still_given(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ok rows (uploads and V2) are committed behind the answer: a database that refuses
    them costs the answer nothing, and the failure is logged without its values."""
    store = client.app.state.store  # type: ignore[attr-defined]

    def refuse(rows: object) -> None:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(store._behind, "_write_many", refuse)
    caplog.set_level("ERROR", logger="medserve.audit")
    source = pydicom_file("CT_small.dcm")
    assert client.post("/classify/xray", content=source, headers=_h(KEY)).status_code == 200
    meta = client.get("/v2/models/pneumonia_xray", headers=_h(KEY)).json()
    tensor = meta["inputs"][0]
    shape = [1 if d == -1 else d for d in tensor["shape"]]
    size = 1
    for d in shape:
        size *= d
    body = {"inputs": [{"name": tensor["name"], "shape": shape, "datatype": "FP32",
                        "data": [0.5] * size}]}  # fmt: skip
    assert (
        client.post("/v2/models/pneumonia_xray/infer", json=body, headers=_h(KEY)).status_code
        == 200
    )
    store._behind.flush()
    failures = [r for r in caplog.records if r.getMessage() == "audit write failed"]
    assert sum(getattr(r, "rows", 0) for r in failures) == 2
    assert all(getattr(r, "error", None) == "RuntimeError" for r in failures)
    assert "database is gone" not in caplog.text


def test_a_refused_v2_inference_leaves_an_audit_row_with_its_code(client: TestClient) -> None:
    bad = client.post(
        "/v2/models/pneumonia_xray/infer",
        content=b"{not json",
        headers={**_h(KEY), "Content-Type": "application/json", "X-Request-ID": "v2-refused"},
    )
    assert bad.status_code == 400 and "error" in bad.json()  # the protocol's error form
    rows = client.get("/audit", params={"limit": 10}, headers=_h(ADMIN)).json()["rows"]
    (row,) = [r for r in rows if r["request_id"] == "v2-refused"]
    assert row["status"] == "bad_request" and row["key_name"] == "orthanc"
    assert row["endpoint"] == "/v2/models/pneumonia_xray/infer"
    assert row["upload_sha256"] is None and row["summary"] is None
