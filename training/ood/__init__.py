"""Out-of-distribution check for exported models (issue 20): graph surgery that appends the
pooled features as an extra ONNX output, the in-distribution statistics and their threshold,
the OOD set made at export, and ``add_ood`` (the publish hook) / ``python -m training.ood
upgrade`` (committed artifacts)."""
