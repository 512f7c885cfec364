"""EfficientNetB0 with optional pretrained weights: frozen base, then fine-tuning.

``weights``: ``"imagenet"`` (downloads, needs internet), a path to a weights file for the
no-top base (e.g. ``efficientnetb0_notop.h5``), or ``None``/``"none"`` (from scratch). With
pretrained weights the base is built frozen (``trainable=False``) and named ``backbone``; the
trainer's fine-tuning phase unfreezes it (BatchNorm layers stay frozen) at a lower learning rate.

Keras' EfficientNet rescales internally and expects [0, 255] input, so a ``Rescaling(255)`` sits
in front of it; a gray input is repeated to three channels for the ImageNet stem.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers


def build(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    *,
    weights: str | None = None,
    dropout: float = 0.3,
    name: str = "pneumonia_efficientnetb0",
) -> keras.Model:
    """(N, H, W, C) float32 in [0, 1] → (N, 1) logit."""
    if weights is not None and weights.lower() == "none":
        weights = None
    pretrained = weights is not None
    h, w, c = input_shape
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(255.0, name="to_255")(inputs)
    base_channels = c
    if pretrained and c == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        base_channels = 3
    base = keras.applications.EfficientNetB0(
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
        input_shape=(h, w, base_channels),
        pooling="avg",
    )
    if pretrained and weights != "imagenet":
        base.load_weights(str(Path(weights)))  # type: ignore[arg-type]
    base.name = "backbone"
    base.trainable = not pretrained
    x = base(x, training=False) if pretrained else base(x)
    x = layers.Dropout(dropout, name="head_drop")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=name)
