"""The keras.io "3D image classification from CT scans" CNN, with sizes as arguments.

Four blocks of Conv3D (3×3×3, ReLU) → MaxPool3D (2) → BatchNorm with 64-64-128-256 filters,
global average pooling, Dense(512, ReLU), Dropout, and ONE logit (``Dense(1)``, no sigmoid:
the service applies ``sigmoid(logit / T)`` from the card). ``width`` scales every filter and
unit count (1.0 = the reference). The reference convolves with ``valid`` padding on
128×128×64 inputs; ``padding="same"`` (the default here) keeps the smaller CPU-sized inputs
(e.g. 32×64×64) from shrinking to nothing after four blocks. Batch norm keeps its moving
statistics with momentum 0.9 (Keras: 0.99): a few hundred studies in batches of 8 make only
~35 steps per epoch, and with 0.99 the inference-time statistics still lag the training ones
after several epochs — validation then sees shifted activations (every study called positive)
while training looks fine.

Input: (N, D, H, W, C) float32 in [0, 1] (NDHWC), as ``app.imaging.preprocess.preprocess_volume``
makes it; D, H, W should be divisible by 16 for every pooling to be exact (not required).
"""

from __future__ import annotations

import keras
from keras import layers

REFERENCE_FILTERS = (64, 64, 128, 256)


def build(
    input_shape: tuple[int, int, int, int] = (64, 128, 128, 1),
    *,
    width: float = 1.0,
    filters: tuple[int, ...] = REFERENCE_FILTERS,
    dense_units: int = 512,
    dropout: float = 0.3,
    padding: str = "same",
    bn_momentum: float = 0.9,
    name: str = "covid_cnn3d",
) -> keras.Model:
    """(N, D, H, W, C) → (N, 1) logit."""

    def f(n: int) -> int:
        return max(4, round(n * width))

    inputs = keras.Input(shape=input_shape, name="volume")
    x = inputs
    for i, n in enumerate(filters, start=1):
        x = layers.Conv3D(f(n), 3, activation="relu", padding=padding, name=f"block{i}_conv")(x)
        x = layers.MaxPool3D(2, name=f"block{i}_pool")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{i}_bn")(x)
    x = layers.GlobalAveragePooling3D(name="gap")(x)
    x = layers.Dense(f(dense_units), activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="fc_drop")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=name)
