"""The shared core of every task: one fit loop (with export-from-checkpoint), the two task
kinds (``classification``, ``segmentation``), calibration, the publish sequence (staging →
ONNX parity → describe → card → hooks → move into place), one ``evaluate_artifact``, one
``split_by_group``, one ``limit_threads``, progress reporting and the task registry."""
