"""The PACS round trip against a real Orthanc (Debian packages) and real medserve processes:
a modality C-STOREs a study, the shipped Lua trigger calls ``analyze``, the job pulls the routed
series over DICOMweb, runs the committed models and stores one SEG/SR per (series, model) back
into the study; faults: the PACS down, medserve SIGKILLed mid-job, a study nothing takes, two
processes on one PostgreSQL."""

from __future__ import annotations

import io
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from app.endpoints import for_model
from tests.app.test_dicom_results import (
    CR_STORAGE,
    DX_STORAGE,
    anonymised_projection,
    dciodvfy_errors,
    json_mask,
    number,
)
from tests.ct_series import series_from_volume
from tests.integration.service import free_port, service_env, start_process, stop_process, wait_live
from tests.servers import Orthanc, orthanc, postgres, storescu
from training.synthetic import covid_ct as synth_ct
from training.synthetic import phantom

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
LUA = ROOT / "deploy" / "orthanc" / "medserve.lua"
TRIGGER_KEY = "orthanc:orthanc-trigger-key-0123456789"
ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN = {"X-API-Key": ADMIN_KEY}
PATIENT = "CANARY^PACSROUNDTRIP"


@dataclass
class Loop:
    orthanc: Orthanc
    url: str
    env: dict[str, str]
    port: int
    log: Path
    proc: Any

    def pacs(self) -> DICOMwebClient:
        session = requests.Session()
        session.auth = self.orthanc.auth
        return DICOMwebClient(self.orthanc.dicomweb_url, session=session)

    def restart(self) -> None:
        self.proc = start_process(self.env, self.port, self.log)
        wait_live(self.url, self.proc, self.log)


def medserve_env(o: Orthanc, **extra: str) -> dict[str, str]:
    return service_env(
        MEDSERVE_MODEL_DIR=str(MODELS),
        MEDSERVE_DICOMWEB_URL=o.dicomweb_url,
        MEDSERVE_DICOMWEB_USERNAME=o.username or "",
        MEDSERVE_DICOMWEB_PASSWORD=o.password or "",
        MEDSERVE_DICOMWEB_TIMEOUT_SECONDS="5",
        MEDSERVE_API_KEYS=TRIGGER_KEY,
        MEDSERVE_ADMIN_KEYS=ADMIN_KEY,
        MEDSERVE_JOB_POLL_SECONDS="0.2",
        MEDSERVE_JOB_LEASE_SECONDS="3",
        MEDSERVE_JOB_RETRY_MAX_SECONDS="2",
        **extra,
    )


@contextmanager
def pacs_loop(tmp: Path, *, lua: bool = True, **extra: str) -> Iterator[Loop]:
    """Orthanc (with the shipped Lua trigger pointed at medserve) and medserve wired to it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    trigger = {"MEDSERVE_URL": url, "MEDSERVE_API_KEY": TRIGGER_KEY.split(":", 1)[1]}
    with orthanc(tmp, lua_scripts=[LUA] if lua else [], env=trigger, stable_age=1) as o:
        env = medserve_env(o, **extra)
        log = tmp / "medserve.log"
        proc = start_process(env, port, log)
        loop = Loop(o, url, env, port, log, proc)
        try:
            wait_live(url, proc, log)
            yield loop
        finally:
            stop_process(loop.proc)


# --------------------------------------------------------------------------- a study


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _into_study(data: bytes, study: str, series: str | None = None) -> pydicom.Dataset:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = study
    if series is not None:
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT, "CANARY-PACS-1"
    return ds


def phantom_dx(seed: int = 2024) -> bytes:
    cfg = phantom.SynthConfig(n=1, seed=seed)
    for s in range(10):
        has_tumour, fr = phantom.render_one(cfg, s, 1)
        if has_tumour:
            return anonymised_projection(fr.image, DX_STORAGE, "DX", 16)
    raise AssertionError("no sequence with an insert")


def write_study(folder: Path) -> tuple[str, dict[str, list[Path]]]:
    """One study of four series: a 40-slice chest CT, a CR film, an MR slice, a DX phantom
    frame. Returns (StudyInstanceUID, kind → files)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    cfg = synth_ct.SynthConfig(n=400, seed=99, size=128, slices=(40, 40))
    item = next(i for i in synth_ct.plan(cfg) if i.category == "CT-2")
    ct = synth_ct.render_study(cfg, item)
    files: dict[str, list[Path]] = {"ct": [], "cr": [], "mr": [], "dx": []}
    for k, data in enumerate(series_from_volume(ct.hu, ct.spacing)):
        files["ct"].append(_save(_into_study(data, study), folder / f"ct{k:03d}.dcm"))
    film = np.random.default_rng(5).normal(1800, 300, (600, 500)).clip(0, 4095)
    cr = anonymised_projection(film, CR_STORAGE, "CR", 12)
    files["cr"].append(_save(_into_study(cr, study, generate_uid()), folder / "cr.dcm"))
    mr = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    files["mr"].append(_save(_into_study(mr, study, generate_uid()), folder / "mr.dcm"))
    files["dx"].append(_save(_into_study(phantom_dx(), study, generate_uid()), folder / "dx.dcm"))
    return study, files


def series_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


# --------------------------------------------------------------------------- waiting


def jobs_for(loop: Loop, study: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{loop.url}/jobs", params={"limit": 1000}, headers=ADMIN, timeout=10)
    r.raise_for_status()
    return [j for j in r.json()["jobs"] if j["study_instance_uid"] == study]


def wait_job(loop: Loop, job_id: str, statuses: tuple[str, ...], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        r = httpx.get(f"{loop.url}/jobs/{job_id}", headers=ADMIN, timeout=10)
        if r.status_code == 200:
            last = r.json()
            if last["status"] in statuses:
                return last
        time.sleep(0.2)
    raise AssertionError(f"job not {statuses} in {timeout:.0f} s: {last}")


def analyze(loop: Loop, study: str, **params: str) -> str:
    r = httpx.post(f"{loop.url}/studies/{study}/analyze", params=params, headers=ADMIN, timeout=10)
    assert r.status_code in (200, 202), r.text
    return str(r.json()["job_id"])


def result_series(loop: Loop, study: str) -> list[dict[str, Any]]:
    """The study's series that medserve stored (SEG and SR)."""
    found = loop.pacs().search_for_series(
        study_instance_uid=study, fields=["Manufacturer", "NumberOfSeriesRelatedInstances"]
    )
    return [s for s in found if s.get("00080060", {}).get("Value", [""])[0] in ("SEG", "SR")]


def stored(loop: Loop, study: str, series: str, instance: str) -> bytes:
    client = loop.pacs()
    ds = client.retrieve_instance(study, series, instance)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------- tests


def test_a_c_stored_study_gets_its_seg_and_sr_back(tmp_path: Path) -> None:
    study, files = write_study(tmp_path / "study")
    with pacs_loop(tmp_path) as loop:
        storescu(loop.orthanc, [p for paths in files.values() for p in paths])
        deadline = time.monotonic() + 60
        while not (jobs := jobs_for(loop, study)):
            assert time.monotonic() < deadline, "the Lua trigger never called analyze"
            time.sleep(0.3)
        job = wait_job(loop, jobs[0]["job_id"], ("done", "failed"))
        assert job["status"] == "done", job
        expected = {
            (series_uid(files["ct"][0]), "covid_ct"),
            (series_uid(files["cr"][0]), "pneumonia_xray"),
            (series_uid(files["mr"][0]), "brain_tumor_mri"),
            (series_uid(files["dx"][0]), "pneumonia_xray"),
            (series_uid(files["dx"][0]), "phantom_tumor_xray"),
        }
        results = {(r["series_instance_uid"], r["model"]["name"]): r for r in job["results"]}
        assert set(results) == expected and len(job["results"]) == 5
        kind_of = {series_uid(paths[0]): kind for kind, paths in files.items()}
        for (series, model), result in results.items():
            assert result["error"] is None, result
            (instance,) = result["stored_sop_instance_uids"]
            data = stored(loop, study, result["stored_series_instance_uid"], instance)
            assert dciodvfy_errors(data, tmp_path) == []
            ds = pydicom.dcmread(io.BytesIO(data))
            assert ds.StudyInstanceUID == study and ds.PatientName == PATIENT
            paths = files[kind_of[series]]
            row = for_model(model)
            assert row is not None
            endpoint = row.path
            multipart = [("file", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
            answer = httpx.post(
                f"{loop.url}{endpoint}", files=multipart, headers=ADMIN, timeout=60
            ).json()
            assert result["summary"]["probability"] == pytest.approx(
                answer["probability"], abs=1e-6
            )
            if ds.Modality == "SR":
                assert number(ds, "122157", "DCM") == pytest.approx(answer["probability"], abs=1e-6)
            else:
                assert ds.Modality == "SEG"
                assert np.array_equal(ds.pixel_array.astype(bool), json_mask(answer))
        # medserve's own results make the study stable again: the Lua guard skips it, and an
        # analyze by hand runs the same job again, which finds nothing new and stores nothing.
        time.sleep(3)
        assert len(jobs_for(loop, study)) == 1
        assert analyze(loop, study) == job["job_id"]
        again = wait_job(loop, job["job_id"], ("done", "failed"))
        assert again["status"] == "done" and len(again["results"]) == 5
        assert len(result_series(loop, study)) == 5
        # A series that arrives later triggers again and is analysed; the rest is not redone.
        late = _into_study(Path(files["mr"][0]).read_bytes(), study, generate_uid())
        storescu(loop.orthanc, [_save(late, tmp_path / "late_mr.dcm")])
        deadline = time.monotonic() + 60
        while len((latest := wait_job(loop, job["job_id"], ("done",)))["results"]) < 6:
            assert time.monotonic() < deadline, latest
            time.sleep(0.3)
        assert len(jobs_for(loop, study)) == 1
        series = result_series(loop, study)
        assert len(series) == 6
        assert all(s["00201209"]["Value"][0] == 1 for s in series)
        rows = httpx.get(f"{loop.url}/audit", headers=ADMIN, timeout=10).json()["rows"]
        mine = [r for r in rows if r["job_id"] == job["job_id"]]
        assert len(mine) == 6 and all(r["status"] == "ok" for r in mine)
        assert all(r["key_name"] == "orthanc" for r in mine)
        assert study not in str(rows) and "CANARY" not in str(rows)
        log = loop.log.read_text(errors="replace")
        assert study not in log and "CANARY" not in log


def test_a_pacs_outage_is_retried_until_the_pacs_is_back(tmp_path: Path) -> None:
    study = generate_uid()
    mr = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    path = _save(_into_study(mr, study, generate_uid()), tmp_path / "mr.dcm")
    with pacs_loop(tmp_path, lua=False) as loop:
        storescu(loop.orthanc, [path])
        loop.orthanc.stop()
        job_id = analyze(loop, study)
        retrying = wait_job(loop, job_id, ("retrying",), timeout=30)
        assert retrying["error"]["code"] == "pacs_unavailable"
        assert study not in retrying["error"]["detail"]
        loop.orthanc.start()
        done = wait_job(loop, job_id, ("done", "failed"), timeout=60)
        assert done["status"] == "done" and done["attempts"] >= 2, done
        assert len(result_series(loop, study)) == 1


def test_a_job_survives_a_killed_service_without_storing_twice(tmp_path: Path) -> None:
    """SIGKILL in the middle of a job (some results stored, others not): after the restart the
    job is taken up again once its lease lapses, and every (series, model) is in Orthanc once."""
    study = generate_uid()
    frame = phantom_dx()
    paths = [
        _save(_into_study(frame, study, generate_uid()), tmp_path / f"dx{k}.dcm") for k in range(8)
    ]
    with pacs_loop(tmp_path, lua=False, MEDSERVE_MAX_CONCURRENT_INFERENCES="1") as loop:
        storescu(loop.orthanc, paths)
        job_id = analyze(loop, study)
        deadline = time.monotonic() + 60
        while True:
            job = httpx.get(f"{loop.url}/jobs/{job_id}", headers=ADMIN, timeout=10).json()
            if job["status"] == "running" and len(job["results"]) >= 2:
                break
            assert job["status"] != "done", "the job ended before it could be killed"
            assert time.monotonic() < deadline, job
            time.sleep(0.02)
        loop.proc.send_signal(signal.SIGKILL)
        loop.proc.wait(10)
        loop.restart()
        done = wait_job(loop, job_id, ("done", "failed"), timeout=90)
        assert done["status"] == "done", done
        pairs = [(r["series_instance_uid"], r["model"]["name"]) for r in done["results"]]
        assert len(pairs) == len(set(pairs)) == 16
        series = result_series(loop, study)
        assert len(series) == 16
        assert all(s["00201209"]["Value"][0] == 1 for s in series)


def test_a_study_that_no_model_takes_is_done_with_the_reason(tmp_path: Path) -> None:
    study = generate_uid()
    ds = _into_study(
        Path(str(get_testdata_file("CT_small.dcm"))).read_bytes(), study, generate_uid()
    )
    ds.Modality = "OT"
    path = _save(ds, tmp_path / "ot.dcm")
    with pacs_loop(tmp_path, lua=False) as loop:
        storescu(loop.orthanc, [path])
        done = wait_job(loop, analyze(loop, study), ("done", "failed"))
        assert done["status"] == "done" and done["results"] == []
        assert "none of the study's 1 series" in done["reason"]
        assert result_series(loop, study) == []


def test_two_processes_on_one_postgresql_run_each_job_once(tmp_path: Path) -> None:
    mr = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    studies = [generate_uid() for _ in range(20)]
    paths = [
        _save(_into_study(mr, s, generate_uid()), tmp_path / f"mr{k}.dcm")
        for k, s in enumerate(studies)
    ]
    with (
        postgres(tmp_path / "pg") as url,
        pacs_loop(
            tmp_path, lua=False, MEDSERVE_DATABASE_URL=url, MEDSERVE_JOB_WORKERS="2"
        ) as first,
    ):
        second_port = free_port()
        second = Loop(
            first.orthanc, f"http://127.0.0.1:{second_port}", first.env, second_port,
            tmp_path / "medserve2.log", None,
        )  # fmt: skip
        second.restart()
        try:
            storescu(first.orthanc, paths)
            ids = [analyze(first if k % 2 else second, s) for k, s in enumerate(studies)]
            assert len(set(ids)) == 20
            for job_id in ids:
                done = wait_job(first, job_id, ("done", "failed"), timeout=120)
                assert done["status"] == "done" and len(done["results"]) == 1, done
            rows = httpx.get(
                f"{second.url}/audit", params={"limit": 1000}, headers=ADMIN, timeout=10
            ).json()["rows"]
            jobs = [r["job_id"] for r in rows if r["job_id"]]
            assert sorted(jobs) == sorted(ids)  # each job's inference ran once
            for study in studies:
                assert len(result_series(first, study)) == 1
        finally:
            stop_process(second.proc)
