"""The audit trail: one row per inference (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.deps import ServicesDep
from app.errors import Forbidden
from app.routes.common import ERROR_RESPONSES
from app.schemas import AuditList

router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    response_model=AuditList,
    responses={403: {"description": "not an admin key"}, **ERROR_RESPONSES},
)
async def audit(
    request: Request, services: ServicesDep, limit: Annotated[int, Query(ge=1, le=10000)] = 100
) -> AuditList:
    """The newest audit rows; study and series UIDs only as salted hashes."""
    state = request.scope.get("state", {})
    keys_configured = bool(services.settings.named_keys())
    if keys_configured and not state.get("admin"):
        raise Forbidden("the audit trail needs an admin key (MEDSERVE_ADMIN_KEYS)")
    rows = await run_in_threadpool(services.store.audit_rows, limit)
    return AuditList(rows=rows)
