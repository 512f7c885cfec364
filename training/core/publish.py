"""The publish sequence every task ends with, in a hidden staging folder:

staging → ONNX export + Keras/ONNX parity → ``describe`` (calibrate and evaluate through the
ONNX graph, plots, card fields) → SavedModel → card (validated) → per-artifact hooks (each may
add files, metrics and fields; the card is re-validated and re-hashed after each) → move into
place → ``app.registry.load_entry`` must report it ready.

Nothing appears under ``OUT/<name>/<version>`` until every step has passed; on any error the
staging folder is removed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import CARD_FILE, MODEL_FILE, ModelCard
from training.core.card import write_card
from training.core.export import export_onnx, export_saved_model, onnx_runner, onnx_session

Runner = Callable[[np.ndarray], np.ndarray]
Describe = Callable[[Path, Any, Runner, float], tuple[dict[str, Any], list[str]]]


class Staging:
    """``out_root/.staging-<name>-<version>-XXXX/<version>/``: hidden from the registry (it skips
    names starting with a dot) yet named as the version, so hooks can load it as the service
    would; ``commit`` moves it to ``out_root/<name>/<version>``."""

    def __init__(self, out_root: Path, name: str, version: str) -> None:
        self.final = Path(out_root) / name / version
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f".staging-{name}-{version}-", dir=out_root))
        self.dir = self.root / version
        self.dir.mkdir()

    def commit(self, overwrite: bool) -> Path:
        if self.final.exists():
            if not overwrite:
                raise FileExistsError(f"{self.final} exists (use --overwrite)")
            shutil.rmtree(self.final)
        self.dir.rename(self.final)
        shutil.rmtree(self.root, ignore_errors=True)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class HookContext:
    """What a hook sees: the staging ``folder`` (``model.onnx``, the plots, the card so far),
    the validated ``card``, the task's ``splits`` (model inputs as trained: ``.train``,
    ``.val``, ``.test``) and the data folders of the run."""

    folder: Path
    card: ModelCard
    splits: Any
    data_dir: Path | None = None
    test_data: Path | None = None


@dataclass
class CardUpdate:
    """What a hook adds: ``metrics`` merged into the card's metrics, ``training`` into its
    training section, ``fields`` set at the top level (names the hook declares), ``files``
    written into the folder (hashed into ``files``)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hook:
    """A per-artifact step run on the staging folder before it is moved into place.
    ``fields``: top-level card fields it may set (beyond those ``ModelCard`` declares). It may
    rewrite ``model.onnx`` (output 0 unchanged): the card is re-hashed and its self-test
    recomputed after it."""

    name: str
    run: Callable[[HookContext], CardUpdate | None]
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainRequest:
    """The parts of a ``train`` that are not the task's options: where the data are, where the
    artifact goes, and the publish hooks to run on it."""

    data: Path
    out: Path = Path("models")
    version: str = "1.0.0"
    test_data: Path | None = None
    run_dir: Path | None = None
    overwrite: bool = False
    from_checkpoint: bool = False
    hooks: tuple[Hook, ...] = ()

    def run_folder(self, name: str) -> Path:
        """``run_dir`` or ``runs/<name>/<version>`` (checkpoints, history, caches)."""
        return Path(self.run_dir) if self.run_dir else Path("runs") / name / self.version


def _apply(folder: Path, card: ModelCard, update: CardUpdate, allowed: Sequence[str]) -> ModelCard:
    fields = json.loads((folder / CARD_FILE).read_text())
    files = [f for f in fields.pop("files") if f != MODEL_FILE]
    fields.pop("self_test")
    fields["metrics"].update(update.metrics)
    fields["training"].update(update.training)
    fields.update(update.fields)
    files += [f for f in update.files if f not in files]
    return write_card(folder, fields, files, onnx_session(folder / MODEL_FILE), allowed)


def publish_artifact(
    model: Any,
    name: str,
    version: str,
    out_root: Path,
    probe: np.ndarray,
    seed: int,
    overwrite: bool,
    describe: Describe,
    *,
    hooks: Sequence[Hook] = (),
    splits: Any = None,
    data_dir: Path | None = None,
    test_data: Path | None = None,
) -> Path:
    """Export a trained Keras ``model`` as ``out_root/<name>/<version>`` and return the folder.

    ``describe(folder, session, run, max_diff)`` evaluates the ONNX graph (``run``: batch →
    output 0), writes its plots into ``folder`` and returns the card fields and the plot file
    names. ``hooks`` run in order on the staging folder once the card is written. A
    ``RuntimeError`` if the service would not serve the result."""
    from app.config import Settings
    from app.registry import load_entry

    staging = Staging(Path(out_root), name, version)
    try:
        rand = np.random.default_rng(seed).uniform(0, 1, probe.shape).astype(np.float32)
        max_diff = export_onnx(model, staging.dir / MODEL_FILE, [probe, rand])
        session = onnx_session(staging.dir / MODEL_FILE)
        fields, plots = describe(staging.dir, session, onnx_runner(session), max_diff)
        export_saved_model(model, staging.dir)
        allowed = [f for hook in hooks for f in hook.fields]
        card = write_card(staging.dir, fields, plots, session, allowed)
        for hook in hooks:
            ctx = HookContext(staging.dir, card, splits, data_dir, test_data)
            update = hook.run(ctx)
            if update is not None:
                card = _apply(staging.dir, card, update, allowed)
        final = staging.commit(overwrite)
    except BaseException:
        staging.discard()
        raise
    entry = load_entry(name, final, Settings(model_dir=Path(out_root)))
    if not entry.ready:
        raise RuntimeError(f"exported artifact is not servable: {entry.reason}")
    return final


def publish_run(
    request: TrainRequest,
    model: Any,
    name: str,
    probe: np.ndarray,
    seed: int,
    describe: Describe,
    splits: Any,
) -> Path:
    """``publish_artifact`` for a ``train`` request: its output folder, version, overwrite flag,
    hooks and data folders."""
    return publish_artifact(
        model,
        name,
        request.version,
        request.out,
        probe,
        seed,
        request.overwrite,
        describe,
        hooks=request.hooks,
        splits=splits,
        data_dir=request.data,
        test_data=request.test_data,
    )
