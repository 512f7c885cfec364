"""Export a trained Keras model as a service artifact: ``OUT/<name>/<version>/``.

Generic for every slice. The artifact is assembled in a staging folder and moved into place only
when complete and verified, so a failed export never leaves a half-written version folder:

- ``model.onnx`` (``model.export(format="onnx")``), checked against Keras on real and random
  batches: more than ``ONNX_ATOL`` + ``ONNX_RTOL`` x the largest output of the input apart and
  nothing is written (``ExportMismatch``);
- ``saved_model/`` (``format="tf_saved_model"``; git-ignored);
- the self-test (``make_self_test``): the ONNX output on the seeded input the registry
  regenerates at load.

The staging folder and the card are ``training.core.publish`` and ``training.core.card``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import SelfTest

ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-5
SELF_TEST_SEED = 1234
SELF_TEST_VALUES = 8


class ExportMismatch(RuntimeError):
    """Keras and onnxruntime disagree on the same batch: the artifact is refused."""


def onnx_session(path: Path) -> Any:
    """An onnxruntime session configured like the service's (same graph optimisations)."""
    import onnxruntime as ort

    from app.config import Settings
    from app.registry import session_options

    return ort.InferenceSession(
        str(path), sess_options=session_options(Settings()), providers=["CPUExecutionProvider"]
    )


def onnx_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name
    return lambda batch: np.asarray(session.run(None, {name: np.asarray(batch, np.float32)})[0])


def tolerance_excess(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> float:
    """The largest ``|ref - got| / (atol + rtol * scale)`` of a batch (axis 0), ``scale`` the
    largest ``|ref|`` of each input's output (see ``export_onnx``); above 1 is a mismatch."""
    diff = np.abs(ref - got)
    scale = np.abs(ref).reshape(len(ref), -1).max(axis=1)
    scale = scale.reshape((-1,) + (1,) * (ref.ndim - 1))
    return float(np.max(diff / (atol + rtol * scale)))


def export_onnx(
    model: Any,
    path: Path,
    batches: Sequence[np.ndarray],
    atol: float = ONNX_ATOL,
    rtol: float = ONNX_RTOL,
) -> float:
    """Write ``model`` to ``path`` as ONNX and check it against Keras on every batch.

    Every output must satisfy ``|keras - onnx| <= atol + rtol * scale``, ``scale`` the largest
    ``|keras|`` of its input (one value for a classifier: its own magnitude; a segmenter's
    whole map). Float32 rounding grows with the magnitude of the activations, not of the one
    output: a segmenter's confident pixels reach |logit| ~ 20-30, and a pixel on the mask's
    edge, a logit near 0 summed from such terms, carries their rounding (phantom_tumor_xray
    1.3.0: 1.2e-4 at a logit of 0.38 in maps of -17..28, the same with onnxruntime's graph
    optimisations off, the 99.99th percentile 5e-5). Returns the largest absolute difference;
    raises ``ExportMismatch`` (and deletes the file) when any output is outside the tolerance.
    """
    first = np.asarray(batches[0], np.float32)
    model(first, training=False)  # build every layer on a real batch before tracing
    model.export(str(path), format="onnx", verbose=False)
    run = onnx_runner(onnx_session(path))
    worst, excess = 0.0, 0.0
    for batch in batches:
        batch = np.asarray(batch, np.float32)
        ref = np.asarray(model.predict(batch, verbose=0), np.float64)
        got = np.asarray(run(batch), np.float64)
        if ref.shape != got.shape:
            path.unlink(missing_ok=True)
            raise ExportMismatch(f"output shapes differ: keras {ref.shape}, onnx {got.shape}")
        worst = max(worst, float(np.max(np.abs(ref - got))))
        excess = max(excess, tolerance_excess(ref, got, atol, rtol))
    if not np.isfinite(worst) or excess > 1.0:
        path.unlink(missing_ok=True)
        raise ExportMismatch(
            f"keras and onnxruntime outputs differ by {worst:.3g}, {excess:.2f}x the tolerance "
            f"(atol {atol:g} + rtol {rtol:g} * |keras|)"
        )
    return worst


def make_self_test(
    session: Any, input_shape: Sequence[int | None], seed: int = SELF_TEST_SEED
) -> SelfTest:
    """Run the seeded self-test input (batch 1) through ONNX and record what came out."""
    probe = SelfTest(seed=seed, low=0.0, high=1.0, expected_first=[0.0], expected_mean=0.0)
    shape = [1 if s is None else int(s) for s in input_shape]
    out = onnx_runner(session)(probe.make_input(shape)).astype(np.float64).ravel()
    return SelfTest(
        seed=seed,
        low=0.0,
        high=1.0,
        expected_first=[float(v) for v in out[:SELF_TEST_VALUES]],
        expected_mean=float(out.mean()),
        atol=1e-3,
    )


def framework_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def code_revision() -> str | None:
    """``git rev-parse HEAD`` of the source tree (None outside git); ``+dirty`` if modified."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def export_saved_model(model: Any, staging_dir: Path) -> Path:
    path = staging_dir / "saved_model"
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path
