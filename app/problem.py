"""Rendering of errors as ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from app.errors import ERROR_TABLE, MedserveError
from app.logs import request_id_var

PROBLEM_TYPE = "application/problem+json"


def problem_body(
    code: str,
    detail: str | None = None,
    *,
    status: int | None = None,
    title: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    table_status, table_title = ERROR_TABLE[code]
    body: dict[str, Any] = {
        "type": f"urn:medserve:error:{code}",
        "title": title or table_title,
        "status": status or table_status,
        "code": code,
        "detail": detail or title or table_title,
        "request_id": request_id_var.get(),
    }
    if extra:
        body.update(extra)
    return body


def problem_response(
    code: str,
    detail: str | None = None,
    *,
    status: int | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = problem_body(code, detail, status=status, title=title, extra=extra)
    return Response(
        orjson.dumps(body),
        status_code=body["status"],
        headers=headers,
        media_type=PROBLEM_TYPE,
    )


def error_response(exc: MedserveError) -> Response:
    return problem_response(exc.code, exc.detail, headers=exc.headers, extra=exc.extra)
