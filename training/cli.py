"""``medserve-train`` command line.

    medserve-train synth pneumonia --out DIR --n N --seed S [--size-range 192 320]
    medserve-train train pneumonia --data DIR --out models --version 1.0.0 --arch cnn \\
        --size 128 --channels 1 --epochs E --batch-size B --seed S [--synthetic]
    medserve-train evaluate pneumonia --model models/pneumonia_xray/<ver> --data DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASETS = ("pneumonia", "brain_mri")
DATASETS += ("phantom",)  # training/phantom_cli.py
DATASETS += ("covid_ct",)  # training/covid_ct_cli.py


def _synth(args: argparse.Namespace) -> int:
    if args.dataset == "covid_ct":
        from training import covid_ct_cli

        return covid_ct_cli.synth(args)
    if args.dataset == "phantom":
        from training import phantom_cli

        return phantom_cli.synth(args)
    if args.dataset == "brain_mri":
        from training.brain_mri import cli_synth

        return cli_synth(args)
    from training.synthetic import pneumonia

    cfg = pneumonia.SynthConfig(
        n=args.n,
        seed=args.seed,
        size_range=(args.size_range[0], args.size_range[1]),
        test_fraction=args.test_fraction,
    )
    files = pneumonia.generate(Path(args.out), cfg, overwrite=args.overwrite)
    print(json.dumps({"written": len(files), "counts": pneumonia.counts(Path(args.out))}))
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.dataset == "covid_ct":
        from training import covid_ct_cli

        return covid_ct_cli.train(args)
    if args.dataset == "phantom":
        from training import phantom_cli

        return phantom_cli.train(args)
    if args.dataset == "brain_mri":
        from training.brain_mri import cli_train

        return cli_train(args)
    from training.pipeline import train_pneumonia

    path = train_pneumonia(
        Path(args.data),
        Path(args.out),
        args.version,
        arch=args.arch,
        size=args.size,
        channels=args.channels,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        synthetic=args.synthetic,
        test_data=Path(args.test_data) if args.test_data else None,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        val_fraction=args.val_fraction,
        width=args.width,
        weights=args.weights,
        fine_tune_epochs=args.fine_tune_epochs,
        augment=not args.no_augment,
        early_stopping_patience=args.patience,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    card = json.loads((path / "model_card.json").read_text())
    summary = {
        "artifact": str(path),
        "metrics": {
            k: card["metrics"][k] for k in ("auc", "accuracy", "precision", "recall", "f1", "ece")
        },
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.dataset == "covid_ct":
        from training import covid_ct_cli

        return covid_ct_cli.evaluate(args)
    if args.dataset == "phantom":
        from training import phantom_cli

        return phantom_cli.evaluate(args)
    if args.dataset == "brain_mri":
        from training.brain_mri import cli_evaluate

        return cli_evaluate(args)
    from training.evaluate import evaluate_artifact

    metrics = evaluate_artifact(Path(args.model), Path(args.data), dataset=args.dataset)
    print(json.dumps(metrics, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medserve-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic data set in the real layout")
    synth.add_argument("dataset", choices=DATASETS)
    synth.add_argument("--out", required=True, help="folder to write (chest_xray/ goes inside)")
    synth.add_argument("--n", type=int, default=600, help="number of images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--size-range", type=int, nargs=2, default=(192, 320), metavar=("MIN", "MAX")
    )
    synth.add_argument("--test-fraction", type=float, default=0.12, help="share of images in test/")
    synth.add_argument("--overwrite", action="store_true", help="replace images already there")
    synth.set_defaults(func=_synth)

    train = sub.add_parser("train", help="train, calibrate, evaluate and export a model")
    train.add_argument("dataset", choices=DATASETS)
    train.add_argument("--data", required=True, help="folder holding chest_xray/")
    train.add_argument(
        "--test-data", help="take test/ from this folder instead (e.g. another seed)"
    )
    train.add_argument("--out", default="models", help="artifact root: OUT/<name>/<version>/")
    train.add_argument("--version", default="1.0.0")
    train.add_argument("--arch", default="cnn", choices=("cnn", "densenet121", "efficientnetb0"))
    train.add_argument("--size", type=int, default=128, help="model input height and width")
    train.add_argument("--channels", type=int, default=1, choices=(1, 3))
    train.add_argument("--width", type=float, help="cnn: filter/unit multiplier (1.0 = reference)")
    train.add_argument("--weights", default="none", help="efficientnetb0: imagenet | PATH | none")
    train.add_argument("--fine-tune-epochs", type=int, default=0, help="after a frozen-base phase")
    train.add_argument("--epochs", type=int, default=15)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--patience", type=int, default=5, help="early-stopping patience (epochs)")
    train.add_argument("--val-fraction", type=float, default=0.2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--synthetic", action="store_true", help="the data are synthetic (card says so)"
    )
    train.add_argument("--no-augment", action="store_true")
    train.add_argument("--run-dir", help="checkpoints and logs (default runs/<name>/<version>)")
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing version folder"
    )
    train.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    from training.segmentation import add_train_arguments as add_segmentation_arguments

    add_segmentation_arguments(train)  # --loss --base-filters --depth ... (brain_mri)
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="re-check an exported artifact on a data folder (ONNX)")
    ev.add_argument("dataset", choices=DATASETS)
    ev.add_argument("--model", required=True, help="models/<name>/<version>")
    ev.add_argument("--data", required=True, help="folder holding chest_xray/ (test/ is used)")
    ev.set_defaults(func=_evaluate)
    from training import phantom_cli

    phantom_cli.add_arguments(parser)  # phantom options (after the segmentation ones)
    from training import covid_ct_cli

    covid_ct_cli.add_arguments(parser)  # covid_ct options
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("tf2onnx", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="keras.*")
    try:
        return int(args.func(args))
    except Exception as exc:  # a clean message and a non-zero exit; details in the log above
        logging.getLogger("medserve.training").exception("failed")
        print(f"medserve-train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
