"""The jobs and audit store, the same tests on SQLite and on a real PostgreSQL: migrations,
idempotent job creation, claims that never hand one job to two workers, leases that lapse when
a worker dies, retries that give up only after the configured time, salted UID hashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from app.store import Store
from tests.servers import postgres

MODELS = [{"name": "covid_ct", "version": "1.1.0", "sha256": "a" * 64}]
STUDY = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres(tmp_path_factory.mktemp("pg")) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'medserve.db'}"
        return
    base: str = request.getfixturevalue("pg_url")
    # a fresh schema per test: drop what the previous test made
    store = Store(base)
    with store.engine.begin() as conn:
        for table in ("jobs", "audit", "meta", "alembic_version"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    store.close()
    yield base


def _store(url: str) -> Store:
    store = Store(url)
    store.migrate()
    return store


def test_migrations_make_the_tables_and_run_again_harmlessly(url: str) -> None:
    store = _store(url)
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"jobs", "audit", "meta", "alembic_version"} <= tables
    store.close()


def test_concurrent_migrations_are_serialised(url: str) -> None:
    if url.startswith("sqlite"):
        pytest.skip("SQLite serves one process; the advisory lock is PostgreSQL's")
    stores = [Store(url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda s: s.migrate(), stores))
    salts = {s.uid_hash(STUDY) for s in stores}
    assert len(salts) == 1  # one salt made, every process hashes alike
    for s in stores:
        s.close()


def test_analysing_again_returns_the_same_job_unless_forced_or_failed(url: str) -> None:
    store = _store(url)
    first, created = store.create_job(STUDY, MODELS, force=False, key_name="orthanc")
    assert created and first.status == "queued" and first.key_name == "orthanc"
    again, created = store.create_job(STUDY, MODELS, force=False, key_name="ris")
    assert not created and again.id == first.id
    other = [{**MODELS[0], "version": "1.2.0", "sha256": "b" * 64}]
    assert store.create_job(STUDY, other, force=False, key_name=None)[1]  # new model version
    forced, created = store.create_job(STUDY, MODELS, force=True, key_name=None)
    assert created and forced.id != first.id
    claimed = store.claim("w1", 30)
    assert claimed is not None
    assert store.finish(claimed.id, "w1", "failed", error={"code": "x", "detail": "y"})
    # the newest job for these versions is `forced` (queued): still the same job
    assert store.create_job(STUDY, MODELS, force=False, key_name=None)[0].id in (
        first.id,
        forced.id,
    )
    store.close()


def test_analysing_a_done_study_again_queues_the_same_job(url: str) -> None:
    """A series that arrived after the first run gets analysed; the results stay."""
    store = _store(url)
    job, _ = store.create_job(STUDY, MODELS, force=False, key_name=None)
    assert store.claim("w", 30) is not None
    assert store.add_result(job.id, "w", {"series_instance_uid": "1.2", "model": {"name": "m"}})
    assert store.finish(job.id, "w", "done")
    again, created = store.create_job(STUDY, MODELS, force=False, key_name=None)
    assert not created and again.id == job.id and again.status == "queued"
    assert len(again.results) == 1
    rerun = store.claim("w", 30)
    assert rerun is not None and rerun.id == job.id and rerun.attempts == 2
    store.close()


def test_a_job_is_claimed_once_and_reclaimed_after_its_lease_lapses(url: str) -> None:
    store = _store(url)
    job, _ = store.create_job(STUDY, MODELS, force=False, key_name=None)
    mine = store.claim("worker-a", 1.0)
    assert mine is not None and mine.id == job.id and mine.status == "running"
    assert mine.attempts == 1
    assert store.claim("worker-b", 1.0) is None
    assert store.renew(job.id, "worker-a", 1.0)
    assert not store.renew(job.id, "worker-b", 1.0)
    assert not store.add_result(job.id, "worker-b", {"x": 1})
    time.sleep(1.2)  # worker-a died: no renewal
    theirs = store.claim("worker-b", 30)
    assert theirs is not None and theirs.id == job.id and theirs.attempts == 2
    assert not store.add_result(job.id, "worker-a", {"x": 1})  # the old owner lost it
    assert store.add_result(job.id, "worker-b", {"x": 2})
    assert store.finish(job.id, "worker-b", "done")
    done = store.get_job(job.id)
    assert done is not None and done.status == "done" and done.results == [{"x": 2}]
    store.close()


def test_retries_back_off_and_give_up_only_after_the_time(url: str) -> None:
    store = _store(url)
    job, _ = store.create_job(STUDY, MODELS, force=False, key_name=None)
    error = {"code": "pacs_unavailable", "detail": "QIDO-RS: the PACS did not answer"}
    assert store.claim("w", 30) is not None
    assert store.retry_later(job.id, "w", 0.5, error, give_up_seconds=1.0) == "retrying"
    assert store.claim("w", 30) is None  # not due yet
    time.sleep(0.6)
    again = store.claim("w", 30)
    assert again is not None and again.failing_since is not None
    time.sleep(0.5)
    assert store.retry_later(job.id, "w", 0.1, error, give_up_seconds=1.0) == "failed"
    failed = store.get_job(job.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "gave up" in failed.error["detail"]
    store.close()


def test_a_recorded_result_restarts_the_failure_clock(url: str) -> None:
    store = _store(url)
    job, _ = store.create_job(STUDY, MODELS, force=False, key_name=None)
    error = {"code": "pacs_unavailable", "detail": "down"}
    assert store.claim("w", 30) is not None
    assert store.retry_later(job.id, "w", 0.0, error, give_up_seconds=0.5) == "retrying"
    time.sleep(0.6)
    assert store.claim("w", 30) is not None
    assert store.add_result(job.id, "w", {"progress": True})  # the PACS worked meanwhile
    assert store.retry_later(job.id, "w", 0.0, error, give_up_seconds=0.5) == "retrying"
    store.close()


def test_twenty_jobs_two_processes_each_claimed_once(url: str) -> None:
    """Two stores (as two service processes would have) and eight threads race for 20 jobs."""
    if url.startswith("sqlite"):
        pytest.skip("several processes need PostgreSQL")
    stores = [_store(url), _store(url)]
    ids = {
        stores[0].create_job(f"1.2.3.{k}", MODELS, force=False, key_name=None)[0].id
        for k in range(20)
    }
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        store = stores[worker % 2]
        owner = f"w{worker}"
        while True:
            job = store.claim(owner, 30)
            if job is None:
                if all(j.status == "done" for j in store.list_jobs(None, 100)):
                    return
                continue
            with lock:
                claimed.append((job.id, owner))
            assert store.finish(job.id, owner, "done")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert sorted(j for j, _ in claimed) == sorted(ids)
    for s in stores:
        s.close()


def test_audit_rows_hash_uids_with_a_salt(url: str) -> None:
    store = _store(url)
    store.audit(
        endpoint="job",
        model_name="covid_ct",
        model_version="1.1.0",
        model_sha256="a" * 64,
        job_id="j1",
        key_name="orthanc",
        study_uid=STUDY,
        series_uid=STUDY + ".1",
        summary={"probability": 0.5},
        status="ok",
    )
    (row,) = store.audit_rows(10)
    assert STUDY not in str(row)
    assert row["study_hash"] == store.uid_hash(STUDY) and len(row["study_hash"]) == 64
    assert row["series_hash"] != row["study_hash"]
    assert row["key_name"] == "orthanc" and row["model"]["version"] == "1.1.0"
    assert row["summary"] == {"probability": 0.5} and row["status"] == "ok" and row["time"]
    other = _store(url)  # another process on the same database
    assert other.uid_hash(STUDY) == store.uid_hash(STUDY)
    assert store.count_audit() == 1
    store.close()
    other.close()


def test_rows_written_behind_the_answer_are_read_in_order_and_drained_at_close(
    url: str,
) -> None:
    """``audit_later`` (the HTTP inferences' rows) returns at once; the writer thread commits
    the rows in order; a reader in this process sees every row queued before it asked; close
    writes what is still queued, and a row after close is refused and logged."""
    store = _store(url)
    for i in range(300):  # more than one batch
        store.audit_later(
            endpoint="/segment/mri", model_name="brain_tumor_mri", request_id=f"r{i}", status="ok"
        )
    rows = store.audit_rows(1000)
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in reversed(range(300))]
    for i in range(5):
        store.audit_later(endpoint="/segment/mri", model_name="m", request_id=f"s{i}", status="ok")
    store.close()
    reopened = _store(url)
    assert reopened.count_audit() == 305
    reopened.close()


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_the_audit_writer_replaces_a_connection_the_server_dropped(url: str) -> None:
    """The writer thread keeps its connection between batches; one the server has closed (a
    restart, an idle timeout) is replaced and the batch written on the new one."""
    store = _store(url)
    store.audit_later(endpoint="/segment/mri", model_name="m", request_id="before", status="ok")
    assert store.count_audit() == 1  # written: the writer holds its connection
    with store.engine.begin() as conn:
        dropped = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert dropped >= 1
    store.audit_later(endpoint="/segment/mri", model_name="m", request_id="after", status="ok")
    assert [r["request_id"] for r in store.audit_rows(10)] == ["after", "before"]
    store.close()
