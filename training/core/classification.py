"""The binary-classification task kind: one logit per input, trained on in-memory arrays.

``train_classifier`` augments in the ``tf.data`` pipeline (so nothing of it is exported),
weights the classes and runs the shared fit loop (``training.core.fit``);
``run_binary_classification`` trains (or takes a finished run's checkpoint), then calibrates on
validation and evaluates on test through the ONNX graph and publishes the artifact
(``training.core.publish``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from app.imaging.card import Preprocessing
from training.core.calibrate import calibrate
from training.core.card import CardTemplate, RunInfo, card_fields
from training.core.fit import TrainResult, fit, result_from_checkpoint
from training.core.metrics import sigmoid
from training.core.publish import Runner, TrainRequest, publish_run
from training.evaluate import evaluate_probabilities, predict_logits, write_plots

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


class _SplitLike(Protocol):
    @property
    def x(self) -> np.ndarray: ...
    @property
    def y(self) -> np.ndarray: ...
    def __len__(self) -> int: ...


class SplitsLike(Protocol):
    """train / val / test arrays of a classification data set."""

    @property
    def train(self) -> Any: ...
    @property
    def val(self) -> Any: ...
    @property
    def test(self) -> Any: ...
    @property
    def sizes(self) -> dict[str, int]: ...


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

    def datasets(batch: int) -> tuple[Any, Any]:
        train_ds = make_dataset(
            x_train, y_train, batch, training=True, config=config, augment_fn=augment_fn
        )
        return train_ds, make_dataset(x_val, y_val, batch, training=False)

    return fit(
        build_fn=build_fn,
        compile_fn=_compile,
        datasets=datasets,
        config=config,
        run_dir=run_dir,
        class_weight=class_weight,
        thaw=_unfreeze_backbone,
        fine_tune_epochs=config.fine_tune_epochs,
        fine_tune_lr_factor=config.fine_tune_lr_factor,
    )


def run_binary_classification(
    *,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SplitsLike,
    build_fn: Any,
    config: TrainConfig,
    request: TrainRequest,
    info: RunInfo,
    class_weight: dict[int, float] | None = None,
    augment_fn: Any = None,
    conformance: dict[str, Any] | None = None,
) -> Path:
    """Train (``request.from_checkpoint``: take the best checkpoint of the finished run in
    ``request``'s run folder instead), calibrate on validation, evaluate on test, export;
    returns the version folder.

    The folder appears only once complete; it is then loaded with ``app.registry.load_entry``
    and a ``RuntimeError`` is raised if the service would not serve it. The card's input shape
    is ``[None, *prep.size, channels]``: (N, H, W, C) for 2D, (N, D, H, W, C) for volumes.
    ``augment_fn``: a batch augmentation for ``train_classifier`` (None: its 2D augmenter);
    ``conformance``: the card's ``conformance`` section (what the training data looked like).
    """
    run_dir = request.run_folder(template.name)
    if request.from_checkpoint:
        result = result_from_checkpoint(build_fn, run_dir)
    else:
        result = train_classifier(
            build_fn,
            splits.train.x,
            splits.train.y,
            splits.val.x,
            splits.val.y,
            config,
            run_dir,
            class_weight=class_weight,
            augment_fn=augment_fn,
        )
    version = request.version

    def describe(
        folder: Path, session: Any, run: Runner, max_diff: float
    ) -> tuple[dict[str, Any], list[str]]:
        # Calibrate and evaluate on what the service will run: the ONNX graph's logits.
        val_logits = predict_logits(run, splits.val.x)
        test_logits = predict_logits(run, splits.test.x)
        cal = calibrate(
            val_logits, splits.val.y, default_operating_point=template.default_operating_point
        )
        thresholds = {k: float(v["threshold"]) for k, v in cal.operating_points.items()}  # type: ignore[arg-type]
        p_cal, p_unc = cal.probability(test_logits), sigmoid(test_logits)
        metrics = evaluate_probabilities(
            splits.test.y, p_cal, p_unc, thresholds, cal.default_operating_point
        )
        plots = write_plots(
            folder,
            history=result.history,
            y_test=splits.test.y,
            p_uncalibrated=p_unc,
            p_calibrated=p_cal,
            thresholds=thresholds,
            default_operating_point=cal.default_operating_point,
            labels=template.labels,
        )
        fields = card_fields(
            template=template,
            version=version,
            prep=prep,
            session=session,
            cal=cal,
            info=info,
            result=result,
            config=config,
            metrics=metrics,
            max_diff=max_diff,
            split_sizes=splits.sizes,
        )
        fields["training"].update(
            class_weight={str(k): v for k, v in (class_weight or {}).items()},
            split="train+val pooled and re-split by patient; test kept",
        )
        fields["training"].update({**result.extra, **info.extra})  # later keys win
        if conformance is not None:
            fields["conformance"] = conformance
        return fields, plots

    probe = splits.val.x[: min(32, len(splits.val))]
    return publish_run(request, result.model, template.name, probe, info.seed, describe, splits)
