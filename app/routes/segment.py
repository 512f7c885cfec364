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
    decision_headers,
    dicom_response,
    infer,
    json_answer,
    lean_route,
    negotiate,
    prediction_fields,
)
from app.schemas import SegmentationResponse

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
    body = prediction_fields(request, entry, result)
    body["mask"] = {
        "height": int(s.mask.shape[0]),
        "width": int(s.mask.shape[1]),
        "area_px": int(s.area_px),
        "area_mm2": None if s.area_mm2 is None else float(s.area_mm2),
        "bbox": None if s.bbox is None else [int(v) for v in s.bbox],
        "centroid": None if s.centroid is None else [float(v) for v in s.centroid],
        "centroid_mm": None if s.centroid_mm is None else [float(v) for v in s.centroid_mm],
        "rle": None
        if rle is None
        else {
            "size": [int(v) for v in rle["size"]],
            "counts": [int(v) for v in rle["counts"]],
            "order": "F",
        },
        "png_base64": result.encoded.get("png_base64"),
    }
    return json_answer(body, result.explanation)


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
