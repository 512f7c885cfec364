"""Response models: what the OpenAPI document promises clients."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.imaging.card import OperatingPoint


class Live(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    status: Literal["ready"] = "ready"
    models: dict[str, str] = Field(description='model name -> "ready" or "not_ready: <reason>"')


class ModelSummary(BaseModel):
    name: str
    version: str | None
    task: str | None
    modality: str | None
    endpoint: str | None
    ready: bool
    reason: str | None = Field(None, description="Why the model is not ready")
    sha256: str | None = Field(None, description="sha256 of model.onnx")
    runtime: Literal["onnxruntime", "openvino"] | None = Field(
        None, description="What runs the model (None until it has loaded)"
    )
    runtime_reason: str | None = Field(
        None, description="Why the runtime is not the one the settings asked for"
    )
    default_operating_point: str | None
    operating_points: dict[str, OperatingPoint]


class ModelDetail(BaseModel):
    """The whole model card plus readiness and the runtime."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str | None
    ready: bool
    reason: str | None = None
    runtime: Literal["onnxruntime", "openvino"] | None = None
    runtime_reason: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str
    request_id: str | None


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="sha256 of model.onnx")


class InputInfo(BaseModel):
    format: str = Field(description="png | jpeg | tiff | dicom | nifti | dicom_series")
    shape: list[int] = Field(description="[height, width] for 2D, [slices, height, width] for 3D")
    spacing_mm: list[float] | None = Field(description="Pixel/voxel size in mm, null if unknown")
    sha256: str = Field(description="sha256 of the uploaded bytes")


class OperatingPointOut(BaseModel):
    name: str
    threshold: float
    sensitivity: float
    specificity: float
    precision: float | None = None


class WarningOut(BaseModel):
    code: str
    detail: str


class Timing(BaseModel):
    decode: float
    preprocess: float
    inference: float
    postprocess: float
    explain: float | None = Field(None, description="Only with explain=occlusion")
    total: float


class OodOut(BaseModel):
    score: float = Field(description="OOD score; higher = further from the training data")
    threshold: float = Field(description="The model card's threshold")
    in_distribution: bool = Field(description="score <= threshold")


class Prediction(BaseModel):
    """Fields every successful inference response carries."""

    request_id: str
    model: ModelRef
    input: InputInfo
    probability: float = Field(description="Calibrated probability of the positive class")
    uncalibrated_probability: float
    positive: bool = Field(description="probability >= operating_point.threshold")
    label: str
    operating_point: OperatingPointOut
    warnings: list[WarningOut]
    timing_ms: Timing
    ood: OodOut | None = Field(
        None, description="The card's out-of-distribution check (absent without one)"
    )


class ExplanationOut(BaseModel):
    """Why the model decided: an occlusion-sensitivity map (classifiers) or the pixel
    probability map (segmenters), with a heat-map overlay of the input."""

    method: Literal["occlusion", "probability_map"] = Field(
        description=(
            "occlusion: the drop of the calibrated probability when a patch is masked; "
            "probability_map: a segmenter's own pixel probabilities"
        )
    )
    patch: int | None = Field(description="Side of the square patch in input pixels (occlusion)")
    stride: int | None = Field(description="Step between patches in input pixels (occlusion)")
    grid: list[list[float]] | None = Field(
        description=(
            "rows x columns of probability drops: grid[i][j] is the drop when the input region "
            "starting at (i*stride, j*stride) (row, column) is masked; negative where masking "
            "raised it (occlusion only; for a volume the region is a column through every slice)"
        )
    )
    png_base64: str = Field(
        description=(
            "RGB PNG at the input's rows x columns: the input (a volume's middle slice) in gray "
            "with the map over it, red where it supports the positive label, blue against"
        )
    )


class ClassificationResponse(Prediction):
    explanation: ExplanationOut | None = Field(None, description="Only with explain=occlusion")


class RLE(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: list[int] = Field(description="Column-major runs, starting with background")
    order: Literal["F"] = "F"


class MaskOut(BaseModel):
    height: int
    width: int
    area_px: int
    area_mm2: float | None
    bbox: list[int] | None = Field(description="[x_min, y_min, x_max, y_max], null when empty")
    centroid: list[float] | None = Field(description="[x, y] in pixels, null when empty")
    centroid_mm: list[float] | None
    rle: RLE | None = None
    png_base64: str | None = None


class SegmentationResponse(Prediction):
    mask: MaskOut
    explanation: ExplanationOut | None = Field(
        None, description="Only with explain=occlusion: the probability map"
    )


class JobCreated(BaseModel):
    job_id: str
    status: str = Field(description="queued | running | retrying | done | failed")
    study_instance_uid: str


class JobOut(BaseModel):
    """A job: status, attempts and one result per (series, model)."""

    model_config = ConfigDict(extra="allow")

    job_id: str
    status: str = Field(description="queued | running | retrying | done | failed")
    study_instance_uid: str
    attempts: int
    created: str | None
    updated: str | None
    models: list[dict[str, object]]
    results: list[dict[str, object]] = Field(
        description=(
            "Per (series, model): series_instance_uid, model, summary (probability, label, "
            "operating point, mask figures), stored_sop_instance_uids, timing_ms, error"
        )
    )
    reason: str | None = Field(None, description="Why a done job stored nothing")
    error: dict[str, str] | None = Field(None, description="{code, detail} of the last failure")


class JobList(BaseModel):
    jobs: list[JobOut]


class AuditList(BaseModel):
    rows: list[dict[str, object]] = Field(
        description=(
            "Newest first: time, request_id or job_id, key_name, endpoint, model, "
            "upload_sha256, study_hash / series_hash (salted), summary, status"
        )
    )
