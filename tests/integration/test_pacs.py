"""The PACS round trip, black-box: a study goes into Orthanc by C-STORE (dcmtk's ``storescu``,
as a modality sends it), Orthanc's Lua trigger asks the service to analyse it, and the service's
SEG and SR come back into the same study in Orthanc (found with QIDO-RS).

Runs only against an Orthanc that the service is wired to (compose profile ``pacs``, or
``make container-test``); it stores a small synthetic study there, so point it only at a test
PACS. Settings:

- ``MEDSERVE_TEST_ORTHANC_URL``: Orthanc's HTTP root, e.g. ``http://orthanc:8042`` (DICOMweb at
  ``/dicom-web``). Unset: every test here is skipped.
- ``MEDSERVE_TEST_ORTHANC_DICOM``: its DICOM port as ``host:port`` (default: the URL's host,
  port 4242); ``MEDSERVE_TEST_ORTHANC_AET`` its AE title (default ``ORTHANC``).
- ``MEDSERVE_TEST_ORTHANC_USERNAME`` / ``MEDSERVE_TEST_ORTHANC_PASSWORD``: Basic auth (default
  user ``medserve``).
- ``MEDSERVE_TEST_PACS_TIMEOUT_S``: how long to wait for the job and its results (default 90).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.integration.media import chest_like, dicom_dx
from tests.integration.service import Service

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
DICOM_JSON = {"Accept": "application/dicom+json"}


@dataclass
class Pacs:
    url: str
    dicom_host: str
    dicom_port: int
    aet: str
    auth: tuple[str, str] | None
    timeout_s: float

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth, timeout=30.0, trust_env=False)


@pytest.fixture(scope="module")
def pacs() -> Pacs:
    url = os.environ.get("MEDSERVE_TEST_ORTHANC_URL", "").strip().rstrip("/")
    if not url:
        pytest.skip(
            "no Orthanc under test: set MEDSERVE_TEST_ORTHANC_URL (and "
            "MEDSERVE_TEST_ORTHANC_DICOM, MEDSERVE_TEST_ORTHANC_PASSWORD) to the Orthanc the "
            "service is wired to (compose profile `pacs`)"
        )
    dicom = os.environ.get("MEDSERVE_TEST_ORTHANC_DICOM", "").strip()
    host, _, port = dicom.rpartition(":") if dicom else ("", "", "4242")
    password = os.environ.get("MEDSERVE_TEST_ORTHANC_PASSWORD", "")
    user = os.environ.get("MEDSERVE_TEST_ORTHANC_USERNAME", "").strip() or "medserve"
    return Pacs(
        url=url,
        dicom_host=host or urlsplit(url).hostname or "127.0.0.1",
        dicom_port=int(port),
        aet=os.environ.get("MEDSERVE_TEST_ORTHANC_AET", "").strip() or "ORTHANC",
        auth=(user, password) if password else None,
        timeout_s=float(os.environ.get("MEDSERVE_TEST_PACS_TIMEOUT_S") or 90),
    )


@pytest.fixture(scope="module")
def orthanc(pacs: Pacs) -> Iterator[httpx.Client]:
    """A client of Orthanc, once its DICOMweb API answers (bounded wait: it may start late)."""
    with pacs.client() as c:
        deadline, last = time.monotonic() + 60, ""
        while True:
            try:
                r = c.get("/dicom-web/studies", params={"limit": 1}, headers=DICOM_JSON)
                if r.status_code in (200, 204):
                    break
                last = f"HTTP {r.status_code}"
                if r.status_code in (401, 403):
                    pytest.fail(f"Orthanc refused the test's credentials ({last})")
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                pytest.fail(f"Orthanc's DICOMweb API at {pacs.url} did not answer in 60 s: {last}")
            time.sleep(1.0)
        yield c


def _part10(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fresh(data: bytes, study: str, patient_id: str) -> pydicom.Dataset:
    """The file as a new instance of a new series in ``study``."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    ds.PatientName = "Synthetic^PacsIntegration"
    return ds


def storescu(pacs: Pacs, files: list[Path]) -> None:
    binary = shutil.which("storescu")
    if binary is None:
        pytest.fail("storescu (Debian package dcmtk) is not on PATH; the integration image has it")
    cmd = [
        binary,
        "-aet", "MEDSERVETEST",
        "-aec", pacs.aet,
        "-to", "10", "-ta", "10", "-td", "30",  # connection, ACSE and DIMSE timeouts (s)
        pacs.dicom_host, str(pacs.dicom_port),
        *[str(f) for f in files],
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0 and "E: " not in done.stderr, (
        f"storescu to {pacs.aet}@{pacs.dicom_host}:{pacs.dicom_port} failed "
        f"(exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    )


def _value(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


@dataclass
class Sent:
    study: str
    mr_series: str
    dx_series: str


@pytest.fixture(scope="module")
def sent(pacs: Pacs, orthanc: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> Sent:
    """A study of two series, C-STOREd: pydicom's MR_small.dcm (brain_tumor_mri → SEG) and a
    synthetic chest DX (pneumonia_xray → SR; phantom_tumor_xray takes DX too → SEG)."""
    folder = tmp_path_factory.mktemp("pacs")
    study, patient = generate_uid(), "ITEST-PACS-" + generate_uid()[-8:]
    mr = _fresh(Path(str(get_testdata_file("MR_small.dcm"))).read_bytes(), study, patient)
    dx = _fresh(dicom_dx(chest_like(512, 512, max_value=4095)).data, study, patient)
    files = [folder / "mr.dcm", folder / "dx.dcm"]
    files[0].write_bytes(_part10(mr))
    files[1].write_bytes(_part10(dx))
    storescu(pacs, files)
    return Sent(study, str(mr.SeriesInstanceUID), str(dx.SeriesInstanceUID))


def _job_of(service: Service, study: str) -> dict[str, Any] | None:
    r = httpx.get(
        f"{service.url}/jobs",
        params={"limit": 200},
        headers=service.auth_headers,
        timeout=10,
        trust_env=False,
    )
    assert r.status_code == 200, r.text
    jobs = [j for j in r.json()["jobs"] if j["study_instance_uid"] == study]
    return jobs[0] if jobs else None


@pytest.fixture(scope="module")
def job(service: Service, pacs: Pacs, sent: Sent) -> dict[str, Any]:
    """The job the Lua trigger started for the study (once the study was stable), when done."""
    deadline, last = time.monotonic() + pacs.timeout_s, None
    while time.monotonic() < deadline:
        last = _job_of(service, sent.study)
        if last is not None and last["status"] in ("done", "failed"):
            break
        time.sleep(1.0)
    assert last is not None, (
        f"no job for the study within {pacs.timeout_s:.0f} s: did Orthanc's trigger "
        "(medserve.lua, OnStableStudy) reach the service? See Orthanc's log"
    )
    assert last["status"] == "done", last
    return last


def test_trigger_job_analyses_each_series_with_its_models(job: dict[str, Any], sent: Sent) -> None:
    pairs = {(r["series_instance_uid"], r["model"]["name"]) for r in job["results"]}
    assert (sent.mr_series, "brain_tumor_mri") in pairs, job["results"]
    assert (sent.dx_series, "pneumonia_xray") in pairs, job["results"]
    for result in job["results"]:
        assert not result.get("error"), result
        assert len(result["stored_sop_instance_uids"]) == 1, result


def test_seg_and_sr_are_in_the_study_in_orthanc(
    orthanc: httpx.Client, job: dict[str, Any], sent: Sent
) -> None:
    r = orthanc.get(
        f"/dicom-web/studies/{sent.study}/series",
        params={"includefield": "Manufacturer"},
        headers=DICOM_JSON,
    )
    assert r.status_code == 200, r.text
    series = {_value(s, "0020000E"): s for s in r.json()}
    ours = {
        uid: _value(s, "00080060")
        for uid, s in series.items()
        if str(_value(s, "00080070") or "").lower() == "medserve"
    }
    assert sorted(ours.values()).count("SR") >= 1, ours
    assert sorted(ours.values()).count("SEG") >= 1, ours

    # Every instance the job says it stored is in one of those series, and nothing else is.
    stored: dict[str, str] = {}
    for uid in ours:
        r = orthanc.get(
            f"/dicom-web/studies/{sent.study}/series/{uid}/instances", headers=DICOM_JSON
        )
        assert r.status_code == 200, r.text
        stored.update({_value(i, "00080018"): uid for i in r.json()})
    expected = {u for res in job["results"] for u in res["stored_sop_instance_uids"]}
    assert set(stored) == expected, (stored, job["results"])

    # The MR's SEG is a Segmentation Storage object referencing the MR series.
    mr_result = next(r for r in job["results"] if r["model"]["name"] == "brain_tumor_mri")
    seg_series = stored[mr_result["stored_sop_instance_uids"][0]]
    assert ours[seg_series] == "SEG"
    r = orthanc.get(
        f"/dicom-web/studies/{sent.study}/series/{seg_series}/metadata", headers=DICOM_JSON
    )
    assert r.status_code == 200, r.text
    meta = r.json()[0]
    assert _value(meta, "00080016") == SEG_STORAGE, meta.get("00080016")
    referenced = [_value(item, "0020000E") for item in meta["00081115"]["Value"]]
    assert sent.mr_series in referenced, referenced
