"""Things loaded once in the lifespan and injected into routes (tests swap them).

The providers are ``async def``: FastAPI runs a plain ``def`` dependency in the thread pool,
and a trip through the pool on every request cost more than the route's own work before
the body (0.6 ms of 0.7 on a loaded 2-core machine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from app.config import Settings
from app.limiter import InferenceLimiter
from app.metrics import Metrics
from app.registry import Registry
from app.store import Store


@dataclass(frozen=True)
class Services:
    """What an inference route needs: the models, the settings, the queue, the metrics."""

    registry: Registry
    settings: Settings
    limiter: InferenceLimiter
    metrics: Metrics
    store: Store


async def get_registry(request: Request) -> Registry:
    return cast(Registry, request.app.state.registry)


async def get_settings_dep(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


def services_of(request: Request) -> Services:
    state = request.app.state
    return Services(state.registry, state.settings, state.limiter, state.metrics, state.store)


async def get_services(request: Request) -> Services:
    return services_of(request)


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServicesDep = Annotated[Services, Depends(get_services)]
