"""What a task (one model) declares, and the request every ``train`` receives.

A task folder ``training/tasks/<model_name>/`` declares one ``Task``: its card template, the
options of each verb (frozen dataclasses, see ``training.core.options``), and the functions
behind ``synth``, ``train``, ``evaluate`` and (optionally) ``study``. ``recorded(options)``
says what a ``train`` with those options writes into the card's ``training`` section and
``input.preprocessing`` (the preset test compares it with the committed cards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.core.card import CardTemplate
from training.core.options import NoOptions
from training.core.publish import TrainRequest

__all__ = ["Task", "TrainRequest"]


@dataclass(frozen=True)
class Task:
    """One model: ``name`` is the card's (and the artifact folder's) name."""

    name: str
    kind: Literal["classification", "segmentation"]
    description: str
    template: CardTemplate
    folder: Path  # the task folder: presets live here
    synth_options: type
    synth: Callable[[Path, Any, bool], dict[str, Any]]  # (out, options, overwrite) -> summary
    train_options: type
    train: Callable[[TrainRequest, Any], Path]  # -> the artifact folder
    recorded: Callable[[Any], dict[str, Any]]
    evaluate: Callable[[Path, Path, Any], dict[str, Any]]  # (artifact, data, options)
    evaluate_options: type = NoOptions
    summary: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # card -> printed
    study_options: type | None = None
    study: Callable[[Path, Path, Any], dict[str, Any]] | None = None  # (data, out, options)
    aliases: tuple[str, ...] = field(default=())

    def preset(self, name: str) -> Path:
        """``name`` as a preset file: a path, or a preset of this task folder (``demo``)."""
        path = Path(name)
        if path.is_file():
            return path
        own = self.folder / (name if name.endswith(".toml") else f"{name}.toml")
        if own.is_file():
            return own
        raise FileNotFoundError(f"no preset {name!r} (neither a file nor {own})")
