"""The ``medserve batch`` arguments (no Ray import: ``medserve serve`` starts as fast as
before); ``app.batch.run.main`` runs the command."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", required=True, help="model name (a folder under the model dir)")
    add("--input", required=True, help="folder, glob, manifest CSV, or pacs:<QIDO query>")
    add("--output", required=True, type=Path, help="output folder of Parquet parts")
    add("--operating-point", default=None, help="default: the card's")
    add("--ray-address", default=None, help="a Ray cluster (ray://host:10001 or host:6379)")
    add("--workers", type=int, default=None, help="inference actors (default: CPUs / 2)")
    add("--batch-size", type=int, default=32, help="inputs per model call")
    add("--rows-per-part", type=int, default=1000, help="rows per Parquet part file")
    add("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    add("--resume", action="store_true", help="skip the ids the output already holds")
    add("--stow", action="store_true", help="store SEG/SR into the PACS (PACS input only)")
    add("--model-dir", default=None, help="overrides MEDSERVE_MODEL_DIR")
