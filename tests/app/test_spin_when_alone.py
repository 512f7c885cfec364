"""``MEDSERVE_ORT_SPIN_WHEN_ALONE``: a model on onnxruntime gets a spinning twin session that
runs while its inference is the only one the limiter has admitted, and the sleeping session
otherwise; both give the same outputs, and the twin is only built where the service asks."""

from __future__ import annotations

import asyncio
import logging
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
from app.runtime import AloneAwareRunner
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
