"""The keras.io "Pneumonia Classification on TPU" CNN, with sizes as arguments.

Two plain 3×3 convolutions, then conv blocks (two SeparableConv2D + BatchNorm + MaxPool) with
dropout on the deepest two, flatten, dense blocks (Dense + BatchNorm + Dropout), one logit.
``width`` scales every filter and unit count (1.0 = the reference: 16-32-64-128-256 filters,
512-128-64 units; 0.5 is the slim demo). The reference's ``Rescaling(1/255)`` is left out: the
inputs already arrive in [0, 1] from ``app.imaging.preprocess``.
"""

from __future__ import annotations

import keras
from keras import layers


def _conv_block(
    filters: int, x: keras.KerasTensor, name: str, momentum: float
) -> keras.KerasTensor:
    x = layers.SeparableConv2D(filters, 3, activation="relu", padding="same", name=f"{name}_sep1")(
        x
    )
    x = layers.SeparableConv2D(filters, 3, activation="relu", padding="same", name=f"{name}_sep2")(
        x
    )
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.MaxPool2D(name=f"{name}_pool")(x)


def _dense_block(
    units: int, dropout: float, x: keras.KerasTensor, name: str, momentum: float
) -> keras.KerasTensor:
    x = layers.Dense(units, activation="relu", name=f"{name}_dense")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.Dropout(dropout, name=f"{name}_drop")(x)


def build(
    input_shape: tuple[int, int, int] = (180, 180, 3),
    *,
    width: float = 1.0,
    blocks: int = 4,
    dense_units: tuple[int, ...] = (512, 128, 64),
    dropouts: tuple[float, ...] = (0.7, 0.5, 0.3),
    bn_momentum: float = 0.9,
    name: str = "pneumonia_cnn",
) -> keras.Model:
    """(N, H, W, C) float32 in [0, 1] → (N, 1) logit. H and W divisible by 2**(blocks+1) lose
    nothing at the borders (not required).

    ``bn_momentum`` is 0.9, not Keras' 0.99: the ReLU outputs here have variances of 1e-3 to
    1e-5, and with a few dozen steps per epoch the 0.99 moving variance (initialised at 1) is
    still orders of magnitude too large after ten epochs, so inference-mode activations shrink
    block after block and every image gets the same logit.
    """

    def f(n: int) -> int:
        return max(4, round(n * width))

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(f(16), 3, activation="relu", padding="same", name="stem_conv1")(inputs)
    x = layers.Conv2D(f(16), 3, activation="relu", padding="same", name="stem_conv2")(x)
    x = layers.MaxPool2D(name="stem_pool")(x)
    for i in range(blocks):
        x = _conv_block(f(32 * 2**i), x, name=f"block{i + 1}", momentum=bn_momentum)
        if i >= blocks - 2:
            x = layers.Dropout(0.2, name=f"block{i + 1}_drop")(x)
    x = layers.Flatten(name="flatten")(x)
    for i, (units, rate) in enumerate(zip(dense_units, dropouts, strict=True)):
        x = _dense_block(f(units), rate, x, name=f"fc{i + 1}", momentum=bn_momentum)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name=name)
