"""Pure-ASGI middleware, outermost first: request context, API key, body-size limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so that the API-key check and the size limit act on the
headers before any byte of the body is read, and the limit counts bytes as they arrive.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence

from starlette.datastructures import MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge, RequestTimeout
from app.headers import header
from app.logs import request_id_var
from app.metrics import Metrics
from app.problem import error_response, problem_response

log = logging.getLogger("medserve.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Paths that never need a key: orchestrators and Prometheus must reach them, and the page and
# API docs hold no data (the page sends the key it is given on every API call it makes).
PUBLIC_PREFIXES = ("/health/", "/v2/health/", "/metrics", "/ui/", "/static-offline-docs/")
PUBLIC_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
V2_PREFIX = "/v2"


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def new_request_id() -> str:
    """A random request id: ``uuid.uuid4().hex`` (the version and variant bits set) without
    the ``UUID`` object."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def with_request_id(raw: Iterable[tuple[bytes, bytes]], rid: str) -> list[tuple[bytes, bytes]]:
    """A response's raw headers with ``X-Request-ID: rid`` set, as ``MutableHeaders`` sets it
    (an existing one replaced where it stands, else appended), without building the
    ``MutableHeaders`` for the common case of none."""
    headers = list(raw)
    if any(key.lower() == b"x-request-id" for key, _ in headers):
        mutable = MutableHeaders(raw=headers)
        mutable["X-Request-ID"] = rid
        return mutable.raw
    headers.append((b"x-request-id", rid.encode("latin-1")))
    return headers


def protocol_extra(scope: Scope, detail: str) -> dict[str, str] | None:
    """On the Open Inference Protocol's paths, the ``error`` member its clients read (added to
    the problem+json body); elsewhere nothing."""
    path = scope.get("path", "")
    if path == V2_PREFIX or path.startswith(V2_PREFIX + "/"):
        return {"error": detail}
    return None


class RequestContextMiddleware:
    """Request id (accepted or generated, returned), access log, metrics, last-resort 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = list(routes)

    def _endpoint(self, scope: Scope) -> str:
        """The route template (a bounded label set). A request answered before routing (401,
        413) is matched against ``routes``; an unknown path is "unmatched"."""
        route = scope.get("route")
        if route is None:
            for candidate in self.routes:
                if candidate.matches(dict(scope))[0] != Match.NONE:
                    route = candidate
                    break
        return getattr(route, "path", None) or "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id") or ""
        rid = incoming if _REQUEST_ID.match(incoming) else new_request_id()
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = with_request_id(message.get("headers", ()), rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"event": "error"})
            if not response_started:
                extra = protocol_extra(scope, "internal error")
                await problem_response("internal_error", extra=extra)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            endpoint = self._endpoint(scope)
            self.metrics.observe_request(endpoint, status, elapsed)
            log.info(
                "request",
                extra={
                    "event": "access",
                    "method": scope.get("method"),
                    "path": endpoint if endpoint != "unmatched" else "<unmatched>",
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "model": state.get("model"),
                },
            )
            request_id_var.reset(token)


class ApiKeyMiddleware:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, checked before the body is read.

    ``keys`` maps each key to (name, is_admin); the request's ``state`` gets ``key_name`` and
    ``admin`` for the audit and the admin-only routes."""

    def __init__(self, app: ASGIApp, keys: Mapping[str, tuple[str, bool]]) -> None:
        self.app = app
        self.keys = [(k.encode(), name, admin) for k, (name, admin) in keys.items()]

    def _identify(self, scope: Scope) -> tuple[str, bool] | None:
        presented = header(scope, b"x-api-key")
        if presented is None:
            auth = header(scope, b"authorization") or ""
            scheme, _, token = auth.partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        if not presented:
            return None
        candidate = presented.encode("utf-8", "replace")
        # Compare against every key, always, so timing does not tell which key nearly matched.
        found = None
        for key, name, admin in self.keys:
            if hmac.compare_digest(candidate, key):
                found = (name, admin)
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys:
            await self.app(scope, receive, send)
            return
        identity = self._identify(scope)
        if identity is not None:
            state = scope.setdefault("state", {})
            state["key_name"], state["admin"] = identity
        if identity is not None or is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        detail = "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"
        response = problem_response(
            "unauthorized",
            detail,
            headers={"WWW-Authenticate": 'Bearer realm="medserve"', "Connection": "close"},
            extra=protocol_extra(scope, detail),
        )
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """413 once a body passes ``limit`` bytes: at once from Content-Length, else while counting;
    408 ``request_timeout`` (connection closed) when the body makes no progress for
    ``read_timeout`` seconds."""

    def __init__(self, app: ASGIApp, limit: int, read_timeout: float = 60.0) -> None:
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout

    def _too_large(self, scope: Scope) -> PayloadTooLarge:
        detail = f"request body exceeds the limit of {self.limit} bytes"
        return PayloadTooLarge(
            detail, headers={"Connection": "close"}, extra=protocol_extra(scope, detail)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(self._too_large(scope))(scope, receive, send)
            return

        received = 0
        response_started = False
        body_done = False

        async def counting_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # waiting for the disconnect: no deadline
                return await receive()
            try:
                # a deadline on this task (no task per chunk, as wait_for would make)
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                stalled = f"the request body made no progress for {self.read_timeout:g} s"
                raise RequestTimeout(
                    stalled, headers={"Connection": "close"}, extra=protocol_extra(scope, stalled)
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise self._too_large(scope)
                body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except (PayloadTooLarge, RequestTimeout) as exc:
            if response_started:
                raise
            await error_response(exc)(scope, receive, send)
