"""The runtime setting: ``auto`` serves the models of ``AUTO_OPENVINO`` on OpenVINO within 1e-4
of onnxruntime, an explicit setting wins, a parity failure (or no openvino) falls back to
onnxruntime with the reason on /models, and uploads and V2 run through the chosen runtime."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app import runtime
from app.config import Settings
from app.main import create_app
from app.registry import ModelEntry, load_entry
from app.runtime import AUTO_OPENVINO, PARITY_ATOL, OpenVinoRunner
from tests.integration import media
from tests.tiny_model import write_tiny_model

pytest.importorskip("openvino", reason="openvino (the serve extra) is not installed")

MODELS = Path(__file__).resolve().parents[2] / "models"
NAMES = ("pneumonia_xray", "covid_ct", "brain_tumor_mri", "phantom_tumor_xray")


def _folder(name: str) -> Path:
    return max((MODELS / name).iterdir(), key=lambda p: p.name)


def _load(name: str, **settings: Any) -> ModelEntry:
    entry = load_entry(name, _folder(name), Settings(model_dir=MODELS, **settings))
    assert entry.ready, entry.reason
    return entry


def _probe(entry: ModelEntry) -> np.ndarray:
    assert entry.card is not None
    return entry.card.self_test.make_input([1, *entry.card.input.shape[1:]])


@pytest.fixture(scope="module")
def on_ort() -> dict[str, ModelEntry]:
    return {name: _load(name, runtime="onnxruntime") for name in NAMES}


@pytest.fixture(scope="module")
def on_auto() -> dict[str, ModelEntry]:
    return {name: _load(name) for name in NAMES}


@pytest.fixture(scope="module")
def on_ov() -> dict[str, ModelEntry]:
    return {name: _load(name, runtime="openvino") for name in NAMES}


def test_auto_runs_the_measured_models_on_openvino_within_parity(
    on_ort: dict[str, ModelEntry], on_auto: dict[str, ModelEntry]
) -> None:
    assert AUTO_OPENVINO and AUTO_OPENVINO.issubset(NAMES)
    for name in NAMES:
        entry, reference = on_auto[name], on_ort[name]
        assert entry.runtime == ("openvino" if name in AUTO_OPENVINO else "onnxruntime"), name
        assert entry.runtime_reason is None
        assert reference.runtime == "onnxruntime" and reference.runner is reference.session
        if entry.runtime == "openvino":
            assert isinstance(entry.runner, OpenVinoRunner)
            assert entry.runtime_parity is not None and entry.runtime_parity <= PARITY_ATOL
        # every output the service reads (output 0, the OOD features) on another input
        x = np.random.default_rng(5).random(_probe(entry).shape, dtype=np.float32)
        got, want = entry.run_with_features(x), reference.run_with_features(x)
        for a, b in zip(got, want, strict=True):
            if b is None:
                assert a is None
            else:
                np.testing.assert_allclose(a, b, rtol=0, atol=PARITY_ATOL)


def test_every_model_passes_parity_on_openvino(
    on_ort: dict[str, ModelEntry], on_ov: dict[str, ModelEntry]
) -> None:
    for name in NAMES:
        entry = on_ov[name]
        assert entry.runtime == "openvino" and entry.runtime_reason is None, entry.runtime_reason
        assert entry.runtime_parity is not None and entry.runtime_parity <= PARITY_ATOL
        assert entry.explain_batch == on_ort[name].explain_batch  # a batch runs on both


def test_openvino_runner_keeps_onnxruntime_output_names_and_order(
    on_ort: dict[str, ModelEntry], on_ov: dict[str, ModelEntry]
) -> None:
    name = "phantom_tumor_xray"  # output 0 and the OOD features, last
    entry, reference = on_ov[name], on_ort[name]
    assert entry.runner is not None and entry.session is not None and entry.input_name
    names = [o.name for o in entry.session.get_outputs()]
    assert len(names) == 2 and entry.card is not None and entry.card.ood is not None
    assert names[-1] == entry.card.ood.output
    feeds = {entry.input_name: _probe(entry)}
    got = entry.runner.run(None, feeds)
    assert [a.shape for a in got] == [a.shape for a in reference.session.run(None, feeds)]
    backwards = entry.runner.run(names[::-1], feeds)
    np.testing.assert_array_equal(backwards[0], got[1])
    np.testing.assert_array_equal(backwards[1], got[0])


def test_explicit_settings_win_over_auto() -> None:
    chosen = next(iter(sorted(AUTO_OPENVINO)))
    per_model = _load(chosen, model_runtimes={chosen: "onnxruntime"})
    assert per_model.runtime == "onnxruntime" and per_model.runtime_reason is None
    everywhere = _load(chosen, runtime="onnxruntime")
    assert everywhere.runtime == "onnxruntime"
    forced = _load(
        "pneumonia_xray", runtime="onnxruntime", model_runtimes={"pneumonia_xray": "openvino"}
    )
    assert forced.runtime == "openvino" and forced.runtime_reason is None


def test_model_runtimes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSERVE_RUNTIME", "openvino")
    monkeypatch.setenv("MEDSERVE_MODEL_RUNTIMES", json.dumps({"covid_ct": "onnxruntime"}))
    settings = Settings()
    assert settings.runtime == "openvino"
    assert settings.model_runtimes == {"covid_ct": "onnxruntime"}
    monkeypatch.setenv("MEDSERVE_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="runtime"):
        Settings()


def _off_by(delta: float) -> Any:
    real = OpenVinoRunner.run

    def run(
        self: OpenVinoRunner, names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]
    ) -> list[Any]:
        return [np.asarray(a) + delta for a in real(self, names, feeds)]

    return run


@pytest.fixture
def tiny_on_openvino(tmp_path: Path) -> Iterator[tuple[Path, Settings]]:
    write_tiny_model(tmp_path, name="pneumonia_xray")
    yield tmp_path, Settings(model_dir=tmp_path, runtime="openvino", job_workers=0)


def test_parity_failure_falls_back_to_onnxruntime_with_the_reason(
    tiny_on_openvino: tuple[Path, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, settings = tiny_on_openvino
    with TestClient(create_app(settings)) as client:
        listed = client.get("/models").json()
        assert listed[0]["runtime"] == "openvino" and listed[0]["runtime_reason"] is None
        assert 'medserve_model_runtime{model="pneumonia_xray",runtime="openvino"} 1.0' in (
            client.get("/metrics").text
        )
    monkeypatch.setattr(OpenVinoRunner, "run", _off_by(10 * PARITY_ATOL))
    with TestClient(create_app(settings)) as client:
        detail = client.get("/models/pneumonia_xray").json()
        assert detail["ready"] is True and detail["runtime"] == "onnxruntime"
        assert "differ from onnxruntime" in detail["runtime_reason"]
        assert client.get("/models").json()[0]["runtime_reason"] == detail["runtime_reason"]
        assert client.get("/health/ready").status_code == 200
        assert 'runtime="onnxruntime"} 1.0' in client.get("/metrics").text


def test_without_openvino_auto_is_quiet_and_explicit_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = (None, "openvino is not importable (ImportError: test)")
    monkeypatch.setattr(runtime, "_openvino_core", lambda: missing)
    folder = write_tiny_model(tmp_path, name="covid_ct_tiny")
    monkeypatch.setattr(runtime, "AUTO_OPENVINO", frozenset({"covid_ct_tiny"}))
    quiet = load_entry("covid_ct_tiny", folder, Settings(model_dir=tmp_path))
    assert quiet.ready and quiet.runtime == "onnxruntime" and quiet.runtime_reason is None
    explicit = load_entry("covid_ct_tiny", folder, Settings(runtime="openvino"))
    assert explicit.ready and explicit.runtime == "onnxruntime"
    assert explicit.runtime_reason is not None
    assert explicit.runtime_reason.startswith("openvino is not importable")


@pytest.fixture(scope="module")
def clients() -> Iterator[tuple[TestClient, TestClient]]:
    """The committed models all on onnxruntime, and all on OpenVINO."""
    ort_app = create_app(Settings(model_dir=MODELS, runtime="onnxruntime", job_workers=0))
    ov_app = create_app(Settings(model_dir=MODELS, runtime="openvino", job_workers=0))
    with TestClient(ort_app) as a, TestClient(ov_app) as b:
        yield a, b


def test_upload_answers_agree_across_runtimes(clients: tuple[TestClient, TestClient]) -> None:
    on_ort, on_ov = clients
    models = {m["name"]: m["runtime"] for m in on_ov.get("/models").json()}
    frame = media.tiff16(media.blob_image(256, 224, max_value=60000)).data
    uploads = {
        "phantom_tumor_xray": ("/segment/xray", frame),
        "covid_ct": ("/classify/ct", media.ct_nifti(compressed=True)),
    }
    for name, (path, data) in uploads.items():
        assert models[name] == "openvino"
        a, b = on_ort.post(path, content=data), on_ov.post(path, content=data)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert abs(a.json()["probability"] - b.json()["probability"]) <= PARITY_ATOL
        assert a.json()["positive"] == b.json()["positive"]


def test_v2_raw_inference_runs_on_the_chosen_runtime(
    clients: tuple[TestClient, TestClient], on_ort: dict[str, ModelEntry]
) -> None:
    _, on_ov = clients
    name = "phantom_tumor_xray"
    entry = on_ov.app.state.registry.get(name)  # type: ignore[attr-defined]
    assert entry.runtime == "openvino"
    calls: list[Sequence[str] | None] = []
    runner = entry.runner

    class Counting:
        def run(self, names: Sequence[str] | None, feeds: Mapping[str, np.ndarray]) -> list[Any]:
            calls.append(names)
            return runner.run(names, feeds)

    reference = on_ort[name]
    assert reference.session is not None and reference.input_name
    x = np.random.default_rng(9).random(_probe(reference).shape, dtype=np.float32)
    body = {
        "inputs": [
            {
                "name": reference.input_name,
                "shape": list(x.shape),
                "datatype": "FP32",
                "data": x.ravel().tolist(),
            }
        ]
    }
    entry.runner = Counting()
    try:
        r = on_ov.post(f"/v2/models/{name}/infer", json=body)
    finally:
        entry.runner = runner
    assert r.status_code == 200, r.text
    assert calls == [None]
    want = reference.session.run(None, {reference.input_name: x})
    names = [o.name for o in reference.session.get_outputs()]
    outputs = r.json()["outputs"]
    assert [o["name"] for o in outputs] == names
    for out, expected in zip(outputs, want, strict=True):
        got = np.asarray(out["data"], np.float32).reshape(out["shape"])
        np.testing.assert_allclose(got, expected, rtol=0, atol=PARITY_ATOL)


def test_openvino_sends_and_writes_nothing(on_ov: dict[str, ModelEntry]) -> None:
    """``import openvino`` imports its conversion tools, whose telemetry (a Google Analytics
    event, a client id under ~/intel) app/__init__.py replaces with their own no-op stub."""
    import sys

    from openvino.tools.ovc import telemetry_utils

    assert on_ov["covid_ct"].runtime == "openvino"
    assert sys.modules["openvino_telemetry"] is None
    assert telemetry_utils.tm.__name__ == "openvino.tools.ovc.telemetry_stub"
