"""U-Net (Ronneberger et al., 2015) for binary segmentation, with its sizes as arguments.

``depth`` down-samplings (the reference has four levels: 64-128-256-512 filters and a
1024-filter bottleneck); each level is two 3×3 convolutions (+ batch norm) + ReLU, max-pooling
down, a 2×2 transposed convolution (or bilinear up-sampling + 1×1 convolution) up, and the
skip connection concatenated. ``base_filters`` sets the first level (doubling per level; 64 is
the reference, 16 or 8 are the slim CPU demos). Dropout acts on the bottleneck and the deepest
encoder level. The output is ONE LOGIT PER PIXEL, (N, H, W, 1), no sigmoid: the service applies
it (card ``output.activation: "logit"``).
"""

from __future__ import annotations

from typing import Literal

import keras
from keras import layers


def _double_conv(
    x: keras.KerasTensor, filters: int, batch_norm: bool, name: str
) -> keras.KerasTensor:
    for k in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"{name}_conv{k}",
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{k}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{k}")(x)
    return x


def build(
    input_shape: tuple[int, int, int] = (256, 256, 1),
    *,
    depth: int = 4,
    base_filters: int = 64,
    batch_norm: bool = True,
    dropout: float = 0.0,
    upsampling: Literal["transpose", "bilinear"] = "transpose",
    name: str = "unet",
) -> keras.Model:
    """(N, H, W, C) float32 in [0, 1] → (N, H, W, 1) per-pixel logits.

    H and W must be divisible by ``2**depth`` (checked), so every skip connection lines up.
    """
    height, width = input_shape[0], input_shape[1]
    if depth < 1:
        raise ValueError("depth must be at least 1")
    if height % 2**depth or width % 2**depth:
        raise ValueError(f"input {height}x{width} is not divisible by 2**depth = {2**depth}")
    if upsampling not in ("transpose", "bilinear"):
        raise ValueError(f"unknown upsampling {upsampling!r}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _double_conv(x, base_filters * 2**level, batch_norm, f"enc{level + 1}")
        if dropout > 0 and level == depth - 1:
            x = layers.Dropout(dropout, name=f"enc{level + 1}_drop")(x)
        skips.append(x)
        x = layers.MaxPool2D(name=f"enc{level + 1}_pool")(x)
    x = _double_conv(x, base_filters * 2**depth, batch_norm, "bottleneck")
    if dropout > 0:
        x = layers.Dropout(dropout, name="bottleneck_drop")(x)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        tag = f"dec{level + 1}"
        if upsampling == "transpose":
            x = layers.Conv2DTranspose(filters, 2, strides=2, name=f"{tag}_up")(x)
        else:
            x = layers.UpSampling2D(interpolation="bilinear", name=f"{tag}_up")(x)
            x = layers.Conv2D(filters, 1, name=f"{tag}_up_proj")(x)
        x = layers.Concatenate(name=f"{tag}_concat")([x, skips[level]])
        x = _double_conv(x, filters, batch_norm, tag)
    outputs = layers.Conv2D(1, 1, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
