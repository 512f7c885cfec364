"""Binary segmentation endpoints: JSON with the mask as RLE/PNG, or the PNG itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.deps import ServicesDep
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
    ExplainQuery,
    OperatingPointQuery,
    accept,
    decision_fields,
    decision_headers,
    dicom_response,
    explanation_out,
    infer,
    input_info,
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


MaskFormatQuery = Annotated[
    MaskFormat, Query(description="How the mask is returned in JSON: rle, png, both or none")
]
OverlayQuery = Annotated[
    bool, Query(description="With Accept: image/png, the input with the mask outline drawn")
]


def _add_segmenter(router: APIRouter, path: str, model: str, description: str) -> None:
    """Register ``POST path`` serving the segmenter ``model``."""

    async def endpoint(
        request: Request,
        services: ServicesDep,
        operating_point: OperatingPointQuery = None,
        mask_format: MaskFormatQuery = "rle",
        overlay: OverlayQuery = False,
        explain: ExplainQuery = None,
    ) -> Response:
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


def build_router(table: Sequence[Endpoint]) -> APIRouter:
    """The segmentation rows of the endpoint table, one POST route each."""
    router = APIRouter(tags=["segmentation"])
    for row in of_task("binary_segmentation", table):
        _add_segmenter(router, row.path, row.model, row.description)
    return router
