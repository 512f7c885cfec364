"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app.deps import MetricsDep, RegistryDep, SettingsDep
from app.errors import ModelNotReady
from app.schemas import Live, Problem, Ready

router = APIRouter(tags=["health"])


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    """200 while the process serves (answered on the event loop, never behind inference)."""
    return Live()


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": Problem, "description": "a model is not ready"}},
)
async def ready(registry: RegistryDep, settings: SettingsDep) -> Ready:
    """200 when every model loaded and passed its self-test, else 503 with the same map."""
    models = registry.readiness()
    if not registry.all_ready:
        not_ready = sorted(n for n, s in models.items() if s != "ready")
        raise ModelNotReady(
            f"not ready: {', '.join(not_ready)}" if not_ready else "no model is loaded",
            headers={"Retry-After": str(settings.retry_after_seconds)},
            extra={"models": models},
        )
    return Ready(models=models)


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep, registry: RegistryDep) -> Response:
    """Prometheus text exposition format."""
    m.model_runtime.clear()  # one runtime per model: the registry's, at this scrape
    for name, entry in registry.models.items():
        m.model_ready.labels(model=name).set(1 if entry.ready else 0)
        if entry.runtime is not None:
            m.model_runtime.labels(model=name, runtime=entry.runtime).set(1)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
