"""Studies in the PACS and the jobs that analyse them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from app.deps import ServicesDep
from app.errors import NotFound, PacsNotConfigured, ValidationFailed
from app.routes.common import ERROR_RESPONSES
from app.schemas import JobCreated, JobList, JobOut

router = APIRouter(tags=["studies and jobs"])

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
StudyUID = Annotated[str, Path(max_length=64, description="Study Instance UID")]
ModelsQuery = Annotated[
    str | None,
    Query(max_length=1024, description="Comma-separated model names (default: every model)"),
]
Status = Literal["queued", "running", "retrying", "done", "failed"]


@router.post(
    "/studies/{study_instance_uid}/analyze",
    status_code=202,
    response_model=JobCreated,
    responses={200: {"model": JobCreated, "description": "the existing job"}, **ERROR_RESPONSES},
)
async def analyze(
    request: Request,
    services: ServicesDep,
    study_instance_uid: StudyUID,
    models: ModelsQuery = None,
    force: bool = False,
) -> Response:
    """Queue the analysis of a study in the PACS (answers at once; the PACS is not contacted)."""
    settings = services.settings
    if not settings.dicomweb_url:
        raise PacsNotConfigured("no DICOMweb URL is configured (MEDSERVE_DICOMWEB_URL)")
    if not _UID.match(study_instance_uid):
        raise ValidationFailed("study_instance_uid: not a DICOM UID")
    registry = services.registry
    routable = [n for n, e in sorted(registry.models.items()) if e.card and e.card.routing]
    if models:
        names = [n.strip() for n in models.split(",") if n.strip()]
        if not names or set(names) - set(routable):
            raise ValidationFailed(
                "models: each must be one of: "
                + (", ".join(routable) or "(no model takes studies)")
            )
    else:  # every model that takes studies and is ready; none ready → 503 below
        names = [n for n in routable if registry.models[n].ready] or routable[:1]
    if not names:
        raise ValidationFailed("no model takes studies (no card has a routing section)")
    entries = [registry.ready_model(n, settings.retry_after_seconds) for n in sorted(set(names))]
    chosen = [{"name": e.name, "version": e.version, "sha256": e.sha256} for e in entries]
    job, created = await run_in_threadpool(
        services.store.create_job,
        study_instance_uid,
        chosen,
        force=force,
        key_name=request.scope.get("state", {}).get("key_name"),
    )
    body = JobCreated(job_id=job.id, status=job.status, study_instance_uid=job.study_instance_uid)
    return Response(
        body.model_dump_json(),
        status_code=202 if created else 200,
        media_type="application/json",
        headers={"Location": f"/jobs/{job.id}"},
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERROR_RESPONSES)
async def get_job(services: ServicesDep, job_id: Annotated[str, Path(max_length=64)]) -> JobOut:
    """One job: status, attempts, and per series and model the result and what was stored."""
    job = await run_in_threadpool(services.store.get_job, job_id)
    if job is None:
        raise NotFound("no such job")
    return JobOut(**job.as_json())


@router.get("/jobs", response_model=JobList, responses=ERROR_RESPONSES)
async def list_jobs(
    services: ServicesDep,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobList:
    """The most recent jobs, newest first (optionally of one status)."""
    jobs = await run_in_threadpool(services.store.list_jobs, status, limit)
    return JobList(jobs=[JobOut(**j.as_json()) for j in jobs])
