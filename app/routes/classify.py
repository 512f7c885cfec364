"""Binary classification endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import ServicesDep
from app.pipeline import classify
from app.routes.common import (
    ERROR_RESPONSES,
    UPLOAD_BODY,
    OperatingPointQuery,
    accept,
    decision_fields,
    input_info,
    model_ref,
    warnings_out,
)
from app.schemas import ClassificationResponse, Timing

router = APIRouter(tags=["classification"])


def _add_classifier(path: str, model: str, description: str) -> None:
    """Register ``POST path`` serving the classifier ``model``."""

    async def endpoint(
        request: Request, services: ServicesDep, operating_point: OperatingPointQuery = None
    ) -> Response:
        entry, point, parts = await accept(request, services, model, operating_point)
        settings = services.settings
        result = await services.limiter.run(
            classify, entry, parts, point, settings.decode_limits, services.metrics
        )
        body = ClassificationResponse(
            request_id=request.scope["state"]["request_id"],
            model=model_ref(entry),
            input=input_info(result.item, result.upload_sha256),
            warnings=warnings_out(result.warnings),
            timing_ms=Timing(**result.timing_ms),
            **decision_fields(result.decision),
        )
        return Response(body.model_dump_json(), media_type="application/json")

    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        name=f"classify_{model}",
        description=description,
        response_model=ClassificationResponse,
        responses=ERROR_RESPONSES,
        openapi_extra=UPLOAD_BODY,
    )


_add_classifier(
    "/classify/xray",
    "pneumonia_xray",
    "Pneumonia from a chest X-ray (PNG, JPEG, TIFF 8/16-bit, DICOM CR/DX).",
)
_add_classifier(
    "/classify/ct",
    "covid_ct",
    "COVID-19 from a chest CT volume (NIfTI, zipped DICOM series, DICOM slices, multi-frame).",
)
