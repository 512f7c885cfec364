"""The one table of upload endpoints: path -> model, task, description.

Every upload path is written here and nowhere else in ``app/``: the routes are built from this
table, the registry checks each card against it (a card whose ``endpoint`` or ``task`` disagrees
is not ready, with the reason), and the tests and the benchmarks read it. A model that is not in
the table is served by the Open Inference Protocol (``/v2``) only; its card's ``endpoint`` is null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Task = Literal["binary_classification", "binary_segmentation"]


@dataclass(frozen=True)
class Endpoint:
    """``POST path`` serves ``model``, whose card must say ``task`` and ``endpoint == path``."""

    path: str
    model: str
    task: Task
    description: str


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "/classify/xray",
        "pneumonia_xray",
        "binary_classification",
        "Pneumonia from a chest X-ray (PNG, JPEG, TIFF 8/16-bit, DICOM CR/DX).",
    ),
    Endpoint(
        "/classify/ct",
        "covid_ct",
        "binary_classification",
        "COVID-19 from a chest CT volume (NIfTI, zipped DICOM series, DICOM slices, multi-frame).",
    ),
    Endpoint(
        "/segment/mri",
        "brain_tumor_mri",
        "binary_segmentation",
        "Brain-tumour (FLAIR abnormality) mask on one MRI slice: PNG, TIFF, JPEG, DICOM MR.",
    ),
    Endpoint(
        "/segment/xray",
        "phantom_tumor_xray",
        "binary_segmentation",
        "Tumour mask and centroid on a 16-bit X-ray of a phantom: 16-bit PNG/TIFF, DICOM.",
    ),
)


def _rows(table: Sequence[Endpoint] | None) -> Sequence[Endpoint]:
    """``table``, or this module's ``ENDPOINTS`` as it is when called (a test may extend it)."""
    return ENDPOINTS if table is None else table


def for_model(name: str, table: Sequence[Endpoint] | None = None) -> Endpoint | None:
    """The table's row for ``name``, or None (the model is served by ``/v2`` only)."""
    return next((e for e in _rows(table) if e.model == name), None)


def path_of(name: str, table: Sequence[Endpoint] | None = None) -> str | None:
    """The upload path serving ``name`` (what its card's ``endpoint`` says), or None."""
    row = for_model(name, table)
    return row.path if row else None


def for_path(path: str, table: Sequence[Endpoint] | None = None) -> Endpoint:
    """The row for ``path`` (KeyError if the table has none)."""
    for e in _rows(table):
        if e.path == path:
            return e
    raise KeyError(path)


def of_task(task: Task, table: Sequence[Endpoint] | None = None) -> tuple[Endpoint, ...]:
    return tuple(e for e in _rows(table) if e.task == task)


def card_disagreement(
    name: str, card_task: str, card_endpoint: str | None, table: Sequence[Endpoint] | None = None
) -> str | None:
    """Why a card cannot serve as ``name`` under this table, or None when it agrees."""
    row = for_model(name, table)
    if row is None:
        if card_endpoint is None:
            return None
        return (
            f"card endpoint {card_endpoint} is not this model's: the endpoint table "
            "(app/endpoints.py) has no row for it (a model without one has endpoint null and is "
            "served by /v2 only)"
        )
    if card_endpoint != row.path:
        return f"card endpoint {card_endpoint} disagrees with the endpoint table ({row.path})"
    if card_task != row.task:
        return f"card task {card_task} disagrees with the endpoint table ({row.task} at {row.path})"
    return None


def check_table(table: Sequence[Endpoint]) -> None:
    """Refuse a table with a path or a model twice (ValueError)."""
    paths = [e.path for e in table]
    models = [e.model for e in table]
    if len(set(paths)) != len(paths) or len(set(models)) != len(models):
        raise ValueError("the endpoint table names a path or a model twice")
