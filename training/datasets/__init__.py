"""Loaders, one per data-set layout: decode through ``app.imaging``, split by patient."""

from __future__ import annotations

import numpy as np


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights ``n / (2 * n_class)`` (Keras ``class_weight``); 1.0 for an absent class."""
    labels = np.asarray(y).astype(np.int64)
    n = float(labels.size)
    return {c: (n / (2.0 * k) if (k := int(np.sum(labels == c))) else 1.0) for c in (0, 1)}
