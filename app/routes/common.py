"""What every inference route shares: the request body's OpenAPI description, content
negotiation, the response."""

from __future__ import annotations

import base64
import contextlib
import functools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar, cast

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.deps import Services, services_of
from app.errors import MedserveError, NotAcceptable, Overloaded
from app.headers import header
from app.imaging.explain import Explanation
from app.imaging.limits import DecodeLimits
from app.imaging.postprocess import Decision, resolve_operating_point
from app.imaging.types import Image2D, Volume
from app.pipeline import OodResult
from app.registry import ModelEntry
from app.schemas import Problem
from app.server import allow_large_reads
from app.upload import read_upload

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "The file as the raw body (fast path), or multipart/form-data with the file in "
            "`file` (repeat `file` for several DICOM slices). The format is detected from the "
            "bytes, never from names or declared types."
        ),
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "format": "binary"},
                        }
                    },
                }
            },
            **{
                t: {"schema": {"type": "string", "format": "binary"}}
                for t in (
                    "application/octet-stream",
                    "application/dicom",
                    "image/png",
                    "image/jpeg",
                    "image/tiff",
                    "application/zip",
                    "application/gzip",
                )
            },
        },
    }
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text, "content": {"application/problem+json": {}}}
    for status, text in (
        (400, "malformed request"),
        (401, "missing or wrong API key"),
        (406, "the Accept header asks for a representation this upload cannot give"),
        (413, "upload or its expansion over the limit"),
        (415, "not an accepted format / transfer syntax"),
        (422, "invalid file or parameter"),
        (503, "model not ready or overloaded"),
    )
}


OPERATING_POINT = "One of the model's operating points (default: the card's)"


async def accept(
    request: Request, services: Services, model: str, operating_point: str | None
) -> tuple[ModelEntry, str]:
    """Checks that need no body: the model is ready, the operating point exists."""
    request.scope.setdefault("state", {})["model"] = model
    settings = services.settings
    entry = services.registry.ready_model(model, settings.retry_after_seconds)
    assert entry.card is not None
    point_name, _ = resolve_operating_point(entry.card, operating_point)
    return entry, point_name


# The JSON answer is built as plain dicts in the fields' order of ``app.schemas`` (the
# response models FastAPI documents) and written by orjson: the nine pydantic models of an
# answer cost 0.10 ms to build and 0.05 ms to serialize right after a model's run had
# evicted the caches, the dicts and orjson 0.04 ms together (MRI slice, issue 18). Every
# value is made a plain Python number here (numpy's are not JSON); tests check each kind of
# answer against its response model: every field, in order, of the model's type.


def model_ref(entry: ModelEntry) -> dict[str, Any]:
    assert entry.card is not None and entry.version is not None
    return {"name": entry.name, "version": entry.version, "sha256": entry.card.model_sha256}


def input_info(item: Image2D | Volume, sha256: str) -> dict[str, Any]:
    spacing = [round(float(s), 6) for s in item.spacing] if item.spacing else None
    return {
        "format": item.meta.format,
        "shape": [int(n) for n in item.shape],
        "spacing_mm": spacing,
        "sha256": sha256,
    }


def _number(value: float | None) -> float | None:
    return None if value is None else float(value)


def decision_fields(decision: Decision) -> dict[str, Any]:
    point = decision.point
    return {
        "probability": round(float(decision.probability), 6),
        "uncalibrated_probability": round(float(decision.uncalibrated_probability), 6),
        "positive": bool(decision.positive),
        "label": decision.label,
        "operating_point": {
            "name": decision.operating_point,
            "threshold": float(point.threshold),
            "sensitivity": float(point.sensitivity),
            "specificity": float(point.specificity),
            "precision": _number(point.precision),
        },
    }


def warnings_out(warnings: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"code": w["code"], "detail": w["detail"]} for w in warnings]


_STAGES = ("decode", "preprocess", "inference", "postprocess")


def timing_out(timing: dict[str, float]) -> dict[str, float]:
    """The answer's ``timing_ms``: the four stages, ``explain`` when it ran, the total."""
    out = {name: float(timing[name]) for name in _STAGES}
    if "explain" in timing:
        out["explain"] = float(timing["explain"])
    out["total"] = float(timing["total"])
    return out


class Predicted(Protocol):
    """What a JSON answer is made of (``app.pipeline.Classified``, ``Segmented``)."""

    @property
    def item(self) -> Image2D | Volume: ...
    @property
    def upload_sha256(self) -> str: ...
    @property
    def decision(self) -> Decision: ...
    @property
    def warnings(self) -> list[dict[str, str]]: ...
    @property
    def timing_ms(self) -> dict[str, float]: ...
    @property
    def ood(self) -> OodResult | None: ...


def prediction_fields(request: Request, entry: ModelEntry, result: Predicted) -> dict[str, Any]:
    """The fields every JSON answer starts with (``app.schemas.Prediction``), in order; the
    ``ood`` field only for a model whose card has an OOD check."""
    body: dict[str, Any] = {
        "request_id": request.scope["state"]["request_id"],
        "model": model_ref(entry),
        "input": input_info(result.item, result.upload_sha256),
        **decision_fields(result.decision),
        "warnings": warnings_out(result.warnings),
        "timing_ms": timing_out(result.timing_ms),
    }
    if result.ood is not None:
        body["ood"] = result.ood.as_dict()
    return body


def decision_headers(decision: Decision) -> dict[str, str]:
    """The decision in the headers of an answer whose body is an image."""
    return {
        "X-Medserve-Probability": f"{decision.probability:.6f}",
        "X-Medserve-Positive": "true" if decision.positive else "false",
    }


# --------------------------------------------------------------------------- explanations

EXPLAIN = (
    "occlusion: add an explanation (classifiers: occlusion sensitivity of the calibrated "
    "probability; segmenters: their probability map); with Accept: image/png a "
    "classifier answers with the heat-map overlay itself"
)


class UploadQuery(BaseModel):
    """The query parameters every upload endpoint takes (frozen: ``query_of`` hands one
    validated instance to every request with the same query)."""

    model_config = ConfigDict(frozen=True)

    operating_point: str | None = Field(None, max_length=64, description=OPERATING_POINT)
    explain: Literal["occlusion"] | None = Field(None, description=EXPLAIN)


Q = TypeVar("Q", bound=UploadQuery)


def query_of(model: type[Q], request: Request) -> Q:
    """The request's query parameters as ``model``, or the 422 FastAPI gives for them (the
    same pydantic validation; unknown parameters are ignored, as FastAPI does). A query seen
    before is not validated again (``_validated_query``; a query string longer than
    ``_CACHED_MAX`` is validated every time, so that the cache stays small)."""
    raw = request.scope["query_string"]
    validate = _validated_query if len(raw) <= _CACHED_MAX else _validated_query.__wrapped__
    return cast(Q, validate(model, raw))


# the longest query string and Accept header whose result is kept (both are the client's)
_CACHED_MAX = 256


@functools.lru_cache(maxsize=256)
def _validated_query(model: type[Q], query_string: bytes) -> Q:
    """``model`` validated from a raw query string; the last 256 kept (a client sends the same
    few again and again; 25 us a request in process, issue 18). A failure is not kept."""
    try:
        return model.model_validate(dict(QueryParams(query_string)))
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


Answer = Callable[[Request, Services, Q], Awaitable[Response]]


def lean_route(path: str, model: type[Q], answer: Answer[Q]) -> Route:
    """``POST path`` as a plain Starlette route that calls ``answer`` with the request's
    services and query: the app puts these ahead of FastAPI's routes for the upload paths.
    FastAPI's route for the same path (the same ``answer``) stays for the OpenAPI document;
    its dispatch (routing 0.14 ms and parameter solving 0.22 ms in process) cost 0.3-0.6 ms of
    a 13 ms MRI request here (bench/ab.py, one server pair: 0.95-0.98x without it, phantom
    DICOM frame 0.90x; one pair can be 9 % off, ``--pairs``; issue 18)."""

    async def handle(request: Request) -> Response:
        request.scope["route"] = route  # the access log's and the metrics' endpoint label
        return await answer(request, services_of(request), query_of(model, request))

    route = Route(path, handle, methods=["POST"], include_in_schema=False)
    return route


def explanation_out(explanation: Explanation) -> dict[str, Any]:
    grid = explanation.grid
    return {
        "method": explanation.method,
        "patch": None if explanation.patch is None else int(explanation.patch),
        "stride": None if explanation.stride is None else int(explanation.stride),
        "grid": None if grid is None else [[round(float(v), 6) for v in row] for row in grid],
        "png_base64": base64.b64encode(explanation.png).decode("ascii"),
    }


def json_answer(body: dict[str, Any], explanation: Explanation | None = None) -> Response:
    """A JSON answer (``body`` of plain Python values) as orjson writes it, with the
    ``explanation`` last when there is one (only an ``explain`` request has one)."""
    if explanation is not None:
        body["explanation"] = explanation_out(explanation)
    return Response(orjson.dumps(body), media_type=JSON)


# --------------------------------------------------------------------------- content negotiation

JSON = "application/json"
DICOM = "application/dicom"
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
PNG = "image/png"


def _media_range(text: str) -> tuple[str, dict[str, str], float] | None:
    """``type/subtype;p=v;q=0.5`` → (type/subtype, params, q); None when malformed."""
    pieces = [p.strip() for p in text.split(";")]
    kind = pieces[0].lower()
    if kind.count("/") != 1:
        return None
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                q = min(max(float(value), 0.0), 1.0)
            except ValueError:
                return None
        elif name:
            params[name] = value.lower()
    return kind, params, q


def _match(offer: str, kind: str, params: dict[str, str]) -> int:
    """How specifically a media range matches an offer: 3 exact, 2 ``type/*``, 1 ``*/*``,
    0 no match. A parameter the offer states (``type`` of multipart/related) must agree."""
    parsed = _media_range(offer)
    assert parsed is not None
    offer_kind, offer_params, _ = parsed
    if any(k in offer_params and offer_params[k] != v for k, v in params.items()):
        return 0
    if kind == offer_kind:
        return 3
    if kind.endswith("/*") and offer_kind.split("/")[0] == kind[:-2]:
        return 2
    return 1 if kind == "*/*" else 0


def negotiate(request: Request, offers: tuple[str, ...]) -> str:
    """The offer the ``Accept`` header prefers (RFC 9110 §12.5.1): the highest q of the most
    specific matching range; ties go to the range listed first, then to the first offer (JSON).
    No ``Accept`` means the first offer; nothing acceptable → 406 ``not_acceptable``."""
    accept = (header(request.scope, b"accept") or "").strip()
    prefer = _preferred if len(accept) <= _CACHED_MAX else _preferred.__wrapped__
    chosen = prefer(accept, offers)
    if chosen is None:
        raise NotAcceptable(
            "this endpoint answers " + ", ".join(offers) + "; the Accept header allows none"
        )
    return chosen


@functools.lru_cache(maxsize=256)
def _preferred(header: str, offers: tuple[str, ...]) -> str | None:
    """``negotiate``'s choice for one header, None for none; the last 256 short headers kept
    (a client sends the same one on every request; 24 us a request in process, issue 18)."""
    if not header:
        return offers[0]
    ranges = [r for r in (_media_range(t) for t in header.split(",") if t.strip()) if r]
    best: tuple[float, int, int, int] | None = None
    chosen = None
    for offer_index, offer in enumerate(offers):
        scored = [
            (specificity, -position, q)
            for position, (kind, params, q) in enumerate(ranges)
            if (specificity := _match(offer, kind, params))
        ]
        if not scored:
            continue
        specificity, position, q = max(scored)
        if q <= 0:
            continue
        key = (q, specificity, position, -offer_index)
        if best is None or key > best:
            best, chosen = key, offer
    return chosen


def dicom_response(objects: list[bytes], multipart: bool) -> Response:
    """One DICOM object as ``application/dicom``, or several as ``multipart/related;
    type="application/dicom"`` (the DICOMweb form)."""
    if not multipart:
        return Response(objects[0], media_type=DICOM)
    boundary = uuid.uuid4().hex
    body = bytearray()
    for data in objects:
        body += f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode("ascii")
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode("ascii")
    return Response(
        bytes(body),
        headers={"Content-Type": f'{DICOM_MULTIPART}; boundary="{boundary}"'},
    )


# --------------------------------------------------------------------------- audit


class Inferred(Protocol):
    upload_sha256: str
    decision: Decision


R = TypeVar("R", bound=Inferred)


def result_summary(result: Inferred) -> dict[str, Any]:
    """What the audit keeps of an answer (no tag values: the decision and mask figures)."""
    d = result.decision
    summary: dict[str, Any] = {
        "probability": round(d.probability, 6),
        "label": d.label,
        "positive": d.positive,
        "operating_point": d.operating_point,
    }
    mask = getattr(result, "summary", None)
    if mask is not None:
        summary["mask_area_px"] = mask.area_px
    ood = getattr(result, "ood", None)
    if isinstance(ood, OodResult):
        summary["ood"] = ood.as_dict()
    return summary


AuditWrite = Callable[[str, str | None, dict[str, Any] | None], None]


def audit_writer(request: Request, services: Services, entry: ModelEntry) -> AuditWrite:
    """The audit row of one HTTP inference (upload or V2) as a call ``(status, upload_sha256,
    summary)`` bound to its request, from any thread: the row is queued and committed behind
    the answer (``app.store.behind``); a failed write is logged, and the answer is not withheld
    for it."""
    scope = request.scope
    state = scope.get("state", {})
    # the path as ``request.url.path`` gives it, without building the whole URL (issue 18)
    path = scope["path"].replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    endpoint, request_id, key_name = path, state.get("request_id"), state.get("key_name")

    def write(status: str, upload_sha256: str | None, summary: dict[str, Any] | None) -> None:
        services.store.audit_later(
            endpoint=endpoint,
            model_name=entry.name,
            model_version=entry.version,
            model_sha256=entry.sha256,
            request_id=request_id,
            key_name=key_name,
            upload_sha256=upload_sha256,
            summary=summary,
            status=status,
        )

    return write


async def drain(request: Request) -> None:
    """Read and drop the rest of a refused request's body (nothing is kept)."""
    with contextlib.suppress(Exception):
        async for _ in request.stream():
            pass


def declared_length(request: Request) -> int:
    value = header(request.scope, b"content-length") or ""
    return int(value) if value.isdigit() else 0


_KIND_FIELD = 256  # characters of each part of a kind kept (the limiter keeps 256 kinds)


def run_kind(request: Request) -> tuple[str, bytes, str, str]:
    """What makes two requests the same kind of work for the limiter's run times: the path,
    the query and the media types asked for and sent (without parameters: a multipart
    boundary differs per request), each cut to ``_KIND_FIELD`` characters (the client's)."""
    scope = request.scope
    content_type = (header(scope, b"content-type") or "").partition(";")[0].strip().lower()
    return (
        scope["path"][:_KIND_FIELD],
        scope["query_string"][:_KIND_FIELD],
        (header(scope, b"accept") or "")[:_KIND_FIELD],
        content_type[:_KIND_FIELD],
    )


async def infer(
    request: Request,
    services: Services,
    entry: ModelEntry,
    run: Callable[[list[bytes], DecodeLimits], R],
) -> R:
    """One upload: admitted by the limiter (a place in the queue and memory for its body)
    before a byte is read, read, then ``run(parts, limits)`` in the thread pool (or, short and
    alone, on the event loop: ``InferenceLimiter.run_kind``) with the request's memory ticket
    in ``limits``; its audit row (``ok`` or the error code), queued (the ``ok`` row right after
    ``run``) and committed behind the answer."""
    limiter, settings = services.limiter, services.settings
    body_read = False
    write_audit = audit_writer(request, services, entry)

    def run_and_audit(parts: list[bytes], limits: DecodeLimits) -> R:
        result = run(parts, limits)
        write_audit("ok", result.upload_sha256, result_summary(result))
        return result

    try:
        async with limiter.admit(declared_length(request)) as ticket:
            allow_large_reads(request.scope)
            parts = await read_upload(request, settings.max_upload_parts)
            body_read = True
            limits = settings.decode_limits_with(ticket.claim)
            size = sum(len(part) for part in parts)
            return await limiter.run_kind(
                run_kind(request), size, functools.partial(run_and_audit, parts, limits)
            )
    except MedserveError as exc:
        if isinstance(exc, Overloaded) and not body_read:
            await drain(request)  # so that the client, still sending, reads its 503
        write_audit(exc.code, None, None)
        raise
