"""Binary classification endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response
from starlette.routing import Route

from app.deps import Services, ServicesDep
from app.endpoints import Endpoint, of_task
from app.imaging.limits import DecodeLimits
from app.pipeline import Classified, classify
from app.routes.common import (
    DICOM,
    ERROR_RESPONSES,
    JSON,
    PNG,
    UPLOAD_BODY,
    UploadQuery,
    accept,
    decision_headers,
    dicom_response,
    infer,
    json_answer,
    lean_route,
    negotiate,
    prediction_fields,
)
from app.schemas import ClassificationResponse

_OFFERS = (JSON, DICOM)
_EXPLAIN_OFFERS = (JSON, DICOM, PNG)
_RESPONSES = {
    200: {
        "content": {DICOM: {}, PNG: {}},
        "description": (
            "JSON by default; with `Accept: application/dicom` and a DICOM upload, a "
            "Comprehensive 3D SR (TID 1500) of the decision; with `explain=occlusion` and "
            "`Accept: image/png`, the occlusion heat map over the input as an RGB PNG"
        ),
    },
    **ERROR_RESPONSES,
}


def _add_classifier(router: APIRouter, path: str, model: str, description: str) -> Route:
    """Register ``POST path`` serving the classifier ``model``; its lean route."""

    async def answer(request: Request, services: Services, query: UploadQuery) -> Response:
        operating_point, explain = query.operating_point, query.explain
        wanted = negotiate(request, _EXPLAIN_OFFERS if explain else _OFFERS)
        entry, point = await accept(request, services, model, operating_point)
        metrics = services.metrics
        budget = services.settings.explain_budget_ms if explain and wanted != DICOM else None
        policy = services.settings.ood_policy

        def run(parts: list[bytes], limits: DecodeLimits) -> Classified:
            return classify(
                entry, parts, point, limits, metrics, wanted == DICOM, budget, ood_policy=policy
            )

        result = await infer(request, services, entry, run)
        if wanted == DICOM:
            return dicom_response(result.dicom, multipart=False)
        if wanted == PNG:
            assert result.explanation is not None
            return Response(
                result.explanation.png, media_type=PNG, headers=decision_headers(result.decision)
            )
        return json_answer(prediction_fields(request, entry, result), result.explanation)

    async def endpoint(
        request: Request, services: ServicesDep, query: Annotated[UploadQuery, Query()]
    ) -> Response:
        return await answer(request, services, query)

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
    return lean_route(path, UploadQuery, answer)


def build_router(table: Sequence[Endpoint]) -> tuple[APIRouter, list[Route]]:
    """The classification rows of the endpoint table, one POST route each, and their lean
    routes (``app.routes.common.lean_route``)."""
    router = APIRouter(tags=["classification"])
    lean = [
        _add_classifier(router, row.path, row.model, row.description)
        for row in of_task("binary_classification", table)
    ]
    return router, lean
