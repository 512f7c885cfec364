"""One splitter for every data set: whole groups (patients, studies, sequences) per part."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def _cut_by_count(order: Sequence[Hashable], fractions: Sequence[float]) -> list[list[Hashable]]:
    """Part k takes ``round(len * fractions[k])`` groups, at least one while more groups are
    left than parts still to fill, never so many that a later part must stay empty."""
    parts: list[list[Hashable]] = []
    start, n = 0, len(order)
    for i, frac in enumerate(fractions):
        left_after = len(fractions) - i  # parts still to fill after this one (the rest included)
        k = round(n * frac)
        k = max(k, 1) if n - start > left_after else k
        k = min(k, max(n - start - left_after, 0))
        parts.append(list(order[start : start + k]))
        start += k
    parts.append(list(order[start:]))
    return parts


def _cut_by_weight(
    order: Sequence[Hashable], fractions: Sequence[float], weight: dict[Hashable, float]
) -> list[list[Hashable]]:
    """Part k takes groups in order until it holds about ``fractions[k]`` of the total weight
    (a group goes in while at least half of it fits; at least one group while one is left for
    each later part)."""
    total = sum(weight.values())
    parts: list[list[Hashable]] = []
    pos = 0
    for k, frac in enumerate(fractions):
        chosen: list[Hashable] = []
        held = 0.0
        keep = len(fractions) - k  # groups to leave: one for each part still to fill
        while pos < len(order) - keep:
            g = order[pos]
            if chosen and held + weight[g] / 2 > frac * total:
                break
            chosen.append(g)
            held += weight[g]
            pos += 1
        parts.append(chosen)
    parts.append(list(order[pos:]))
    return parts


def split_by_group(
    groups: Sequence[Hashable],
    fractions: Sequence[float],
    seed: int,
    *,
    strata: Sequence[Hashable] | None = None,
    by_items: bool = False,
) -> list[np.ndarray]:
    """Indices of ``groups`` cut into ``len(fractions) + 1`` parts, no group in two parts.

    The distinct groups are sorted and shuffled with ``seed``; part ``k`` takes ``fractions[k]``
    of them and the last part the rest. ``strata`` (one value per item, e.g. the class or the
    severity category; a group must have one): each stratum is shuffled and cut on its own, in
    sorted order with one random generator, so every part has the same mix. ``by_items``:
    fractions are of the items (e.g. frames of a sequence) rather than of the groups.
    Returns one ascending int64 index array per part.
    """
    if strata is not None and len(strata) != len(groups):
        raise ValueError("strata needs one value per item")
    rng = np.random.default_rng(seed)
    group_arr = np.asarray(list(groups), dtype=object)
    strata_arr = (
        np.zeros(len(group_arr), dtype=object)
        if strata is None
        else np.asarray(list(strata), dtype=object)
    )
    part_of: dict[Hashable, int] = {}
    for stratum in sorted(set(strata_arr.tolist())):
        members = group_arr[strata_arr == stratum].tolist()
        order: list[Hashable] = sorted(set(members))
        rng.shuffle(order)
        if by_items:
            weight: dict[Hashable, float] = {g: 0.0 for g in order}
            for g in members:
                weight[g] += 1.0
            parts = _cut_by_weight(order, fractions, weight)
        else:
            parts = _cut_by_count(order, fractions)
        for p, chosen in enumerate(parts):
            part_of.update(dict.fromkeys(chosen, p))
    which = np.array([part_of[g] for g in group_arr.tolist()], dtype=np.int64)
    return [np.flatnonzero(which == p).astype(np.int64) for p in range(len(fractions) + 1)]
