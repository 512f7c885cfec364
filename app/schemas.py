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
    default_operating_point: str | None
    operating_points: dict[str, OperatingPoint]


class ModelDetail(BaseModel):
    """The whole model card plus readiness."""

    model_config = ConfigDict(extra="allow")

    name: str
    version: str | None
    ready: bool
    reason: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    code: str
    detail: str
    request_id: str | None
