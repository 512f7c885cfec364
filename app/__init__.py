"""medserve: REST inference service for medical images (FastAPI + onnxruntime, no TensorFlow)."""

import os

__version__ = "0.1.0"

# onnxruntime's Linux wheels carry Microsoft 1DS telemetry: without this, loading a model writes
# a device id under ~/.cache/Microsoft/DeveloperTools and a session file into $TMPDIR, and events
# are queued for upload. A hospital service sends nothing anywhere, so it is off before
# onnxruntime is first imported (this package is imported before any of its modules).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
