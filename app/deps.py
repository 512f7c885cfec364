"""Things loaded once in the lifespan and injected into routes (tests swap them)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from app.config import Settings
from app.limiter import InferenceLimiter
from app.metrics import Metrics
from app.registry import Registry


def get_registry(request: Request) -> Registry:
    return cast(Registry, request.app.state.registry)


def get_settings_dep(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


def get_limiter(request: Request) -> InferenceLimiter:
    return cast(InferenceLimiter, request.app.state.limiter)


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LimiterDep = Annotated[InferenceLimiter, Depends(get_limiter)]
