"""Binary classification endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import ServicesDep
from app.imaging.limits import DecodeLimits
from app.pipeline import Classified, classify
from app.routes.common import (
    DICOM,
    ERROR_RESPONSES,
    JSON,
    UPLOAD_BODY,
    OperatingPointQuery,
    accept,
    decision_fields,
    dicom_response,
    infer,
    input_info,
    model_ref,
    negotiate,
    ood_out,
    warnings_out,
)
from app.schemas import ClassificationResponse, Timing

router = APIRouter(tags=["classification"])

_OFFERS = (JSON, DICOM)
_RESPONSES = {
    200: {
        "content": {DICOM: {}},
        "description": (
            "JSON by default; with `Accept: application/dicom` and a DICOM upload, a "
            "Comprehensive 3D SR (TID 1500) of the decision"
        ),
    },
    **ERROR_RESPONSES,
}


def _add_classifier(path: str, model: str, description: str) -> None:
    """Register ``POST path`` serving the classifier ``model``."""

    async def endpoint(
        request: Request, services: ServicesDep, operating_point: OperatingPointQuery = None
    ) -> Response:
        wanted = negotiate(request, _OFFERS)
        entry, point = await accept(request, services, model, operating_point)
        metrics = services.metrics
        policy = services.settings.ood_policy

        def run(parts: list[bytes], limits: DecodeLimits) -> Classified:
            return classify(
                entry, parts, point, limits, metrics, wanted == DICOM, ood_policy=policy
            )

        result = await infer(request, services, entry, run)
        if wanted == DICOM:
            return dicom_response(result.dicom, multipart=False)
        body = ClassificationResponse(
            request_id=request.scope["state"]["request_id"],
            model=model_ref(entry),
            input=input_info(result.item, result.upload_sha256),
            warnings=warnings_out(result.warnings),
            timing_ms=Timing(**result.timing_ms),
            ood=ood_out(result.ood),
            **decision_fields(result.decision),
        )
        return Response(body.to_json(), media_type="application/json")

    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        name=f"classify_{model}",
        description=description,
        response_model=ClassificationResponse,
        responses=_RESPONSES,
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
