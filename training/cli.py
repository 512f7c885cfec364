"""``medserve-train`` command line (subcommands are added by the training slices)."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="medserve-train")
    parser.add_subparsers(dest="command", required=True)
    parser.parse_args(argv)
    return 0
