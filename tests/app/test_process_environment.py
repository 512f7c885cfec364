"""Importing the service fixes the process-wide defaults it depends on before NumPy or
onnxruntime load, and leaves an operator's explicit choice alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import app, os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['ORT_DISABLE_TELEMETRY'])"
)


def _probe(**extra: str) -> list[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_NUM_THREADS", "ORT_DISABLE_TELEMETRY")
    }
    env.update(extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_defaults_are_one_blas_thread_and_no_telemetry() -> None:
    assert _probe() == ["1", "1"]


@pytest.mark.parametrize("threads", ["2", "4"])
def test_an_operator_setting_is_kept(threads: str) -> None:
    assert _probe(OPENBLAS_NUM_THREADS=threads)[0] == threads
