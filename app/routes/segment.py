"""Binary segmentation endpoints: JSON with the mask as RLE/PNG, or the PNG itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response
from starlette.routing import Route

from app.deps import Services, ServicesDep
from app.endpoints import Endpoint, of_task
from app.imaging.limits import DecodeLimits
from app.pipeline import Segmented, segment
from app.registry import ModelEntry
from app.routes.common import (
    DICOM,
    DICOM_MULTIPART,
    ERROR_RESPONSES,
    JSON,
    PNG,
    UPLOAD_BODY,
    UploadQuery,
    accept,
    decision_fields,
    decision_headers,
    dicom_response,
    explanation_out,
    infer,
    input_info,
    lean_route,
    model_ref,
    negotiate,
    ood_out,
    prediction_json,
    warnings_out,
)
from app.schemas import RLE, MaskOut, SegmentationResponse, Timing

MaskFormat = Literal["rle", "png", "both", "none"]
_ENCODINGS: dict[str, frozenset[str]] = {
    "rle": frozenset({"rle"}),
    "png": frozenset({"png"}),
    "both": frozenset({"rle", "png"}),
    "none": frozenset(),
}
_OFFERS = (JSON, PNG, DICOM, DICOM_MULTIPART)
_DICOM_OBJECTS = {DICOM: frozenset({"seg"}), DICOM_MULTIPART: frozenset({"seg", "sr"})}
_RESPONSES = {
    200: {
        "content": {PNG: {}, DICOM: {}, DICOM_MULTIPART: {}},
        "description": (
            "JSON by default; the mask (or overlay) PNG with `Accept: image/png`; for a DICOM "
            "upload, a DICOM Segmentation with `Accept: application/dicom`, or the SEG plus an "
            'SR referencing it with `Accept: multipart/related; type="application/dicom"`'
        ),
    },
    **ERROR_RESPONSES,
}


def _json(request: Request, entry: ModelEntry, result: Segmented) -> Response:
    s = result.summary
    rle = result.encoded.get("rle")
    body = SegmentationResponse(
        request_id=request.scope["state"]["request_id"],
        model=model_ref(entry),
        input=input_info(result.item, result.upload_sha256),
        warnings=warnings_out(result.warnings),
        timing_ms=Timing(**result.timing_ms),
        mask=MaskOut(
            height=s.mask.shape[0],
            width=s.mask.shape[1],
            area_px=s.area_px,
            area_mm2=s.area_mm2,
            bbox=s.bbox,
            centroid=s.centroid,
            centroid_mm=s.centroid_mm,
            rle=RLE(**rle) if rle else None,
            png_base64=result.encoded.get("png_base64"),
        ),
        explanation=explanation_out(result.explanation),
        ood=ood_out(result.ood),
        **decision_fields(result.decision),
    )
    return prediction_json(body)


class SegmentQuery(UploadQuery):
    mask_format: MaskFormat = Field(
        "rle", description="How the mask is returned in JSON: rle, png, both or none"
    )
    overlay: bool = Field(
        False, description="With Accept: image/png, the input with the mask outline drawn"
    )


def _add_segmenter(router: APIRouter, path: str, model: str, description: str) -> Route:
    """Register ``POST path`` serving the segmenter ``model``; its lean route."""

    async def answer(request: Request, services: Services, query: SegmentQuery) -> Response:
        operating_point, mask_format = query.operating_point, query.mask_format
        overlay, explain = query.overlay, query.explain
        wanted = negotiate(request, _OFFERS)
        entry, point = await accept(request, services, model, operating_point)
        png = wanted == PNG
        if png:
            encodings = frozenset({"overlay_bytes" if overlay else "png_bytes"})
        elif wanted == JSON:
            encodings = _ENCODINGS[mask_format]
        else:
            encodings = frozenset()
        dicom = _DICOM_OBJECTS.get(wanted, frozenset())
        metrics = services.metrics
        policy = services.settings.ood_policy

        explained = explain is not None and wanted == JSON

        def run(parts: list[bytes], limits: DecodeLimits) -> Segmented:
            return segment(
                entry,
                parts,
                point,
                encodings,
                limits,
                metrics,
                dicom,
                explained,
                ood_policy=policy,
            )

        result = await infer(request, services, entry, run)
        if dicom:
            return dicom_response(result.dicom, multipart=wanted == DICOM_MULTIPART)
        if png:
            data = result.encoded["overlay_bytes" if overlay else "png_bytes"]
            headers = {
                **decision_headers(result.decision),
                "X-Medserve-Area-Px": str(result.summary.area_px),
            }
            return Response(data, media_type="image/png", headers=headers)
        return _json(request, entry, result)

    async def endpoint(
        request: Request, services: ServicesDep, query: Annotated[SegmentQuery, Query()]
    ) -> Response:
        return await answer(request, services, query)

    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        name=f"segment_{model}",
        description=description,
        response_model=SegmentationResponse,
        responses=_RESPONSES,
        openapi_extra=UPLOAD_BODY,
    )
    return lean_route(path, SegmentQuery, answer)


def build_router(table: Sequence[Endpoint]) -> tuple[APIRouter, list[Route]]:
    """The segmentation rows of the endpoint table, one POST route each, and their lean
    routes (``app.routes.common.lean_route``)."""
    router = APIRouter(tags=["segmentation"])
    lean = [
        _add_segmenter(router, row.path, row.model, row.description)
        for row in of_task("binary_segmentation", table)
    ]
    return router, lean
