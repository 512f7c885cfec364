"""``medserve-train synth|train|evaluate covid_ct``: the COVID-19 CT slice's options and handlers.

``training.cli`` adds these options to its shared sub-parsers (``add_arguments``) and hands
``args.dataset == "covid_ct"`` to ``synth`` / ``train`` / ``evaluate``; heavy imports happen
inside the handlers.

    medserve-train synth covid_ct --out DIR --n N --seed S [--volume-size 128] [--slices 36 44] \\
        [--categories CT-0 CT-2 CT-3] [--preview docs/covid_ct_preview.png]
    medserve-train train covid_ct --data DIR --test-data DIR2 --out models --version 1.0.0 \\
        --volume-shape 32 64 64 --width 0.5 --epochs E --batch-size B --seed S --synthetic
    medserve-train evaluate covid_ct --model models/covid_ct/1.0.0 --data DIR2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CATEGORIES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")


def _has(parser: argparse.ArgumentParser, option: str) -> bool:
    return option in parser._option_string_actions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the covid_ct options to ``parser``'s synth, train and evaluate sub-parsers."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    synth, train, ev = subs["synth"], subs["train"], subs["evaluate"]
    g = synth.add_argument_group("covid_ct")
    g.add_argument(
        "--volume-size",
        type=int,
        default=128,
        help="covid_ct: rows = columns per slice (512 = MosMedData; the field of view stays)",
    )
    g.add_argument(
        "--slices",
        type=int,
        nargs=2,
        default=(36, 44),
        metavar=("MIN", "MAX"),
        help="covid_ct: slices per study (the cranio-caudal coverage stays ~270-330 mm)",
    )
    g.add_argument(
        "--categories",
        nargs="+",
        default=list(CATEGORIES),
        choices=CATEGORIES,
        help="covid_ct: categories to write (study numbers stay those of the full set)",
    )
    g.add_argument("--preview", help="covid_ct: also write a preview PNG here")
    for p in (train, ev):
        c = p.add_argument_group("covid_ct")
        c.add_argument("--negative", nargs="+", default=["CT-0"], choices=CATEGORIES)
        c.add_argument("--positive", nargs="+", default=["CT-2", "CT-3"], choices=CATEGORIES)
    t = train.add_argument_group("covid_ct")
    t.add_argument(
        "--volume-shape",
        type=int,
        nargs=3,
        default=(32, 64, 64),
        metavar=("D", "H", "W"),
        help="covid_ct: model input slices, rows, columns",
    )
    if not _has(train, "--test-fraction"):
        t.add_argument(
            "--test-fraction",
            type=float,
            default=0.15,
            help="covid_ct: test share when --test-data is not given",
        )
    t.add_argument("--flip-lr", type=float, default=0.5, help="covid_ct: left-right flip rate")
    t.add_argument("--rotation-deg", type=float, default=10.0, help="covid_ct: axial rotation")
    t.add_argument("--no-cache", action="store_true", help="covid_ct: do not cache arrays")
    if not _has(train, "--threads"):
        t.add_argument("--threads", type=int, default=2, help="TensorFlow threads (0: all)")


def synth(args: argparse.Namespace) -> int:
    from training.synthetic import covid_ct

    cfg = covid_ct.SynthConfig(
        n=args.n,
        seed=args.seed,
        size=args.volume_size,
        slices=(args.slices[0], args.slices[1]),
        categories=tuple(args.categories),
    )
    files = covid_ct.generate(Path(args.out), cfg, overwrite=args.overwrite)
    if args.preview:
        covid_ct.preview(Path(args.preview), cfg)
    print(json.dumps({"written": len(files), "counts": covid_ct.counts(Path(args.out))}))
    return 0


def train(args: argparse.Namespace) -> int:
    from training.covid_ct import train_covid_ct

    path = train_covid_ct(
        Path(args.data),
        Path(args.out),
        args.version,
        size=tuple(args.volume_shape),
        width=args.width if args.width is not None else 0.5,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        synthetic=args.synthetic,
        test_data=Path(args.test_data) if args.test_data else None,
        run_dir=Path(args.run_dir) if args.run_dir else None,
        val_fraction=args.val_fraction,
        test_fraction=getattr(args, "test_fraction", 0.15),
        negative=tuple(args.negative),
        positive=tuple(args.positive),
        augment=not args.no_augment,
        flip_lr=args.flip_lr,
        rotation_deg=args.rotation_deg,
        early_stopping_patience=args.patience,
        cache=not args.no_cache,
        threads=getattr(args, "threads", None) or None,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    card = json.loads((path / "model_card.json").read_text())
    keys = ("auc", "accuracy", "precision", "recall", "f1", "ece")
    summary = {
        "artifact": str(path),
        "metrics": {k: card["metrics"][k] for k in keys},
        "calibration": card["calibration"],
        "operating_points": card["operating_points"],
        "conformance": card["conformance"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from training.covid_ct import evaluate_covid_ct

    metrics = evaluate_covid_ct(
        Path(args.model),
        Path(args.data),
        negative=tuple(args.negative),
        positive=tuple(args.positive),
    )
    print(json.dumps(metrics, indent=2))
    return 0
