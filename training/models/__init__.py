"""Keras builders, one architecture per module, selectable by name (``--arch``).

Every builder is ``build(input_shape=(H, W, C), **options) -> keras.Model`` and returns a model
whose output is ONE LOGIT per image (``Dense(1)``, no activation): the sigmoid, and the
temperature, are applied by the service from the model card.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

ARCHITECTURES = {
    "cnn": "training.models.cnn",
    "densenet121": "training.models.densenet121",
    "efficientnetb0": "training.models.efficientnetb0",
}
DEFAULT_ARCH = "cnn"


def get_builder(arch: str) -> Callable[..., Any]:
    """The ``build`` function of ``arch`` (imported lazily: Keras is slow to import)."""
    try:
        module = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(
            f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None
    return importlib.import_module(module).build  # type: ignore[no-any-return]
