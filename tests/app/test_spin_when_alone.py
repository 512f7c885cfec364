"""``MEDSERVE_ORT_SPIN_WHEN_ALONE``: a model on onnxruntime gets a spinning twin session that
runs while its inference is the only one the limiter has admitted, and the sleeping session
otherwise; both give the same outputs, and the twin is only built where the service asks."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient

from app import registry
from app.config import Settings
from app.limiter import InferenceLimiter
from app.main import create_app
from app.metrics import Metrics
from app.registry import ModelEntry, load_entry, session_options
from app.runtime import AloneAwareRunner, CorePlan, core_plan
from tests.integration import media

MODELS = Path(__file__).resolve().parents[2] / "models"


def _entry(name: str, alone: list[bool] | None, **settings: object) -> ModelEntry:
    folder = max((MODELS / name).iterdir(), key=lambda p: p.name)
    alone_now = None if alone is None else (lambda: alone[0])
    config = Settings(model_dir=MODELS, **settings)  # type: ignore[arg-type]
    entry = load_entry(name, folder, config, alone_now=alone_now)
    assert entry.ready, entry.reason
    return entry


def test_runs_alone_spin_and_shared_runs_sleep_with_the_same_outputs() -> None:
    alone = [True]
    entry = _entry("brain_tumor_mri", alone, runtime="onnxruntime")
    runner = entry.runner
    assert isinstance(runner, AloneAwareRunner) and runner.shared is entry.session
    assert entry.card is not None and entry.input_name is not None
    x = np.random.default_rng(0).random([1, *entry.card.input.shape[1:]], dtype=np.float32)
    reference = entry.session.run(None, {entry.input_name: x})  # type: ignore[union-attr]
    by_itself = runner.run(None, {entry.input_name: x})
    alone[0] = False
    with_others = runner.run(None, {entry.input_name: x})
    assert runner.runs == {"alone": 1, "shared": 1}
    for a, b, c in zip(reference, by_itself, with_others, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_the_twin_spins_during_runs_only_and_the_shared_session_never() -> None:
    def entry(opts: object, key: str) -> str:
        return str(opts.get_session_config_entry(key))  # type: ignore[attr-defined]

    shared, alone = session_options(Settings()), session_options(Settings(), alone=True)
    assert entry(shared, "session.intra_op.allow_spinning") == "0"
    assert entry(alone, "session.intra_op.allow_spinning") == "1"
    assert entry(alone, "session.force_spinning_stop") == "1"
    assert entry(shared, "session.inter_op.allow_spinning") == "0"
    assert entry(alone, "session.inter_op.allow_spinning") == "0"


def test_one_session_when_off_without_the_limiter_or_on_openvino() -> None:
    off = _entry("phantom_tumor_xray", [True], ort_spin_when_alone=False)
    assert off.runner is off.session
    batch_or_cli = _entry("phantom_tumor_xray", None)  # no limiter: batch workers, the CLI
    assert batch_or_cli.runner is batch_or_cli.session
    openvino = _entry("covid_ct", [True], runtime="openvino")
    assert openvino.runtime == "openvino" and not isinstance(openvino.runner, AloneAwareRunner)


def test_a_twin_that_cannot_load_leaves_the_one_session_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime refusing the twin's options (an affinity string it cannot read) keeps the
    model ready on its one session, with a warning that names the model and the error type."""
    plain = registry.session_options

    def refused_twin(settings: Settings, alone: bool = False) -> ort.SessionOptions:
        opts = plain(settings, alone)
        if alone:
            opts.add_session_config_entry("session.intra_op_thread_affinities", "not-a-cpu")
        return opts

    monkeypatch.setattr(registry, "session_options", refused_twin)
    with caplog.at_level(logging.WARNING, logger="medserve.registry"):
        entry = _entry("brain_tumor_mri", [True], runtime="onnxruntime")
    assert entry.ready and entry.runner is entry.session
    warned = [r for r in caplog.records if r.getMessage() == "no spinning session"]
    assert len(warned) == 1 and getattr(warned[0], "model", None) == "brain_tumor_mri"
    assert "RuntimeError" in str(getattr(warned[0], "reason", ""))


def test_the_limiter_is_alone_with_exactly_one_admitted_inference() -> None:
    limiter = InferenceLimiter(2, 4, 1, Metrics())

    async def scenario() -> list[bool]:
        seen = [limiter.alone()]
        async with limiter.admit():
            seen.append(limiter.alone())
            async with limiter.admit():
                seen.append(limiter.alone())
            seen.append(await limiter.run_admitted(limiter.alone))  # from the worker thread
        seen.append(limiter.alone())
        return seen

    assert asyncio.run(scenario()) == [False, True, False, True, False]


def test_a_lone_upload_runs_on_the_spinning_session() -> None:
    with TestClient(create_app(Settings(model_dir=MODELS))) as client:
        sample = media.png8(media.blob_image(96, 96, max_value=255))
        response = client.post(
            "/segment/mri", content=sample.data, headers={"Content-Type": sample.content_type}
        )
        assert response.status_code == 200, response.text
        runner = client.app.state.registry.get("brain_tumor_mri").runner  # type: ignore[attr-defined]
        assert isinstance(runner, AloneAwareRunner)
        assert runner.runs["alone"] == 1 and runner.runs["shared"] == 0


def test_the_core_plan_gives_the_caller_and_each_intra_op_thread_a_core_of_its_own() -> None:
    plan = core_plan(2, {3, 5})
    assert plan == CorePlan(3, (5,)) and plan.ort_affinities() == "6"  # onnxruntime counts from 1
    assert core_plan(3, {0, 1, 2}) == CorePlan(0, (1, 2))
    assert core_plan(3, {0, 1, 2}).ort_affinities() == "2;3"  # type: ignore[union-attr]
    assert core_plan(3, {0, 1}) is None  # fewer cores than threads: pinned threads would share
    assert core_plan(2, {0, 1, 2, 3}) is None  # more: several workers would take the same cores
    assert core_plan(1, {0}) is None  # one thread: nothing to keep apart


@pytest.fixture
def two_cores() -> Iterator[set[int]]:
    """This thread (which loads the models, and starts onnxruntime's threads) held on two of
    its cores for the test, so that a model with two threads has a core plan on any machine."""
    own = os.sched_getaffinity(0)
    if len(own) < 2:
        pytest.skip("pinning needs two cores")
    cores = set(sorted(own)[:2])
    os.sched_setaffinity(0, cores)
    try:
        yield cores
    finally:
        os.sched_setaffinity(0, own)


def _cpus_allowed(tid: str) -> set[int]:
    text = Path(f"/proc/self/task/{tid}/status").read_text()
    listed = text.split("Cpus_allowed_list:")[1].split()[0]
    cpus: set[int] = set()
    for part in listed.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def test_a_run_alone_holds_its_caller_on_one_core_and_the_intra_op_thread_on_another(
    two_cores: set[int],
) -> None:
    """The twin's intra-op thread is pinned at load (read back from /proc), the caller is held
    on the plan's core during a run alone only, and gets its own cores back after; a shared
    run and the shared session's threads are left to the scheduler."""
    own = os.sched_getaffinity(0)
    plan = core_plan(2)
    assert plan is not None
    before = _threads()
    entry = _entry(
        "phantom_tumor_xray", alone := [True], runtime="onnxruntime", ort_intra_op_threads=2
    )
    runner = entry.runner
    assert isinstance(runner, AloneAwareRunner) and runner.caller_cpu == plan.caller
    pinned = {tid for tid in _threads() - before if _cpus_allowed(tid) == set(plan.pool)}
    assert len(pinned) == 1  # the twin's one pool thread; the shared session's stays free

    seen: list[set[int]] = []

    class Recording:
        def __init__(self, inner: object) -> None:
            self.inner = inner

        def run(self, names: object, feeds: object) -> list[object]:
            seen.append(os.sched_getaffinity(0))
            return self.inner.run(names, feeds)  # type: ignore[attr-defined,no-any-return]

    runner.alone, runner.shared = Recording(runner.alone), Recording(runner.shared)  # type: ignore[assignment]
    assert entry.card is not None and entry.input_name is not None
    x = np.zeros([1, *entry.card.input.shape[1:]], dtype=np.float32)

    def on_a_worker() -> None:
        runner.run(None, {entry.input_name: x})  # type: ignore[dict-item]
        seen.append(os.sched_getaffinity(0))

    for lone in (True, False):
        alone[0] = lone
        worker = threading.Thread(target=on_a_worker)
        worker.start()
        worker.join()
    assert seen == [{plan.caller}, own, own, own]  # alone: held, then freed; shared: free
    assert os.sched_getaffinity(0) == own


def test_without_pinning_the_twin_and_its_runs_are_left_to_the_scheduler(
    two_cores: set[int],
) -> None:
    key = "session.intra_op_thread_affinities"
    on = session_options(Settings(ort_intra_op_threads=2), alone=True)
    assert on.get_session_config_entry(key) == core_plan(2).ort_affinities()  # type: ignore[union-attr]
    off = session_options(Settings(ort_pin_when_alone=False, ort_intra_op_threads=2), alone=True)
    with pytest.raises(RuntimeError):  # onnxruntime: no such entry
        off.get_session_config_entry(key)
    assert _entry("brain_tumor_mri", [True], ort_pin_when_alone=False).runner.caller_cpu is None  # type: ignore[union-attr]
    one_thread = _entry("brain_tumor_mri", [True], ort_intra_op_threads=1)
    assert one_thread.runner.caller_cpu is None  # type: ignore[union-attr]


def test_a_caller_core_the_process_may_not_use_runs_alone_unpinned() -> None:
    """A core taken from the process after load (cpuset shrunk): the kernel refuses to hold
    the caller there, and the run goes on, unpinned, with the same outputs."""
    entry = _entry("brain_tumor_mri", [True], runtime="onnxruntime")
    runner = entry.runner
    assert isinstance(runner, AloneAwareRunner)
    runner.caller_cpu = max(os.sched_getaffinity(0)) + 4096  # no such core here
    assert entry.card is not None and entry.input_name is not None
    x = np.random.default_rng(1).random([1, *entry.card.input.shape[1:]], dtype=np.float32)
    own = os.sched_getaffinity(0)
    out = runner.run(None, {entry.input_name: x})
    assert os.sched_getaffinity(0) == own and runner.runs["alone"] == 1
    for a, b in zip(entry.session.run(None, {entry.input_name: x}), out, strict=True):  # type: ignore[union-attr]
        np.testing.assert_array_equal(a, b)
