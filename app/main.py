"""The application factory: settings, registry in the lifespan, middleware, error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp

from app import __version__
from app import endpoints as endpoint_table
from app.config import Settings, get_settings
from app.endpoints import Endpoint, check_table
from app.errors import MedserveError
from app.fastpath import UploadFastPath
from app.limiter import InferenceLimiter
from app.logs import configure_logging
from app.metrics import Metrics
from app.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestContextMiddleware
from app.openapi import install_openapi
from app.pacs.jobs import JobRunner
from app.problem import error_response, problem_response
from app.registry import build_registry
from app.routes import audit, classify, health, models, page, segment, studies
from app.store import Store
from app.v2 import router as v2_router

log = logging.getLogger("medserve")

# Starlette/FastAPI's own HTTP errors, mapped onto the contract's codes.
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    406: "not_acceptable",
    404: "not_found",
    405: "bad_request",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "model_not_ready",
}


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MedserveError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    fallback = "internal_error" if exc.status_code >= 500 else "bad_request"
    code = _STATUS_CODES.get(exc.status_code, fallback)
    if exc.status_code == 404:
        detail = "no such resource"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed here"
    else:
        detail = None
    title = "Method not allowed" if exc.status_code == 405 else None
    return problem_response(
        code, detail, status=exc.status_code, title=title, headers=getattr(exc, "headers", None)
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Name the parameters and what is wrong, without echoing the values sent.
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    ]
    return problem_response("validation_error", "; ".join(problems)[:1000] or None)


# FastAPI's native OpenTelemetry, all of it off (``create_app``).
NO_OPENTELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None, endpoints: Sequence[Endpoint] | None = None
) -> FastAPI:
    """Build the ASGI app. The registry is built in the lifespan, once per process.

    ``endpoints`` is the upload endpoint table (default: ``app.endpoints.ENDPOINTS``); the routes
    and the registry's readiness both come from it.
    """
    settings = settings or get_settings()
    endpoints = endpoint_table.ENDPOINTS if endpoints is None else endpoints
    check_table(endpoints)
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.sqlalchemy_url)
        store.migrate()
        app.state.store = store
        registry = build_registry(settings, endpoints, app.state.limiter.alone)
        app.state.registry = registry
        for name, entry in registry.models.items():
            metrics.model_ready.labels(model=name).set(1 if entry.ready else 0)
        runner = JobRunner(store, registry, settings, app.state.limiter, metrics)
        runner.start()
        log.info("service started", extra={"event": "startup", "version": __version__})
        yield
        log.info("service stopping", extra={"event": "shutdown"})
        await runner.stop()
        app.state.limiter.close()
        store.close()

    # Swagger UI and ReDoc from assets in the package: /docs works on a network without internet.
    app = FastAPIOffline(
        redoc_url=None,  # app.routes.page serves /redoc with a CSP (ReDoc links a CDN logo)
        title="medserve",
        version=__version__,
        description=(
            "Inference on medical images: chest X-ray and CT classification, MRI and X-ray "
            "segmentation. Errors are application/problem+json (RFC 9457)."
        ),
        lifespan=lifespan,
        # Swagger UI would ask validator.swagger.io to badge the schema: nothing leaves.
        swagger_ui_parameters={"validatorUrl": None},
        # Nor OpenTelemetry: FastAPI's native instrumentation would export spans, metrics and
        # log records as soon as anything in the process set a global provider, and it checks
        # for one (three environment lookups) on every request, before any route. The
        # service's metrics are Prometheus (/metrics) and its logs JSON lines.
        telemetry=NO_OPENTELEMETRY,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.limiter = InferenceLimiter(
        settings.max_concurrent_inferences,
        settings.max_queued_inferences,
        settings.retry_after_seconds,
        metrics,
        max_inflight_bytes=settings.max_inflight_bytes,
        timeout=settings.admission_timeout_seconds,
        inline_max_ms=settings.inline_max_ms,
    )

    app.add_exception_handler(MedserveError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    classify_router, classify_lean = classify.build_router(endpoints)
    segment_router, segment_lean = segment.build_router(endpoints)
    routers = (
        health.router,
        models.router,
        classify_router,
        segment_router,
        studies.router,
        audit.router,
        page.router,
        v2_router,
    )
    for router in routers:
        app.include_router(router)
    # The upload paths are dispatched by plain Starlette routes ahead of FastAPI's, which
    # stay for the OpenAPI document (app.routes.common.lean_route).
    app.router.routes[0:0] = [*classify_lean, *segment_lean]
    install_openapi(app)
    page.mount_static(app)

    # The service's own middleware, outermost first: request context -> API key -> body
    # limit -> app. The app's stack gets them through add_middleware (the last added is the
    # outermost); the upload routes' fast path (app.fastpath) wraps its route in the same.
    routes = [route for router in routers for route in router.routes]
    own: list[tuple[type[Any], dict[str, Any]]] = [
        (RequestContextMiddleware, {"metrics": metrics, "routes": routes}),
        (ApiKeyMiddleware, {"keys": settings.named_keys()}),
        (
            BodyLimitMiddleware,
            {"limit": settings.max_upload_bytes, "read_timeout": settings.read_timeout_seconds},
        ),
    ]
    for middleware, options in reversed(own):
        app.add_middleware(middleware, **options)

    def own_middleware(inner: ASGIApp) -> ASGIApp:
        for middleware, options in reversed(own):
            inner = middleware(inner, **options)
        return inner

    whole_stack = app.build_middleware_stack

    def build_stack() -> ASGIApp:
        handlers = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
        lean = [*classify_lean, *segment_lean]
        return UploadFastPath(whole_stack(), lean, handlers, own_middleware)

    app.build_middleware_stack = build_stack  # type: ignore[method-assign]
    return app
