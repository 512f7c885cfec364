"""The job runner: workers inside the service that take analysis jobs from the database and
run them against the PACS.

A job: QIDO-RS lists the study's series; each series goes to every model of the job whose
card's ``routing`` accepts it; WADO-RS retrieves only those series; ``pipeline.analyze_series``
runs (through the same inference limiter as the upload endpoints); STOW-RS stores one object
per (series, model) into the study, each in its own new series. Every stored result is recorded
before the next one, so a job taken up again skips what is done; result UIDs are derived from
(job, series, model), so a result stored just before a crash is the same instance when stored
again, and the PACS keeps it once.

A PACS that fails is retried with exponential backoff (capped); the job fails only after
``job_give_up_seconds`` of failures. A job whose worker died is taken up again once its lease
lapses.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import pydicom
from starlette.concurrency import run_in_threadpool

from app import dicom_out
from app.config import Settings
from app.errors import MedserveError, Overloaded
from app.limiter import InferenceLimiter
from app.metrics import Metrics
from app.pacs.dicomweb import Pacs, PacsRejected, PacsUnavailable, SeriesInfo
from app.pipeline import SeriesResult, analyze_series
from app.registry import ModelEntry, Registry
from app.store import JobView, Store

log = logging.getLogger("medserve.jobs")


class LeaseLost(Exception):
    """Another worker holds the job now (this one was too slow to renew its lease)."""


def backoff_seconds(attempts: int, cap: float) -> float:
    """1, 2, 4, … seconds after the 1st, 2nd, 3rd failed attempt, never more than ``cap``."""
    return float(min(cap, 2 ** max(0, attempts - 1)))


def routed(entries: Sequence[ModelEntry], series: SeriesInfo) -> list[ModelEntry]:
    """The models whose card's routing takes ``series`` (a card without routing takes none)."""
    return [
        e
        for e in entries
        if e.card is not None
        and e.card.routing is not None
        and e.card.routing.accepts(series.modality, series.instances)
    ]


def _part10(datasets: list[pydicom.Dataset]) -> list[bytes]:
    out = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


class JobRunner:
    """``job_workers`` asyncio tasks; blocking work (database, DICOMweb) in the thread pool."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: Settings,
        limiter: InferenceLimiter,
        metrics: Metrics,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.limiter = limiter
        self.metrics = metrics
        self.pacs = Pacs(settings) if settings.dicomweb_url else None
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.pacs is None:
            return
        for index in range(self.settings.job_workers):
            self._tasks.append(asyncio.create_task(self._worker(), name=f"job-worker-{index}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _worker(self) -> None:
        settings = self.settings
        while True:
            try:
                job = await run_in_threadpool(
                    self.store.claim, self.owner, settings.job_lease_seconds
                )
            except Exception as exc:  # the database is down: try again later
                log.error("job claim failed", extra={"event": "job", "error": type(exc).__name__})
                job = None
            if job is None:
                await asyncio.sleep(settings.job_poll_seconds)
                continue
            await self._run(job)

    async def _heartbeat(self, job_id: str) -> None:
        lease = self.settings.job_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await run_in_threadpool(self.store.renew, job_id, self.owner, lease)
            except Exception as exc:
                log.error("lease renewal failed", extra={"error": type(exc).__name__})

    async def _run(self, job: JobView) -> None:
        log.info("job started", extra={"event": "job", "job_id": job.id, "attempt": job.attempts})
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        try:
            await self._execute(job)
        except PacsUnavailable as exc:
            await self._retry(job, exc)
        except PacsRejected as exc:
            error = {"code": exc.code, "detail": str(exc)}
            await run_in_threadpool(self.store.finish, job.id, self.owner, "failed", error=error)
            log.info("job failed", extra={"event": "job", "job_id": job.id, "code": exc.code})
        except LeaseLost:
            log.warning("job lease lost", extra={"event": "job", "job_id": job.id})
        except asyncio.CancelledError:
            await run_in_threadpool(self.store.release, job.id, self.owner)
            raise
        except Exception as exc:
            log.error(
                "job error", extra={"event": "job", "job_id": job.id, "error": type(exc).__name__}
            )
            error = {"code": "internal_error", "detail": "the job stopped on an internal error"}
            await run_in_threadpool(self.store.finish, job.id, self.owner, "failed", error=error)
        finally:
            heartbeat.cancel()

    async def _retry(self, job: JobView, exc: PacsUnavailable) -> None:
        settings = self.settings
        error = {"code": exc.code, "detail": str(exc)}
        delay = backoff_seconds(job.attempts, settings.job_retry_max_seconds)
        status = await run_in_threadpool(
            self.store.retry_later, job.id, self.owner, delay, error, settings.job_give_up_seconds
        )
        log.info(
            "job retrying" if status == "retrying" else "job gave up",
            extra={"event": "job", "job_id": job.id, "delay_s": delay, "code": exc.code},
        )

    def _entries(self, job: JobView) -> list[ModelEntry]:
        """The job's models as loaded now (same name and sha256; a model replaced since the job
        was made is left out of it)."""
        out = []
        for model in job.models:
            entry = self.registry.models.get(model["name"])
            if entry is not None and entry.ready and entry.sha256 == model["sha256"]:
                out.append(entry)
        return out

    async def _execute(self, job: JobView) -> None:
        assert self.pacs is not None
        pacs = self.pacs
        study = job.study_instance_uid
        series = await run_in_threadpool(pacs.series, study)
        entries = self._entries(job)
        plan = [(s, models) for s in series if (models := routed(entries, s))]
        if not plan:
            reason = (
                f"nothing to analyse: none of the study's {len(series)} series is taken by "
                f"any of the job's {len(job.models)} models"
            )
            await self._finish(job, reason)
            return
        done = {(r["series_instance_uid"], r["model"]["name"]) for r in job.results}
        for info, models in plan:
            todo = [m for m in models if (info.uid, m.name) not in done]
            if not todo:
                continue
            datasets = await run_in_threadpool(pacs.retrieve, study, info.uid)
            parts = await run_in_threadpool(_part10, datasets)
            del datasets
            for entry in todo:
                result = await self._one(job, info, entry, parts)
                if not await run_in_threadpool(self.store.add_result, job.id, self.owner, result):
                    raise LeaseLost
        await self._finish(job, None)

    async def _finish(self, job: JobView, reason: str | None) -> None:
        if not await run_in_threadpool(
            self.store.finish, job.id, self.owner, "done", reason=reason
        ):
            raise LeaseLost
        log.info("job done", extra={"event": "job", "job_id": job.id})

    async def _infer(
        self, entry: ModelEntry, parts: list[bytes], uids: dicom_out.ResultUIDs
    ) -> SeriesResult:
        """Through the shared limiter; a full queue makes the job wait, never fail."""
        assert entry.card is not None
        point = entry.card.default_operating_point
        limits = self.settings.decode_limits
        while True:
            try:
                return await self.limiter.run(
                    analyze_series, entry, parts, point, limits, self.metrics, uids
                )
            except Overloaded:
                await asyncio.sleep(self.settings.job_poll_seconds)

    async def _one(
        self, job: JobView, info: SeriesInfo, entry: ModelEntry, parts: list[bytes]
    ) -> dict[str, Any]:
        """One model on one series: infer, store, audit; the job's result entry."""
        assert self.pacs is not None and entry.card is not None and entry.version is not None
        model = {"name": entry.name, "version": entry.version, "sha256": entry.sha256}
        uids = dicom_out.ResultUIDs.derived(f"{job.id}/{info.uid}/{entry.name}/{entry.sha256}")
        result: dict[str, Any] = {
            "series_instance_uid": info.uid,
            "modality": info.modality,
            "model": model,
            "summary": None,
            "stored_sop_instance_uids": [],
            "stored_series_instance_uid": None,
            "timing_ms": None,
            "error": None,
        }
        try:
            answer = await self._infer(entry, parts, uids)
        except MedserveError as exc:
            result["error"] = {"code": exc.code, "detail": exc.detail or exc.title}
            await self._audit(job, info, entry, exc.code, None)
            return result
        dataset = pydicom.dcmread(io.BytesIO(answer.dicom))
        await run_in_threadpool(self.pacs.store, job.study_instance_uid, dataset)
        result.update(
            summary=answer.summary,
            stored_sop_instance_uids=[uids.instance],
            stored_series_instance_uid=uids.series,
            timing_ms=answer.timing_ms,
        )
        await self._audit(job, info, entry, "ok", answer.summary)
        return result

    async def _audit(
        self,
        job: JobView,
        info: SeriesInfo,
        entry: ModelEntry,
        status: str,
        summary: dict[str, Any] | None,
    ) -> None:
        await run_in_threadpool(
            self.store.audit,
            endpoint="job",
            model_name=entry.name,
            model_version=entry.version,
            model_sha256=entry.sha256,
            job_id=job.id,
            key_name=job.key_name,
            study_uid=job.study_instance_uid,
            series_uid=info.uid,
            summary=summary,
            status=status,
        )
