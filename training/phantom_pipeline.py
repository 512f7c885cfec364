"""The X-ray phantom tumour-tracking slice: card template, preprocessing, tracking metrics,
tracking figure, the normalisation study, service latency, and ``train_phantom``.

The generic part (training loop, pixel threshold, lesion temperature and operating points,
Dice/IoU, plots, export) is ``training.segmentation``; this module adds what tumour *tracking*
needs on top of it:

- ``centroid_errors``: the distance in pixels between the centroid of the served mask and that
  of the truth, at the input's FULL resolution (the model runs smaller; the service resizes the
  probability map back before thresholding, and so does this), with misses and false alarms;
- ``plot_tracking``: test frames with the truth (green) and predicted (red) outline and
  centroids, and the superior-inferior centroid trace of one test sequence;
- ``normalisation_study``: trains the same network with the two 16-bit input normalisations
  the card can express (fixed window 0..65535 vs per-image percentile window) and measures both
  on the validation split;
- ``measure_latency``: per-frame time through the service pipeline (``app.pipeline.segment``:
  decode → preprocess → infer → postprocess) at the frames' full size.

Command line (besides ``medserve-train synth|train|evaluate phantom``)::

    python -m training.phantom_pipeline study --data DIR --out runs/phantom_norm_study.json
    python -m training.phantom_pipeline latency --model models/phantom_tumor_xray/1.1.0 --data DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import CARD_FILE, Intensity, ModelCard, Preprocessing, sha256_file
from app.imaging.postprocess import summarize_mask
from training.dicom_codes import PHANTOM_DICOM, PHANTOM_ROUTING
from training.pipeline import CardTemplate, RunInfo
from training.segmentation import (
    SegSplit,
    SegSplits,
    SegTrainConfig,
    choose_pixel_threshold,
    predicted_mask,
    probability_maps,
    run_binary_segmentation,
    train_segmenter,
)

log = logging.getLogger("medserve.training")

NAME = "phantom_tumor_xray"
TRACKING_PLOT = "tracking.png"
DEFAULT_INPUT_SIZE = (192, 256)
NORMALISATIONS = ("percentile", "window")
PERCENTILES = (0.5, 99.5)

PHANTOM_CARD = CardTemplate(
    name=NAME,
    task="binary_segmentation",
    modality="XR",
    endpoint="/segment/xray",
    labels=("NO_TUMOUR", "TUMOUR"),
    dataset="xray_phantom_tumour",
    intended_use=(
        "Research and demonstration of markerless tumour tracking: outlines a tumour insert and "
        "reports its centroid on single 16-bit kV X-ray frames of a thorax motion phantom, e.g. "
        "to study tracking during radiotherapy. Not a medical device; it must not gate or steer "
        "a treatment beam."
    ),
    limitations=(
        "One frame at a time: no temporal model of the breathing motion, so a frame where the "
        "insert is hidden (spine, diaphragm, heart) is not bridged from its neighbours.",
        "Trained on one phantom design, one projection direction (antero-posterior) and one "
        "frame size (768 x 1024); other anatomy, gantry angles, MV portal images or patients are "
        "outside its training distribution.",
        "The centroid is that of the thresholded mask in pixels of the input; millimetres need "
        "the DICOM pixel spacing and are at the detector plane, not at the isocentre.",
        "The model runs at a quarter of the frame's resolution; sub-pixel centroid accuracy "
        "comes from the bilinearly resized probability map and is measured, not guaranteed.",
    ),
    dicom=PHANTOM_DICOM,
    routing=PHANTOM_ROUTING,
)

CONFORMANCE: dict[str, Any] = {
    # RTIMAGE: kV/MV images from a treatment machine; DX/CR/RF: radiography and fluoroscopy.
    "modalities": ["RTIMAGE", "DX", "CR", "RF"],
    "image_side_range": (768, 1024),
}


def phantom_preprocessing(
    size: Sequence[int] = DEFAULT_INPUT_SIZE, normalisation: str = "percentile"
) -> Preprocessing:
    """The card's preprocessing for 16-bit phantom frames.

    ``percentile``: per frame, the 0.5th..99.5th percentile window → [0, 1]; it cancels the
    exposure and detector-gain differences between sequences (an offset and a scale of the
    log-processed values) and ignores the extreme 1 % of pixels (collimator edges, dead or hot
    pixels). ``window``: the fixed 0..65535 range, the literal 16-bit scale. Both are measured on
    validation by ``normalisation_study``. Resize: ``area`` (box) because frames are reduced
    4x per side and averaging every source pixel also averages the quantum noise.
    ``expected_bits`` = 16: an 8-bit file is served with a ``rescaled_input`` warning.
    """
    if normalisation == "percentile":
        intensity = Intensity(method="percentile", low=PERCENTILES[0], high=PERCENTILES[1])
    elif normalisation == "window":
        intensity = Intensity(method="window", low=0.0, high=65535.0)
    else:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}")
    return Preprocessing(
        kind="image2d",
        size=[int(size[0]), int(size[1])],
        channels=1,
        intensity=intensity,
        resize="area",
        expected_bits=16,
    )


# --------------------------------------------------------------------------- tracking metrics


def centroid_errors(
    prob_maps: np.ndarray, masks: Sequence[np.ndarray], pixel_threshold: float
) -> dict[str, Any]:
    """Centroid error of the served mask against the truth, in pixels at full resolution.

    ``prob_maps``: (N, h, w) float32 at the model's resolution; ``masks``: N (H, W) bool truth
    masks at the input's resolution. Each prediction is made as the service makes it (bilinear
    resize to (H, W), ``>= pixel_threshold``) and its centroid by
    ``app.imaging.postprocess.summarize_mask``. Returns ``errors_px`` (per frame with a tumour and
    a non-empty prediction, NaN for a miss), the summaries (median, 95th percentile, mean, max),
    ``missed`` (tumour, empty mask) and ``false_masks`` (no tumour, non-empty mask).
    """
    errors = np.full(len(masks), np.nan)
    missed = false_masks = 0
    for i, (prob, truth) in enumerate(zip(prob_maps, masks, strict=True)):
        pred = predicted_mask(prob, truth.shape, pixel_threshold)
        got = summarize_mask(pred, None).centroid
        want = summarize_mask(truth, None).centroid
        if want is None:
            false_masks += int(got is not None)
            continue
        if got is None:
            missed += 1
            continue
        errors[i] = float(np.hypot(got[0] - want[0], got[1] - want[1]))
    found = errors[np.isfinite(errors)]
    has = int(sum(int(m.any()) for m in masks))

    def stat(fn: Callable[[np.ndarray], Any]) -> float | None:
        return float(fn(found)) if found.size else None

    return {
        "n_with_tumour": has,
        "n_tracked": int(found.size),
        "missed": missed,
        "false_masks": false_masks,
        "median_px": stat(np.median),
        "p95_px": stat(lambda a: np.percentile(a, 95)),
        "mean_px": stat(np.mean),
        "max_px": stat(np.max),
        "within_2px": float(np.mean(found <= 2.0)) if found.size else None,
        "errors_px": [None if not np.isfinite(e) else round(float(e), 4) for e in errors],
    }


def tracking_metrics(
    prob_maps: np.ndarray, split: SegSplit, pixel_threshold: float
) -> dict[str, Any]:
    """Card-ready centroid figures (without the per-frame list) plus the definition."""
    out = centroid_errors(prob_maps, split.masks, pixel_threshold)
    out.pop("errors_px")
    out["definition"] = (
        "Euclidean distance in pixels between the centroid of the served mask (probability map "
        "resized bilinearly to the full input size, >= pixel_threshold) and the centroid of the "
        "truth mask, over test frames with a tumour and a non-empty prediction; missed: tumour "
        "but empty mask; false_masks: no tumour but a non-empty mask"
    )
    return out


# --------------------------------------------------------------------------- figure


def _outline(mask: np.ndarray) -> np.ndarray:
    inner = np.roll(mask, 1, 0) & np.roll(mask, -1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return mask & ~inner


def plot_tracking(
    split: SegSplit,
    prob_maps: np.ndarray,
    pixel_threshold: float,
    path: Path,
    *,
    tiles: int = 4,
    crop: int = 160,
) -> None:
    """Top: ``tiles`` test frames cropped around the tumour (model input shown, resized up),
    truth outline and centroid green (+), prediction red (x), error in the title. Bottom: the
    superior-inferior (row) centroid of the longest test sequence with a tumour, truth vs
    prediction, frame by frame."""
    from app.imaging.preprocess import resize2d
    from training.evaluate import pyplot

    plt = pyplot()

    has = [i for i, m in enumerate(split.masks) if m.any()]
    groups = split.groups
    seqs = sorted({groups[i] for i in has}, key=lambda g: -int(np.sum(groups == g)))
    fig = plt.figure(figsize=(8.0, 5.0), dpi=80)
    picks = (
        [has[k] for k in np.linspace(0, len(has) - 1, min(tiles, len(has))).round().astype(int)]
        if has
        else []
    )
    for t, i in enumerate(picks):
        truth = split.masks[i]
        pred = predicted_mask(prob_maps[i], truth.shape, pixel_threshold)
        img = resize2d(split.x[i, :, :, 0], truth.shape, "bilinear")
        want = summarize_mask(truth, None).centroid
        got = summarize_mask(pred, None).centroid
        assert want is not None
        cx, cy = int(want[0]), int(want[1])
        h, w = truth.shape
        half = min(crop // 2, h // 2, w // 2)
        y0, x0 = int(np.clip(cy - half, 0, h - 2 * half)), int(np.clip(cx - half, 0, w - 2 * half))
        sl = (slice(y0, y0 + 2 * half), slice(x0, x0 + 2 * half))
        rgb = np.repeat(img[sl][..., None], 3, axis=2).clip(0, 1)
        rgb[_outline(truth[sl])] = (0.1, 0.9, 0.2)
        rgb[_outline(pred[sl])] = (1.0, 0.2, 0.2)
        ax = fig.add_subplot(2, len(picks), t + 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.plot(want[0] - x0, want[1] - y0, "+", color=(0.1, 0.9, 0.2), ms=10, mew=1.5)
        err = "missed"
        if got is not None:
            ax.plot(got[0] - x0, got[1] - y0, "x", color=(1.0, 0.2, 0.2), ms=8, mew=1.5)
            err = f"{np.hypot(got[0] - want[0], got[1] - want[1]):.2f} px"
        ax.set_title(f"{split.groups[i]}: {err}", fontsize=7)
        ax.axis("off")
    ax = fig.add_subplot(2, 1, 2)
    if seqs:
        idx = [i for i in range(len(split)) if groups[i] == seqs[0]]
        true_y, pred_y = [], []
        for i in idx:
            truth = split.masks[i]
            c_t = summarize_mask(truth, None).centroid
            c_p = summarize_mask(
                predicted_mask(prob_maps[i], truth.shape, pixel_threshold), None
            ).centroid
            true_y.append(np.nan if c_t is None else c_t[1])
            pred_y.append(np.nan if c_p is None else c_p[1])
        ax.plot(range(len(idx)), true_y, "-", color="tab:green", lw=2, label="truth centroid row")
        ax.plot(range(len(idx)), pred_y, "x--", color="tab:red", lw=1, label="predicted")
        ax.invert_yaxis()
        ax.set_xlabel(f"frame of test sequence {seqs[0]}")
        ax.set_ylabel("centroid row (px, superior up)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- card amendment


def amend_card(
    model_dir: Path, metrics: dict[str, Any], extra: dict[str, Any], plots: Sequence[str]
) -> ModelCard:
    """Add ``metrics`` to the card's ``metrics``, ``extra`` as top-level fields and the sha256 of
    ``plots`` (files already in ``model_dir``) to ``files``; validate; write atomically."""
    path = Path(model_dir) / CARD_FILE
    fields = json.loads(path.read_text())
    fields["metrics"].update(metrics)
    fields.update(extra)
    for name in plots:
        fields["files"][name] = sha256_file(Path(model_dir) / name)
    card = ModelCard.model_validate(fields)
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return card


# --------------------------------------------------------------------------- latency


def measure_latency(model_dir: Path, frames: Sequence[bytes], repeats: int = 1) -> dict[str, Any]:
    """Per-frame milliseconds through ``app.pipeline.segment`` (decode → preprocess → infer →
    postprocess, RLE encoding of the mask as the default JSON answer does), with the service's
    onnxruntime settings; medians and 95th percentiles per stage, frames per second, and the
    stage that dominates. ``frames``: encoded files (e.g. 16-bit TIFFs)."""
    from app.config import Settings
    from app.imaging.limits import DecodeLimits
    from app.metrics import Metrics
    from app.pipeline import segment
    from app.registry import load_entry

    model_dir = Path(model_dir).resolve()
    settings = Settings(model_dir=model_dir.parent.parent)
    entry = load_entry(NAME, model_dir, settings)
    if not entry.ready:
        raise RuntimeError(f"model not ready: {entry.reason}")
    assert entry.card is not None
    metrics, limits = Metrics(), DecodeLimits()
    point = entry.card.default_operating_point
    segment(entry, [frames[0]], point, frozenset({"rle"}), limits, metrics)  # warm-up
    rows: list[dict[str, float]] = []
    shapes = set()
    for _ in range(repeats):
        for data in frames:
            result = segment(entry, [data], point, frozenset({"rle"}), limits, metrics)
            rows.append(result.timing_ms)
            shapes.add(tuple(result.item.shape))
    stages = [k for k in rows[0] if k != "total"]
    med = {k: round(float(np.median([r[k] for r in rows])), 2) for k in [*stages, "total"]}
    p95 = {k: round(float(np.percentile([r[k] for r in rows], 95)), 2) for k in [*stages, "total"]}
    return {
        "frames": len(rows),
        "frame_shape": [list(s) for s in sorted(shapes)],
        "median_ms": med,
        "p95_ms": p95,
        "frames_per_second": round(1000.0 / med["total"], 2),
        "dominant_stage": max(stages, key=lambda k: med[k]),
        "intra_op_threads": settings.intra_op_threads,
        "cpu_count": os.cpu_count(),
    }


def frame_files(data_dir: Path, n: int) -> list[bytes]:
    from training.datasets.phantom import list_items

    return [it.image.read_bytes() for it in list_items(data_dir)[:n]]


# --------------------------------------------------------------------------- normalisation study


def normalisation_study(
    data_dir: Path,
    *,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    build_fn: Callable[[tuple[int, int, int]], Any],
    config: SegTrainConfig,
    run_dir: Path,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the same network once per normalisation on the same train/val split (by sequence)
    and report validation Dice and centroid error at the Dice-best pixel threshold (Keras model,
    masks and centroids at full resolution as served)."""
    from training.datasets.phantom import list_items, load_split, split_by_sequence

    items = list_items(data_dir)
    train_items, val_items = split_by_sequence(items, [1.0 - val_fraction], seed)
    out: dict[str, Any] = {
        "data": str(data_dir),
        "split_sizes": {"train": len(train_items), "val": len(val_items)},
        "input_size": [int(input_size[0]), int(input_size[1])],
        "config": config.as_dict(),
        "results": {},
    }
    for norm in NORMALISATIONS:
        prep = phantom_preprocessing(input_size, norm)
        train, val = load_split(train_items, prep), load_split(val_items, prep)
        shape = (prep.size[0], prep.size[1], 1)
        result = train_segmenter(
            lambda s=shape: build_fn(s), train, val, config, Path(run_dir) / norm
        )
        model = result.model
        probs = probability_maps(lambda b, m=model: m.predict(b, verbose=0), val.x)
        threshold, table = choose_pixel_threshold(probs, val.masks)
        track = centroid_errors(probs, val.masks, threshold)
        track.pop("errors_px")
        has = val.has_lesion.astype(bool)
        dice_lesion = _mean_dice(
            probs[has], [m for m, h in zip(val.masks, has, strict=True) if h], threshold
        )
        out["results"][norm] = {
            "intensity": prep.intensity.model_dump(),
            "val_dice_tumour_frames": dice_lesion,
            "val_mean_dice_all_frames": float(max(table["mean_dice"])),
            "pixel_threshold": threshold,
            "centroid": track,
            "best_epoch": result.best_epoch,
            "epochs": result.epochs_run,
            "training_seconds": round(result.seconds, 1),
        }
        log.info("normalisation %s: %s", norm, out["results"][norm])
    return out


def _mean_dice(
    prob_maps: np.ndarray, masks: Sequence[np.ndarray], threshold: float
) -> float | None:
    from training.segmentation import dice_iou

    values = [
        dice_iou(predicted_mask(p, m.shape, threshold), m)[0]
        for p, m in zip(prob_maps, masks, strict=True)
    ]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- the whole run


def _builder(
    base_filters: int, stages: int, blocks_per_stage: int
) -> Callable[[tuple[int, int, int]], Any]:
    def build(shape: tuple[int, int, int]) -> Any:
        from training.models.resnet18_seg import build as resnet18_seg

        return resnet18_seg(shape, base_filters=base_filters, blocks=(blocks_per_stage,) * stages)

    return build


def train_phantom(
    data_dir: Path,
    out_root: Path = Path("models"),
    version: str = "1.0.0",
    *,
    input_size: Sequence[int] = DEFAULT_INPUT_SIZE,
    normalisation: str = "percentile",
    base_filters: int = 16,
    stages: int = 4,
    blocks_per_stage: int = 2,
    config: SegTrainConfig | None = None,
    synthetic: bool = False,
    test_data: Path | None = None,
    run_dir: Path | None = None,
    val_fraction: float = 0.2,
    normalisation_study_file: Path | None = None,
    latency_frames: int = 10,
    overwrite: bool = False,
) -> Path:
    """The phantom slice end to end; returns ``out_root/phantom_tumor_xray/<version>``.

    ``run_binary_segmentation`` trains, calibrates and exports; then the tracking figures
    (centroid error at full resolution on test, the tracking plot) and the service latency on
    test frames are added to the card.
    """
    from training.datasets.phantom import load

    config = config or SegTrainConfig(flip_lr=True, flip_ud=False)
    prep = phantom_preprocessing(input_size, normalisation)
    seed = config.seed
    splits: SegSplits = load(
        Path(data_dir), prep, val_fraction=val_fraction, seed=seed, test_root=test_data
    )
    log.info("phantom splits %s", splits.sizes)
    shape = (prep.size[0], prep.size[1], 1)
    build = _builder(base_filters, stages, blocks_per_stage)
    study = (
        json.loads(Path(normalisation_study_file).read_text()) if normalisation_study_file else None
    )
    info = RunInfo(
        synthetic=synthetic,
        seed=seed,
        arch="resnet18_seg",
        arch_options={
            "base_filters": base_filters,
            "blocks": [blocks_per_stage] * stages,
            "skips": True,
            "input_skip": True,
        },
        extra={
            "split": "train/val by sequence (consecutive frames kept together)"
            + ("; test: separate folder" if test_data else "; test: held-out sequences"),
            "val_fraction": val_fraction,
            "input_size_choice": (
                f"{prep.size[0]}x{prep.size[1]}: a quarter of 768x1024 per side keeps CPU "
                "training under ~20 minutes; the centroid is measured at full resolution"
            ),
            "normalisation": normalisation,
            **({"normalisation_study": _study_summary(study)} if study else {}),
        },
    )
    run_dir = Path(run_dir) if run_dir else Path("runs") / NAME / version
    final = run_binary_segmentation(
        template=PHANTOM_CARD,
        prep=prep,
        splits=splits,
        build_fn=lambda: build(shape),
        config=config,
        out_root=Path(out_root),
        version=version,
        run_dir=run_dir,
        info=info,
        conformance=CONFORMANCE,
        overwrite=overwrite,
    )
    add_tracking_report(final, splits.test, test_data or data_dir, latency_frames)
    return final


def _study_summary(study: dict[str, Any]) -> dict[str, Any]:
    return {
        norm: {
            "val_dice_tumour_frames": r["val_dice_tumour_frames"],
            "val_centroid_median_px": r["centroid"]["median_px"],
            "val_centroid_p95_px": r["centroid"]["p95_px"],
        }
        for norm, r in study["results"].items()
    } | {
        "split_sizes": study["split_sizes"],
        "epochs": study["config"]["epochs"],
        "input_size": study.get("input_size"),
        "measured_on": "validation split (by sequence), masks and centroids at full resolution",
    }


def record_normalisation_study(model_dir: Path, study_file: Path) -> ModelCard:
    """Write the summary of a ``normalisation_study`` JSON into the card's
    ``training.normalisation_study`` (for an artifact trained before the study finished)."""
    path = Path(model_dir) / CARD_FILE
    fields = json.loads(path.read_text())
    fields["training"]["normalisation_study"] = _study_summary(
        json.loads(Path(study_file).read_text())
    )
    card = ModelCard.model_validate(fields)
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(json.dumps(card.model_dump(mode="json"), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return card


def add_tracking_report(
    model_dir: Path, test: SegSplit, frames_dir: Path | None, latency_frames: int = 10
) -> ModelCard:
    """Centroid metrics and the tracking plot on ``test`` through the exported ONNX graph, and
    (when ``frames_dir`` is given) the service latency on its first frames; written into the
    card."""
    from training.export import onnx_runner, onnx_session

    model_dir = Path(model_dir)
    card = ModelCard.model_validate(json.loads((model_dir / CARD_FILE).read_text()))
    assert card.pixel_threshold is not None
    run = onnx_runner(onnx_session(model_dir / "model.onnx"))
    probs = probability_maps(run, test.x)
    tracking = tracking_metrics(probs, test, card.pixel_threshold)
    plot_tracking(test, probs, card.pixel_threshold, model_dir / TRACKING_PLOT)
    extra: dict[str, Any] = {}
    if frames_dir is not None and latency_frames > 0:
        latency = measure_latency(model_dir, frame_files(Path(frames_dir), latency_frames))
        latency["note"] = "measured at export on the training machine; CPU only"
        extra["service_latency"] = latency
    amended = amend_card(model_dir, {"centroid": tracking}, extra, [TRACKING_PLOT])
    from app.config import Settings
    from app.registry import load_entry

    entry = load_entry(card.name, model_dir, Settings(model_dir=model_dir.parent.parent))
    if not entry.ready:
        raise RuntimeError(f"amended artifact is not servable: {entry.reason}")
    return amended


# --------------------------------------------------------------------------- command line


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.phantom_pipeline")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("study", help="fixed window vs percentile window, on validation")
    st.add_argument("--data", required=True)
    st.add_argument("--out", required=True, help="JSON file to write")
    st.add_argument("--input-size", type=int, nargs=2, default=DEFAULT_INPUT_SIZE)
    st.add_argument("--base-filters", type=int, default=16)
    st.add_argument("--epochs", type=int, default=12)
    st.add_argument("--batch-size", type=int, default=8)
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--threads", type=int, default=2)
    st.add_argument("--run-dir", default="runs/phantom_norm_study")
    la = sub.add_parser("latency", help="per-frame time through app.pipeline.segment")
    la.add_argument("--model", required=True)
    la.add_argument("--data", required=True)
    la.add_argument("--frames", type=int, default=20)
    la.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "study":
        config = SegTrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            threads=args.threads,
            early_stopping_patience=100,
        )
        result = normalisation_study(
            Path(args.data),
            input_size=args.input_size,
            build_fn=_builder(args.base_filters, 4, 2),
            config=config,
            run_dir=Path(args.run_dir),
            seed=args.seed,
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps(_study_summary(result), indent=2))
    else:
        res = measure_latency(
            Path(args.model), frame_files(Path(args.data), args.frames), args.repeats
        )
        print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.monotonic()
    code = _main()
    log.info("done in %.1f s", time.monotonic() - t0)
    raise SystemExit(code)
