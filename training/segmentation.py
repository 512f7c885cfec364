"""Generic binary segmentation: train → calibrate → evaluate → plot → export, in one call.

Reused by every segmentation slice (brain MRI, X-ray phantom). Everything numeric that the
service does is done here with the service's own functions (``app.imaging.postprocess``), so the
card's figures are what the endpoint will produce.

API (stable; keyword arguments only where marked ``*``)
-----------------------------------------------------

Data
    ``SegSplit(x, masks, groups, files=[])`` — one split. ``x``: (N, h, w, C) float32 in [0, 1],
    NHWC model inputs made by ``app.imaging.preprocess.preprocess_image`` (h, w = the card's
    preprocessing size). ``masks``: N truth masks, each (H_i, W_i) bool at the INPUT's own
    resolution (what the service's mask is compared against; sizes may differ between cases).
    ``groups``: (N,) patient / sequence ids (the loaders split on them).
    ``SegSplits(train, val, test)`` — the three splits (``.sizes``).
    ``target_masks(masks, (h, w))`` → (N, h, w, 1) float32 in [0, 1]: the training targets,
    each truth mask area-averaged (box) to the model's resolution (the fraction of a model pixel
    covered by the lesion), so sub-pixel borders survive the down-sampling.

Keras pieces
    ``LOSSES = ("bce", "dice", "bce_dice")``; ``make_loss(name)`` → loss on LOGITS;
    ``dice_coefficient`` / ``iou_coefficient`` → Keras metrics on logits (batch-pooled, at 0.5).
    ``SegTrainConfig`` (epochs, batch size, learning rate, loss, augmentation, threads, ...).
    ``train_segmenter(build_fn, train, val, config, run_dir)`` → ``training.train.TrainResult``
    (best weights by ``config.monitor`` reloaded). ``build_fn()`` returns an uncompiled model
    mapping (N, h, w, C) → (N, h, w, 1) per-pixel LOGITS.

Numpy, exactly as the service does it
    ``probability_maps(run, x)`` → (N, h, w) float32 pixel probabilities from a runner that
    returns logits (N, h, w, 1) (e.g. ``training.export.onnx_runner``).
    ``predicted_mask(prob_map, shape, pixel_threshold)`` → (H, W) bool (bilinear resize of the
    probabilities to the input's size, then ``>=``: ``app.imaging.postprocess.mask_at``).
    ``lesion_logits(prob_maps)`` → (N,) float64: logit of each map's peak pixel probability
    (``app.imaging.postprocess.lesion_logit``); the service calls ``sigmoid(logit / T)``.
    ``dice_iou(pred, truth)`` → (dice, iou) of two (H, W) bool masks; both empty → (1, 1).
    ``threshold_scan(prob_maps, masks, thresholds)`` → (K,) mean per-case Dice over ALL cases
    (an empty truth predicted empty counts 1, so false positives on empty slices cost).
    ``choose_pixel_threshold(prob_maps, masks)`` → (threshold, scan table): max mean Dice.
    ``evaluate_segmentation(prob_maps, masks, pixel_threshold, calibration)`` → card metrics.

Plots
    ``write_segmentation_plots(out_dir, ...)`` → file names (curves, ROC, reliability, confusion,
    pixel-threshold scan, a grid of input / truth / prediction overlays on test cases).

The whole run
    ``run_binary_segmentation(*, template, prep, splits, build_fn, config, out_root, version,
    run_dir, info, conformance=None, overwrite=False, min_sensitivity=0.95,
    min_specificity=0.95)`` → ``out_root/<name>/<version>`` — mirrors
    ``training.pipeline.run_binary_classification``: train, export ONNX (Keras-vs-ONNX parity
    within 1e-4 + 1e-5·|logit| or nothing is written), calibrate the pixel threshold and the
    lesion temperature / operating points on the VALIDATION split through the ONNX graph,
    evaluate on test, write the plots, the SavedModel and the validated card, move the folder
    into place, and check that ``app.registry.load_entry`` reports it ready (``RuntimeError``
    otherwise).
    ``template`` is a ``training.pipeline.CardTemplate`` (task ``binary_segmentation``), ``info``
    a ``training.pipeline.RunInfo``, ``conformance`` a dict for the card's ``conformance``.
    ``export_segmentation_artifact(*, result, ...)`` is everything after training, for a
    ``TrainResult`` (``result_from_checkpoint(build_fn, run_dir, config)`` rebuilds one from a
    finished run's best weights). Operating points come from ``training.calibrate`` (ordered:
    high_sensitivity ≤ balanced ≤ high_specificity).
    ``evaluate_segmentation_artifact(model_dir, split)`` re-checks an exported artifact on a
    split through the service's registry (sha256, self-test) and ONNX.

CLI helpers
    ``add_train_arguments(parser)`` adds ``--loss --base-filters --depth --dropout --no-batch-norm
    --threads --from-checkpoint`` to a ``medserve-train train`` parser; ``config_from_args(args)``
    builds the ``SegTrainConfig`` from the shared and those options.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import Preprocessing
from app.imaging.postprocess import lesion_logit, mask_at, probability_map
from app.imaging.preprocess import resize2d
from training.calibrate import CalibrationResult, calibrate
from training.evaluate import (
    plot_confusion,
    plot_reliability,
    plot_roc,
    plot_training_curves,
    pyplot,
)
from training.metrics import binary_metrics, expected_calibration_error, roc_auc, sigmoid
from training.pipeline import CardTemplate, RunInfo, Runner, card_fields, publish_artifact
from training.train import TrainResult, choose_strategy, set_seeds

log = logging.getLogger("medserve.training")

LOSSES = ("bce", "dice", "bce_dice")
DEFAULT_THRESHOLDS = np.round(
    np.concatenate([[0.01, 0.02, 0.03, 0.04], np.arange(0.05, 0.951, 0.025), [0.97, 0.98, 0.99]]), 4
)
SEG_PLOT_FILES = {
    "curves": "training_curves.png",
    "roc": "roc.png",
    "reliability": "reliability.png",
    "confusion": "confusion_matrix.png",
    "threshold": "pixel_threshold.png",
    "examples": "segmentation_examples.png",
}
LESION_PROBABILITY = (
    "peak pixel probability of the model-resolution map -> logit -> sigmoid(logit / temperature)"
)


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


# --------------------------------------------------------------------------- training


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


def limit_threads(threads: int | None) -> None:
    """Cap TensorFlow's thread pools (only possible before TensorFlow starts its runtime)."""
    if not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    except RuntimeError:  # already initialised in this process: keep what it has
        log.info("TensorFlow threads already fixed for this process")


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


def compile_segmenter(model: Any, config: SegTrainConfig) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
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
    import keras

    if config.loss not in LOSSES:
        raise ValueError(f"unknown loss {config.loss!r}; choose one of {LOSSES}")
    limit_threads(config.threads)
    set_seeds(config.seed)
    strategy = choose_strategy()
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = ckpt_dir / "best.weights.h5"
    checkpoint.unlink(missing_ok=True)
    (run_dir / "history.csv").unlink(missing_ok=True)
    size = train.x.shape[1:3]
    y_train = target_masks(train.masks, size)
    y_val = target_masks(val.masks, size)
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    batch = config.batch_size * replicas
    with strategy.scope():
        model = build_fn()
        compile_segmenter(model, config)
    train_ds = make_seg_dataset(train.x, y_train, batch, training=True, config=config)
    val_ds = make_seg_dataset(val.x, y_val, batch, training=False, config=config)
    mode = config.monitor_mode
    callbacks = [
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
        keras.callbacks.CSVLogger(str(run_dir / "history.csv")),
    ]
    start = time.monotonic()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.monotonic() - start
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    if checkpoint.exists():
        model.load_weights(str(checkpoint))
    epochs_run = len(history.get("loss", []))
    watched = history.get(config.monitor, [])
    if watched:
        best = int(np.argmax(watched) if mode == "max" else np.argmin(watched)) + 1
    else:
        best = epochs_run
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"seconds": seconds, "strategy": type(strategy).__name__, "best_epoch": best}
    (run_dir / "train_result.json").write_text(json.dumps(summary, indent=1))
    return TrainResult(
        model=model,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best,
        checkpoint=checkpoint,
        strategy=type(strategy).__name__,
        seconds=seconds,
    )


def result_from_checkpoint(
    build_fn: Callable[[], Any], run_dir: Path, config: SegTrainConfig
) -> TrainResult:
    """A finished run's ``TrainResult`` rebuilt from ``run_dir`` (best weights, history and
    ``train_result.json``), to export it again without training."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoints" / "best.weights.h5"
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    limit_threads(config.threads)
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


# --------------------------------------------------------------------------- numpy evaluation


def probability_maps(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int = 32
) -> np.ndarray:
    """(N, h, w, C) inputs → (N, h, w) float32 pixel probabilities; ``run`` returns LOGITS of
    shape (n, h, w, 1) for a batch (as the exported model does)."""
    n, h, w = x.shape[0], x.shape[1], x.shape[2]
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(0, n, batch):
        logits = np.asarray(run(x[i : i + batch]), dtype=np.float64).reshape(-1, h, w)
        out[i : i + batch] = sigmoid(logits).astype(np.float32)
    return out


def predicted_mask(
    prob_map: np.ndarray, shape: Sequence[int], pixel_threshold: float
) -> np.ndarray:
    """(h, w) probabilities → (H, W) bool mask at the input's size, as the service computes it."""
    return mask_at(prob_map, (int(shape[0]), int(shape[1])), pixel_threshold)


def lesion_logits(prob_maps: np.ndarray) -> np.ndarray:
    """(N, h, w) probabilities → (N,) float64 lesion logits (logit of the peak probability)."""
    return np.array([lesion_logit(p) for p in prob_maps], dtype=np.float64)


def dice_iou(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two (H, W) bool masks; (1.0, 1.0) when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    inter = int(np.count_nonzero(pred & truth))
    p, t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if p + t == 0:
        return 1.0, 1.0
    return 2.0 * inter / (p + t), inter / (p + t - inter)


def _counts_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(K,) number of ``values >= thresholds[k]`` (thresholds ascending)."""
    idx = np.searchsorted(thresholds, values.ravel(), side="right")  # thresholds <= value
    hist = np.bincount(idx, minlength=thresholds.size + 1)
    return np.cumsum(hist[::-1])[::-1][1:]


def threshold_scan(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """(K,) mean per-case Dice over all cases for each pixel threshold, each mask made as the
    service makes it (bilinear resize to the truth's size, then ``>=``)."""
    th = np.asarray(thresholds, dtype=np.float64)
    if np.any(np.diff(th) <= 0):
        raise ValueError("thresholds must be strictly ascending")
    total = np.zeros(th.size, dtype=np.float64)
    for prob, truth in zip(prob_maps, masks, strict=True):
        up = resize2d(prob, truth.shape, "bilinear").astype(np.float64)
        pred_n = _counts_above(up, th)
        inter = _counts_above(up[truth], th)
        t = int(np.count_nonzero(truth))
        denom = pred_n + t
        total += np.where(denom > 0, 2.0 * inter / np.maximum(denom, 1), 1.0)
    return total / max(len(masks), 1)


def choose_pixel_threshold(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    thresholds: np.ndarray = DEFAULT_THRESHOLDS,
) -> tuple[float, dict[str, list[float]]]:
    """The threshold with the highest mean Dice (ties: the one closest to 0.5) and the table."""
    th = np.asarray(thresholds, dtype=np.float64)
    dice = threshold_scan(prob_maps, masks, th)
    best = np.flatnonzero(dice >= dice.max() - 1e-12)
    pick = int(best[np.argmin(np.abs(th[best] - 0.5))])
    return float(th[pick]), {"thresholds": th.tolist(), "mean_dice": dice.tolist()}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate_segmentation(
    prob_maps: np.ndarray,
    masks: Sequence[np.ndarray],
    pixel_threshold: float,
    calibration: CalibrationResult,
) -> dict[str, Any]:
    """Card ``metrics`` on one split (masks at the inputs' resolution, as served).

    - ``dice`` / ``iou``: mean per-case figures over cases WITH a lesion (the headline);
      ``dice_all`` / ``iou_all``: over every case (empty truth and empty mask count 1);
      ``dice_pooled`` / ``iou_pooled``: over all pixels of the split at once;
      ``pixel_accuracy``.
    - lesion detection by the calibrated lesion probability at the default operating point
      (``sensitivity``, ``specificity``, ``accuracy``, ``precision``, ``f1``, confusion matrix
      [[TN, FP], [FN, TP]]), AUC and ECE, and the same at every operating point;
      ``mask_detection``: the same counting a non-empty mask as "lesion".
    """
    dice_les, iou_les, dice_all, iou_all = [], [], [], []
    inter_sum = pred_sum = truth_sum = correct = pixels = 0
    pred_any = np.zeros(len(masks), dtype=np.int64)
    for i, (prob, truth) in enumerate(zip(prob_maps, masks, strict=True)):
        pred = predicted_mask(prob, truth.shape, pixel_threshold)
        d, j = dice_iou(pred, truth)
        dice_all.append(d)
        iou_all.append(j)
        if truth.any():
            dice_les.append(d)
            iou_les.append(j)
        inter_sum += int(np.count_nonzero(pred & truth))
        pred_sum += int(np.count_nonzero(pred))
        truth_sum += int(np.count_nonzero(truth))
        correct += int(np.count_nonzero(pred == truth))
        pixels += truth.size
        pred_any[i] = int(pred.any())
    y = np.array([int(m.any()) for m in masks], dtype=np.int64)
    logits = lesion_logits(prob_maps)
    p_cal, p_unc = calibration.probability(logits), sigmoid(logits)
    points = {
        name: float(op["threshold"])  # type: ignore[arg-type]
        for name, op in calibration.operating_points.items()
    }
    by_point = {name: binary_metrics(y, p_cal, t) for name, t in points.items()}
    default = by_point[calibration.default_operating_point]
    pooled_den = pred_sum + truth_sum
    return {
        "split": "test",
        "n": len(masks),
        "n_with_lesion": int(y.sum()),
        "pixel_threshold": float(pixel_threshold),
        "dice": _mean(dice_les),
        "iou": _mean(iou_les),
        "dice_median": float(np.median(dice_les)) if dice_les else None,
        "dice_all": _mean(dice_all),
        "iou_all": _mean(iou_all),
        "dice_pooled": 2.0 * inter_sum / pooled_den if pooled_den else 1.0,
        "iou_pooled": inter_sum / (pooled_den - inter_sum) if pooled_den else 1.0,
        "pixel_accuracy": correct / pixels if pixels else None,
        "dice_definition": (
            "dice/iou: mean per slice over slices with a lesion; *_all: over all slices "
            "(empty truth and empty mask = 1); *_pooled: over all pixels; masks at the input's "
            "resolution as served (bilinear probability resize, >= pixel_threshold)"
        ),
        "auc": roc_auc(y, p_cal),
        "ece": expected_calibration_error(y, p_cal),
        "ece_uncalibrated": expected_calibration_error(y, p_unc),
        "operating_point": calibration.default_operating_point,
        **{k: v for k, v in default.items() if k != "recall"},
        "confusion_matrix_layout": "rows: true (no lesion, lesion); columns: predicted",
        "operating_points": by_point,
        "mask_detection": binary_metrics(y, pred_any.astype(np.float64), 0.5),
    }


# --------------------------------------------------------------------------- plots


def plot_segmentation_curves(history: Mapping[str, Sequence[float]], path: Path) -> None:
    """Loss and Dice per epoch, training and validation."""
    plot_training_curves(history, path, metric="dice")


def plot_threshold_scan(table: Mapping[str, Sequence[float]], chosen: float, path: Path) -> None:
    """Validation mean Dice against the pixel threshold, the chosen one marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.0), dpi=80)
    ax.plot(table["thresholds"], table["mean_dice"], "-", lw=1.5)
    ax.axvline(chosen, color="tab:red", ls="--", lw=1, label=f"chosen {chosen:.3f}")
    ax.set_xlabel("pixel threshold")
    ax.set_ylabel("mean Dice (validation, all slices)")
    ax.set_title("Pixel threshold")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _example_indices(masks: Sequence[np.ndarray], n_lesion: int, n_empty: int) -> list[int]:
    """Evenly spread cases with lesions (by size) plus a few without, deterministic."""
    areas = np.array([int(np.count_nonzero(m)) for m in masks])
    lesion = np.flatnonzero(areas > 0)
    empty = np.flatnonzero(areas == 0)
    out: list[int] = []
    if lesion.size:
        ordered = lesion[np.argsort(areas[lesion], kind="stable")]
        picks = np.linspace(0, ordered.size - 1, min(n_lesion, ordered.size)).round().astype(int)
        out.extend(int(ordered[i]) for i in picks)
    if empty.size:
        picks = np.linspace(0, empty.size - 1, min(n_empty, empty.size)).round().astype(int)
        out.extend(int(empty[i]) for i in picks)
    return out


def plot_examples(
    x: np.ndarray,
    masks: Sequence[np.ndarray],
    prob_maps: np.ndarray,
    pixel_threshold: float,
    path: Path,
    *,
    n_lesion: int = 5,
    n_empty: int = 2,
) -> None:
    """A grid, one case per row: model input | truth (green) | prediction (red) with Dice,
    at the input's resolution (the model input is bilinearly resized up for display)."""
    plt = pyplot()
    idx = _example_indices(masks, n_lesion, n_empty)
    rows = max(len(idx), 1)
    fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.8 * rows), dpi=72, squeeze=False)
    for r, i in enumerate(idx):
        truth = masks[i]
        img = resize2d(x[i, :, :, 0], truth.shape, "bilinear")
        pred = predicted_mask(prob_maps[i], truth.shape, pixel_threshold)
        d, _ = dice_iou(pred, truth)
        for c, (title, overlay, color) in enumerate(
            (
                ("input", None, None),
                ("truth", truth, (0.1, 0.9, 0.2)),
                ("prediction", pred, (1, 0.2, 0.2)),
            )
        ):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            if overlay is not None and overlay.any():
                rgba = np.zeros((*overlay.shape, 4), dtype=np.float32)
                rgba[overlay] = (*color, 0.45)
                ax.imshow(rgba)
            label = title if c < 2 else f"{title} (Dice {d:.2f})"
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    for ax in axes.ravel()[len(idx) * 3 :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_segmentation_plots(
    out_dir: Path,
    *,
    history: Mapping[str, Sequence[float]],
    test: SegSplit,
    test_probs: np.ndarray,
    calibration: CalibrationResult,
    pixel_threshold: float,
    threshold_table: Mapping[str, Sequence[float]],
    labels: Sequence[str],
) -> list[str]:
    """All report plots into ``out_dir``; returns their file names."""
    out_dir = Path(out_dir)
    f = SEG_PLOT_FILES
    plot_segmentation_curves(history, out_dir / f["curves"])
    plot_threshold_scan(threshold_table, pixel_threshold, out_dir / f["threshold"])
    plot_examples(test.x, test.masks, test_probs, pixel_threshold, out_dir / f["examples"])
    y = test.has_lesion
    logits = lesion_logits(test_probs)
    p_cal, p_unc = calibration.probability(logits), sigmoid(logits)
    points = {k: float(v["threshold"]) for k, v in calibration.operating_points.items()}  # type: ignore[arg-type]
    written = [f["curves"], f["threshold"], f["examples"]]
    if 0 < int(y.sum()) < y.size:  # ROC and reliability need both classes
        plot_roc(y, p_cal, points, out_dir / f["roc"], title="Lesion detection ROC (test)")
        plot_reliability(y, p_unc, p_cal, out_dir / f["reliability"])
        written += [f["roc"], f["reliability"]]
    t = points[calibration.default_operating_point]
    cm = binary_metrics(y, p_cal, t)["confusion_matrix"]
    plot_confusion(
        cm,  # type: ignore[arg-type]
        labels,
        out_dir / f["confusion"],
        f"lesion detection, {calibration.default_operating_point} (t={t:.2f})",
    )
    written.append(f["confusion"])
    return written


# --------------------------------------------------------------------------- the whole run


def run_binary_segmentation(
    *,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SegSplits,
    build_fn: Callable[[], Any],
    config: SegTrainConfig,
    out_root: Path,
    version: str,
    run_dir: Path,
    info: RunInfo,
    conformance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.95,
) -> Path:
    """Train, export, calibrate on validation (through ONNX), evaluate on test, write the
    artifact; returns ``out_root/<template.name>/<version>`` once ``app.registry.load_entry``
    reports it ready (``RuntimeError`` if the service would not serve it)."""
    _check_inputs(template, splits)
    result = train_segmenter(build_fn, splits.train, splits.val, config, run_dir)
    return export_segmentation_artifact(
        result=result,
        template=template,
        prep=prep,
        splits=splits,
        config=config,
        out_root=out_root,
        version=version,
        info=info,
        conformance=conformance,
        overwrite=overwrite,
        min_sensitivity=min_sensitivity,
        min_specificity=min_specificity,
    )


def _check_inputs(template: CardTemplate, splits: SegSplits) -> None:
    if template.task != "binary_segmentation":
        raise ValueError("the template's task must be binary_segmentation")
    for name, split in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty")


def export_segmentation_artifact(
    *,
    result: TrainResult,
    template: CardTemplate,
    prep: Preprocessing,
    splits: SegSplits,
    config: SegTrainConfig,
    out_root: Path,
    version: str,
    info: RunInfo,
    conformance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    min_sensitivity: float = 0.95,
    min_specificity: float = 0.95,
) -> Path:
    """Everything of ``run_binary_segmentation`` after training, for a trained ``result``
    (e.g. a model rebuilt from a run's best checkpoint)."""
    _check_inputs(template, splits)

    def describe(
        folder: Path, session: Any, run: Runner, max_diff: float
    ) -> tuple[dict[str, Any], list[str]]:
        # Everything here runs the ONNX graph, the service's code path.
        val_probs = probability_maps(run, splits.val.x)
        pixel_threshold, table = choose_pixel_threshold(val_probs, splits.val.masks)
        val_logits, y_val = lesion_logits(val_probs), splits.val.has_lesion
        cal = calibrate(
            val_logits,
            y_val,
            default_operating_point=template.default_operating_point,
            min_sensitivity=min_sensitivity,
            min_specificity=min_specificity,
        )
        val_metrics = evaluate_segmentation(val_probs, splits.val.masks, pixel_threshold, cal)
        del val_probs
        test_probs = probability_maps(run, splits.test.x)
        metrics = evaluate_segmentation(test_probs, splits.test.masks, pixel_threshold, cal)
        metrics["validation"] = {
            k: val_metrics[k] for k in ("n", "n_with_lesion", "dice", "iou", "dice_all", "auc")
        }
        plots = write_segmentation_plots(
            folder,
            history=result.history,
            test=splits.test,
            test_probs=test_probs,
            calibration=cal,
            pixel_threshold=pixel_threshold,
            threshold_table=table,
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
        fields["calibration"]["lesion_probability"] = LESION_PROBABILITY
        fields.update(
            output_shape=[None, *prep.size, 1],
            output_description=(
                "per-pixel lesion LOGITS at the model input size (NHWC, one channel); the "
                "service applies the sigmoid, resizes the probabilities bilinearly to the "
                "input's size and keeps pixels >= pixel_threshold"
            ),
            pixel_threshold=pixel_threshold,
            operating_point_selection=(
                "on validation, calibrated lesion probability: balanced = max Youden J; "
                f"high_sensitivity = best specificity with sensitivity >= {min_sensitivity:g}, "
                f"high_specificity = best sensitivity with specificity >= {min_specificity:g}, "
                "neither placed on the far side of balanced"
            ),
            pixel_threshold_selection=(
                "maximises mean per-slice Dice over all validation slices, masks at the input "
                "resolution (bilinear probability resize)"
            ),
            conformance=dict(conformance or {}),
        )
        fields["training"].update(
            split_cases_with_lesion={
                "train": int(splits.train.has_lesion.sum()),
                "val": int(splits.val.has_lesion.sum()),
                "test": int(splits.test.has_lesion.sum()),
            },
            split_groups={
                "train": len(set(splits.train.groups.tolist())),
                "val": len(set(splits.val.groups.tolist())),
                "test": len(set(splits.test.groups.tolist())),
            },
            parameters=int(result.model.count_params()),
            split="by patient",
        )
        fields["training"].update({**result.extra, **info.extra})  # later keys win
        return fields, plots

    probe = splits.val.x[: min(16, len(splits.val))]
    return publish_artifact(
        result.model, template.name, version, out_root, probe, info.seed, overwrite, describe
    )


def evaluate_segmentation_artifact(model_dir: Path, split: SegSplit) -> dict[str, Any]:
    """Load ``model_dir`` as the service does (sha256, self-test), run ``split`` through its
    ONNX graph and return card-style metrics at the card's pixel threshold, temperature and
    operating points. ``split.x`` must come from the card's preprocessing."""
    from app.config import Settings
    from app.imaging.card import CARD_FILE, ModelCard
    from app.registry import load_entry

    model_dir = Path(model_dir).resolve()
    card = ModelCard.model_validate(json.loads((model_dir / CARD_FILE).read_bytes()))
    entry = load_entry(card.name, model_dir, Settings(model_dir=model_dir.parent.parent))
    if not entry.ready:
        raise RuntimeError(f"model not ready: {entry.reason}")
    assert card.pixel_threshold is not None
    x = split.x if card.input.layout == "NHWC" else np.transpose(split.x, (0, 3, 1, 2))
    h, w = card.input.preprocessing.size
    probs = np.empty((len(split), h, w), dtype=np.float32)
    for i in range(len(split)):
        probs[i] = probability_map(entry.run(x[i : i + 1]), card)
    cal = CalibrationResult(
        temperature=card.calibration.temperature,
        ece_before=float("nan"),
        ece_after=float("nan"),
        operating_points={k: v.model_dump() for k, v in card.operating_points.items()},
        default_operating_point=card.default_operating_point,
    )
    metrics = evaluate_segmentation(probs, split.masks, card.pixel_threshold, cal)
    metrics["model"] = {"name": card.name, "version": card.version, "sha256": card.model_sha256}
    return metrics


# --------------------------------------------------------------------------- CLI helpers


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Segmentation options for a ``medserve-train train`` parser (ignored by classifiers)."""
    g = parser.add_argument_group("segmentation (U-Net)")
    g.add_argument("--loss", default="bce_dice", choices=LOSSES, help="segmentation loss")
    g.add_argument("--base-filters", type=int, default=16, help="U-Net filters at full size")
    g.add_argument("--depth", type=int, default=4, help="U-Net down-samplings (levels)")
    g.add_argument("--dropout", type=float, default=0.1, help="U-Net dropout at the bottom")
    g.add_argument("--no-batch-norm", action="store_true", help="U-Net without batch norm")
    g.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads (0: all)")
    g.add_argument(
        "--max-shift",
        type=float,
        default=0.0,
        help="augmentation: random joint shift up to this fraction of each side (0: none)",
    )
    g.add_argument(
        "--from-checkpoint",
        action="store_true",
        help="do not train: export the best checkpoint of --run-dir's finished run again",
    )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> SegTrainConfig:
    """A ``SegTrainConfig`` from the shared train options plus ``add_train_arguments``'s."""
    values: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "loss": args.loss,
        "augment": not args.no_augment,
        "max_shift": args.max_shift,
        "early_stopping_patience": args.patience,
        "threads": args.threads or None,
        "verbose": args.verbose,
    }
    values.update(overrides)
    return SegTrainConfig(**values)
