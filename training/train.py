"""Generic Keras training for a one-logit binary classifier on in-memory arrays.

Reused by every slice: give it a builder (a no-argument callable returning an uncompiled
``keras.Model`` with a ``(N, 1)`` logit output), arrays, and a ``TrainConfig``. It picks a
``tf.distribute`` strategy, augments in the ``tf.data`` pipeline (so nothing of it is exported),
weights the classes, reduces the learning rate on plateau, stops early, keeps the best checkpoint
(by validation AUC) in the run directory and reloads it at the end.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("medserve.training")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    augment: bool = True
    rotation_deg: float = 5.0
    zoom: float = 0.08
    contrast: float = 0.15
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.3
    early_stopping_patience: int = 5
    # Checkpoint, LR schedule and early stopping follow validation AUC: discrimination is what
    # training must get right (calibration is fitted afterwards), and the unweighted validation
    # loss rewards predicting the prevalence, which class-weighted training deliberately avoids.
    monitor: str = "val_auc"
    monitor_mode: str = "max"
    fine_tune_epochs: int = 0
    fine_tune_lr_factor: float = 0.1
    verbose: int = 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: Any  # keras.Model, best weights loaded
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    checkpoint: Path
    strategy: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def set_seeds(seed: int) -> None:
    """Seed Python, numpy, TensorFlow and Keras (op-level determinism is not forced: it costs
    speed; runs are repeatable up to floating-point reduction order)."""
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def choose_strategy() -> Any:
    """TPU if a TPU cluster resolves, MirroredStrategy with more than one GPU, else the default.

    The TPU resolver is only tried where a TPU can exist (TPU_NAME / COLAB_TPU_ADDR set, or a
    local TPU device), so a plain machine never waits on a metadata server.
    """
    import tensorflow as tf

    tpu_hint = any(
        os.environ.get(k) for k in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")
    )
    if tpu_hint or Path("/dev/accel0").exists():
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME")
                or ("local" if Path("/dev/accel0").exists() else None)
            )
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as exc:
            log.info("no TPU: %s", exc)
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _augmenter(config: TrainConfig) -> Any:
    """Small geometric and contrast jitter, applied only to training batches in tf.data.

    No horizontal (or vertical) flips: on a chest film left and right are not interchangeable.
    The heart and aortic arch lie on the patient's left, the liver and the higher hemidiaphragm
    on the right; a flipped film shows dextrocardia / situs inversus, a different (rare)
    anatomy, and mirrors the burned-in L/R side markers. Training on flips teaches the model that
    such films are normal and wastes capacity on anatomy it will never see the right way round.
    """
    import keras
    from keras import layers

    seed = config.seed
    return keras.Sequential(
        [
            layers.RandomRotation(config.rotation_deg / 360.0, fill_mode="nearest", seed=seed),
            layers.RandomZoom(
                (-config.zoom, config.zoom),
                (-config.zoom, config.zoom),
                fill_mode="nearest",
                seed=seed + 1,
            ),
            layers.RandomContrast(config.contrast, value_range=(0.0, 1.0), seed=seed + 2),
        ],
        name="augment",
    )


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    config: TrainConfig | None = None,
    augment_fn: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> Any:
    """(N, H, W, C) float32, (N,) labels → batched ``tf.data.Dataset`` of (x, y[:, None]).

    ``augment_fn`` (optional, e.g. ``training.augment3d.make_augment_fn`` for NDHWC volumes)
    maps each training batch ``(x, y) -> (x', y)`` instead of the 2D augmenter.
    """
    import tensorflow as tf

    labels = np.asarray(y, dtype=np.float32).reshape(-1, 1)
    ds = tf.data.Dataset.from_tensor_slices((np.asarray(x, dtype=np.float32), labels))
    if training:
        seed = config.seed if config else 0
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and config is not None and config.augment and augment_fn is not None:
        ds = ds.map(augment_fn)
    elif training and config is not None and config.augment:
        aug = _augmenter(config)
        ds = ds.map(
            lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 1.0), b),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _compile(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            keras.metrics.AUC(from_logits=True, name="auc"),
            keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy"),
        ],
    )


def _unfreeze_backbone(model: Any) -> bool:
    """Make a frozen ``backbone`` trainable, BatchNorm layers excepted; False if nothing to do."""
    import keras

    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        return False
    if backbone.trainable:
        return False
    backbone.trainable = True
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return True


def train_classifier(
    build_fn: Callable[[], Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    config: TrainConfig,
    run_dir: Path,
    class_weight: dict[int, float] | None = None,
    augment_fn: Callable[[Any, Any], tuple[Any, Any]] | None = None,
) -> TrainResult:
    """Train ``build_fn()``; return the model with its best (``config.monitor``) weights.

    ``augment_fn``: see ``make_dataset`` (None: the 2D augmenter of ``config``)."""
    import keras

    set_seeds(config.seed)
    strategy = choose_strategy()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ckpt_dir / "best.weights.h5"
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    batch = config.batch_size * replicas
    with strategy.scope():
        model = build_fn()
        _compile(model, config.learning_rate)
    train_ds = make_dataset(
        x_train, y_train, batch, training=True, config=config, augment_fn=augment_fn
    )
    val_ds = make_dataset(x_val, y_val, batch, training=False)

    def callbacks() -> list[Any]:
        return [
            keras.callbacks.ModelCheckpoint(
                str(checkpoint),
                monitor=config.monitor,
                mode=config.monitor_mode,
                save_best_only=True,
                save_weights_only=True,
            ),
            keras.callbacks.ReduceLROnPlateau(
                monitor=config.monitor,
                mode=config.monitor_mode,
                factor=config.reduce_lr_factor,
                patience=config.reduce_lr_patience,
                min_lr=1e-6,
            ),
            keras.callbacks.EarlyStopping(
                monitor=config.monitor,
                mode=config.monitor_mode,
                patience=config.early_stopping_patience,
            ),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        ]

    start = time.monotonic()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=class_weight,
        callbacks=callbacks(),
        verbose=config.verbose,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))
    if config.fine_tune_epochs > 0 and _unfreeze_backbone(model):
        model.load_weights(str(checkpoint))
        with strategy.scope():
            _compile(model, config.learning_rate * config.fine_tune_lr_factor)
        hist2 = model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=epochs_run,
            epochs=epochs_run + config.fine_tune_epochs,
            class_weight=class_weight,
            callbacks=callbacks(),
            verbose=config.verbose,
        )
        for k, vals in hist2.history.items():
            history.setdefault(k, []).extend(float(v) for v in vals)
        epochs_run = len(history["loss"])
    seconds = time.monotonic() - start
    if checkpoint.exists():
        model.load_weights(str(checkpoint))
    tracked = history.get(config.monitor, [])
    pick = np.argmax if config.monitor_mode == "max" else np.argmin
    best_epoch = int(pick(tracked)) + 1 if tracked else epochs_run
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    return TrainResult(
        model=model,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        checkpoint=checkpoint,
        strategy=type(strategy).__name__,
        seconds=seconds,
    )
