"""``medserve batch`` against the upload endpoints: the same rows for the same files (200 films,
CT volumes, MRI slices with masks, 5 bad files), resume after SIGKILL, the Parquet layout."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from app.batch import run as batch
from app.batch.cli import add_arguments
from app.config import Settings
from app.main import create_app
from tests.batch.conftest import write_bad, write_ct, write_films, write_mri

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"

pytestmark = pytest.mark.usefixtures("local_ray")


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def run_batch(*argv: str) -> None:
    assert batch.run(args(*argv), Settings(model_dir=MODELS)) == 0


def rows(out: Path) -> dict[str, dict[str, Any]]:
    table = pq.ParquetDataset(out).read()
    found = table.to_pylist()
    by_id = {r["id"]: r for r in found}
    assert len(by_id) == len(found), "an id twice"
    return by_id


@pytest.fixture(scope="module")
def http() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(model_dir=MODELS))) as client:
        yield client


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    write_films(folder / "films", 200)
    write_bad(folder / "bad")
    return folder


@pytest.fixture(scope="module")
def resumed(films: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """``medserve batch`` over the films as a process (with a stray ``RAY_ADDRESS`` that the
    embedded Ray must ignore), SIGKILLed once two parts exist, then resumed: (the output, the
    rows it held after the kill)."""
    out = tmp_path_factory.mktemp("resumed") / "out.parquet"
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "MEDSERVE_MODEL_DIR": str(MODELS)}
    cmd = [sys.executable, "-m", "app.cli", "batch", "--model", "pneumonia_xray",
           "--input", str(films), "--output", str(out), "--batch-size", "4",
           "--rows-per-part", "10", "--num-cpus", "1", "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(out.glob("part-*.parquet"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert list(out.glob("part-*.parquet")), "no part within 60 s"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its embedded Ray, all at once
        proc.wait(timeout=10)
    before = len(rows(out))
    run_batch("--model", "pneumonia_xray", "--input", str(films), "--output", str(out),
              "--resume", "--batch-size", "16", "--rows-per-part", "64")  # fmt: skip
    return out, before


def check_same(
    http: TestClient, endpoint: str, src: Path, found: dict[str, dict[str, Any]]
) -> None:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    assert sorted(found) == sorted(p.relative_to(src).as_posix() for p in files)
    for path in files:
        row = found[path.relative_to(src).as_posix()]
        answer = http.post(endpoint, content=path.read_bytes()).json()
        assert row["path"] == str(path.resolve())
        if "code" in answer:
            assert row["error_code"] == answer["code"], path.name
            assert row["error_detail"] == answer["detail"]
            assert row["probability"] is None
            continue
        assert row["error_code"] is None, (path.name, row["error_detail"])
        assert row["model_name"] == answer["model"]["name"]
        assert row["model_version"] == answer["model"]["version"]
        assert row["model_sha256"] == answer["model"]["sha256"]
        assert row["probability"] == pytest.approx(answer["probability"], abs=1e-6)
        assert row["uncalibrated_probability"] == pytest.approx(
            answer["uncalibrated_probability"], abs=1e-6
        )
        assert (row["label"], row["positive"]) == (answer["label"], answer["positive"])
        assert row["operating_point"] == answer["operating_point"]["name"]
        assert row["threshold"] == answer["operating_point"]["threshold"]
        assert row["warnings"] == answer["warnings"]
        assert row["input_format"] == answer["input"]["format"]
        assert row["input_shape"] == answer["input"]["shape"]
        assert row["input_spacing_mm"] == answer["input"]["spacing_mm"]
        assert row["input_sha256"] == answer["input"]["sha256"]
        if "mask" in answer:
            mask = answer["mask"]
            assert row["mask_rle_counts"] == mask["rle"]["counts"]
            assert [row["mask_height"], row["mask_width"]] == mask["rle"]["size"]
            assert row["mask_area_px"] == mask["area_px"]
            assert row["mask_area_mm2"] == mask["area_mm2"]
            assert row["mask_bbox"] == mask["bbox"]
            assert row["mask_centroid"] == mask["centroid"]


def test_ct_volumes_and_mri_masks_equal_the_upload_answers(
    http: TestClient, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write_ct(src / "ct", 3)
    write_bad(src / "bad")
    out = tmp_path / "ct"
    run_batch("--model", "covid_ct", "--input", str(src), "--output", str(out),
              "--batch-size", "4")  # fmt: skip
    check_same(http, "/classify/ct", src, rows(out))

    mri = tmp_path / "mri"
    write_mri(mri, 4)
    out = tmp_path / "mri-out"
    manifest = tmp_path / "mri.csv"
    manifest.write_text("path\n" + "".join(f"mri/{p.name}\n" for p in sorted(mri.iterdir())))
    run_batch("--model", "brain_tumor_mri", "--input", str(manifest), "--output", str(out))
    found = rows(out)
    assert any(r["mask_area_px"] for r in found.values())
    check_same(http, "/segment/mri", mri, {f"{i[4:]}": r for i, r in found.items()})


def test_resume_after_sigkill_gives_every_row_once(films: Path, resumed: tuple[Path, int]) -> None:
    out, before = resumed
    assert 0 < before < 205
    found = rows(out)  # no id twice
    expected = sorted(p.relative_to(films).as_posix() for p in films.rglob("*") if p.is_file())
    assert sorted(found) == expected
    names = sorted(p.name for p in out.iterdir())
    assert all(n.startswith(("_", ".")) or n.endswith(".parquet") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    manifest = json.loads((out / "_medserve_batch.json").read_text())
    assert manifest["model"]["name"] == "pneumonia_xray"


def test_films_and_bad_files_equal_the_upload_answers(
    films: Path, http: TestClient, resumed: tuple[Path, int]
) -> None:
    found = rows(resumed[0])
    assert len(found) == 205
    check_same(http, "/classify/xray", films, found)
    codes = {i: r["error_code"] for i, r in found.items() if r["error_code"]}
    assert codes == {
        "bad/zero.png": "invalid_image",
        "bad/truncated.png": "invalid_image",
        "bad/random.bin": "unsupported_media_type",
        "bad/nopixels.dcm": "invalid_dicom",
        "bad/empty.zip": "unsupported_media_type",
    }


def test_a_folder_with_results_needs_resume_and_the_same_model(
    films: Path, resumed: tuple[Path, int]
) -> None:
    out = resumed[0]
    again = args("--model", "pneumonia_xray", "--input", str(films), "--output", str(out))
    assert batch.run(again, Settings(model_dir=MODELS)) == 2
    other = args("--model", "covid_ct", "--input", str(films), "--output", str(out), "--resume")
    assert batch.run(other, Settings(model_dir=MODELS)) == 2
