"""medserve: REST inference service for medical images (FastAPI + onnxruntime, no TensorFlow)."""

__version__ = "0.1.0"
