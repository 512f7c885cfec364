"""What every inference route shares: the request body's OpenAPI description, the response."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from starlette.requests import Request

from app.deps import Services
from app.imaging.postprocess import Decision, resolve_operating_point
from app.imaging.types import Image2D, Volume
from app.registry import ModelEntry
from app.schemas import InputInfo, ModelRef, OperatingPointOut, Problem, WarningOut
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
        (413, "upload or its expansion over the limit"),
        (415, "not an accepted format / transfer syntax"),
        (422, "invalid file or parameter"),
        (503, "model not ready or overloaded"),
    )
}


OperatingPointQuery = Annotated[
    str | None,
    Query(max_length=64, description="One of the model's operating points (default: the card's)"),
]


async def accept(
    request: Request, services: Services, model: str, operating_point: str | None
) -> tuple[ModelEntry, str, list[bytes]]:
    """Checks that need no body (model ready, operating point), then the upload itself."""
    request.scope.setdefault("state", {})["model"] = model
    settings = services.settings
    entry = services.registry.ready_model(model, settings.retry_after_seconds)
    assert entry.card is not None
    point_name, _ = resolve_operating_point(entry.card, operating_point)
    parts = await read_upload(request, settings.max_upload_parts)
    return entry, point_name, parts


def model_ref(entry: ModelEntry) -> ModelRef:
    assert entry.card is not None and entry.version is not None
    return ModelRef(name=entry.name, version=entry.version, sha256=entry.card.model_sha256)


def input_info(item: Image2D | Volume, sha256: str) -> InputInfo:
    spacing = [round(float(s), 6) for s in item.spacing] if item.spacing else None
    return InputInfo(
        format=item.meta.format, shape=list(item.shape), spacing_mm=spacing, sha256=sha256
    )


def decision_fields(decision: Decision) -> dict[str, Any]:
    point = decision.point
    return {
        "probability": round(decision.probability, 6),
        "uncalibrated_probability": round(decision.uncalibrated_probability, 6),
        "positive": decision.positive,
        "label": decision.label,
        "operating_point": OperatingPointOut(
            name=decision.operating_point,
            threshold=point.threshold,
            sensitivity=point.sensitivity,
            specificity=point.specificity,
            precision=point.precision,
        ),
    }


def warnings_out(warnings: list[dict[str, str]]) -> list[WarningOut]:
    return [WarningOut(**w) for w in warnings]
