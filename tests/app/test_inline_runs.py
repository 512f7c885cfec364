"""Short work alone on the event loop's own thread (``app.limiter.RunTimes``,
``InferenceLimiter.run_kind``): which kinds qualify, where a run goes, and that the answers
are those the worker threads give."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.errors import Overloaded
from app.limiter import InferenceLimiter, RunTimes
from app.main import create_app
from app.metrics import Metrics
from tests.app.test_inference_routes import png_bytes
from tests.tiny_model import write_tiny_model


def test_a_kind_is_short_after_two_runs_within_the_limit_and_for_bodies_like_its_own() -> None:
    times = RunTimes(max_ms=10)
    assert not times.short("mri", 100)  # never seen
    times.record("mri", 100, 4.0)
    assert not times.short("mri", 100)  # one run is not a pattern
    times.record("mri", 100, 5.0)
    assert times.short("mri", 100) and times.short("mri", 200)
    assert not times.short("mri", 201)  # more than twice its bodies' average: to the threads
    assert not times.short("film", 100)  # kinds are apart
    assert not RunTimes(max_ms=0).short("mri", 1)  # 0: off
    large = RunTimes(max_ms=10, max_bytes=1000)
    large.record("film", 1001, 1.0)
    large.record("film", 1001, 1.0)
    assert not large.short("film", 1001)  # a body over max_bytes: always the threads
    assert large.short("film", 1000)


def test_a_slow_run_moves_its_kind_to_the_threads_until_its_runs_are_short_again() -> None:
    times = RunTimes(max_ms=10)
    for _ in range(3):
        times.record("k", 100, 5.0)
    times.record("k", 100, 100.0)  # one slow upload of the kind
    assert not times.short("k", 100)
    runs = 0
    while not times.short("k", 100):
        times.record("k", 100, 5.0)
        runs += 1
    assert 3 <= runs <= 10  # the moving average forgets the slow one in a few runs


def test_only_the_most_recent_kinds_are_remembered() -> None:
    times = RunTimes(max_ms=10, max_kinds=3)
    for key in ("a", "b", "c"):
        times.record(key, 1, 1.0)
        times.record(key, 1, 1.0)
    times.record("a", 1, 1.0)  # "a" used again: "b" is now the oldest
    times.record("d", 1, 1.0)
    assert times.short("a", 1) and times.short("c", 1)
    assert not times.short("b", 1)
    times.record("b", 1, 1.0)
    assert not times.short("b", 1)  # forgotten: counted again from its first run


def on_loop(limiter: InferenceLimiter) -> float:
    """Runs the limiter counted on the event loop's thread (``medserve_pipeline_runs_total``)."""
    value = limiter.metrics.registry.get_sample_value(
        "medserve_pipeline_runs_total", {"thread": "event_loop"}
    )
    return value or 0.0


def in_workers(limiter: InferenceLimiter) -> float:
    value = limiter.metrics.registry.get_sample_value(
        "medserve_pipeline_runs_total", {"thread": "worker"}
    )
    return value or 0.0


def _limiter(**kwargs: float) -> InferenceLimiter:
    return InferenceLimiter(
        max_concurrent=2, max_queued=4, retry_after=1, metrics=Metrics(), **kwargs
    )


def test_short_work_alone_runs_on_the_loops_thread_and_otherwise_in_the_workers() -> None:
    limiter = _limiter(inline_max_ms=50)

    async def scenario() -> None:
        loop_thread = threading.get_ident()

        async def where(key: str | None = "k") -> int:
            async with limiter.admit():
                return await limiter.run_kind(key, 10, threading.get_ident)

        first, second, third = [await where() for _ in range(3)]
        assert first != loop_thread and second != loop_thread  # the kind's first two runs
        assert third == loop_thread and (on_loop(limiter), in_workers(limiter)) == (1, 2)
        assert await where(None) != loop_thread  # work without a kind: always the threads
        gate = threading.Event()

        async def held() -> None:
            async with limiter.admit():
                await limiter.run_kind(None, 0, lambda: gate.wait(5))

        other = asyncio.create_task(held())
        await asyncio.sleep(0.05)
        assert limiter.pending == 1
        assert await where() != loop_thread  # not alone: the threads
        gate.set()
        await other
        assert await where() == loop_thread and on_loop(limiter) == 2
        limiter.close()

    asyncio.run(scenario())


def test_a_kind_whose_runs_are_slow_stays_in_the_threads() -> None:
    limiter = _limiter(inline_max_ms=5)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        for _ in range(4):
            async with limiter.admit():
                ident = await limiter.run_kind(
                    "slow", 10, lambda: (time.sleep(0.02), threading.get_ident())[1]
                )
            assert ident != loop_thread
        assert (on_loop(limiter), in_workers(limiter)) == (0, 4)
        limiter.close()

    asyncio.run(scenario())


def test_a_claim_that_does_not_fit_fails_at_once_on_the_loop_and_waits_in_a_thread() -> None:
    """Alone, no other request holds bytes that could be freed: on the loop's thread a claim
    past the budget answers 503 at once instead of holding the loop for the admission timeout;
    in a worker thread it waits for the timeout as before."""

    async def claim_past_the_budget(limiter: InferenceLimiter) -> float:
        async with limiter.admit(30) as ticket:  # 60 of the 100 bytes reserved for the body
            start = time.monotonic()
            with pytest.raises(Overloaded):
                await limiter.run_kind("k", 30, lambda: ticket.claim(50))
            return time.monotonic() - start

    inline = _limiter(inline_max_ms=50, max_inflight_bytes=100, timeout=5)
    inline.run_times.record("k", 30, 1.0)
    inline.run_times.record("k", 30, 1.0)
    assert asyncio.run(claim_past_the_budget(inline)) < 1.0 and on_loop(inline) == 1
    threaded = _limiter(inline_max_ms=0, max_inflight_bytes=100, timeout=0.3)
    assert asyncio.run(claim_past_the_budget(threaded)) >= 0.3 and on_loop(threaded) == 0
    assert not inline.running_inline and inline.budget.used == 0 == threaded.budget.used
    inline.close()
    threaded.close()


@pytest.fixture
def models(tmp_path: Path) -> Path:
    write_tiny_model(tmp_path, name="brain_tumor_mri", segmenter=True)
    write_tiny_model(tmp_path, name="pneumonia_xray")
    return tmp_path


def test_the_service_answers_alike_on_the_loop_and_in_the_threads(
    models: Path, tmp_path: Path
) -> None:
    """The same uploads with the loop allowed to take them and not: the same answers and the
    same audit rows (the ``ok`` row is written from the run, wherever it runs)."""
    image = np.zeros((24, 20), np.uint8)
    image[4:12, 6:14] = 255
    body = png_bytes(image)
    paths = [
        "/segment/mri",
        "/segment/mri",
        "/segment/mri",
        "/segment/mri?mask_format=both",  # another kind: counted from its first run
        "/classify/xray",
        "/segment/mri",
    ]
    admin = {"X-API-Key": "admin-key-0123456789ab"}

    def answers(inline_max_ms: float) -> tuple[list[object], list[object], int]:
        settings = Settings(
            model_dir=models,
            data_dir=tmp_path / f"data-{inline_max_ms}",
            admin_keys="auditor:admin-key-0123456789ab",  # type: ignore[arg-type]
            inline_max_ms=inline_max_ms,
        )
        with TestClient(create_app(settings)) as client:
            out = []
            for path in paths:
                resp = client.post(path, content=body, headers=admin)
                assert resp.status_code == 200, resp.text
                answer = resp.json()
                del answer["request_id"], answer["timing_ms"]
                out.append(answer)
            inline_runs = on_loop(client.app.state.limiter)  # type: ignore[attr-defined]
            exposed = client.get("/metrics").text
            assert f'medserve_pipeline_runs_total{{thread="event_loop"}} {inline_runs}' in exposed
            rows = client.get("/audit", params={"limit": 50}, headers=admin).json()["rows"]
        kept = ("endpoint", "status", "model", "upload_sha256", "summary")
        return out, [{k: row[k] for k in kept} for row in rows], inline_runs

    loop_answers, loop_rows, inline_runs = answers(1000.0)
    in_threads, thread_rows, none = answers(0.0)
    assert loop_answers == in_threads and loop_rows == thread_rows and len(loop_rows) == len(paths)
    assert {row["status"] for row in loop_rows} == {"ok"}  # type: ignore[index]
    assert (inline_runs, none) == (2, 0)  # the third and the last plain MRI upload


def test_open_inference_protocol_requests_are_kinds_too(models: Path) -> None:
    with TestClient(create_app(Settings(model_dir=models, inline_max_ms=1000.0))) as client:
        meta = client.get("/v2/models/brain_tumor_mri").json()
        tensor = meta["inputs"][0]
        shape = [1 if d < 0 else d for d in tensor["shape"]]
        request = {
            "inputs": [
                {
                    "name": tensor["name"],
                    "shape": shape,
                    "datatype": tensor["datatype"],
                    "data": [0.5] * int(np.prod(shape)),
                }
            ]
        }
        answers = []
        for _ in range(3):
            resp = client.post("/v2/models/brain_tumor_mri/infer", json=request)
            assert resp.status_code == 200, resp.text
            answers.append(resp.json()["outputs"])
        assert answers[0] == answers[2]
        assert on_loop(client.app.state.limiter) == 1  # type: ignore[attr-defined]


def test_a_kind_is_the_path_query_and_media_types_each_cut_short() -> None:
    from starlette.requests import Request

    from app.routes.common import run_kind

    def request(query: bytes, content_type: str, accept: str) -> Request:
        headers = [(b"content-type", content_type.encode()), (b"accept", accept.encode())]
        scope = {"type": "http", "path": "/segment/mri", "query_string": query, "headers": headers}
        return Request(scope)

    multipart = run_kind(request(b"", "multipart/form-data; boundary=abc", "*/*"))
    assert multipart == run_kind(request(b"", "Multipart/Form-Data; boundary=xyz", "*/*"))
    assert multipart != run_kind(request(b"mask_format=png", "multipart/form-data", "*/*"))
    long = run_kind(request(b"q=" + b"x" * 5000, "image/png", "image/png," * 1000))
    assert max(len(part) for part in long) == 256
