"""``/models/{name}`` as HTML and ``/models/{name}/files/{file}``: only a PNG the card lists, with
its sha256 intact, is served; anything else is 404 problem+json."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from tests.tiny_model import write_tiny_model


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 7, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_plots_are_served_only_as_the_card_lists_them(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path, name="pneumonia_xray")
    plot = _png()
    (folder / "roc.png").write_bytes(plot)
    (folder / "unlisted.png").write_bytes(plot)
    card = json.loads((folder / "model_card.json").read_text())
    card["files"]["roc.png"] = hashlib.sha256(plot).hexdigest()
    (folder / "model_card.json").write_text(json.dumps(card))
    with TestClient(create_app(Settings(model_dir=tmp_path))) as c:
        r = c.get("/models/pneumonia_xray/files/roc.png")
        assert r.status_code == 200 and r.content == plot
        page = c.get("/models/pneumonia_xray", headers={"Accept": "text/html"})
        assert page.headers["content-type"].startswith("text/html")
        assert "/models/pneumonia_xray/files/roc.png" in page.text
        assert c.get("/models/pneumonia_xray").json()["name"] == "pneumonia_xray"
        for name in ("unlisted.png", "model.onnx", "model_card.json", "..%2Fx.png"):
            r = c.get(f"/models/pneumonia_xray/files/{name}")
            assert r.status_code == 404 and r.json()["code"] == "not_found", name
        (folder / "roc.png").write_bytes(plot + b"changed")  # no longer the card's file
        assert c.get("/models/pneumonia_xray/files/roc.png").status_code == 404
        assert c.get("/models/nope/files/roc.png").status_code == 404
