"""A task's options are one frozen dataclass per verb; this module turns it into command-line
flags, reads presets (TOML tables) and ``--set key=value`` pairs, and checks every value.

A field is declared with ``opt(default, help, choices=...)``. Types understood: ``int``,
``float``, ``str``, ``bool``, ``X | None`` of those, ``tuple[X, X]`` (fixed length) and
``tuple[X, ...]``. Precedence: the dataclass defaults < the preset < flags < ``--set``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class OptionError(ValueError):
    """An option the task does not take, or a value of the wrong type."""


def opt(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    metavar: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its help text (and allowed values; ``metavar``: the names of a
    fixed-length tuple's items in the help)."""
    meta = {"help": help, "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A verb without task options."""


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _scalar(tp: type, value: Any, key: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise OptionError(f"{key}: expected true or false, got {value!r}")
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if isinstance(value, str) and tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise OptionError(f"{key}: expected {tp.__name__}, got {value!r}") from None
    raise OptionError(f"{key}: expected {tp.__name__}, got {value!r}")


def convert(tp: Any, value: Any, key: str) -> Any:
    """``value`` (from TOML, or a string from the command line) as type ``tp``."""
    base, optional = _unwrap(tp)
    if optional and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list | tuple):
            raise OptionError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_scalar(args[0], v, key) for v in value)
        if len(value) != len(args):
            raise OptionError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_scalar(a, v, key) for a, v in zip(args, value, strict=True))
    return _scalar(base, value, key)


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from ``values`` (unknown keys and bad values: ``OptionError``)."""
    fields = _fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise OptionError(f"unknown option(s) {', '.join(unknown)} (this task takes: {known})")
    out: dict[str, Any] = {}
    for key, raw in values.items():
        f, tp = fields[key]
        value = convert(tp, raw, key)
        choices = f.metadata.get("choices")
        items = value if isinstance(value, tuple) else (value,)
        if choices and value is not None and any(v not in choices for v in items):
            raise OptionError(f"{key}: {value!r} is not one of {list(choices)}")
        out[key] = value
    return cls(**out)


def as_dict(options: Any) -> dict[str, Any]:
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}


def read_preset(path: Path, section: str) -> dict[str, Any]:
    """The ``[section]`` table of a TOML preset (an empty dict if the file has none)."""
    data = tomllib.loads(Path(path).read_text())
    table = data.get(section, {})
    if not isinstance(table, dict):
        raise OptionError(f"{path}: [{section}] is not a table")
    return dict(table)


def parse_set(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--set needs key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def add_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per field of ``cls`` (``--field-name``), defaults left out so that only what
    was given is seen."""
    group = parser.add_argument_group(title)
    for name, (f, tp) in _fields(cls).items():
        flag = "--" + name.replace("_", "-")
        base, optional = _unwrap(tp)
        default = f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        if base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(base) is tuple:
            args = typing.get_args(base)
            item = args[0]
            kw["nargs"] = "+" if (len(args) == 2 and args[1] is Ellipsis) else len(args)
            kw["type"] = item
            if f.metadata.get("metavar"):
                kw["metavar"] = f.metadata["metavar"]
        else:
            kw["type"] = str if optional else base
        group.add_argument(flag, **kw)
