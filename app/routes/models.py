"""The model list and each model's card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.deps import RegistryDep
from app.errors import NotFound
from app.imaging.card import sha256_bytes
from app.registry import ModelEntry
from app.routes.common import JSON, negotiate
from app.routes.model_page import HTML, model_page
from app.routes.page import SECURITY_HEADERS
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
        runtime=entry.runtime,
        runtime_reason=entry.runtime_reason,
        default_operating_point=card.default_operating_point if card else None,
        operating_points=dict(card.operating_points) if card else {},
    )


@router.get("/models", response_model=list[ModelSummary])
async def list_models(registry: RegistryDep) -> list[ModelSummary]:
    """Every discovered model with its readiness and operating points."""
    return [_summary(e) for _, e in sorted(registry.models.items())]


def _detail(entry: ModelEntry) -> dict[str, Any]:
    body: dict[str, Any] = entry.card.model_dump(mode="json") if entry.card else {}
    body.update(name=entry.name, version=entry.version, ready=entry.ready, reason=entry.reason)
    body.update(runtime=entry.runtime, runtime_reason=entry.runtime_reason)
    return body


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    responses={
        200: {"content": {HTML: {}}, "description": "JSON card; HTML page when Accept prefers it"},
        404: {"model": Problem, "description": "no such model"},
    },
)
async def model_detail(name: str, registry: RegistryDep, request: Request) -> Response:
    """The model's whole card plus ``ready`` (JSON), or its page with the card's plots (HTML)."""
    wanted = negotiate(request, (JSON, HTML))
    entry = registry.get(name)
    body = _detail(entry)
    if wanted == HTML:
        return Response(model_page(body), media_type=HTML, headers=SECURITY_HEADERS)
    return Response(orjson.dumps(body), media_type=JSON)


@router.get(
    "/models/{name}/files/{filename}",
    responses={
        200: {"content": {"image/png": {}}, "description": "a plot listed in the card"},
        404: {"model": Problem, "description": "no such model or plot"},
    },
)
async def model_file(name: str, filename: str, registry: RegistryDep) -> Response:
    """One of the card's plots (a PNG listed in its ``files``, hash checked)."""
    entry = registry.get(name)
    path = plot_path(entry, filename)
    if path is None:
        raise NotFound("no such plot")
    data = path.read_bytes()
    assert entry.card is not None
    if sha256_bytes(data) != entry.card.files[filename]:
        raise NotFound("no such plot")
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})


def plot_path(entry: ModelEntry, filename: str) -> Path | None:
    """The PNG ``filename`` in the model's folder, when the card lists it."""
    if entry.card is None or entry.path is None or not filename.endswith(".png"):
        return None
    if filename not in entry.card.files:
        return None
    path = entry.path / filename
    return path if path.is_file() else None
