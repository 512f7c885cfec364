"""The test servers (``tests/servers.py``) and the shipped Orthanc trigger
(``deploy/orthanc/medserve.lua``), against a real Orthanc, dcmtk's storescu and a real
PostgreSQL."""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.servers import Orthanc, free_port, log_tail, orthanc, postgres, storescu

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy" / "orthanc"
TRIGGER = DEPLOY / "medserve.lua"
FRAGMENT = DEPLOY / "orthanc.json"
WAIT_S = 20.0  # bound on every wait for Orthanc's stable-study event (StableAge is 1 s here)


# --------------------------------------------------------------------------------------------
# helpers


def dicom_file(
    source: str,
    folder: Path,
    *,
    study_uid: str,
    series_uid: str | None = None,
    manufacturer: str | None = None,
) -> Path:
    """A copy of one of pydicom's real test files (``CT_small.dcm``, ``MR_small.dcm``) in
    ``study_uid``, with a new series (unless given) and SOP Instance UID."""
    original = get_testdata_file(source)
    assert isinstance(original, str), f"pydicom test file {source} not found"
    ds = pydicom.dcmread(original)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if manufacturer is not None:
        ds.Manufacturer = manufacturer
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path)
    return path


def dicomweb(pacs: Orthanc) -> DICOMwebClient:
    """A dicomweb-client for ``pacs`` with its basic-auth user."""
    session = requests.Session()
    session.auth = pacs.auth
    client = DICOMwebClient(url=pacs.dicomweb_url, session=session, timeout=10)
    # By default dicomweb-client retries every failed request 5 times with exponential waits
    # (2 + 4 + 8 + 16 s): a test (and a job runner with its own backoff) wants the failure now.
    client.set_http_retry_params(retry=False)
    return client


def wait_until(condition: Callable[[], bool], what: str, pacs: Orthanc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:.0f} s; Orthanc log:\n{log_tail(pacs.log)}")


def lua_lines(pacs: Orthanc, text: str) -> int:
    """How many times the trigger logged ``text`` (Orthanc writes print() as 'Lua says: ...')."""
    return sum(
        1
        for line in pacs.log.read_text(errors="replace").splitlines()
        if "Lua says: medserve: " in line and text in line
    )


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A stand-in for medserve on 127.0.0.1: records every request, answers 202."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    box: list[Recorder] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with box[0].lock:
                box[0].requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()), body)
                )
            answer = json.dumps({"job_id": "j1", "status": "queued"}).encode()
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_POST = _record
        do_GET = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.append(Recorder(url=f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Orthanc, storescu, DICOMweb


def test_orthanc_cstore_qido_stow_and_restart(tmp_path: Path) -> None:
    study_uid = generate_uid()
    ct = dicom_file("CT_small.dcm", tmp_path / "in", study_uid=study_uid)
    with orthanc(tmp_path) as pacs:
        assert pacs.http_url.startswith("http://127.0.0.1:")
        assert pacs.dicomweb_url == pacs.http_url + "/dicom-web"
        assert pacs.aet == "ORTHANC" and pacs.username == "medserve" and pacs.password
        assert httpx.get(f"{pacs.http_url}/system", timeout=5).status_code == 401

        storescu(pacs, [ct])
        not_dicom = tmp_path / "not.dcm"
        not_dicom.write_bytes(b"not a DICOM file")
        with pytest.raises(AssertionError, match=r"storescu failed \(exit 1\)"):
            storescu(pacs, [not_dicom])
        client = dicomweb(pacs)
        studies = client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
        assert [s["0020000D"]["Value"][0] for s in studies] == [study_uid]
        series = client.search_for_series(study_instance_uid=study_uid)
        assert [s["00080060"]["Value"][0] for s in series] == ["CT"]

        mr = pydicom.dcmread(dicom_file("MR_small.dcm", tmp_path / "stow", study_uid=study_uid))
        client.store_instances(datasets=[mr])
        back = client.retrieve_instance(study_uid, mr.SeriesInstanceUID, mr.SOPInstanceUID)
        assert back.SOPInstanceUID == mr.SOPInstanceUID
        assert back.pixel_array.shape == mr.pixel_array.shape

        pacs.stop()
        assert not pacs.running
        with pytest.raises(requests.ConnectionError):
            client.search_for_series(study_instance_uid=study_uid)
        pacs.start()
        series = client.search_for_series(study_instance_uid=study_uid)
        assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "MR"]
    assert not pacs.running


# --------------------------------------------------------------------------------------------
# the Lua trigger


def test_trigger_posts_once_and_skips_medserve_results(tmp_path: Path, recorder: Recorder) -> None:
    key = "orthanc-test-key"
    env = {"MEDSERVE_URL": recorder.url + "/", "MEDSERVE_API_KEY": key}
    study_uid = generate_uid()
    ct_series = generate_uid()
    ct = [
        dicom_file("CT_small.dcm", tmp_path / "ct", study_uid=study_uid, series_uid=ct_series)
        for _ in range(2)
    ]
    with orthanc(tmp_path, lua_scripts=[TRIGGER], env=env, stable_age=1) as pacs:
        storescu(pacs, ct)
        wait_until(lambda: len(recorder.posts()) >= 1, "no POST from the trigger", pacs, WAIT_S)
        (post,) = recorder.posts()
        assert post.path == f"/studies/{study_uid}/analyze"
        assert post.headers.get("X-API-Key") == key
        assert post.body == b""

        # medserve stores a result series into the study: the study is stable again, skipped.
        result = pydicom.dcmread(
            dicom_file(
                "CT_small.dcm", tmp_path / "res", study_uid=study_uid, manufacturer="medserve"
            )
        )
        dicomweb(pacs).store_instances(datasets=[result])
        wait_until(
            lambda: lua_lines(pacs, "skipped a study whose newest series are medserve") == 1,
            "the trigger did not skip the medserve series",
            pacs,
            WAIT_S,
        )
        assert len(recorder.posts()) == 1

        # A modality sends a new series later: the newest series is not medserve's, it triggers.
        storescu(pacs, [dicom_file("MR_small.dcm", tmp_path / "mr", study_uid=study_uid)])
        wait_until(lambda: len(recorder.posts()) >= 2, "no POST for the new series", pacs, WAIT_S)
        assert [p.path for p in recorder.posts()] == [f"/studies/{study_uid}/analyze"] * 2
        # The trigger logs after medserve's answer reaches it, which can be after the POST
        # is recorded here.
        wait_until(
            lambda: lua_lines(pacs, "analysis requested") >= 2,
            "the trigger did not log the second request",
            pacs,
            WAIT_S,
        )
        assert lua_lines(pacs, "analysis requested") == 2
        assert lua_lines(pacs, "error") == 0

    # Nothing about the study reaches Orthanc's log through the trigger.
    trigger_log = [line for line in pacs.log.read_text().splitlines() if "medserve: " in line]
    assert trigger_log and not any(study_uid in line or key in line for line in trigger_log)


def test_trigger_survives_an_unreachable_medserve(tmp_path: Path) -> None:
    env = {"MEDSERVE_URL": f"http://127.0.0.1:{free_port()}", "MEDSERVE_API_KEY": "k"}
    with orthanc(tmp_path, lua_scripts=[TRIGGER], env=env, stable_age=1) as pacs:
        storescu(pacs, [dicom_file("CT_small.dcm", tmp_path / "ct", study_uid=generate_uid())])
        wait_until(
            lambda: lua_lines(pacs, "analysis request failed") == 1,
            "the trigger did not report the failed request",
            pacs,
            WAIT_S,
        )
        assert httpx.get(f"{pacs.http_url}/system", auth=pacs.auth, timeout=5).status_code == 200
        assert lua_lines(pacs, "error") == 0


def test_shipped_configuration_serves_dicomweb_behind_its_user(tmp_path: Path) -> None:
    password = secrets.token_urlsafe(18)
    env = {"ORTHANC_MEDSERVE_PASSWORD": password, "MEDSERVE_URL": "http://127.0.0.1:9"}
    files = [FRAGMENT, TRIGGER]
    with orthanc(tmp_path, config_files=files, users={"medserve": password}, env=env) as pacs:
        assert httpx.get(f"{pacs.http_url}/system", timeout=5).status_code == 401
        wrong = ("medserve", password + "x")
        assert httpx.get(f"{pacs.http_url}/system", auth=wrong, timeout=5).status_code == 401
        study_uid = generate_uid()
        storescu(pacs, [dicom_file("CT_small.dcm", tmp_path / "ct", study_uid=study_uid)])
        series = dicomweb(pacs).search_for_series(study_instance_uid=study_uid)
        assert [s["00080060"]["Value"][0] for s in series] == ["CT"]
        assert httpx.get(f"{pacs.http_url}/wado", auth=pacs.auth, timeout=5).status_code == 404


def test_trigger_refuses_an_empty_password(tmp_path: Path) -> None:
    """An unset ORTHANC_MEDSERVE_PASSWORD makes the shipped user's password empty, which Orthanc
    would accept from anyone: medserve.lua stops Orthanc's start instead."""
    with (
        pytest.raises(RuntimeError, match="empty password"),
        orthanc(
            tmp_path,
            config_files=[FRAGMENT, TRIGGER],
            users={"medserve": ""},
            env={"ORTHANC_MEDSERVE_PASSWORD": ""},
        ),
    ):
        pass


# --------------------------------------------------------------------------------------------
# PostgreSQL


def test_postgres_accepts_sqlalchemy_connections(tmp_path: Path) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg")
    with postgres(tmp_path) as url:
        assert re.fullmatch(r"postgresql\+psycopg://medserve@127\.0\.0\.1:\d+/medserve", url)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as conn:
                assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
                conn.execute(sqlalchemy.text("CREATE TABLE t (x int)"))
                conn.commit()
                version = conn.execute(sqlalchemy.text("SHOW server_version")).scalar_one()
                assert int(version.split(".")[0]) >= 13
        finally:
            engine.dispose()
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:  # stopped: nothing listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
