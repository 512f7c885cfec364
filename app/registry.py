"""Model registry: discover ``models/<name>/<version>/``, verify, load, self-test, report.

A model that fails any step is recorded as not ready with a reason; the others still serve and
the process stays live.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from app.config import Settings
from app.endpoints import Endpoint, card_disagreement
from app.errors import ModelNotReady, NotFound
from app.graph import split_concat_convs, wants_rewrite
from app.imaging.card import CARD_FILE, MODEL_FILE, ModelCard, sha256_bytes
from app.imaging.ood import OodStats, input_statistics
from app.imaging.ood import score as ood_score
from app.runtime import (
    PARITY_ATOL,
    AloneAwareRunner,
    CorePlan,
    Runner,
    Runtime,
    choose_runner,
    core_plan,
    max_difference,
    requested_runtime,
)

log = logging.getLogger("medserve.registry")


@dataclass
class ModelEntry:
    """One model as the service sees it: its card, its onnxruntime session (the graph's
    metadata: names, shapes, types), the runner that runs it (that session, or OpenVINO's
    compiled model, ``app.runtime``), and whether it may serve."""

    name: str
    version: str | None
    path: Path | None
    card: ModelCard | None = None
    session: ort.InferenceSession | None = None
    runner: Runner | None = None  # every inference goes through it: run(output_names, feeds)
    runtime: Runtime | None = None  # what the runner is, once loaded
    runtime_reason: str | None = None  # why it is not the runtime the settings asked for
    runtime_parity: float | None = None  # OpenVINO's largest difference from onnxruntime at load
    input_name: str | None = None
    output_name: str | None = None  # output 0, the model's answer (an OOD output comes last)
    ready: bool = False
    reason: str | None = None
    explain_batch: int = 1  # occluded inputs per run (the graph's batch size if fixed)
    explain_ms_per_item: float = 0.0  # measured at load, per input of a batch that size
    ood_stats: OodStats | None = None
    graph_rewrites: int = 0  # Concat -> Conv pairs split in the graph served (app.graph)

    @property
    def sha256(self) -> str | None:
        return self.card.model_sha256 if self.card else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on one preprocessed batch (the card's layout) and return output 0."""
        if not self.ready or self.runner is None or not self.input_name or not self.output_name:
            raise ModelNotReady(f"model {self.name} is not ready")
        out: list[Any] = self.runner.run([self.output_name], {self.input_name: batch})
        return np.asarray(out[0])

    def run_with_features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Output 0 and, when the card has an ``ood`` section, the features output (both with
        the batch axis first); the features are None for a card without one."""
        if not self.ready or self.runner is None or not self.input_name or not self.output_name:
            raise ModelNotReady(f"model {self.name} is not ready")
        if self.card is None or self.card.ood is None:
            return self.run(batch), None
        names = [self.output_name, self.card.ood.output]
        out: list[Any] = self.runner.run(names, {self.input_name: batch})
        return np.asarray(out[0]), np.asarray(out[1])

    def ood_score(
        self, features: np.ndarray, x: np.ndarray, statistics: np.ndarray | None = None
    ) -> float:
        """OOD score of one input from its features and preprocessed tensor (no batch axis);
        ``statistics`` the tensor's ``ood_statistics`` when already taken."""
        assert self.card is not None and self.card.ood is not None and self.ood_stats is not None
        layout, grid = self.card.input.layout, tuple(self.card.ood.input_grid)
        return ood_score(self.ood_stats, features, x, layout, grid, statistics)

    def ood_statistics(self, x: np.ndarray) -> np.ndarray | None:
        """The input statistics of the OOD check for one preprocessed tensor (no batch axis);
        None for a model without the check."""
        if self.card is None or self.card.ood is None or self.ood_stats is None:
            return None
        grid = tuple(self.card.ood.input_grid)
        return input_statistics(x, self.card.input.layout, grid, self.ood_stats.version)


@dataclass
class Registry:
    models: dict[str, ModelEntry] = field(default_factory=dict)

    def get(self, name: str) -> ModelEntry:
        """The entry for ``name``; NotFound if unknown (readiness is the caller's to check)."""
        try:
            return self.models[name]
        except KeyError:
            raise NotFound("no such model") from None

    def ready_model(self, name: str, retry_after: int) -> ModelEntry:
        """The entry for ``name`` if it may serve, else 503 ``model_not_ready``."""
        entry = self.models.get(name)
        if entry is None or not entry.ready:
            raise ModelNotReady(
                f"model {name} is not ready", headers={"Retry-After": str(retry_after)}
            )
        return entry

    @property
    def all_ready(self) -> bool:
        return bool(self.models) and all(m.ready for m in self.models.values())

    def readiness(self) -> dict[str, str]:
        """name -> "ready" or "not_ready: <reason>"."""
        items = sorted(self.models.items())
        return {n: "ready" if m.ready else f"not_ready: {m.reason}" for n, m in items}


def _version_key(v: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(v))
    except InvalidVersion:
        return (0, v)


def _choose_version(model_dir: Path, pinned: str | None) -> tuple[str | None, str | None]:
    """(version, reason-if-none) among the subfolders of one model's folder."""
    versions = sorted((p.name for p in model_dir.iterdir() if p.is_dir()), key=_version_key)
    if pinned is not None:
        return (pinned, None) if pinned in versions else (None, f"pinned version {pinned} absent")
    if not versions:
        return None, "no version folder"
    return versions[-1], None


def alone_core_plan(settings: Settings) -> CorePlan | None:
    """Where a run alone puts its threads (``settings.ort_pin_when_alone``), or None."""
    return core_plan(settings.intra_op_threads) if settings.ort_pin_when_alone else None


def session_options(settings: Settings, alone: bool = False) -> ort.SessionOptions:
    """The service's session options; ``alone``: the threads spin during a run (for a run that
    is the only inference in flight, ``app.runtime.AloneAwareRunner``), each intra-op thread on
    its core of ``alone_core_plan``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.ort_inter_op_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Decoding shares the cores with inference: threads must not spin between runs. A run
    # alone may spin while it runs, and stops when it returns.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if alone else "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if alone:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        plan = alone_core_plan(settings)
        if plan is not None:
            opts.add_session_config_entry(
                "session.intra_op_thread_affinities", plan.ort_affinities()
            )
    opts.log_severity_level = 3
    return opts


def load_entry(
    name: str,
    path: Path,
    settings: Settings,
    table: Sequence[Endpoint] | None = None,
    alone_now: Callable[[], bool] | None = None,
) -> ModelEntry:
    """Verify and load one version folder; never raises, records the reason instead. With
    ``alone_now`` (the service's "is this the only inference in flight") a model on onnxruntime
    also gets a spinning session for runs alone (``settings.ort_spin_when_alone``)."""
    entry = ModelEntry(name=name, version=path.name, path=path)
    try:
        raw = json.loads((path / CARD_FILE).read_bytes())
        card = ModelCard.model_validate(raw)
    except FileNotFoundError:
        entry.reason = f"{CARD_FILE} missing"
        return entry
    except (json.JSONDecodeError, UnicodeDecodeError):
        entry.reason = f"{CARD_FILE} is not valid JSON"
        return entry
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "card" for e in exc.errors()})
        entry.reason = f"{CARD_FILE} invalid: {', '.join(fields)}"
        return entry
    if card.name != name or card.version != path.name:
        entry.reason = "card name/version do not match the folder"
        return entry
    entry.card = card
    disagreement = card_disagreement(name, card.task, card.endpoint, table)
    if disagreement:
        entry.reason = disagreement
        return entry

    model_bytes = b""
    stats_bytes = b""
    for fname, digest in card.files.items():
        fpath = path / fname
        if not fpath.is_file():
            entry.reason = f"file {fname} missing"
            return entry
        data = fpath.read_bytes()
        if sha256_bytes(data) != digest:
            entry.reason = f"sha256 of {fname} does not match the card"
            return entry
        if fname == MODEL_FILE:
            model_bytes = data
        if card.ood is not None and fname == card.ood.statistics_file:
            stats_bytes = data

    try:
        session = ort.InferenceSession(
            model_bytes, sess_options=session_options(settings), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several types for a bad graph
        entry.reason = f"onnxruntime could not load the model ({type(exc).__name__})"
        return entry

    inputs = {i.name: i for i in session.get_inputs()}
    input_name = card.input.name or session.get_inputs()[0].name
    if input_name not in inputs:
        entry.reason = "card input name is not an input of the graph"
        return entry
    graph_shape = inputs[input_name].shape
    card_shape = card.input.shape
    if len(graph_shape) != len(card_shape) or any(
        isinstance(g, int) and c is not None and g != c
        for g, c in zip(graph_shape, card_shape, strict=False)
    ):
        entry.reason = "card input shape does not match the graph"
        return entry

    shape = [1 if s is None else s for s in card_shape]
    output0 = session.get_outputs()[0].name
    probe = card.self_test.make_input(shape)
    try:
        out = session.run([output0], {input_name: probe})[0]
    except Exception as exc:
        entry.reason = f"self-test run failed ({type(exc).__name__})"
        return entry
    problem = card.self_test.mismatch(np.asarray(out))
    if problem:
        entry.reason = problem
        return entry

    entry.session = session
    entry.input_name = input_name
    entry.output_name = output0
    if card.ood is not None:
        problem = _load_ood(entry, stats_bytes, probe)
        if problem:
            entry.session = None
            entry.reason = problem
            return entry
    _choose_runtime(entry, model_bytes, settings, probe)
    if entry.runtime == "onnxruntime" and wants_rewrite(name, settings.graph_rewrite):
        model_bytes = _rewrite_graph(entry, model_bytes, settings, probe)
    if alone_now is not None and settings.ort_spin_when_alone and entry.runtime == "onnxruntime":
        _add_alone_session(entry, model_bytes, settings, probe, alone_now)
    entry.ready = True
    if card.task == "binary_classification":
        measure_explain_latency(entry, graph_shape[0], settings.explain_batch)
    return entry


def _choose_runtime(
    entry: ModelEntry, model_bytes: bytes, settings: Settings, probe: np.ndarray
) -> None:
    """The runner the settings ask for, checked against onnxruntime on the self-test input
    (every output, the OOD features included); onnxruntime with the reason when it fails."""
    assert entry.session is not None and entry.input_name is not None
    setting, wanted = requested_runtime(entry.name, settings.runtime, settings.model_runtimes)
    choice = choose_runner(
        entry.name,
        entry.session,
        wanted,
        setting,
        model_bytes,
        settings.intra_op_threads,
        [i.name for i in entry.session.get_inputs()],
        [o.name for o in entry.session.get_outputs()],
        {entry.input_name: probe},
    )
    entry.runner, entry.runtime, entry.runtime_reason = choice.runner, choice.runtime, choice.reason
    entry.runtime_parity = choice.parity
    if choice.parity is not None:
        log.info(
            "model runtime",
            extra={
                "event": "runtime",
                "model": entry.name,
                "runtime": choice.runtime,
                "max_abs_diff": choice.parity,
            },
        )


def _rewrite_graph(
    entry: ModelEntry, model_bytes: bytes, settings: Settings, probe: np.ndarray
) -> bytes:
    """Serve the rewritten graph (``app.graph.split_concat_convs``) when it loads and every
    output on the self-test input is within ``PARITY_ATOL`` of the original's; the bytes
    served (the original's when not, logged)."""
    assert entry.session is not None and entry.input_name is not None
    feeds = {entry.input_name: probe}
    try:
        rewritten, splits = split_concat_convs(model_bytes)
        if splits == 0:
            return model_bytes
        session = ort.InferenceSession(
            rewritten, sess_options=session_options(settings), providers=["CPUExecutionProvider"]
        )
        diff, problem = max_difference(entry.session.run(None, feeds), session.run(None, feeds))
    except Exception as exc:  # onnx and onnxruntime raise several types
        diff, problem, splits = float("inf"), f"it failed ({type(exc).__name__})", 0
    if problem is None and not diff <= PARITY_ATOL:
        problem = f"its outputs differ by {diff:.2g} (> {PARITY_ATOL:g})"
    if problem is not None:
        log.warning(
            "graph not rewritten",
            extra={"event": "runtime", "model": entry.name, "reason": problem},
        )
        return model_bytes
    log.info(
        "graph rewritten",
        extra={"event": "runtime", "model": entry.name, "splits": splits, "max_abs_diff": diff},
    )
    entry.session = entry.runner = session
    entry.graph_rewrites = splits
    return rewritten


def _add_alone_session(
    entry: ModelEntry,
    model_bytes: bytes,
    settings: Settings,
    probe: np.ndarray,
    alone_now: Callable[[], bool],
) -> None:
    """Wrap the entry's session with a spinning twin for runs alone, if the twin loads and
    gives the same outputs on the self-test input; else keep the one session (logged)."""
    assert entry.session is not None and entry.input_name is not None
    feeds = {entry.input_name: probe}
    try:
        alone = ort.InferenceSession(
            model_bytes, sess_options=session_options(settings, alone=True),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
        diff, problem = max_difference(entry.session.run(None, feeds), alone.run(None, feeds))
    except Exception as exc:  # onnxruntime raises several types
        diff, problem = float("inf"), f"it could not load or run ({type(exc).__name__})"
    if problem is None and diff > 0:
        problem = f"its outputs differ by {diff:.2g}"
    if problem is not None:
        log.warning(
            "no spinning session",
            extra={"event": "runtime", "model": entry.name, "reason": problem},
        )
        return
    plan = alone_core_plan(settings)
    caller = None if plan is None else plan.caller
    entry.runner = AloneAwareRunner(entry.session, alone, alone_now, caller_cpu=caller)


def measure_explain_latency(entry: ModelEntry, graph_batch: object, batch: int) -> None:
    """Time one run of a batch of ``batch`` self-test inputs (the graph's own batch
    size where it is fixed; one by one if a batch fails) and store the per-input milliseconds
    on the entry: the occlusion grid of an explanation is chosen from it, once per process,
    so the same input always gets the same grid. It runs on the model's runner (the runtime
    it serves on), which the self-test or the parity run has warmed."""
    assert entry.card is not None and entry.runner is not None
    assert entry.input_name and entry.output_name
    one = entry.card.self_test.make_input(
        [1, *(1 if s is None else s for s in entry.card.input.shape[1:])]
    )
    sizes = [graph_batch] if isinstance(graph_batch, int) and graph_batch > 0 else [batch, 1]
    for size in sizes:
        start = time.perf_counter()
        try:
            entry.runner.run([entry.output_name], {entry.input_name: np.repeat(one, size, axis=0)})
        except Exception:  # a graph whose batch axis is not really free: explain one by one
            continue
        entry.explain_ms_per_item = (time.perf_counter() - start) * 1000 / size
        entry.explain_batch = size
        return


def _load_ood(entry: ModelEntry, stats_bytes: bytes, probe: np.ndarray) -> str | None:
    """Read the OOD statistics (already hash-checked) and score the self-test input once, so a
    features output that does not fit the statistics is found at load; None when fine."""
    assert entry.card is not None and entry.card.ood is not None and entry.session is not None
    outputs = [o.name for o in entry.session.get_outputs()]
    if outputs[-1] != entry.card.ood.output:
        return "the card's ood output is not the graph's last output"
    try:
        entry.ood_stats = OodStats.from_bytes(stats_bytes)
    except ValueError as exc:
        reason = str(exc)
        if "version" in reason:  # a file of statistics this service does not know
            return f"the ood statistics file is not usable: {reason}"
        return "the ood statistics file is not valid"
    declared = entry.card.ood.statistics_version or 1
    if entry.ood_stats.version != declared:
        version = entry.ood_stats.version
        entry.ood_stats = None
        return f"the ood statistics file is version {version}, the card says {declared}"
    try:
        names = [entry.output_name, entry.card.ood.output]
        feats = np.asarray(entry.session.run(names, {entry.input_name: probe})[1])
        entry.ood_score(feats[0], probe[0])
    except Exception as exc:  # shapes that disagree, a graph that cannot run the output
        return f"ood self-test failed ({type(exc).__name__})"
    return None


def build_registry(
    settings: Settings,
    table: Sequence[Endpoint] | None = None,
    alone_now: Callable[[], bool] | None = None,
) -> Registry:
    """Discover and load every model under ``settings.model_dir``, checked against ``table``;
    ``alone_now`` as for ``load_entry`` (the service passes its limiter's)."""
    registry = Registry()
    root = settings.model_dir
    if not root.is_dir():
        log.error("model dir missing", extra={"event": "registry", "reason": "model dir missing"})
        return registry
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = model_dir.name
        version, reason = _choose_version(model_dir, settings.model_versions.get(name))
        if version is None:
            entry = ModelEntry(name=name, version=None, path=None, reason=reason)
        else:
            entry = load_entry(name, model_dir / version, settings, table, alone_now)
        registry.models[name] = entry
        log.info(
            "model ready" if entry.ready else "model not ready",
            extra={
                "event": "model_load",
                "model": name,
                "version": entry.version,
                "reason": entry.reason,
                "runtime": entry.runtime,
                "runtime_reason": entry.runtime_reason,
            },
        )
    return registry
