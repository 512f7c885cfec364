"""The runtime a model's graph runs on: onnxruntime's CPU provider, or OpenVINO's CPU plugin.

The registry always builds the onnxruntime session (it verifies the graph, runs the card's
self-test and keeps the graph's metadata: input and output names, shapes, types); a model for
which OpenVINO is chosen (``MEDSERVE_RUNTIME``, ``MEDSERVE_MODEL_RUNTIMES``) is also compiled by
OpenVINO from the same, hash-checked bytes, and serves on it only if its outputs on the
self-test input agree with onnxruntime's within ``PARITY_ATOL``; otherwise, or when the
``openvino`` package is missing or cannot compile the graph, it stays on onnxruntime with the
reason. Either way the entry's ``runner`` answers ``run(output_names, feeds)`` as
``onnxruntime.InferenceSession.run`` does (outputs in the order asked, all of them in graph
order for None), so every path (uploads, explain, OOD features, V2, PACS jobs, batch) runs on
the one runtime the model reports.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Protocol

import numpy as np

log = logging.getLogger("medserve.runtime")

Runtime = Literal["onnxruntime", "openvino"]
RuntimeSetting = Literal["auto", "onnxruntime", "openvino"]

# The models ``auto`` runs on OpenVINO: where it was faster than onnxruntime's CPU provider, in
# f32, in every run, idle and with a core busy. bench/options.py, the registry's own runners side
# by side (2 shared cores, 2 threads, one inference at a time, medians of 7 interleaved rounds;
# BENCHMARKS.md, "Options measured"), onnxruntime -> OpenVINO, four runs on this machine:
#   covid_ct            20.3 -> 11.5 ms (1.76x; one core busy 35.1 -> 25.1 ms, 1.40x; the whole
#                       CT upload 23.4 -> 19.2 ms); other runs 1.37x, 1.42x, 1.51x. Adopted.
#   phantom_tumor_xray  1.14x (busy 1.05x; the whole frame 12.0 -> 23.4 ms, 0.51x); other runs
#                       1.48x idle, 0.53x and 0.60x with other processes on the cores. Not adopted.
#   brain_tumor_mri     0.47x (busy 0.40x); other runs 1.17x, 0.61x, 0.69x. Not adopted.
#   pneumonia_xray      1.22x of 0.7 ms (busy 1.05x); others 0.91x-1.16x. Not adopted.
# A model on OpenVINO also keeps its onnxruntime session (the graph's metadata): covid_ct alone
# 207 -> 275 MB resident, plus 23 MB for OpenVINO's library. Any model not named here runs on
# onnxruntime under ``auto``.
AUTO_OPENVINO: frozenset[str] = frozenset({"covid_ct"})

PARITY_ATOL = 1e-4  # largest absolute difference from onnxruntime allowed on any output


class Runner(Protocol):
    """What runs a graph: ``onnxruntime.InferenceSession`` or an ``OpenVinoRunner``."""

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[Any]: ...


class OpenVinoRunner:
    """An OpenVINO compiled model behind onnxruntime's ``run``: outputs by the names onnxruntime
    reports, in the order asked (graph order for None). Thread-safe: each call takes an idle
    infer request (a new one when all are busy) and puts it back, so concurrent calls never
    share one; the outputs are copies, not the request's buffers."""

    def __init__(self, compiled: Any, input_names: Sequence[str], output_names: Sequence[str]):
        self._compiled = compiled
        for name in input_names:  # a KeyError-like RuntimeError if OpenVINO named it otherwise
            compiled.input(name)
        self._outputs = {name: compiled.output(name) for name in output_names}
        self._order = list(output_names)
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[Any]:
        names = self._order if output_names is None else output_names
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            result = request.infer(dict(input_feed))
            return [np.asarray(result[self._outputs[name]]) for name in names]
        finally:
            self._idle.put(request)


# onnxruntime's intra-op threads, when a run is the only inference in flight, spin between the
# graph's parallel sections instead of sleeping on a futex, and stop when the run returns
# (``registry.session_options(alone=True)``). Measured on 2 cores with bench/ab.py (two servers
# side by side, requests alternating, one at a time), twin against one sleeping session: MRI
# slice 14.3 -> 13.2 ms and 15.7 -> 14.9 ms, phantom DICOM frame 15.5 -> 14.6 ms and 17.7 ->
# 16.4 ms, phantom PNG 0.98x, the films unchanged (their model runs for 1 ms); requests/s at
# concurrency 2 0.97-1.03x. The same sessions spinning always gave 12-21 % fewer requests/s at
# concurrency 2: the spinning threads take the core the other request decodes on.
class AloneAwareRunner:
    """Two onnxruntime sessions of one graph: ``alone`` (spinning threads) when ``alone_now()``
    says this inference is the only one in flight, else ``shared`` (threads that sleep between
    runs and sections). Both run the same graph with the same threads and optimisation, so the
    outputs are the same; ``runs`` counts which one ran (for tests and diagnosis: not locked,
    so concurrent runs may miss a count). With ``caller_cpu`` (``CorePlan.caller``: the
    ``alone`` session's intra-op threads are pinned to the other cores of the plan) a run
    alone holds its calling thread on that core, and gives the thread its own cores back
    after."""

    def __init__(
        self,
        shared: Runner,
        alone: Runner,
        alone_now: Callable[[], bool],
        caller_cpu: int | None = None,
    ) -> None:
        self.shared = shared
        self.alone = alone
        self._alone_now = alone_now
        self.caller_cpu = caller_cpu
        self.runs = {"alone": 0, "shared": 0}

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]
    ) -> list[Any]:
        if not self._alone_now():
            self.runs["shared"] += 1
            return self.shared.run(output_names, input_feed)
        self.runs["alone"] += 1
        if self.caller_cpu is None:
            return self.alone.run(output_names, input_feed)
        own = os.sched_getaffinity(0)  # this thread's (pid 0: the calling thread on Linux)
        try:
            os.sched_setaffinity(0, {self.caller_cpu})
        except OSError:  # the core was taken from the process since load: run unpinned
            return self.alone.run(output_names, input_feed)
        try:
            return self.alone.run(output_names, input_feed)
        finally:
            with contextlib.suppress(OSError):  # cores gone meanwhile: the thread stays held
                os.sched_setaffinity(0, own)


# Why a run alone pins its threads (``Settings.ort_pin_when_alone``): the phantom frame model's
# run took 3.1-4.0 ms in some uploads and 9-11 ms in others, half of them in a bench/hospital.py
# row (2026-12-06, 2 cores). In the slow runs /proc showed a core idle during the run and both
# threads (the caller and onnxruntime's one intra-op thread, spinning) using more CPU time
# than the whole run in the fast ones: they shared one core until the scheduler moved one of
# them, a tick or more later. Pinned (the caller to one core, the intra-op thread to the
# other) no run in that row took over 7 ms (median 3.9 ms), the row's e2e / reference 1.43 ->
# 1.19x in the same harness.
@dataclass(frozen=True)
class CorePlan:
    """Where a run alone puts its threads: the caller on ``caller``, onnxruntime's intra-op
    pool threads one on each of ``pool`` (CPU numbers as the kernel counts them)."""

    caller: int
    pool: tuple[int, ...]

    def ort_affinities(self) -> str:
        """``session.intra_op_thread_affinities``: one entry per pool thread, ``;``-separated,
        each processor counted from 1 (onnxruntime's numbering: "2" is CPU 1)."""
        return ";".join(str(cpu + 1) for cpu in self.pool)


def core_plan(threads: int, cpus: set[int] | None = None) -> CorePlan | None:
    """A core of its own for the caller and each of the ``threads - 1`` intra-op threads:
    ``cpus`` (default: the cores this thread may use), lowest first, when the model's threads
    are as many as those cores. None for one thread; None for fewer cores (pinned threads
    would share one) and for more (threads set below the cores, as for several worker
    processes, which would all pin to the same lowest cores)."""
    allowed = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if threads < 2 or len(allowed) != threads:
        return None
    return CorePlan(allowed[0], tuple(allowed[1:]))


def requested_runtime(
    name: str, runtime: RuntimeSetting, per_model: Mapping[str, RuntimeSetting]
) -> tuple[RuntimeSetting, Runtime]:
    """(the setting that applies to ``name``, the runtime it asks for)."""
    setting = per_model.get(name, runtime)
    if setting == "auto":
        return setting, "openvino" if name in AUTO_OPENVINO else "onnxruntime"
    return setting, setting


@lru_cache(maxsize=1)
def _openvino_core() -> tuple[Any, str | None]:
    """(OpenVINO's Core, None) or (None, why not): imported once per process, logged once."""
    try:
        import openvino as ov
    except ImportError as exc:
        reason = f"openvino is not importable ({type(exc).__name__}: {exc})"
        log.info("openvino unavailable", extra={"event": "runtime", "reason": reason})
        return None, reason
    return ov.Core(), None


def openvino_config(threads: int) -> dict[str, Any]:
    """f32 (the CPU plugin may pick bf16 by itself on a CPU that has it), the service's
    threads, one stream and the latency hint; no pinning: decoding shares the cores."""
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }


def compile_openvino(
    model_bytes: bytes, threads: int, input_names: Sequence[str], output_names: Sequence[str]
) -> tuple[OpenVinoRunner | None, str | None]:
    """(runner, None) or (None, why not), compiled from the model bytes the registry read and
    hash-checked (never from the file again)."""
    core, reason = _openvino_core()
    if core is None:
        return None, reason
    try:
        model = core.read_model(io.BytesIO(model_bytes))
        compiled = core.compile_model(model, "CPU", openvino_config(threads))
        return OpenVinoRunner(compiled, input_names, output_names), None
    except Exception as exc:  # OpenVINO raises RuntimeError and others for what it cannot take
        return None, f"openvino could not compile the model ({type(exc).__name__})"


def max_difference(
    reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]
) -> tuple[float, str | None]:
    """(largest absolute difference over all outputs, None) or (inf, why they cannot be
    compared): shapes must agree and every value be finite where the reference's is."""
    worst = 0.0
    for index, (a, b) in enumerate(zip(reference, candidate, strict=True)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return float("inf"), f"output {index} has shape {list(b.shape)}, not {list(a.shape)}"
        if a.size:
            diff = np.abs(a - b)
            if not np.isfinite(diff).all():
                return float("inf"), f"output {index} is not finite"
            worst = max(worst, float(diff.max()))
    return worst, None


@dataclass
class Choice:
    """The runner a model serves on, its runtime, why it is not the one asked for (None when
    it is), and the largest difference from onnxruntime at load (None without a check)."""

    runner: Runner
    runtime: Runtime
    reason: str | None = None
    parity: float | None = None


def choose_runner(
    name: str,
    session: Runner,
    wanted: Runtime,
    setting: RuntimeSetting,
    model_bytes: bytes,
    threads: int,
    input_names: Sequence[str],
    output_names: Sequence[str],
    feeds: Mapping[str, np.ndarray],
) -> Choice:
    """The runner for one model: ``session`` (onnxruntime) unless OpenVINO is wanted, compiles
    and matches onnxruntime on ``feeds`` within ``PARITY_ATOL`` on every output."""
    if wanted == "onnxruntime":
        return Choice(session, "onnxruntime")
    runner, reason = compile_openvino(model_bytes, threads, input_names, output_names)
    if runner is None:
        assert reason is not None
        if setting == "auto" and reason.startswith("openvino is not importable"):
            return Choice(session, "onnxruntime")  # quietly: logged once by _openvino_core
        return _fall_back(name, session, reason)
    try:
        reference = session.run(list(output_names), feeds)
        candidate = runner.run(list(output_names), feeds)
    except Exception as exc:
        return _fall_back(name, session, f"openvino parity run failed ({type(exc).__name__})")
    diff, problem = max_difference(reference, candidate)
    if problem is not None:
        return _fall_back(name, session, f"openvino {problem}")
    if not diff <= PARITY_ATOL:
        reason = f"openvino outputs differ from onnxruntime by {diff:.2g} (> {PARITY_ATOL:g})"
        return _fall_back(name, session, reason, diff)
    return Choice(runner, "openvino", parity=diff)


def _fall_back(name: str, session: Runner, reason: str, parity: float | None = None) -> Choice:
    reason = f"{reason}; runs on onnxruntime"
    log.warning(
        "model runtime fallback",
        extra={"event": "runtime", "model": name, "runtime": "onnxruntime", "reason": reason},
    )
    return Choice(session, "onnxruntime", reason, parity)
