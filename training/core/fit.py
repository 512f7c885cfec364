"""The one Keras fit loop of every task (classifiers and segmenters), and its resume.

``fit`` picks a ``tf.distribute`` strategy, builds and compiles the model in its scope, trains
with a best-checkpoint (``config.monitor``), reduce-on-plateau and early stopping, optionally a
fine-tuning phase with a thawed backbone, reloads the best weights and writes ``history.json``
and ``train_result.json`` into the run folder. ``result_from_checkpoint`` rebuilds that result
from a finished run folder, so an artifact can be exported again without training
(``--from-checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("medserve.training")

CHECKPOINT = "best.weights.h5"


class FitConfig(Protocol):
    """What the loop reads from a task kind's training config."""

    @property
    def epochs(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def seed(self) -> int: ...
    @property
    def monitor(self) -> str: ...
    @property
    def monitor_mode(self) -> str: ...
    @property
    def reduce_lr_patience(self) -> int: ...
    @property
    def reduce_lr_factor(self) -> float: ...
    @property
    def early_stopping_patience(self) -> int: ...
    @property
    def verbose(self) -> int: ...


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


def _callbacks(config: FitConfig, checkpoint: Path, run_dir: Path) -> list[Any]:
    import keras

    mode = config.monitor_mode
    return [
        keras.callbacks.ModelCheckpoint(
            str(checkpoint),
            monitor=config.monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor,
            mode=mode,
            factor=config.reduce_lr_factor,
            patience=config.reduce_lr_patience,
            min_lr=1e-6,
        ),
        keras.callbacks.EarlyStopping(
            monitor=config.monitor, mode=mode, patience=config.early_stopping_patience
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
    ]


def fit(
    *,
    build_fn: Callable[[], Any],
    compile_fn: Callable[[Any, float], None],
    datasets: Callable[[int], tuple[Any, Any]],
    config: FitConfig,
    run_dir: Path,
    class_weight: dict[int, float] | None = None,
    thaw: Callable[[Any], bool] | None = None,
    fine_tune_epochs: int = 0,
    fine_tune_lr_factor: float = 0.1,
) -> TrainResult:
    """Train ``build_fn()`` (compiled by ``compile_fn(model, learning_rate)``) on
    ``datasets(global_batch)`` → (train, val) ``tf.data`` datasets; return it with its best
    (``config.monitor``) weights. ``thaw(model)``: after the first phase, make a frozen
    backbone trainable (False: nothing to thaw) for ``fine_tune_epochs`` more at
    ``learning_rate * fine_tune_lr_factor``."""
    set_seeds(config.seed)
    strategy = choose_strategy()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ckpt_dir / CHECKPOINT
    checkpoint.unlink(missing_ok=True)
    (run_dir / "history.csv").unlink(missing_ok=True)
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    with strategy.scope():
        model = build_fn()
        compile_fn(model, config.learning_rate)
    train_ds, val_ds = datasets(config.batch_size * replicas)
    start = time.monotonic()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=class_weight,
        callbacks=_callbacks(config, checkpoint, run_dir),
        verbose=config.verbose,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history.get("loss", []))
    if fine_tune_epochs > 0 and thaw is not None and thaw(model):
        model.load_weights(str(checkpoint))
        with strategy.scope():
            compile_fn(model, config.learning_rate * fine_tune_lr_factor)
        hist2 = model.fit(
            train_ds,
            validation_data=val_ds,
            initial_epoch=epochs_run,
            epochs=epochs_run + fine_tune_epochs,
            class_weight=class_weight,
            callbacks=_callbacks(config, checkpoint, run_dir),
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
    summary = {"seconds": seconds, "strategy": type(strategy).__name__, "best_epoch": best_epoch}
    (run_dir / "train_result.json").write_text(json.dumps(summary, indent=1))
    return TrainResult(
        model=model,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        checkpoint=checkpoint,
        strategy=type(strategy).__name__,
        seconds=seconds,
    )


def result_from_checkpoint(build_fn: Callable[[], Any], run_dir: Path) -> TrainResult:
    """A finished run's ``TrainResult`` rebuilt from ``run_dir`` (best weights, history and
    ``train_result.json``), to export it again without training."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / CHECKPOINT
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    model = build_fn()
    model.load_weights(str(checkpoint))
    history = json.loads((run_dir / "history.json").read_text())
    summary = json.loads((run_dir / "train_result.json").read_text())
    return TrainResult(
        model=model,
        history=history,
        epochs_run=len(history.get("loss", [])),
        best_epoch=int(summary["best_epoch"]),
        checkpoint=checkpoint,
        strategy=str(summary["strategy"]),
        seconds=float(summary["seconds"]),
        extra={"exported_from_checkpoint": True},
    )
