"""``medserve-train synth|train|evaluate phantom``: the phantom slice's options and handlers.

``training.cli`` adds these options to its shared sub-parsers (``add_arguments``) and hands
``args.dataset == "phantom"`` to ``synth`` / ``train`` / ``evaluate``. Kept out of
``training.cli`` so that the shared file only gains a few dispatch lines; heavy imports happen
inside the handlers.

    medserve-train synth phantom --out DIR --n N --seed S [--image-size 768 1024] [--format tif]
    medserve-train train phantom --data DIR --test-data DIR2 --out models --version 1.0.0 \\
        --input-size 192 256 --base-filters 16 --epochs E --batch-size B --seed S --synthetic
    medserve-train evaluate phantom --model models/phantom_tumor_xray/1.0.0 --data DIR2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _has(parser: argparse.ArgumentParser, option: str) -> bool:
    return option in parser._option_string_actions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the phantom options to ``parser``'s ``synth`` and ``train`` sub-parsers (options a
    sibling slice already added, e.g. the shared segmentation ones, are left as they are)."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    synth, train = subs["synth"], subs["train"]
    g = synth.add_argument_group("phantom")
    g.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=(768, 1024),
        metavar=("H", "W"),
        help="phantom: frame rows and columns (the field of view stays the same)",
    )
    g.add_argument("--format", default="tif", choices=("tif", "png"), help="phantom: file type")
    g.add_argument(
        "--frames-per-sequence", type=int, nargs=2, default=(4, 8), metavar=("MIN", "MAX")
    )
    g.add_argument(
        "--empty-fraction", type=float, default=0.15, help="phantom: sequences without insert"
    )
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="phantom: processes rendering sequences in parallel (same files as with one)",
    )
    t = train.add_argument_group("phantom")
    t.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(192, 256),
        metavar=("H", "W"),
        help="phantom: model input rows and columns (multiples of 32)",
    )
    t.add_argument(
        "--normalisation",
        default="percentile",
        choices=("percentile", "window"),
        help="phantom: per-frame 0.5-99.5 percentile window or the fixed 0..65535 window",
    )
    t.add_argument("--blocks-per-stage", type=int, default=2, help="phantom: ResNet blocks")
    t.add_argument("--normalisation-study", help="phantom: study JSON to record in the card")
    t.add_argument("--latency-frames", type=int, default=10, help="phantom: frames to time")
    if not _has(train, "--base-filters"):
        from training.segmentation import add_train_arguments

        add_train_arguments(train)


def synth(args: argparse.Namespace) -> int:
    from training.synthetic import phantom

    cfg = phantom.SynthConfig(
        n=args.n,
        seed=args.seed,
        size=(args.image_size[0], args.image_size[1]),
        frames_per_sequence=(args.frames_per_sequence[0], args.frames_per_sequence[1]),
        empty_fraction=args.empty_fraction,
        image_format=args.format,
    )
    files = phantom.generate(Path(args.out), cfg, overwrite=args.overwrite, workers=args.workers)
    sequences = len({p.stem.split("_")[0] for p in files})
    print(json.dumps({"written": len(files), "sequences": sequences, "size": list(cfg.size)}))
    return 0


def train(args: argparse.Namespace) -> int:
    from training.phantom_pipeline import train_phantom
    from training.segmentation import config_from_args

    config = config_from_args(args, flip_lr=True, flip_ud=False)
    path = train_phantom(
        Path(args.data),
        Path(args.out),
        args.version,
        input_size=args.input_size,
        normalisation=args.normalisation,
        base_filters=args.base_filters,
        stages=args.depth,
        blocks_per_stage=args.blocks_per_stage,
        config=config,
        synthetic=args.synthetic,
        test_data=Path(args.test_data) if args.test_data else None,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        val_fraction=args.val_fraction,
        normalisation_study_file=(
            Path(args.normalisation_study) if args.normalisation_study else None
        ),
        latency_frames=args.latency_frames,
        overwrite=args.overwrite,
    )
    card = json.loads((path / "model_card.json").read_text())
    m = card["metrics"]
    keys = ("dice", "iou", "dice_all", "pixel_accuracy", "auc", "sensitivity", "specificity")
    summary = {
        "artifact": str(path),
        "metrics": {k: m.get(k) for k in keys},
        "centroid": m["centroid"],
        "pixel_threshold": card["pixel_threshold"],
        "service_latency": card.get("service_latency"),
    }
    print(json.dumps(summary, indent=2))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Every frame of ``--data`` through the exported artifact (service registry and ONNX)."""
    from app.imaging.card import CARD_FILE, ModelCard
    from training.datasets.phantom import list_items, load_split
    from training.phantom_pipeline import centroid_errors
    from training.segmentation import evaluate_segmentation_artifact, probability_maps

    model_dir = Path(args.model)
    card = ModelCard.model_validate(json.loads((model_dir / CARD_FILE).read_text()))
    split = load_split(list_items(Path(args.data)), card.input.preprocessing)
    metrics = evaluate_segmentation_artifact(model_dir, split)
    from training.export import onnx_runner, onnx_session

    assert card.pixel_threshold is not None
    probs = probability_maps(onnx_runner(onnx_session(model_dir / "model.onnx")), split.x)
    track = centroid_errors(probs, split.masks, card.pixel_threshold)
    track.pop("errors_px")
    metrics["centroid"] = track
    metrics.pop("operating_points", None)
    print(json.dumps(metrics, indent=2))
    return 0
