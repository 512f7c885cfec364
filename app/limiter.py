"""Admission: at most N inferences running, M requests waiting, and a byte budget for what the
requests in flight hold in memory (bodies being received, images and volumes being decoded).

A request is admitted with a ticket: it reserves twice its declared body (the body and its
assembled copy) before a byte is read, waiting in the bounded queue while the budget is spent;
bodies may hold at most half the budget, so that the requests being decoded always have room.
Decoders announce each large allocation (``DecodeLimits.claim``) before making it; the ticket
takes those bytes from the budget too, waiting a bounded time for room. Past the queue, or
after the wait, the answer is 503 ``overloaded`` with Retry-After: never a reset.

Decoders claim in steps (an archive's entries, then the volume), so two requests could each
hold part of what they need and wait for the other's: the older one (admitted first) waits,
a younger one that would have to wait behind it is refused at once, and one already waiting
is woken and refused ("wound-wait"), so a wait never lasts on a cycle.

Short work alone runs on the event loop's own thread (``RunTimes``): a request that is the only
one admitted, of a kind whose recent runs took at most ``inline_max_ms``, skips the two thread
hand-offs (each a wake-up of a sleeping thread on another core).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import ParamSpec, TypeVar

from app.errors import Overloaded
from app.metrics import Metrics

P = ParamSpec("P")
T = TypeVar("T")
_POLL_S = 0.02


class ByteBudget:
    """Bytes in flight, shared by the event loop (bodies) and worker threads (decoding)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._cond = threading.Condition()
        self._waiting: dict[int, bool] = {}  # request seq → told to give up its wait

    def try_take(self, nbytes: int, ceiling: int) -> bool:
        with self._cond:
            if self.used + nbytes > ceiling:
                return False
            self.used += nbytes
            return True

    def take(self, nbytes: int, timeout: float, seq: int = 0) -> bool:
        """Block (a worker thread) until ``nbytes`` fit in the budget, at most ``timeout``.

        ``seq`` orders the requests (lower = admitted earlier). A request does not wait behind
        an older waiting one (False at once), and its own wait wakes and fails younger waiters:
        claims held in parts can then never wait on each other in a cycle."""
        with self._cond:
            if self.used + nbytes <= self.total:
                self.used += nbytes
                return True
            if any(other < seq for other in self._waiting):
                return False
            for other in self._waiting:
                self._waiting[other] = True  # younger: wounded, it gives up its wait
            self._waiting[seq] = False
            self._cond.notify_all()
            try:
                ok = self._cond.wait_for(
                    lambda: self._waiting[seq] or self.used + nbytes <= self.total, timeout
                )
                if not ok or self._waiting[seq]:
                    return False
                self.used += nbytes
                return True
            finally:
                del self._waiting[seq]

    def give(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self._cond.notify_all()


class Ticket:
    """One admitted request's share of the budget; released when the request ends."""

    def __init__(self, limiter: InferenceLimiter, seq: int = 0) -> None:
        self.limiter = limiter
        self.seq = seq
        self.held = 0

    def claim(self, nbytes: int) -> None:
        """A decoder's announced allocation (called in a worker thread, or on the event loop
        for a run alone, which never waits: nobody else holds bytes that could be freed)."""
        limiter = self.limiter
        budget = limiter.budget
        timeout = 0.0 if limiter.running_inline else limiter.timeout
        if nbytes > budget.total or not budget.take(nbytes, timeout, self.seq):
            raise limiter.overloaded("the in-flight memory budget is spent; retry later")
        self.held += nbytes

    def release(self) -> None:
        if self.held:
            self.limiter.budget.give(self.held)
            self.held = 0


class RunTimes:
    """How long recent runs of each kind of work took, to tell which may run on the event
    loop's thread. A kind (``key``: the route, its query and media types) qualifies after two
    runs when the moving average of its run times is at most ``max_ms`` and the body is at most
    twice the average of its bodies (a much larger upload of a fast kind goes to the threads).
    An upload can still take longer than its kind's average (a compressed image whose pixels
    are many more than its bytes suggest, up to the decode limits): the loop then answers
    nothing else for that long, while nothing else is admitted. At most ``max_kinds`` kinds
    are remembered (least recently used dropped: a query string is the client's). Used on the
    event loop's thread only.

    Bodies over ``max_bytes`` always go to the threads: a 10 MB DX DICOM film (a 17 ms run)
    took 1.39x as long end to end on the loop's thread (bench/ab.py, two pairs), the pipeline
    itself 0.5 ms more and the rest outside it: glibc's main arena, which the loop's thread
    allocates from, gave the film's large buffers back and faulted them in again on every
    request (with ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` raised it took 0.83x
    the threads' time; a worker thread has an arena of its own). The JPEG film (1.2 MB) and the
    phantom frames (1.4-1.6 MB) were 0.95-0.98x on the loop."""

    ALPHA = 0.3  # weight of the newest run in the averages

    def __init__(self, max_ms: float, max_kinds: int = 256, max_bytes: int = 2 << 20) -> None:
        self.max_ms = max_ms
        self.max_kinds = max_kinds
        self.max_bytes = max_bytes
        self._kinds: OrderedDict[Hashable, list[float]] = OrderedDict()  # [runs, ms, bytes]

    def short(self, key: Hashable, nbytes: int) -> bool:
        seen = self._kinds.get(key) if self.max_ms > 0 and nbytes <= self.max_bytes else None
        return (
            seen is not None and seen[0] >= 2 and seen[1] <= self.max_ms and nbytes <= 2 * seen[2]
        )

    def record(self, key: Hashable, nbytes: int, ms: float) -> None:
        seen = self._kinds.get(key)
        if seen is None:
            self._kinds[key] = [1, ms, float(nbytes)]
            if len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
            return
        self._kinds.move_to_end(key)
        seen[0] += 1
        seen[1] += self.ALPHA * (ms - seen[1])
        seen[2] += self.ALPHA * (nbytes - seen[2])


class InferenceLimiter:
    """Runs blocking work (decode → infer → postprocess) in the thread pool (short work alone:
    on the event loop, ``run_kind``), bounded."""

    def __init__(
        self,
        max_concurrent: int,
        max_queued: int,
        retry_after: int,
        metrics: Metrics,
        max_inflight_bytes: int = 1 << 62,
        timeout: float = 30.0,
        inline_max_ms: float = 0.0,
    ) -> None:
        self.capacity = max_concurrent + max_queued
        self.retry_after = retry_after
        self.metrics = metrics
        self.pending = 0
        self.budget = ByteBudget(max_inflight_bytes)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        self._threads: ThreadPoolExecutor | None = None
        self._seq = itertools.count()
        self.run_times = RunTimes(inline_max_ms)
        self.running_inline = False
        self._on_loop = metrics.pipeline_runs.labels(thread="event_loop")
        self._in_worker = metrics.pipeline_runs.labels(thread="worker")

    def alone(self) -> bool:
        """Whether exactly one inference is admitted (the caller's own, from the thread that
        runs it): the models' runners then let their threads spin (``AloneAwareRunner``)."""
        return self.pending == 1

    def overloaded(self, detail: str) -> Overloaded:
        return Overloaded(detail, headers={"Retry-After": str(self.retry_after)})

    @asynccontextmanager
    async def admit(self, body_bytes: int = 0) -> AsyncIterator[Ticket]:
        """A place in the bounded queue and room for the body (2 × ``body_bytes``), or 503."""
        if self.pending >= self.capacity:
            raise self.overloaded("too many inferences in progress; retry later")
        self.pending += 1
        self.metrics.inflight.inc()
        ticket = Ticket(self, next(self._seq))
        try:
            await self._reserve_body(ticket, 2 * body_bytes)
            yield ticket
        finally:
            ticket.release()
            self.pending -= 1
            self.metrics.inflight.dec()

    async def _reserve_body(self, ticket: Ticket, nbytes: int) -> None:
        if nbytes <= 0:
            return
        budget = self.budget
        if nbytes > budget.total:
            raise self.overloaded("the upload is larger than the in-flight memory budget")
        deadline = time.monotonic() + self.timeout
        # Bodies may fill half the budget; a request alone may take up to all of it.
        while not (
            budget.try_take(nbytes, budget.total // 2)
            or (budget.used == 0 and budget.try_take(nbytes, budget.total))
        ):
            if time.monotonic() > deadline:
                raise self.overloaded("the in-flight memory budget is spent; retry later")
            await asyncio.sleep(_POLL_S)
        ticket.held += nbytes

    async def run_admitted(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn`` in the inference threads once a slot is free (the caller holds a ticket), in
        a copy of the caller's context (the request id of its log lines). A cancelled caller
        keeps the slot until ``fn`` has returned: a thread cannot be stopped, and the slots
        count the work running (as anyio's ``run_sync`` waits). The threads are this
        limiter's own (``concurrent.futures``): a trip through anyio's pool and back cost
        60-120 us more here, a percent of an MRI request."""
        return await self.run_kind(None, 0, functools.partial(fn, *args, **kwargs))

    async def run_kind(self, key: Hashable | None, nbytes: int, fn: Callable[[], T]) -> T:
        """``fn`` as ``run_admitted`` runs it, for work of the kind ``key`` with a body of
        ``nbytes`` (None: always in the threads). When it is the only work admitted and its
        kind's runs have been short (``RunTimes``), it runs here, on the event loop's thread:
        the hand-off to a worker thread and back cost 0.2-0.3 ms of a 5-8 ms request (both
        threads asleep on separate cores; bench/ab.py, issue 18). Every run's time is
        recorded for its kind."""
        spent = [0.0]

        def timed() -> T:
            start = time.perf_counter()
            try:
                return fn()
            finally:
                spent[0] = (time.perf_counter() - start) * 1000

        async with self._slots:
            if key is not None and self.pending == 1 and self.run_times.short(key, nbytes):
                self.running_inline = True
                self._on_loop.inc()
                try:
                    return timed()
                finally:
                    self.running_inline = False
                    self.run_times.record(key, nbytes, spent[0])
            call = functools.partial(contextvars.copy_context().run, timed)
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    self._max_concurrent, thread_name_prefix="medserve-infer"
                )
            self._in_worker.inc()
            future = asyncio.get_running_loop().run_in_executor(self._threads, call)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                await asyncio.wait({future})
                raise
            finally:
                if key is not None and future.done():
                    self.run_times.record(key, nbytes, spent[0])

    def close(self) -> None:
        """Let the threads end once their work is done (the app's shutdown); a later run
        starts new ones."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Admit (no body) and run: for work whose inputs are already in memory (jobs)."""
        async with self.admit():
            return await self.run_admitted(fn, *args, **kwargs)
