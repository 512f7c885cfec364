"""The segmentation task kind, training side: splits, targets, losses, the data pipeline and
``train_segmenter`` (the shared fit loop of ``training.core.fit``).

``SegSplit(x, masks, groups, files=[])``: ``x`` (N, h, w, C) float32 in [0, 1], NHWC model
inputs made by ``app.imaging.preprocess.preprocess_image``; ``masks``: N truth masks, each
(H_i, W_i) bool at the INPUT's own resolution (what the service's mask is compared against);
``groups``: (N,) patient / sequence ids. ``target_masks(masks, (h, w))`` → (N, h, w, 1) float32:
each truth mask area-averaged (box) to the model's resolution, so sub-pixel borders survive.
``make_loss(name)`` → a loss on LOGITS (``bce``, ``dice``, ``bce_dice``); ``dice_coefficient`` /
``iou_coefficient``: Keras metrics on logits (batch-pooled, at 0.5). ``build_fn()`` returns an
uncompiled model mapping (N, h, w, C) → (N, h, w, 1) per-pixel LOGITS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.preprocess import resize2d
from training.core.fit import TrainResult, fit
from training.core.threads import limit_threads

LOSSES = ("bce", "dice", "bce_dice")


# --------------------------------------------------------------------------- data


@dataclass
class SegSplit:
    """``x``: (N, h, w, C) float32 in [0, 1] (NHWC model inputs); ``masks``: N (H_i, W_i) bool
    truth masks at each input's own resolution; ``groups``: (N,) patient/sequence ids."""

    x: np.ndarray
    masks: list[np.ndarray]
    groups: np.ndarray
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_lesion(self) -> np.ndarray:
        """(N,) int64: 1 where the truth mask is not empty."""
        return np.array([int(m.any()) for m in self.masks], dtype=np.int64)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return [(int(m.shape[0]), int(m.shape[1])) for m in self.masks]


@dataclass
class SegSplits:
    train: SegSplit
    val: SegSplit
    test: SegSplit

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def target_masks(masks: Sequence[np.ndarray], size: Sequence[int]) -> np.ndarray:
    """N (H_i, W_i) bool masks → (N, h, w, 1) float32 in [0, 1]: the covered fraction of each
    model pixel (box/area resize), the training target at the model's resolution."""
    h, w = int(size[0]), int(size[1])
    out = np.empty((len(masks), h, w, 1), dtype=np.float32)
    for i, m in enumerate(masks):
        out[i, :, :, 0] = np.clip(resize2d(np.asarray(m, np.float32), (h, w), "area"), 0.0, 1.0)
    return out


# --------------------------------------------------------------------------- Keras losses/metrics


def _soft_dice_loss(y_true: Any, logits: Any, smooth: float = 1.0) -> Any:
    """1 - soft Dice, pooled over the whole batch (empty slices only add predicted mass)."""
    from keras import ops

    p = ops.sigmoid(logits)
    t = ops.cast(y_true, p.dtype)
    inter = ops.sum(p * t)
    return 1.0 - (2.0 * inter + smooth) / (ops.sum(p) + ops.sum(t) + smooth)


def _bce_loss(y_true: Any, logits: Any) -> Any:
    import keras
    from keras import ops

    return ops.mean(keras.losses.binary_crossentropy(y_true, logits, from_logits=True))


def make_loss(name: str) -> Callable[[Any, Any], Any]:
    """``bce`` (pixel binary cross-entropy), ``dice`` (1 - soft Dice) or ``bce_dice`` (their
    sum); each takes (targets (N, h, w, 1) in [0, 1], logits (N, h, w, 1))."""
    if name == "bce":
        return _bce_loss
    if name == "dice":
        return _soft_dice_loss
    if name == "bce_dice":

        def bce_dice(y_true: Any, logits: Any) -> Any:
            return _bce_loss(y_true, logits) + _soft_dice_loss(y_true, logits)

        return bce_dice
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def _hard_overlap(y_true: Any, logits: Any) -> tuple[Any, Any, Any]:
    from keras import ops

    pred = ops.cast(logits >= 0.0, "float32")  # sigmoid >= 0.5
    truth = ops.cast(y_true >= 0.5, "float32")
    return ops.sum(pred * truth), ops.sum(pred), ops.sum(truth)


def dice_coefficient(y_true: Any, logits: Any) -> Any:
    """Hard Dice at probability 0.5, pooled over the batch (1 when both are empty)."""
    inter, p, t = _hard_overlap(y_true, logits)
    return (2.0 * inter + 1e-6) / (p + t + 1e-6)


def iou_coefficient(y_true: Any, logits: Any) -> Any:
    """Hard IoU (Jaccard) at probability 0.5, pooled over the batch (1 when both are empty)."""
    inter, p, t = _hard_overlap(y_true, logits)
    return (inter + 1e-6) / (p + t - inter + 1e-6)


dice_coefficient.__name__ = "dice"
iou_coefficient.__name__ = "iou"


@dataclass(frozen=True)
class SegTrainConfig:
    """Training options. ``monitor``/``monitor_mode`` pick the checkpoint, LR schedule and early
    stop; ``flip_lr``/``flip_ud`` are joint image+mask flips; ``intensity_jitter`` a random gain
    (1 ± j) and gamma (exp(± j)) on the image only; ``max_shift`` a joint random translation of
    up to that fraction of each side (reflected borders); ``threads`` caps TensorFlow's intra-op
    threads (None: TensorFlow's default)."""

    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    loss: str = "bce_dice"
    augment: bool = True
    flip_lr: bool = True
    flip_ud: bool = False
    intensity_jitter: float = 0.1
    max_shift: float = 0.0
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    reduce_lr_patience: int = 3
    reduce_lr_factor: float = 0.3
    early_stopping_patience: int = 6
    threads: int | None = 2
    verbose: int = 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_seg_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool, config: SegTrainConfig
) -> Any:
    """(N, h, w, C) images and (N, h, w, 1) targets → batched ``tf.data.Dataset``; training
    batches are shuffled and augmented (joint flips and shifts, image-only gain/gamma) with
    stateless ops
    seeded from ``config.seed``, so runs repeat."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))
    )
    if not training:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    ds = ds.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
    if config.augment:
        seeds = tf.data.Dataset.random(seed=config.seed).batch(2)
        jitter = float(config.intensity_jitter)
        h, w, c = (int(v) for v in x.shape[1:])
        pad_h, pad_w = round(config.max_shift * h), round(config.max_shift * w)

        def aug(pair: Any, seed: Any) -> Any:
            img, mask = pair
            s = tf.cast(seed, tf.int32)
            u = tf.random.stateless_uniform([4], seed=s)
            if pad_h or pad_w:
                both = tf.pad(
                    tf.concat([img, mask], -1), [[pad_h, pad_h], [pad_w, pad_w], [0, 0]], "REFLECT"
                )
                crop_seed = s + tf.constant([0, 1])
                both = tf.image.stateless_random_crop(both, [h, w, c + 1], seed=crop_seed)
                img, mask = both[..., :c], both[..., c:]
            if config.flip_lr:
                flip = u[0] < 0.5
                img = tf.where(flip, tf.reverse(img, [1]), img)
                mask = tf.where(flip, tf.reverse(mask, [1]), mask)
            if config.flip_ud:
                flip = u[1] < 0.5
                img = tf.where(flip, tf.reverse(img, [0]), img)
                mask = tf.where(flip, tf.reverse(mask, [0]), mask)
            if jitter > 0:
                gain = 1.0 + jitter * (2.0 * u[2] - 1.0)
                gamma = tf.exp(jitter * (2.0 * u[3] - 1.0))
                img = tf.clip_by_value(tf.pow(tf.maximum(img, 0.0), gamma) * gain, 0.0, 1.0)
            return img, mask

        ds = tf.data.Dataset.zip((ds, seeds)).map(aug, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_segmenter(model: Any, config: SegTrainConfig, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=make_loss(config.loss),
        metrics=[dice_coefficient, iou_coefficient],
    )


def train_segmenter(
    build_fn: Callable[[], Any],
    train: SegSplit,
    val: SegSplit,
    config: SegTrainConfig,
    run_dir: Path,
) -> TrainResult:
    """Train ``build_fn()`` on ``train`` (targets from ``target_masks``), validate on ``val``;
    returns the model with its best weights (by ``config.monitor``)."""
    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {LOSSES}")
    limit_threads(config.threads)
    size = train.x.shape[1:3]
    y_train = target_masks(train.masks, size)
    y_val = target_masks(val.masks, size)

    def datasets(batch: int) -> tuple[Any, Any]:
        return (
            make_seg_dataset(train.x, y_train, batch, training=True, config=config),
            make_seg_dataset(val.x, y_val, batch, training=False, config=config),
        )

    return fit(
        build_fn=build_fn,
        compile_fn=lambda model, lr: compile_segmenter(model, config, lr),
        datasets=datasets,
        config=config,
        run_dir=run_dir,
    )
