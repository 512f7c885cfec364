"""Loaders, one per data-set layout: decode through ``app.imaging``, split by patient."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np


class _Sized(Protocol):
    def __len__(self) -> int: ...


SplitT = TypeVar("SplitT", bound=_Sized)


@dataclass
class DataSplits(Generic[SplitT]):
    """train / val / test of one data set, with the training split's class weights."""

    train: SplitT
    val: SplitT
    test: SplitT
    class_weight: dict[int, float]

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def class_weights(y: np.ndarray) -> dict[int, float]:
    """Balanced weights ``n / (2 * n_class)`` (Keras ``class_weight``); 1.0 for an absent class."""
    labels = np.asarray(y).astype(np.int64)
    n = float(labels.size)
    return {c: (n / (2.0 * k) if (k := int(np.sum(labels == c))) else 1.0) for c in (0, 1)}
