"""Out-of-distribution score: how far one input lies from the model's training data.

Pure numpy. The model exports an extra output (pooled penultimate / bottleneck features, see the
card's ``ood`` section); this module joins those features with statistics of the input tensor
itself into one vector of three blocks:

0. the model's features;
1. a coarse block-mean thumbnail of the input (where things are);
2. global statistics: spread, mean absolute gradient per axis, share of values at the minimum
   and the maximum, and the intensity-weighted centroid, second and third central moments
   (shape and orientation: a rotated or flipped input moves them); from statistics version 2
   also the intensity quantiles and the share of equal neighbouring values along each axis
   (how the grey levels are spread: another modality windowed into the same range, a
   posterised copy at a lower bit depth).

The statistics file records its version (:data:`STATISTICS_VERSIONS`): version 1 (a file
without a version) has the shares at the minimum and maximum as they are and no quantiles;
version 2 takes the shares' logarithm (a film with more background than most is not a
ten-sigma outlier of a linear share) and appends the quantiles and equal-neighbour shares to
block 2. A file is scored with the vector of its own version, so statistics fitted before
version 2 keep their scores.

Each block is scored with the Mahalanobis distance to the nearest class mean under one shared
covariance (Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples
and Adversarial Attacks", NeurIPS 2018); the squared distances are standardised by their
held-out in-distribution mean and spread, and the score is the largest of the three (a change
in a few dimensions is not drowned by the chi-square noise of hundreds of feature dimensions).
Higher score = further from the training data. The fitted statistics live in the card's
statistics file; training imports this module, so the score a threshold was set on is the score
the service computes.
"""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

STATS_KEYS = (
    "center",
    "scale",
    "class_means",
    "precision",
    "blocks",
    "block_center",
    "block_scale",
)
# The input statistics' versions (a file without a version is version 1) and the newest.
STATISTICS_VERSIONS = (1, 2)
STATISTICS_VERSION = 2
# Version 2's intensity quantiles (of the channel-averaged preprocessed input).
QUANTILES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def _spatial(x: np.ndarray, layout: str) -> np.ndarray:
    """One input of a batch in the card's layout -> its spatial array, channels averaged:
    ``(H, W)`` for 2D layouts, ``(D, H, W)`` for volumes; float64."""
    a = np.asarray(x, dtype=np.float64)
    if layout in ("NHWC", "NDHWC"):
        return a[..., 0] if a.shape[-1] == 1 else np.asarray(a.mean(axis=-1))
    if layout in ("NCHW", "NCDHW"):
        return a[0] if a.shape[0] == 1 else np.asarray(a.mean(axis=0))
    raise ValueError(f"unknown layout {layout!r}")


# The statistics below are numpy's (``np.mean``, ``np.std``, ``np.diff``, ``np.linspace``)
# without the wrappers around the reductions: on a 128x128 input the wrappers took more time
# than the arithmetic (version 1: 0.24 -> 0.15 ms, version 2: 0.44 -> 0.29 ms, most of a
# request's OOD step; issue 18). The means, spread and differences are numpy's values to the
# bit; the thumbnail and the moments are summed in another order (within 1e-13 of the previous
# code's values; an image's moments come from its raw moments, within 1e-14 of the two-pass
# values but for a line's spread across it: exactly 0, where the two-pass sum left 1e-32).
# ``tests/ood/test_stats.py`` holds the plain formulas.


def _mean(a: np.ndarray) -> float:
    """``np.mean(a)`` (float64 or bool ``a``), the same value."""
    if a.dtype == np.bool_:
        return int(np.count_nonzero(a)) / a.size
    return float(np.add.reduce(a, axis=None)) / a.size


def _std(a: np.ndarray) -> float:
    """``np.std(a)``, the same value."""
    dev = a - float(np.add.reduce(a, axis=None)) / a.size
    np.multiply(dev, dev, out=dev)
    return float(np.sqrt(float(np.add.reduce(dev, axis=None)) / a.size))


@lru_cache(maxsize=32)
def _coords(n: int) -> np.ndarray:
    """An axis of ``n`` positions scaled to [0, 1] (read-only, shared)."""
    c = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    c.flags.writeable = False
    return c


def _block_means(a: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Means of ``grid`` near-equal blocks of ``a`` (one per axis), flattened in C order."""
    if all(n % cells == 0 for n, cells in zip(a.shape, grid, strict=True)):
        # equal blocks: one axis at a time, each sum over whole contiguous rows (the two inner
        # axes of a (8, 16, 8, 16) view summed at once took 18 us of a 128x128 input, these
        # two sums 7 us)
        sums = a
        for k, (n, cells) in enumerate(zip(a.shape, grid, strict=True)):
            view = sums.reshape(*sums.shape[:k], cells, n // cells, *sums.shape[k + 1 :])
            sums = np.add.reduce(view, axis=k + 1)
        return np.asarray((sums / (a.size // sums.size)).ravel())
    out = a
    for axis, cells in enumerate(grid):
        n = out.shape[axis]
        edges = np.linspace(0, n, min(cells, n) + 1).round().astype(np.int64)
        sums = np.add.reduceat(out, edges[:-1], axis=axis)
        shape = [1] * out.ndim
        shape[axis] = -1
        out = sums / np.diff(edges).reshape(shape)
    return np.asarray(out.ravel())


_TINY = float(np.finfo(np.float64).tiny)


@lru_cache(maxsize=32)
def _powers(n: int) -> np.ndarray:
    """An axis of ``n`` positions scaled to [0, 1], less 0.5, and its powers 0-3 as columns:
    (n, 4), read-only, shared."""
    t = _coords(n) - 0.5
    cols = np.stack([np.ones(n), t, t * t, t * t * t], axis=1)
    cols.flags.writeable = False
    return cols


_EPS = float(np.finfo(np.float64).eps)


def _variance(second: float, first: float) -> float:
    """``second - first**2`` (a raw second moment less its squared mean), 0 when that is
    within the rounding of the two (an input whose weight lies on one line along the axis:
    the two-pass formula's exact 0, which the elongation ratio's logarithm tells apart)."""
    v = second - first * first
    return 0.0 if v <= 8 * _EPS * second else v  # NaN stays NaN


def _moments_2d(a: np.ndarray, lo: float) -> list[float]:
    """:func:`_moments` of a 2-D ``a`` from its raw moments about the image's middle: the
    sums of ``(a - lo) s^p t^q`` (``s``, ``t`` the centred coordinates, p, q up to 3) are
    one (4, H) x (H, W) x (W, 4) product, and the central moments the usual polynomials in
    them. About the middle the coordinates are at most 0.5, so the polynomials lose at most a
    few units in the last place of values up to 0.25 (1e-16 absolute; a spread within that
    is 0, see :func:`_variance`). Two matrix products where the marginals and their dot
    products took twenty numpy calls (33 -> 10 us on a 128 x 128 input; issue 18)."""
    w = a - lo if lo != 0 else a  # a windowed input's minimum is most often 0: no copy
    # (H, W) x (W, 4) first: OpenBLAS took 6 us for it, twice that for (4, H) x (H, W)
    m = (_powers(a.shape[0]).T @ (w @ _powers(a.shape[1]))).tolist()
    total = m[0][0]
    if total <= 0:  # w is all zeros (and exactly: it is a - lo), or there are no values
        return [0.0] * 8
    # the centroid about the middle, then the central moments from the raw ones
    s, t = m[1][0] / total, m[0][1] / total
    ss, tt, st = m[2][0] / total, m[0][2] / total, m[1][1] / total
    var_s, var_t = _variance(ss, s), _variance(tt, t)
    third_s = m[3][0] / total - 3 * s * ss + 2 * s * s * s
    third_t = m[0][3] / total - 3 * t * tt + 2 * t * t * t
    ratio = math.log((var_t + _TINY) / (var_s + _TINY))
    return [s + 0.5, t + 0.5, var_s, st - s * t, var_t, third_s, third_t, ratio]


def _moments(a: np.ndarray, lo: float) -> list[float]:
    """Intensity-weighted (above the minimum ``lo``) centroid, second central moments (upper
    triangle), third central moment per axis, in coordinates scaled to [0, 1], and the log
    ratio of each axis's second moment to the first axis's (elongation and its direction,
    whatever the size); zeros for a constant input."""
    if a.ndim == 2:
        return _moments_2d(a, lo)
    w = a - lo if lo != 0 else a  # a windowed input's minimum is most often 0: no copy
    k = a.ndim
    n_out = k + k * (k + 1) // 2 + k + (k - 1)
    # the marginals from one sum per axis pair: w summed over the other axes
    if k == 2:
        sums = [np.add.reduce(w, axis=1), np.add.reduce(w, axis=0)]
    else:
        sums = [np.add.reduce(w, axis=tuple(j for j in range(k) if j != i)) for i in range(k)]
    total = float(np.add.reduce(sums[0]))
    if total <= 0:
        return [0.0] * n_out
    coords = [_coords(n) for n in a.shape]
    marg = [m / total for m in sums]
    c = [float(np.dot(m, u)) for m, u in zip(marg, coords, strict=True)]
    centred = [u - ci for u, ci in zip(coords, c, strict=True)]
    second: list[float] = []
    diag: list[float] = []
    for i in range(k):
        for j in range(i, k):
            if i == j:
                diag.append(float(np.dot(marg[i], centred[i] * centred[i])))
                second.append(diag[-1])
            else:
                pair = (
                    w
                    if k == 2
                    else np.add.reduce(w, axis=tuple(m for m in range(k) if m not in (i, j)))
                )
                second.append(float(centred[i] @ pair @ centred[j]) / total)
    third = [float(np.dot(marg[i], centred[i] ** 3)) for i in range(k)]
    ratios = [float(np.log((diag[i] + _TINY) / (diag[0] + _TINY))) for i in range(1, k)]
    return [*c, *second, *third, *ratios]


def _check_version(version: int) -> None:
    if version not in STATISTICS_VERSIONS:
        known = ", ".join(str(v) for v in STATISTICS_VERSIONS)
        raise ValueError(f"OOD statistics version {version} is not known (known: {known})")


def quantiles(a: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """``np.quantile(a, qs)`` (its default linear method), the same float64 values, for any
    ``a``. An input of float64 numbers that are all float32 numbers (a preprocessed tensor)
    is sorted as float32, which orders them as their values (numpy's SIMD sort: this function
    took 38 us on a 128 x 128 input, against 91 us for the ranking by float32 bit patterns in
    65,536 buckets it replaced; a float64 sort is 4x slower; issue 18); numpy's partition is
    an exact selection, so the values at the ranks are the ones it finds, and the
    interpolation is its own formula: the same numbers to the bit. Anything else (NaN,
    float64 values, no values) goes to np.quantile."""
    flat = np.asarray(a, dtype=np.float64).ravel()
    n = flat.size
    single = flat.astype(np.float32)
    if n == 0 or not np.array_equal(single, flat):  # NaN fails the comparison too
        return np.asarray(np.quantile(flat, qs))
    ranked = np.sort(single)
    # numpy's "linear" method: virtual index (n - 1) q, its floor and the next index, the last
    # value beyond the end (no q here is below 0)
    virtual = (n - 1) * np.asarray(qs, dtype=np.float64)
    low = np.floor(virtual)
    gamma = virtual - low
    low_at = low.astype(np.intp)
    below = ranked[low_at].astype(np.float64)
    above = ranked[np.minimum(low_at + 1, n - 1)].astype(np.float64)
    # numpy's _lerp: from the lower value, or from the upper one when gamma >= 0.5
    step = above - below
    out: np.ndarray = below + step * gamma
    np.subtract(above, step * (1 - gamma), out=out, where=gamma >= 0.5)
    return out


def input_statistics(
    x: np.ndarray, layout: str, grid: tuple[int, ...], version: int = 1
) -> np.ndarray:
    """Statistics of one preprocessed input ``x`` (the card's layout without the batch axis):
    the block-mean thumbnail on ``grid`` (one cell count per spatial axis), then the standard
    deviation, the mean absolute difference along each spatial axis, the share of values equal
    to the minimum and to the maximum (version 2: their logarithms, the share floored at one
    value), and the moments; version 2 then appends the intensity quantiles and the share of
    equal neighbouring values per axis. 1-D float64."""
    _check_version(version)
    a = _spatial(x, layout)
    if len(grid) != a.ndim:
        raise ValueError("the grid needs one cell count per spatial axis")
    diffs = [_diff(a, k) if a.shape[k] > 1 else None for k in range(a.ndim)]
    lo, hi = float(a.min()), float(a.max())
    shares = [_mean(a == lo), _mean(a == hi)]
    if version >= 2:
        shares = [float(np.log(max(v, 1.0 / a.size))) for v in shares]
    moments = _moments(a, lo)
    # version 2's equal-neighbour shares, before the abs below (version 1 has none)
    flat = [_mean(d == 0) if d is not None else 1.0 for d in diffs] if version >= 2 else []
    grads = [_mean(np.abs(d, out=d)) if d is not None else 0.0 for d in diffs]
    extra = [_std(a), *grads, *shares]
    parts = [_block_means(a, grid), np.asarray(extra + moments)]
    if version >= 2:
        parts.append(np.asarray([*(float(q) for q in quantiles(a, QUANTILES)), *flat]))
    return np.concatenate(parts)


def _diff(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.diff(a, axis=axis)``."""
    head = [slice(None)] * a.ndim
    tail = [slice(None)] * a.ndim
    head[axis], tail[axis] = slice(1, None), slice(None, -1)
    out: np.ndarray = np.subtract(a[tuple(head)], a[tuple(tail)])
    return out


def block_ids(width: int, grid: tuple[int, ...], n_inputs: int) -> np.ndarray:
    """The block of each value of a joint vector: ``width`` features (0), the thumbnail (1),
    the rest of the ``n_inputs`` input statistics (2)."""
    cells = int(np.prod(grid))
    return np.asarray([0] * width + [1] * cells + [2] * (n_inputs - cells), dtype=np.int64)


@dataclass(frozen=True)
class OodStats:
    """The fitted in-distribution statistics: ``center`` and ``scale`` standardise the joint
    vector; ``class_means`` (K, D) are the class means of the standardised training vectors;
    ``precision`` (D, D) is block-diagonal, each block the inverse of that block's shared
    (shrunk) covariance; ``blocks`` (D,) the block of each value; ``block_center`` and
    ``block_scale`` (B,) standardise each block's squared distance (held-out training rows);
    ``version`` the input statistics the vectors were made with (:func:`input_statistics`)."""

    center: np.ndarray
    scale: np.ndarray
    class_means: np.ndarray
    precision: np.ndarray
    blocks: np.ndarray
    block_center: np.ndarray
    block_scale: np.ndarray
    version: int = 1

    @cached_property
    def block_parts(self) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
        """Per block: its indices in the joint vector, its class means (K, d) and its precision
        (d, d), cut out once (not on every score)."""
        parts = []
        for b in range(self.block_center.shape[0]):
            idx = np.flatnonzero(self.blocks == b)
            block = np.ascontiguousarray(self.precision[np.ix_(idx, idx)])
            parts.append((idx, np.ascontiguousarray(self.class_means[:, idx]), block))
        return tuple(parts)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {k: np.asarray(getattr(self, k), dtype=np.float64) for k in STATS_KEYS}
        if self.version != 1:  # version 1 files have no version (as they were written)
            arrays["version"] = np.asarray(self.version, dtype=np.int64)
        np.savez(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> OodStats:
        """Read a statistics file (``.npz``, no pickles); ValueError when it is not one, or when
        its version is not known to this code (the reason says which)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k], dtype=np.float64) for k in STATS_KEYS}
                raw_version = np.asarray(z["version"]) if "version" in z.files else np.asarray(1)
        except (OSError, KeyError, ValueError, EOFError) as exc:
            raise ValueError("not an OOD statistics file") from exc
        if raw_version.shape != () or raw_version.dtype.kind not in "iu":
            raise ValueError("OOD statistics version is not an integer")
        version = int(raw_version)
        _check_version(version)
        d = arrays["center"].shape
        nb = arrays["block_center"].shape
        blocks = arrays["blocks"]
        if (
            len(d) != 1
            or arrays["scale"].shape != d
            or blocks.shape != d
            or arrays["class_means"].ndim != 2
            or arrays["class_means"].shape[1] != d[0]
            or arrays["precision"].shape != (d[0], d[0])
            or len(nb) != 1
            or arrays["block_scale"].shape != nb
            or not all(np.isfinite(a).all() for a in arrays.values())
            or not (arrays["scale"] > 0).all()
            or not (arrays["block_scale"] > 0).all()
            or not np.array_equal(blocks, np.round(blocks))
            or blocks.min() < 0
            or blocks.max() >= nb[0]
        ):
            raise ValueError("OOD statistics have inconsistent shapes or values")
        arrays["blocks"] = blocks.astype(np.int64)
        return cls(**arrays, version=version)


def joint_vector(
    features: np.ndarray, x: np.ndarray, layout: str, grid: tuple[int, ...], version: int = 1
) -> np.ndarray:
    """The vector the statistics describe: one input's model features (1-D), then its
    input statistics of ``version``."""
    f = np.asarray(features, dtype=np.float64).ravel()
    return np.concatenate([f, input_statistics(x, layout, grid, version)])


def block_distances(stats: OodStats, vectors: np.ndarray) -> np.ndarray:
    """(N, D) joint vectors -> (N, B) squared Mahalanobis distance of each block to its
    nearest class mean."""
    v = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if v.shape[1] != stats.dim:
        raise ValueError(f"OOD vector has {v.shape[1]} values, the statistics {stats.dim}")
    z = (v - stats.center) / stats.scale
    out = np.empty((v.shape[0], stats.block_center.shape[0]))
    for b, (idx, means, precision) in enumerate(stats.block_parts):
        diff = z[:, None, idx] - means[None]
        # diff @ precision as one matrix-vector product per (input, class): the same numbers
        # for an input scored alone or with others. OpenBLAS's matrix product of a (2, 256)
        # difference by the (256, 256) precision took 50 us, five times its two
        # matrix-vector products (10 us; a batch of 5,000 inputs 254 -> 49 ms; issue 18).
        weighted = np.matmul(precision.T, diff[..., None])[..., 0]
        out[:, b] = (weighted * diff).sum(axis=-1).min(axis=1)
    return out


def scores(stats: OodStats, vectors: np.ndarray) -> np.ndarray:
    """(N, D) joint vectors -> (N,) OOD scores: the largest standardised block distance."""
    d2 = block_distances(stats, vectors)
    out: np.ndarray = ((d2 - stats.block_center) / stats.block_scale).max(axis=1)
    return out


def score(
    stats: OodStats,
    features: np.ndarray,
    x: np.ndarray,
    layout: str,
    grid: tuple[int, ...],
    statistics: np.ndarray | None = None,
) -> float:
    """OOD score of one input: ``features`` the model's extra output for it (any shape, one
    input), ``x`` the preprocessed input (the card's layout without the batch axis), and
    ``statistics`` its ``input_statistics`` when they are already taken (else taken here). A
    non-finite score (features overflowed) is reported as the largest float: surely out."""
    if statistics is None:
        v = joint_vector(features, x, layout, grid, stats.version)
    else:
        v = np.concatenate([np.asarray(features, dtype=np.float64).ravel(), statistics])
    s = float(scores(stats, v[None, :])[0])
    return s if np.isfinite(s) else sys.float_info.max
