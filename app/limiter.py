"""A bounded inference queue: at most N running, M waiting, 503 ``overloaded`` past that."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from app.errors import Overloaded
from app.metrics import Metrics

P = ParamSpec("P")
T = TypeVar("T")


class InferenceLimiter:
    """Runs blocking work (decode → infer → postprocess) in the thread pool, bounded."""

    def __init__(
        self, max_concurrent: int, max_queued: int, retry_after: int, metrics: Metrics
    ) -> None:
        self.capacity = max_concurrent + max_queued
        self.retry_after = retry_after
        self.metrics = metrics
        self.pending = 0
        self._slots = asyncio.Semaphore(max_concurrent)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self.pending >= self.capacity:
            raise Overloaded(
                "too many inferences in progress; retry later",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.pending += 1
        self.metrics.inflight.inc()
        try:
            async with self._slots:
                return await run_in_threadpool(fn, *args, **kwargs)
        finally:
            self.pending -= 1
            self.metrics.inflight.dec()
