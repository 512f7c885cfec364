"""The model list and each model's card."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.deps import RegistryDep
from app.registry import ModelEntry
from app.schemas import ModelDetail, ModelSummary, Problem

router = APIRouter(tags=["models"])


def _summary(entry: ModelEntry) -> ModelSummary:
    card = entry.card
    return ModelSummary(
        name=entry.name,
        version=entry.version,
        task=card.task if card else None,
        modality=card.modality if card else None,
        endpoint=card.endpoint if card else None,
        ready=entry.ready,
        reason=entry.reason,
        sha256=entry.sha256,
        default_operating_point=card.default_operating_point if card else None,
        operating_points=dict(card.operating_points) if card else {},
    )


@router.get("/models", response_model=list[ModelSummary])
async def list_models(registry: RegistryDep) -> list[ModelSummary]:
    """Every discovered model with its readiness and operating points."""
    return [_summary(e) for _, e in sorted(registry.models.items())]


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses={404: {"model": Problem, "description": "no such model"}},
)
async def model_detail(name: str, registry: RegistryDep) -> dict[str, Any]:
    """The model's whole card plus ``ready``."""
    entry = registry.get(name)
    body: dict[str, Any] = entry.card.model_dump(mode="json") if entry.card else {}
    body.update(name=entry.name, version=entry.version, ready=entry.ready, reason=entry.reason)
    return body
