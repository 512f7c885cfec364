"""A fifth model needs only its task folder (and, for serving, the endpoint table): this test
declares a throwaway task here — a tiny knee-MRI classifier on its own made-up layout — registers
it, and synthesises, trains, exports (with a publish hook) and evaluates it through the same
CLI and core as the four demo models. CONTRIBUTING.md ("Adding a model") walks through the
same steps for a real one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fastapi.testclient import TestClient

from app import endpoints
from app.config import Settings
from app.endpoints import Endpoint
from app.imaging.card import CARD_FILE, Intensity, ModelCard, Preprocessing
from app.imaging.limits import DecodeLimits
from app.imaging.preprocess import preprocess_image
from app.imaging.readers import decode_image
from app.main import create_app
from app.registry import load_entry
from training import cli, tasks
from training.core.card import CardTemplate, RunInfo
from training.core.options import NoOptions, opt
from training.core.publish import CardUpdate, Hook, HookContext
from training.core.task import Task, TrainRequest
from training.datasets import DataSplits, class_weights

pytest.importorskip("tensorflow")

NAME = "tiny_knee_mri"
LABELS = ("NO_EFFUSION", "EFFUSION")
CARD = CardTemplate(
    name=NAME,
    task="binary_classification",
    modality="MR",
    labels=LABELS,
    dataset="tiny_knee_synthetic",
    intended_use="A test's throwaway model: never served to anyone.",
    limitations=("Sixteen-pixel synthetic squares.",),
)


# --------------------------------------------------------------------------- the task folder


@dataclass(frozen=True)
class SynthOptions:
    n: int = opt(48, "number of images")
    seed: int = opt(0, "random seed")


@dataclass(frozen=True)
class TrainOptions:
    size: int = opt(16, "model input side")
    epochs: int = opt(2, "epochs")
    seed: int = opt(0, "random seed")
    synthetic: bool = opt(False, "the data are synthetic")


def _prep(size: int) -> Preprocessing:
    return Preprocessing(
        kind="image2d",
        size=[size, size],
        channels=1,
        intensity=Intensity(method="window", low=0.0, high=255.0),
        resize="area",
        expected_bits=8,
    )


def synth(out: Path, o: SynthOptions, overwrite: bool) -> dict[str, Any]:
    """``knee/{train,test}/{0,1}/<i>.png``: class 1 has a bright blob (the "effusion")."""
    rng = np.random.default_rng(o.seed)
    for i in range(o.n):
        label, split = i % 2, "test" if i % 4 >= 2 else "train"
        img = rng.normal(60, 10, (24, 24))
        if label:
            cy, cx = rng.integers(6, 18, 2)
            yy, xx = np.mgrid[0:24, 0:24]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 200
        folder = out / "knee" / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return {"written": o.n}


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def load_split(root: Path, split: str, prep: Preprocessing) -> Split:
    files = sorted((root / "knee" / split).glob("*/*.png"))
    x = np.concatenate(
        [
            preprocess_image(decode_image([f.read_bytes()], DecodeLimits()), prep, "NHWC")
            for f in files
        ]
    )
    return Split(x=x, y=np.array([int(f.parent.name) for f in files], dtype=np.int64))


def recorded(o: TrainOptions) -> dict[str, Any]:
    return {"training": {"seed": o.seed}, "preprocessing": _prep(o.size).model_dump()}


def train(req: TrainRequest, o: TrainOptions) -> Path:
    from training.core.classification import TrainConfig, run_binary_classification
    from training.models.cnn import build

    prep = _prep(o.size)
    train_val = load_split(req.data, "train", prep)
    cut = len(train_val) * 3 // 4
    tr = Split(train_val.x[:cut], train_val.y[:cut])
    va = Split(train_val.x[cut:], train_val.y[cut:])
    splits = DataSplits(tr, va, load_split(req.data, "test", prep), class_weights(tr.y))
    shape = (o.size, o.size, 1)
    config = TrainConfig(epochs=o.epochs, batch_size=8, seed=o.seed, augment=False, verbose=0)
    return run_binary_classification(
        template=CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: build(shape, width=0.125, blocks=2, dense_units=(8,), dropouts=(0.0,)),
        config=config,
        request=req,
        info=RunInfo(o.synthetic, o.seed, "cnn", {"width": 0.125}, {}),
        class_weight=splits.class_weight,
    )


def evaluate(model_dir: Path, data: Path, _: NoOptions) -> dict[str, Any]:
    from training.core.evaluate import evaluate_artifact

    return evaluate_artifact(model_dir, lambda prep: load_split(data, "test", prep))


TASK = Task(
    name=NAME,
    kind="classification",
    description="a throwaway knee MRI classifier (this test only)",
    template=CARD,
    folder=Path(__file__).resolve().parent,
    synth_options=SynthOptions,
    synth=synth,
    train_options=TrainOptions,
    train=train,
    recorded=recorded,
    evaluate=evaluate,
    aliases=("knee",),
)


# --------------------------------------------------------------------------- the test


# ...and its row in the endpoint table (app/endpoints.py): the one line outside the task folder.
ROW = Endpoint("/classify/knee", NAME, "binary_classification", "Knee effusion (a test's model).")


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[Task]:
    monkeypatch.setattr(endpoints, "ENDPOINTS", (*endpoints.ENDPOINTS, ROW))
    tasks.register(TASK)
    yield TASK
    tasks.unregister(NAME)


def test_a_fifth_task_trains_exports_and_evaluates_through_the_same_machinery(
    registered: Task, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = tmp_path / "data", tmp_path / "models"
    assert cli.main(["synth", "knee", "--out", str(data), "--n", "48", "--seed", "3"]) == 0
    assert len(list(data.glob("knee/*/*/*.png"))) == 48
    seen: list[Path] = []

    def note(ctx: HookContext) -> CardUpdate:  # a per-artifact hook, as the OOD step will be
        assert not (out / NAME / "0.0.1").exists()  # it runs in staging, before the move
        assert ctx.card.name == NAME and len(ctx.splits.train) == 18
        (ctx.folder / "note.txt").write_text("checked\n")
        seen.append(ctx.folder)
        return CardUpdate(metrics={"note": 1}, fields={"extra_note": "hi"}, files=["note.txt"])

    argv = ["train", NAME, "--data", str(data), "--out", str(out), "--version", "0.0.1"]
    argv += ["--run-dir", str(tmp_path / "run"), "--synthetic", "--set", "epochs=1"]
    task, verb, args, options = cli.parse(argv)
    result = cli.run(task, verb, args, options, hooks=(Hook("note", note, ("extra_note",)),))
    path = Path(result["artifact"])
    assert path == out / NAME / "0.0.1" and seen
    card = ModelCard.model_validate(json.loads((path / CARD_FILE).read_text()))
    assert card.endpoint == "/classify/knee" and card.output.labels == LABELS
    assert card.training.synthetic and card.metrics["note"] == 1
    assert card.model_extra is not None and card.model_extra["extra_note"] == "hi"
    assert "note.txt" in card.files and not list(out.glob(".staging-*"))
    entry = load_entry(NAME, path, Settings(model_dir=out))
    assert entry.ready, entry.reason  # the service's registry loads it (hashes, self-test)
    # ...and the service serves it at its row's path, as it serves the four demo models
    film = next(data.glob("knee/test/1/*.png")).read_bytes()
    with TestClient(create_app(Settings(model_dir=out))) as client:
        summary = {m["name"]: m for m in client.get("/models").json()}[NAME]
        answer = client.post(ROW.path, content=film)
    assert summary["ready"] and summary["endpoint"] == ROW.path
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"]["name"] == NAME and body["label"] in LABELS
    assert 0.0 <= body["probability"] <= 1.0

    capsys.readouterr()
    assert cli.main(["evaluate", "knee", "--model", str(path), "--data", str(data)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == card.metrics["n"] == 24
    assert metrics["auc"] == pytest.approx(card.metrics["auc"], abs=1e-6)

    # the same run exported again from its best checkpoint, without training
    again = ["train", "knee", "--data", str(data), "--out", str(out), "--version", "0.0.2"]
    again += ["--run-dir", str(tmp_path / "run"), "--from-checkpoint", "--synthetic"]
    assert cli.main(again) == 0
    copy = ModelCard.model_validate(json.loads((out / NAME / "0.0.2" / CARD_FILE).read_text()))
    assert copy.model_extra is None or "extra_note" not in copy.model_extra  # no hook this time
    assert copy.training.model_extra and copy.training.model_extra["exported_from_checkpoint"]
    assert copy.self_test.expected_first == pytest.approx(card.self_test.expected_first, abs=1e-6)
    assert copy.metrics["auc"] == pytest.approx(card.metrics["auc"], abs=1e-6)


def test_a_hook_failure_leaves_no_artifact(registered: Task, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "models"
    assert cli.main(["synth", NAME, "--out", str(data), "--n", "16"]) == 0

    def fail(ctx: HookContext) -> CardUpdate:
        raise RuntimeError("report failed")

    request = TrainRequest(
        data=data, out=out, version="0.0.1", run_dir=tmp_path / "run", hooks=(Hook("x", fail),)
    )
    with pytest.raises(RuntimeError, match="report failed"):
        TASK.train(request, TrainOptions(epochs=1))
    assert not (out / NAME / "0.0.1").exists() and not list(out.glob(".staging-*"))
