"""DenseNet121 from scratch (``weights=None``), global average pooling, dropout, one logit.

The CheXNet-style backbone. Trained from random initialisation, so inputs stay in [0, 1] (no
ImageNet normalisation to match). Needs H, W ≥ 32.
"""

from __future__ import annotations

import keras
from keras import layers


def build(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    *,
    dropout: float = 0.3,
    name: str = "pneumonia_densenet121",
) -> keras.Model:
    """(N, H, W, C) float32 in [0, 1] → (N, 1) logit; any C (built without pretrained weights)."""
    inputs = keras.Input(shape=input_shape, name="image")
    base = keras.applications.DenseNet121(
        include_top=False, weights=None, input_shape=input_shape, pooling="avg"
    )
    base.name = "backbone"
    x = base(inputs)
    x = layers.Dropout(dropout, name="head_drop")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=name)
