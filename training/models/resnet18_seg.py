"""ResNet-18 encoder + transposed-convolution decoder for binary segmentation, sizes as arguments.

Encoder (He et al., 2016, ResNet-18): a 7×7 stride-2 convolution + batch norm + ReLU stem, a
3×3 stride-2 max-pool, then ``len(blocks)`` residual stages of ``blocks[i]`` basic blocks (two
3×3 convolutions with batch norm, identity shortcut, or a projection where the stage halves the
resolution); stage ``i`` has ``base_filters * 2**i`` filters. The reference is
``base_filters=64, blocks=(2, 2, 2, 2)`` (11.2 M encoder parameters); the CPU demo is slimmer.

Where a block halves the resolution its shortcut is, by default (``shortcut_pool``), a 2×2
average pool followed by a 1×1 convolution (the "ResNet-D" shortcut, He et al. 2019) instead of
the original 1×1 stride-2 convolution. Besides using every pixel, this avoids TensorFlow's
oneDNN CPU kernel for the filter gradient of 1×1 stride-2 convolutions, which in this build
fails intermittently ("could not create a primitive descriptor for the reorder primitive", or
heap corruption that aborts the process). ``shortcut_pool=False`` is the original.

Decoder: one 3×3 stride-2 transposed convolution (+ batch norm + ReLU) per halving of the
encoder, so the output is at the FULL resolution of the model input. With ``skips`` each
up-sampled map is concatenated with the encoder map of the same size (U-Net style) and mixed by
a 3×3 convolution; at the last level that "encoder map" is the input image itself
(``input_skip``), which keeps borders sharp. The output is ONE LOGIT PER PIXEL, (N, H, W, 1),
no sigmoid (card ``output.activation: "logit"``). The logits layer starts with bias
``output_bias`` (−4: a prior tumour probability of about 2 %, as in Lin et al. 2017), so the
first epochs are not spent learning that almost every pixel is background. Batch norm uses a
momentum of 0.9 (Keras: 0.99) so its moving statistics follow the weights within an epoch of a
few hundred frames.

H and W must be divisible by ``2 ** (len(blocks) + 1)`` (32 for four stages).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def _conv(filters: int, kernel: int, name: str, strides: int = 1) -> layers.Conv2D:
    return layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


BN_MOMENTUM = 0.9  # Keras' 0.99 needs many hundred steps before validation is meaningful


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)


def _bn_relu(x: keras.KerasTensor, name: str, relu: bool = True) -> keras.KerasTensor:
    x = _bn(f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def _basic_block(
    x: keras.KerasTensor, filters: int, stride: int, name: str, shortcut_pool: bool = True
) -> keras.KerasTensor:
    """Two 3×3 convolutions with batch norm; identity or 1×1 projection shortcut (after a 2×2
    average pool where the block halves the resolution, with ``shortcut_pool``)."""
    shortcut = x
    y = _bn_relu(_conv(filters, 3, f"{name}_conv1", stride)(x), f"{name}_1")
    y = _bn_relu(_conv(filters, 3, f"{name}_conv2")(y), f"{name}_2", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        proj_stride = stride
        if shortcut_pool and stride != 1:
            shortcut = layers.AveragePooling2D(stride, name=f"{name}_proj_pool")(x)
            proj_stride = 1
        shortcut = _conv(filters, 1, f"{name}_proj", proj_stride)(shortcut)
        shortcut = _bn(f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build(
    input_shape: tuple[int, int, int] = (192, 256, 1),
    *,
    base_filters: int = 64,
    blocks: Sequence[int] = (2, 2, 2, 2),
    skips: bool = True,
    input_skip: bool = True,
    decoder_min_filters: int = 8,
    shortcut_pool: bool = True,
    output_bias: float = -4.0,
    name: str = "resnet18_seg",
) -> keras.Model:
    """(N, H, W, C) float32 in [0, 1] → (N, H, W, 1) per-pixel logits."""
    h, w = input_shape[0], input_shape[1]
    factor = 2 ** (len(blocks) + 1)
    if h % factor or w % factor:
        raise ValueError(f"input height and width must be divisible by {factor}, got {h}x{w}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = _bn_relu(_conv(base_filters, 7, "stem_conv", 2)(inputs), "stem")
    features = [x]  # H/2
    x = layers.MaxPool2D(3, strides=2, padding="same", name="stem_pool")(x)
    for i, n in enumerate(blocks):
        filters = base_filters * 2**i
        for b in range(n):
            stride = 2 if (i > 0 and b == 0) else 1
            x = _basic_block(x, filters, stride, f"stage{i + 1}_block{b + 1}", shortcut_pool)
        features.append(x)  # H/4, H/8, H/16, H/32
    encoder_maps = features[:-1][::-1]  # deepest first: H/16 ... H/2
    for k in range(len(blocks) + 1):
        target = encoder_maps[k] if k < len(encoder_maps) else None
        width = int(target.shape[-1]) if target is not None else base_filters // 2
        filters = max(decoder_min_filters, width)
        x = layers.Conv2DTranspose(
            filters,
            3,
            strides=2,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            name=f"up{k + 1}_tconv",
        )(x)
        x = _bn_relu(x, f"up{k + 1}")
        skip = target if target is not None else (inputs if input_skip else None)
        if skips and skip is not None:
            x = layers.Concatenate(name=f"up{k + 1}_cat")([x, skip])
            x = _bn_relu(_conv(filters, 3, f"up{k + 1}_conv")(x), f"up{k + 1}_mix")
    outputs = layers.Conv2D(
        1, 1, bias_initializer=keras.initializers.Constant(output_bias), name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name)
