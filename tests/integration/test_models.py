"""GET /models and GET /models/{name}: the fields the contract lists, consistent with each other."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.contract import SHA256, assert_operating_points, assert_problem
from tests.integration.service import ENDPOINTS

SUMMARY_FIELDS = {
    "name",
    "version",
    "task",
    "modality",
    "endpoint",
    "ready",
    "sha256",
    "default_operating_point",
    "operating_points",
}
CARD_FIELDS = {
    "name",
    "version",
    "task",
    "modality",
    "endpoint",
    "input",
    "output",
    "calibration",
    "operating_points",
    "default_operating_point",
    "metrics",
    "training",
    "intended_use",
    "limitations",
    "files",
    "self_test",
    "ready",
}
TASKS = {"binary_classification", "binary_segmentation"}


def test_models_is_a_list_with_the_contract_fields(client: httpx.Client) -> None:
    r = client.get("/models")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    listed = r.json()
    assert isinstance(listed, list)
    names = [m["name"] for m in listed]
    assert len(names) == len(set(names)), names
    for m in listed:
        missing = SUMMARY_FIELDS - m.keys()
        assert not missing, f"{m.get('name')}: missing {sorted(missing)}"
        assert isinstance(m["ready"], bool)


def test_each_ready_model_describes_itself(models: dict[str, dict[str, Any]]) -> None:
    ready = {n: m for n, m in models.items() if m["ready"]}
    if not ready:
        pytest.skip(f"no ready model listed (listed: {sorted(models) or 'none'})")
    for name, m in ready.items():
        assert m["task"] in TASKS, (name, m["task"])
        assert isinstance(m["version"], str) and m["version"], name
        assert isinstance(m["modality"], str) and m["modality"], name
        if name in ENDPOINTS:
            assert m["endpoint"] == ENDPOINTS[name], (name, m["endpoint"])
        assert SHA256.match(m["sha256"] or ""), (name, m["sha256"])
        assert_operating_points(m["operating_points"])
        assert m["default_operating_point"] in m["operating_points"], name


def test_a_model_that_is_not_ready_says_why(models: dict[str, dict[str, Any]]) -> None:
    not_ready = {n: m for n, m in models.items() if not m["ready"]}
    if not not_ready:
        pytest.skip("every listed model is ready")
    for name, m in not_ready.items():
        assert isinstance(m.get("reason"), str) and m["reason"], (name, m)


def test_model_detail_is_the_whole_card(
    client: httpx.Client, models: dict[str, dict[str, Any]], cards: dict[str, dict[str, Any]]
) -> None:
    ready = [n for n, m in models.items() if m["ready"]]
    if not ready:
        pytest.skip(f"no ready model listed (listed: {sorted(models) or 'none'})")
    for name in ready:
        card, summary = cards[name], models[name]
        missing = CARD_FIELDS - card.keys()
        assert not missing, f"{name}: card lacks {sorted(missing)}"
        assert card["name"] == name and card["version"] == summary["version"]
        assert card["ready"] is True
        assert card["task"] == summary["task"] and card["endpoint"] == summary["endpoint"]
        assert card["default_operating_point"] == summary["default_operating_point"]
        for op, point in summary["operating_points"].items():
            for key in ("threshold", "sensitivity", "specificity"):
                assert card["operating_points"][op][key] == point[key], (name, op, key)
        assert card["files"]["model.onnx"] == summary["sha256"], name
        inp = card["input"]
        assert {"layout", "shape", "dtype", "preprocessing"} <= inp.keys(), inp
        labels = card["output"]["labels"]
        assert isinstance(labels, list) and len(labels) == 2 and all(labels), labels
        assert card["calibration"]["method"], card["calibration"]
        assert isinstance(card["training"]["synthetic"], bool), card["training"]
        assert card["training"]["dataset"], card["training"]
        if card["task"] == "binary_segmentation":
            assert 0.0 < card["pixel_threshold"] < 1.0, card.get("pixel_threshold")


def test_unknown_model_is_404(client: httpx.Client) -> None:
    assert_problem(client.get("/models/no_such_model"), 404, "not_found")


def test_health_ready_agrees_with_models(
    anon: httpx.Client, models: dict[str, dict[str, Any]]
) -> None:
    r = anon.get("/health/ready")
    if models and all(m["ready"] for m in models.values()):
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "models": dict.fromkeys(models, "ready")}
        return
    body = assert_problem(r, 503, "model_not_ready")
    assert r.headers.get("retry-after", "").isdigit(), dict(r.headers)
    assert set(body["models"]) == set(models), body
    for name, state in body["models"].items():
        if models[name]["ready"]:
            assert state == "ready", (name, state)
        else:
            assert state.startswith("not_ready"), (name, state)
