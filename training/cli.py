"""``medserve-train``: one command for every model, options from each task's dataclasses.

    medserve-train synth    <model> --out DIR [--n N --seed S ...] [--preset F] [--set k=v ...]
    medserve-train train    <model> --data DIR [--test-data DIR] [--out models] [--version V]
                            [--preset F] [--set k=v ...] [--<option> value ...]
    medserve-train evaluate <model> --model models/<model>/<version> --data DIR
    medserve-train study    <model> --data DIR --out FILE.json        (tasks that have one)

``<model>`` is the card's name (``pneumonia_xray``, ``covid_ct``, ``brain_tumor_mri``,
``phantom_tumor_xray``) or an old alias (``pneumonia``, ``brain_mri``, ``phantom``).
``medserve-train <verb> <model> --help`` lists that task's options. ``--preset`` reads the
``[<verb>]`` table of a TOML file (a path, or a preset name of the task folder, e.g. ``demo``;
``--preset-section`` picks another table); flags and ``--set`` override it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from training import tasks
from training.core import options as opts
from training.core.publish import Hook
from training.core.task import Task, TrainRequest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

VERBS = {
    "synth": "write a synthetic data set in the real layout",
    "train": "train, calibrate, evaluate and export a model",
    "evaluate": "re-check an exported artifact on a data folder (through the service's registry)",
    "study": "a task's study (e.g. the phantom's normalisation study)",
}
COMMON = {"preset", "preset_section", "set"}


def _models_help() -> str:
    lines = [f"  {t.name:<20} {t.description}" for t in map(tasks.get, tasks.names())]
    alias = ", ".join(f"{a} = {n}" for a, n in tasks.aliases().items())
    return "models:\n" + "\n".join(lines) + f"\naliases: {alias}"


def _top_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="medserve-train",
        description=(__doc__ or "").split("\n")[0],
        epilog=_models_help(),
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    choices = [*tasks.names(), *tasks.aliases()]
    for verb, text in VERBS.items():
        p = sub.add_parser(
            verb, help=text, description=text, epilog=_models_help(), formatter_class=fmt
        )
        p.add_argument("model", choices=choices, help="the model (task) name")
        p.add_argument("options", nargs=argparse.REMAINDER, help="see: <verb> <model> --help")
    return parser


def _verb_options(task: Task, verb: str) -> type | None:
    return {
        "synth": task.synth_options,
        "train": task.train_options,
        "evaluate": task.evaluate_options,
        "study": task.study_options,
    }[verb]


def _task_parser(task: Task, verb: str, options_cls: type) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"medserve-train {verb} {task.name}",
        description=f"{VERBS[verb]}: {task.name} ({task.description})",
    )
    if verb == "synth":
        p.add_argument("--out", required=True, help="folder to write (the layout goes inside)")
        p.add_argument("--overwrite", action="store_true", help="replace files already there")
    elif verb == "train":
        p.add_argument("--data", required=True, help="data folder in the task's layout")
        p.add_argument("--test-data", help="take the test split from this folder instead")
        p.add_argument("--out", default="models", help="artifact root: OUT/<name>/<version>/")
        p.add_argument("--version", default="1.0.0")
        p.add_argument("--run-dir", help="checkpoints and logs (default runs/<name>/<version>)")
        p.add_argument("--overwrite", action="store_true", help="replace that version folder")
        p.add_argument(
            "--from-checkpoint",
            action="store_true",
            help="do not train: export the best checkpoint of --run-dir's finished run again",
        )
        p.add_argument(
            "--ood-per-kind",
            type=int,
            default=16,
            help="OOD inputs of each kind the export's OOD check is measured on (0: no check)",
        )
    elif verb == "evaluate":
        p.add_argument("--model", required=True, help="models/<name>/<version>")
        p.add_argument("--data", required=True, help="data folder in the task's layout")
    else:
        p.add_argument("--data", required=True, help="data folder in the task's layout")
        p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--preset", help="TOML preset: a file or a preset name of the task folder")
    p.add_argument("--preset-section", help=f"table of the preset to read (default: [{verb}])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set one option")
    opts.add_flags(p, options_cls, f"{task.name} {verb} options")
    return p


def parse(argv: list[str]) -> tuple[Task, str, argparse.Namespace, Any]:
    """(task, verb, the verb-level arguments, the task's options instance)."""
    top = _top_parser()
    if len(argv) < 2 or argv[0] not in VERBS or argv[1].startswith("-"):
        top.parse_args(argv)  # help, or a usage error (exits)
        top.error("expected: <verb> <model> [options]")
    verb = argv[0]
    try:
        task = tasks.get(argv[1])
    except KeyError:
        top.parse_args(argv[:2])  # "invalid choice", with the names
        raise
    options_cls = _verb_options(task, verb)
    if options_cls is None:
        top.error(f"{task.name} has no {verb}")
    parser = _task_parser(task, verb, options_cls)
    args = parser.parse_args(argv[2:])
    values: dict[str, Any] = {}
    try:
        if args.preset:
            values.update(opts.read_preset(task.preset(args.preset), args.preset_section or verb))
        given = {k: v for k, v in vars(args).items() if k not in COMMON}
        flags = {k: v for k, v in given.items() if k in set(_field_names(options_cls))}
        values.update(flags)
        values.update(opts.parse_set(args.set))
        options: Any = opts.build(options_cls, values)
    except (opts.OptionError, FileNotFoundError) as exc:
        parser.error(str(exc))
    return task, verb, args, options


def _field_names(cls: type) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(cls)]


def run(
    task: Task, verb: str, args: argparse.Namespace, options: Any, hooks: tuple[Hook, ...] = ()
) -> dict[str, Any]:
    """Run a parsed command; ``hooks``: extra publish hooks for ``train`` (after the OOD check
    and the task's own)."""
    if verb == "synth":
        return task.synth(Path(args.out), options, bool(args.overwrite))
    if verb == "train":
        from training.ood.publish import ood_hook

        request = TrainRequest(
            data=Path(args.data),
            out=Path(args.out),
            version=args.version,
            test_data=Path(args.test_data) if args.test_data else None,
            run_dir=Path(args.run_dir) if args.run_dir else None,
            overwrite=bool(args.overwrite),
            from_checkpoint=bool(args.from_checkpoint),
            hooks=(ood_hook(args.ood_per_kind), *hooks),
        )
        path = task.train(request, options)
        card = json.loads((path / "model_card.json").read_text())
        return {"artifact": str(path), **(task.summary(card) if task.summary else {})}
    if verb == "evaluate":
        return task.evaluate(Path(args.model), Path(args.data), options)
    assert task.study is not None
    return task.study(Path(args.data), Path(args.out), options)


def main(argv: list[str] | None = None) -> int:
    task, verb, args, options = parse(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("tf2onnx", "tensorflow", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*shuffle=True.*", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="keras.*")
    try:
        result = run(task, verb, args, options)
    except Exception as exc:  # a clean message and a non-zero exit; details in the log above
        logging.getLogger("medserve.training").exception("failed")
        print(f"medserve-train: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result) if verb == "synth" else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
