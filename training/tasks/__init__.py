"""The task registry: one ``Task`` per model, declared in ``training/tasks/<model_name>/``.

``get(name)`` takes the model name (``pneumonia_xray``, ``covid_ct``, ``brain_tumor_mri``,
``phantom_tumor_xray``) or an old alias (``pneumonia``, ``brain_mri``, ``phantom``);
Every folder here with a ``task.py`` declaring ``TASK`` is found by itself, so a fifth model is
its folder and nothing else; ``register(task)`` adds one from elsewhere (a test's throwaway
task). Declarations import no TensorFlow: that happens inside ``train``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from training.core.task import Task

# The demo models, listed first in help; any other folder with a task.py follows by name.
DEMO = ("pneumonia_xray", "covid_ct", "brain_tumor_mri", "phantom_tumor_xray")


def _folders() -> list[str]:
    found = sorted(
        p.name
        for p in Path(__file__).resolve().parent.iterdir()
        if (p / "task.py").is_file() and not p.name.startswith(("_", "."))
    )
    return [n for n in DEMO if n in found] + [n for n in found if n not in DEMO]


_TASKS: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def register(task: Task) -> Task:
    """Add ``task`` (replacing one of the same name); returns it."""
    for alias in task.aliases:
        owner = _ALIASES.get(alias)
        if owner is not None and owner != task.name:
            raise ValueError(f"alias {alias!r} already names {owner!r}")
    _TASKS[task.name] = task
    _ALIASES.update(dict.fromkeys(task.aliases, task.name))
    return task


def unregister(name: str) -> None:
    task = _TASKS.pop(name, None)
    if task is not None:
        for alias in task.aliases:
            _ALIASES.pop(alias, None)


def _load_builtin() -> None:
    for name in _folders():
        if name not in _TASKS:
            register(importlib.import_module(f"training.tasks.{name}.task").TASK)


def names() -> list[str]:
    """Every registered model name (the four demo models first)."""
    _load_builtin()
    return list(_TASKS)


def aliases() -> dict[str, str]:
    _load_builtin()
    return dict(_ALIASES)


def get(name: str) -> Task:
    """The task called ``name`` (a model name or an alias); ``KeyError`` if none."""
    _load_builtin()
    key = _ALIASES.get(name, name)
    try:
        return _TASKS[key]
    except KeyError:
        raise KeyError(f"no task {name!r}; choose one of {', '.join(_TASKS)}") from None
