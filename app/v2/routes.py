"""Open Inference Protocol (KServe V2) REST routes, with the binary tensor data extension.

Every error on these routes is the protocol's ``{"error": "..."}`` (``application/json``): a
domain error keeps its 401/404/413/503 status, any other client error is 400. Auth, the body
limit, the request id, metrics and logs come from the shared middleware; inference goes
through the shared limiter and leaves an audit row like the upload endpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match

from app import __version__
from app.deps import RegistryDep, Services, ServicesDep
from app.errors import BadRequest, MedserveError, ModelNotReady, NotFound, Overloaded
from app.registry import ModelEntry, Registry
from app.routes.common import audit_writer, declared_length, drain, run_kind
from app.server import allow_large_reads
from app.v2.infer import V2Result, graph_tensors, run_infer
from app.v2.schemas import (
    InferenceResponse,
    Live,
    ModelMetadata,
    ModelReady,
    Ready,
    ServerMetadata,
    V2Error,
)

PLATFORM = "onnxruntime_onnx"  # Triton's name for an ONNX model run by onnxruntime
EXTENSIONS = ["binary_tensor_data", "parameters"]
HEADER_LENGTH = "inference-header-content-length"
_KEPT = (401, 404, 413, 503)  # statuses a V2 error keeps; any other 4xx becomes 400


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """The protocol's error object."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _v2_status(status: int) -> int:
    if status in _KEPT:
        return status
    return 400 if 400 <= status < 500 else 500


class V2Route(APIRoute):
    """An APIRoute whose errors are V2 error objects instead of problem+json."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except MedserveError as exc:
                status = _v2_status(exc.status)
                message = exc.detail or exc.title
                return error_response(status, message, exc.headers or None)
            except RequestValidationError as exc:
                problems = [
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                    for e in exc.errors()
                ]
                return error_response(400, "; ".join(problems)[:1000] or "invalid request")
            except StarletteHTTPException as exc:
                return error_response(_v2_status(exc.status_code), str(exc.detail))

        return route


router = APIRouter(tags=["open inference protocol (V2)"], route_class=V2Route)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": text}
    for status, text in (
        (400, "malformed request, wrong input, or (health) not ready"),
        (401, "missing or wrong API key"),
        (404, "no such model or version"),
        (413, "body (or its inflated size) over the limit"),
        (503, "model not ready or overloaded"),
    )
}

ModelName = Annotated[str, Path(max_length=128, description="The model's name")]
ModelVersion = Annotated[str, Path(max_length=64, description="The model's version")]


def _entry(registry: Registry, name: str, version: str | None) -> ModelEntry:
    """The model (404 when unknown, or when ``version`` is not the one loaded)."""
    entry = registry.models.get(name)
    if entry is None:
        known = ", ".join(sorted(registry.models)) or "none"
        raise NotFound(f"no model of that name (models: {known})")
    if version is not None and version != entry.version:
        raise NotFound(f"model {name} has no version of that name (served: {entry.version})")
    return entry


# --------------------------------------------------------------------------- health, metadata


@router.get("/v2", response_model=ServerMetadata, responses=_ERRORS)
async def server_metadata() -> ServerMetadata:
    """Server metadata: name, version and the protocol extensions supported."""
    return ServerMetadata(name="medserve", version=__version__, extensions=EXTENSIONS)


@router.get("/v2/health/live", response_model=Live, responses=_ERRORS)
async def server_live() -> Live:
    """200 while the process serves (no key needed)."""
    return Live(live=True)


@router.get("/v2/health/ready", response_model=Ready, responses=_ERRORS)
async def server_ready(registry: RegistryDep) -> Response:
    """200 when every model is ready; else 400 (the protocol: a 4xx status means false)."""
    if registry.all_ready:
        return Response(orjson.dumps({"ready": True}), media_type="application/json")
    not_ready = sorted(n for n, m in registry.models.items() if not m.ready)
    message = f"not ready: {', '.join(not_ready)}" if not_ready else "no model is loaded"
    return Response(
        orjson.dumps({"ready": False, "error": message}),
        status_code=400,
        media_type="application/json",
    )


def _model_ready(registry: Registry, name: str, version: str | None) -> Response:
    entry = _entry(registry, name, version)
    body: dict[str, Any] = {"name": name, "ready": entry.ready}
    if not entry.ready:
        body["error"] = f"model {name} is not ready"
    return Response(
        orjson.dumps(body), status_code=200 if entry.ready else 400, media_type="application/json"
    )


@router.get("/v2/models/{name}/ready", response_model=ModelReady, responses=_ERRORS)
async def model_ready(registry: RegistryDep, name: ModelName) -> Response:
    """200 when the model is ready; 400 when it is not; 404 when unknown."""
    return _model_ready(registry, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=_ERRORS
)
async def model_version_ready(
    registry: RegistryDep, name: ModelName, version: ModelVersion
) -> Response:
    """200 when this version of the model is ready; 400 when it is not; 404 when unknown."""
    return _model_ready(registry, name, version)


def _metadata(registry: Registry, name: str, version: str | None, retry: int) -> ModelMetadata:
    entry = _entry(registry, name, version)
    if not entry.ready or entry.session is None or entry.version is None:
        raise ModelNotReady(f"model {name} is not ready", headers={"Retry-After": str(retry)})
    return ModelMetadata.model_validate(
        {
            "name": name,
            "versions": [entry.version],
            "platform": PLATFORM,
            "inputs": graph_tensors(entry, outputs=False),
            "outputs": graph_tensors(entry, outputs=True),
        }
    )


@router.get("/v2/models/{name}", response_model=ModelMetadata, responses=_ERRORS)
async def model_metadata(services: ServicesDep, name: ModelName) -> ModelMetadata:
    """The model's inputs and outputs as the ONNX graph names them (-1: variable size)."""
    return _metadata(services.registry, name, None, services.settings.retry_after_seconds)


@router.get("/v2/models/{name}/versions/{version}", response_model=ModelMetadata, responses=_ERRORS)
async def model_version_metadata(
    services: ServicesDep, name: ModelName, version: ModelVersion
) -> ModelMetadata:
    """The metadata of this version of the model."""
    return _metadata(services.registry, name, version, services.settings.retry_after_seconds)


# --------------------------------------------------------------------------- inference

_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "An inference request object; with the binary tensor data extension the JSON "
            "object is the first Inference-Header-Content-Length bytes and the inputs' raw "
            "data follows (any Content-Type). gzip/deflate Content-Encoding is accepted."
        ),
        "content": {
            # in components (app.openapi): ReDoc cannot follow a schema's own "$defs"
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "An inference response; binary outputs make it application/octet-stream, the "
            "JSON object first (Inference-Header-Content-Length bytes), then their data"
        ),
        "content": {"application/octet-stream": {}},
    },
    **_ERRORS,
}


def _audit_summary(result: V2Result) -> dict[str, Any]:
    """What the audit keeps: the batch size and, when postprocessed, each decision."""
    summary: dict[str, Any] = {"batch": result.batch, "protocol": "v2"}
    if result.decisions:
        summary["probability"] = [round(d.probability, 6) for d in result.decisions]
        summary["positive"] = [d.positive for d in result.decisions]
        summary["label"] = [d.label for d in result.decisions]
        summary["operating_point"] = result.decisions[0].operating_point
    if result.mask_areas:
        summary["mask_area_px"] = result.mask_areas
    return summary


async def _infer(request: Request, services: Services, name: str, version: str | None) -> Response:
    request.scope.setdefault("state", {})["model"] = name
    settings = services.settings
    _entry(services.registry, name, version)
    entry = services.registry.ready_model(name, settings.retry_after_seconds)
    headers = request.headers
    limiter = services.limiter
    body_read = False
    write_audit = audit_writer(request, services, entry)

    def run_and_audit(body: bytes) -> V2Result:
        result = run_infer(
            entry,
            body,
            content_encoding=headers.get("content-encoding"),
            header_length=headers.get(HEADER_LENGTH),
            accept_encoding=headers.get("accept-encoding"),
            max_body_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            metrics=services.metrics,
        )
        write_audit("ok", result.input_sha256, _audit_summary(result))  # in the same thread
        return result

    try:
        # admitted like the upload endpoints: a place in the queue and room for the body
        async with limiter.admit(declared_length(request)):
            allow_large_reads(request.scope)
            try:
                body = await request.body()
            except ClientDisconnect:
                raise BadRequest("the client disconnected before the request body ended") from None
            body_read = True
            result = await limiter.run_kind(
                run_kind(request), len(body), functools.partial(run_and_audit, body)
            )
    except MedserveError as exc:
        if isinstance(exc, Overloaded) and not body_read:
            await drain(request)
        write_audit(exc.code, None, None)
        raise
    out_headers = {}
    if result.content_encoding:
        out_headers["Content-Encoding"] = result.content_encoding
        out_headers["Vary"] = "Accept-Encoding"
    if result.header_length is not None:
        out_headers["Inference-Header-Content-Length"] = str(result.header_length)
        media = "application/octet-stream"
    else:
        media = "application/json"
    return Response(result.body, headers=out_headers, media_type=media)


@router.post(
    "/v2/models/{name}/infer",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def model_infer(request: Request, services: ServicesDep, name: ModelName) -> Response:
    """Inference on the model's own tensors (JSON or binary); `medserve_postprocess: true`
    adds the calibrated decision."""
    return await _infer(request, services, name, None)


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_BODY,
)
async def model_version_infer(
    request: Request, services: ServicesDep, name: ModelName, version: ModelVersion
) -> Response:
    """Inference on this version of the model."""
    return await _infer(request, services, name, version)


# --------------------------------------------------------------------------- anything else


@router.api_route(
    "/v2/{rest:path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    include_in_schema=False,
)
async def v2_unknown(request: Request, rest: str) -> Response:
    """Any other /v2 path: 405 when the path exists for another method, else 404."""
    scope = dict(request.scope)
    for route in router.routes:
        if isinstance(route, APIRoute) and route.path != "/v2/{rest:path}":
            match, _ = route.matches(scope)
            if match == Match.PARTIAL:
                allowed = ", ".join(sorted(route.methods or ()))
                return error_response(
                    405, f"method {request.method} is not allowed here", {"Allow": allowed}
                )
    return error_response(404, "no such resource")
