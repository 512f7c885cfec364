"""Binary classification endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.deps import LimiterDep, MetricsDep, RegistryDep, SettingsDep
from app.pipeline import classify
from app.routes.common import (
    ERROR_RESPONSES,
    UPLOAD_BODY,
    accept,
    decision_fields,
    input_info,
    model_ref,
    warnings_out,
)
from app.schemas import ClassificationResponse, Timing

router = APIRouter(tags=["classification"])

OperatingPointQuery = Annotated[
    str | None,
    Query(max_length=64, description="One of the model's operating points (default: the card's)"),
]


async def _classify(
    request: Request,
    model: str,
    registry: RegistryDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    operating_point: str | None,
) -> Response:
    entry, point, parts = await accept(request, registry, settings, model, operating_point)
    result = await limiter.run(classify, entry, parts, point, settings.decode_limits, metrics)
    body = ClassificationResponse(
        request_id=request.scope["state"]["request_id"],
        model=model_ref(entry),
        input=input_info(result.item, result.upload_sha256),
        warnings=warnings_out(result.warnings),
        timing_ms=Timing(**result.timing_ms),
        **decision_fields(result.decision),
    )
    return Response(body.model_dump_json(), media_type="application/json")


@router.post(
    "/classify/xray",
    response_model=ClassificationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=UPLOAD_BODY,
)
async def classify_xray(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    operating_point: OperatingPointQuery = None,
) -> Response:
    """Pneumonia from a chest X-ray (PNG, JPEG, TIFF 8/16-bit, DICOM CR/DX)."""
    return await _classify(
        request, "pneumonia_xray", registry, settings, limiter, metrics, operating_point
    )


@router.post(
    "/classify/ct",
    response_model=ClassificationResponse,
    responses=ERROR_RESPONSES,
    openapi_extra=UPLOAD_BODY,
)
async def classify_ct(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    operating_point: OperatingPointQuery = None,
) -> Response:
    """COVID-19 from a chest CT volume (NIfTI, zipped DICOM series, DICOM slices, multi-frame)."""
    return await _classify(
        request, "covid_ct", registry, settings, limiter, metrics, operating_point
    )
