"""medserve: REST inference service for medical images (FastAPI + onnxruntime, no TensorFlow)."""

import os
import sys

__version__ = "0.1.0"

# onnxruntime's Linux wheels carry Microsoft 1DS telemetry: without this, loading a model writes
# a device id under ~/.cache/Microsoft/DeveloperTools and a session file into $TMPDIR, and events
# are queued for upload. A hospital service sends nothing anywhere, so it is off before
# onnxruntime is first imported (this package is imported before any of its modules).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# `import openvino` imports its model-conversion tools (openvino.tools.ovc), which then send a
# Google Analytics event ("ov import") and write a client id and counters under ~/intel unless
# the user opted out, or unless the openvino_telemetry package cannot be imported: then they use
# their own no-op stub. The service converts nothing and sends nothing: the package is made
# unimportable in this process before openvino is first imported (app.runtime, lazily).
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]

# NumPy's OpenBLAS keeps its worker threads spinning for a while after each matrix product (the
# CT preprocessing resizes planes by matrix products). On a small machine they steal the cores
# onnxruntime runs on next: measured on 2 cores, the CT inference stage took 47 ms after
# preprocessing against a 36 ms floor, and 35 ms with one BLAS thread. onnxruntime has its own
# thread pool; NumPy gets one thread unless the operator says otherwise.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
