"""``medserve batch`` over a QIDO query on a real Orthanc: the query selects the studies, and
``--stow`` stores one SR per study (and nothing twice when run again)."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from app.batch import run as batch
from app.config import Settings
from tests.batch.conftest import ct_volume
from tests.batch.test_batch import MODELS, args
from tests.ct_series import series_from_volume
from tests.servers import orthanc, storescu

pytestmark = pytest.mark.usefixtures("local_ray")


def write_study(folder: Path, seed: int, date: str, modality: str) -> tuple[str, list[Path]]:
    """A 24-slice CT (or, with modality CR, a one-slice "CR") study on ``date``."""
    study = generate_uid()
    slices = series_from_volume(ct_volume(seed, slices=24), (8.0, 1.0, 1.0))
    if modality != "CT":
        slices = slices[:1]
    paths = []
    for k, data in enumerate(slices):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID, ds.StudyDate, ds.Modality = study, date, modality
        path = folder / f"{study}-{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


def test_a_qido_query_selects_the_studies_and_stow_stores_one_result_each(
    tmp_path: Path,
) -> None:
    src = tmp_path / "dicom"
    src.mkdir()
    wanted = [write_study(src, 1, "20240310", "CT"), write_study(src, 2, "20241120", "CT")]
    too_old = write_study(src, 3, "20190101", "CT")
    other = write_study(src, 4, "20240501", "CR")
    with orthanc(tmp_path, stable_age=1) as o:
        storescu(o, sorted(src.iterdir()))
        settings = Settings(
            model_dir=MODELS,
            dicomweb_url=o.dicomweb_url,
            dicomweb_username=o.username,
            dicomweb_password=o.password,  # type: ignore[arg-type]
        )
        query = "pacs:ModalitiesInStudy=CT&StudyDate=20240101-20241231"
        out = tmp_path / "out"
        argv = ["--model", "covid_ct", "--input", query, "--output", str(out), "--stow"]
        assert batch.run(args(*argv), settings) == 0
        found = pq.ParquetDataset(out).read().to_pylist()
        assert sorted(r["study_instance_uid"] for r in found) == sorted(s for s, _ in wanted)
        for row in found:
            assert row["error_code"] is None, row
            assert row["instances"] == 24
            assert 0 <= row["probability"] <= 1
            assert row["stored_sop_instance_uid"]
        # run again over the same output: nothing new to do, nothing stored twice
        assert batch.run(args(*argv, "--resume"), settings) == 0
        assert len(pq.ParquetDataset(out).read()) == 2

        session = requests.Session()
        session.auth = o.auth
        client = DICOMwebClient(o.dicomweb_url, session=session)
        for study, _ in wanted:
            results = [
                s
                for s in client.search_for_series(study_instance_uid=study)
                if s["00080060"]["Value"][0] == "SR"
            ]
            assert len(results) == 1
        for study, _ in (too_old, other):
            series = client.search_for_series(study_instance_uid=study)
            assert all(s["00080060"]["Value"][0] != "SR" for s in series)
