"""Binary segmentation endpoints: JSON with the mask as RLE/PNG, or the PNG itself."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.deps import ServicesDep
from app.pipeline import Segmented, segment
from app.registry import ModelEntry
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
from app.schemas import RLE, MaskOut, SegmentationResponse, Timing

router = APIRouter(tags=["segmentation"])

MaskFormat = Literal["rle", "png", "both", "none"]
_ENCODINGS: dict[str, frozenset[str]] = {
    "rle": frozenset({"rle"}),
    "png": frozenset({"png"}),
    "both": frozenset({"rle", "png"}),
    "none": frozenset(),
}
_PNG_RESPONSES = {
    200: {
        "content": {"image/png": {}},
        "description": "JSON by default; the mask (or overlay) PNG with `Accept: image/png`",
    },
    **ERROR_RESPONSES,
}


def wants_png(request: Request) -> bool:
    """``Accept: image/png`` (alone or preferred over JSON) asks for the PNG itself."""
    accept_header = request.headers.get("accept", "")
    types = [t.split(";")[0].strip().lower() for t in accept_header.split(",")]
    return "image/png" in types and (
        "application/json" not in types
        or types.index("image/png") < types.index("application/json")
    )


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
        **decision_fields(result.decision),
    )
    return Response(body.model_dump_json(), media_type="application/json")


MaskFormatQuery = Annotated[
    MaskFormat, Query(description="How the mask is returned in JSON: rle, png, both or none")
]
OverlayQuery = Annotated[
    bool, Query(description="With Accept: image/png, the input with the mask outline drawn")
]


def _add_segmenter(path: str, model: str, description: str) -> None:
    """Register ``POST path`` serving the segmenter ``model``."""

    async def endpoint(
        request: Request,
        services: ServicesDep,
        operating_point: OperatingPointQuery = None,
        mask_format: MaskFormatQuery = "rle",
        overlay: OverlayQuery = False,
    ) -> Response:
        entry, point, parts = await accept(request, services, model, operating_point)
        png = wants_png(request)
        if png:
            encodings = frozenset({"overlay_bytes" if overlay else "png_bytes"})
        else:
            encodings = _ENCODINGS[mask_format]
        limits = services.settings.decode_limits
        result = await services.limiter.run(
            segment, entry, parts, point, encodings, limits, services.metrics
        )
        if png:
            data = result.encoded["overlay_bytes" if overlay else "png_bytes"]
            headers = {
                "X-Medserve-Probability": f"{result.decision.probability:.6f}",
                "X-Medserve-Positive": "true" if result.decision.positive else "false",
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
        responses=_PNG_RESPONSES,
        openapi_extra=UPLOAD_BODY,
    )


_add_segmenter(
    "/segment/mri",
    "brain_tumor_mri",
    "Brain-tumour (FLAIR abnormality) mask on one MRI slice: PNG, TIFF, JPEG, DICOM MR.",
)
_add_segmenter(
    "/segment/xray",
    "phantom_tumor_xray",
    "Tumour mask and centroid on a 16-bit X-ray of a phantom: 16-bit PNG/TIFF, DICOM.",
)
