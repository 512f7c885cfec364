"""The registry verifies, loads and self-tests models; a bad one is not ready, the rest serve."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.registry import build_registry
from tests.tiny_model import write_tiny_model


def _settings(root: Path, **kw: object) -> Settings:
    return Settings(model_dir=root, **kw)  # type: ignore[arg-type]


def _edit_card(folder: Path, **changes: object) -> None:
    path = folder / "model_card.json"
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_tiny_model_loads_and_passes_self_test(tmp_path: Path) -> None:
    write_tiny_model(tmp_path)
    registry = build_registry(_settings(tmp_path))
    entry = registry.get("tiny_xray")
    assert entry.ready, entry.reason
    assert entry.card is not None and entry.sha256 == entry.card.files["model.onnx"]
    assert registry.all_ready


def test_one_byte_change_makes_model_not_ready(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready
    assert entry.reason is not None and "sha256" in entry.reason


def test_wrong_hash_in_card(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    _edit_card(folder, files={"model.onnx": "0" * 64})
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready and "sha256" in (entry.reason or "")


def test_card_missing_a_field(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    del card["intended_use"]
    (folder / "model_card.json").write_text(json.dumps(card))
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready
    assert entry.reason is not None and "intended_use" in entry.reason


def test_self_test_mismatch(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    card["self_test"]["expected_first"] = [card["self_test"]["expected_first"][0] + 0.5]
    (folder / "model_card.json").write_text(json.dumps(card))
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready and "self-test" in (entry.reason or "")


def test_missing_model_file_and_missing_card(tmp_path: Path) -> None:
    (write_tiny_model(tmp_path, name="a") / "model.onnx").unlink()
    (write_tiny_model(tmp_path, name="b") / "model_card.json").unlink()
    registry = build_registry(_settings(tmp_path))
    assert "missing" in (registry.get("a").reason or "")
    assert "missing" in (registry.get("b").reason or "")


def test_truncated_model_with_matching_hash_fails_to_load(tmp_path: Path) -> None:
    """A file the card agrees with but onnxruntime cannot parse is still refused."""
    folder = write_tiny_model(tmp_path)
    data = (folder / "model.onnx").read_bytes()[:50]
    (folder / "model.onnx").write_bytes(data)
    from app.imaging.card import sha256_bytes

    _edit_card(folder, files={"model.onnx": sha256_bytes(data)})
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready and "onnxruntime" in (entry.reason or "")


def test_card_shape_must_match_graph(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    card["input"]["shape"] = [None, 16, 16, 1]
    (folder / "model_card.json").write_text(json.dumps(card))
    entry = build_registry(_settings(tmp_path)).get("tiny_xray")
    assert not entry.ready and "shape" in (entry.reason or "")


def test_highest_version_wins_unless_pinned(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, version="1.2.0")
    write_tiny_model(tmp_path, version="1.10.0")
    assert build_registry(_settings(tmp_path)).get("tiny_xray").version == "1.10.0"
    pinned = build_registry(_settings(tmp_path, model_versions={"tiny_xray": "1.2.0"}))
    assert pinned.get("tiny_xray").version == "1.2.0" and pinned.get("tiny_xray").ready
    absent = build_registry(_settings(tmp_path, model_versions={"tiny_xray": "9.9.9"}))
    assert not absent.get("tiny_xray").ready


def test_bad_model_leaves_others_serving_and_app_live(tmp_path: Path) -> None:
    write_tiny_model(tmp_path, name="good")
    bad = write_tiny_model(tmp_path, name="bad")
    (bad / "model.onnx").write_bytes(b"not a model")
    with TestClient(create_app(_settings(tmp_path))) as client:
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"
        assert ready.headers["retry-after"]
        body = ready.json()
        assert body["code"] == "model_not_ready"
        assert body["models"]["good"] == "ready"
        assert body["models"]["bad"].startswith("not_ready: sha256")
        listed = {m["name"]: m for m in client.get("/models").json()}
        assert listed["good"]["ready"] is True and listed["bad"]["ready"] is False
        metrics = client.get("/metrics").text
        assert 'medserve_model_ready{model="good"} 1.0' in metrics
        assert 'medserve_model_ready{model="bad"} 0.0' in metrics
