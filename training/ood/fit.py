"""Fit the in-distribution statistics and measure them: features through onnxruntime, per
block a class-conditional Gaussian with one shared covariance (cross-validated shrinkage) on
the training split, the threshold at a false-alarm rate on the validation split, AUROC per OOD
kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from app.imaging.ood import STATISTICS_VERSION, OodStats, joint_vector, scores
from training.ood.surgery import FEATURES_OUTPUT

# A standardised dimension whose training spread is below this is treated as this (a share of
# saturated pixels that is the same in every training image must not divide by zero).
MIN_SCALE = 1e-6


def session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def run_features(
    sess: ort.InferenceSession, x: np.ndarray, batch: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(output 0, features) for (N, ...) inputs, in batches."""
    name = sess.get_inputs()[0].name
    outs0, feats = [], []
    for i in range(0, len(x), batch):
        o0, f = sess.run([sess.get_outputs()[0].name, FEATURES_OUTPUT], {name: x[i : i + batch]})
        outs0.append(np.asarray(o0))
        feats.append(np.asarray(f))
    return np.concatenate(outs0), np.concatenate(feats)


def vectors(
    feats: np.ndarray,
    x: np.ndarray,
    layout: str,
    grid: Sequence[int],
    version: int = STATISTICS_VERSION,
) -> np.ndarray:
    """(N, D) joint vectors (features, then input statistics of ``version``) for N inputs."""
    g = tuple(grid)
    return np.stack(
        [joint_vector(f, xi, layout, g, version) for f, xi in zip(feats, x, strict=True)]
    )


SHRINKAGE_GRID = tuple(float(a) for a in np.logspace(-3, 0, 16)[:-1])
FOLDS = 5


@dataclass(frozen=True)
class Fitted:
    """The statistics and how they were chosen: the shrinkage of each block and the
    out-of-fold squared distances of the training rows (N, B)."""

    stats: OodStats
    shrinkage: list[float]
    oof_d2: np.ndarray


def _shrunk_precision(resid: np.ndarray, alpha: float) -> np.ndarray:
    s = resid.T @ resid / len(resid)
    mu = float(np.trace(s)) / s.shape[0]
    cov = (1 - alpha) * s + alpha * mu * np.eye(s.shape[0])
    p = np.linalg.inv(cov)
    return np.asarray((p + p.T) / 2)


def _fit_block(
    z: np.ndarray, y: np.ndarray, classes: list[int], alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """(class means (K, d), shared shrunk precision (d, d)) of standardised rows ``z``."""
    means = np.stack([z[y == c].mean(axis=0) for c in classes])
    resid = np.concatenate([z[y == c] - means[k] for k, c in enumerate(classes)])
    return means, _shrunk_precision(resid, alpha)


def _d2(z: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    diff = z[:, None, :] - means[None, :, :]
    out: np.ndarray = np.einsum("nkd,de,nke->nk", diff, precision, diff)
    return out


def _folds(groups: Sequence[str], seed: int) -> np.ndarray:
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    fold_of = {names[i]: r % FOLDS for r, i in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups])


def fit_ood(
    v: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    blocks: np.ndarray,
    seed: int,
    shrinkage: Sequence[float] | None = None,
    version: int = 1,
) -> Fitted:
    """Fit the statistics on training rows ``v`` (N, D) with classes ``y`` and patients
    ``groups``: each block's class means and shared covariance, shrunk towards its scaled
    identity by the shrinkage (from :data:`SHRINKAGE_GRID`) whose Gaussian gives held-out
    patients the highest likelihood over 5 group folds (neighbouring slices and frames of one
    patient make rows far from independent, which closed-form estimates such as Ledoit-Wolf
    assume); each block's squared distance is standardised by the mean and standard deviation
    of its out-of-fold values. ``shrinkage`` fixes the values instead of choosing them;
    ``version`` is the input statistics' version the rows were made with (recorded)."""
    y = np.asarray(y)
    classes = sorted({int(c) for c in y})
    center = v.mean(axis=0)
    scale = np.maximum(v.std(axis=0), MIN_SCALE)
    z = (v - center) / scale
    folds = _folds(groups, seed)
    n_blocks = int(blocks.max()) + 1
    d = v.shape[1]
    means = np.zeros((len(classes), d))
    precision = np.zeros((d, d))
    oof = np.zeros((len(v), n_blocks))
    chosen: list[float] = []
    for b in range(n_blocks):
        idx = np.flatnonzero(blocks == b)
        zb = z[:, idx]
        grid = [shrinkage[b]] if shrinkage is not None else list(SHRINKAGE_GRID)
        best, best_ll, best_oof = grid[0], -np.inf, np.zeros(len(v))
        for alpha in grid:
            ll, d2_oof = 0.0, np.zeros(len(v))
            for f in range(FOLDS):
                fit_rows, held = folds != f, folds == f
                if not held.any() or {int(c) for c in y[fit_rows]} != set(classes):
                    continue
                m, p = _fit_block(zb[fit_rows], y[fit_rows], classes, alpha)
                d2 = _d2(zb[held], m, p)
                own = d2[np.arange(int(held.sum())), [classes.index(int(c)) for c in y[held]]]
                _, logdet = np.linalg.slogdet(p)
                ll += float(np.sum(0.5 * logdet - 0.5 * own))
                d2_oof[held] = d2.min(axis=1)
            if ll > best_ll:
                best, best_ll, best_oof = alpha, ll, d2_oof
        m, p = _fit_block(zb, y, classes, best)
        means[:, idx] = m
        precision[np.ix_(idx, idx)] = p
        oof[:, b] = best_oof
        chosen.append(best)
    block_center = oof.mean(axis=0)
    block_scale = np.maximum(oof.std(axis=0), MIN_SCALE)
    stats = OodStats(
        center,
        scale,
        means,
        precision,
        blocks.astype(np.int64),
        block_center,
        block_scale,
        version,
    )
    return Fitted(stats, chosen, oof)


def threshold_at(scores: np.ndarray, far: float) -> float:
    """The score above which ``far`` of ``scores`` (in-distribution) lie."""
    return float(np.quantile(scores, 1.0 - far, method="higher"))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an OOD score exceeds an in-distribution one (ties count half)."""
    a = np.asarray(in_scores, dtype=np.float64)
    b = np.asarray(out_scores, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("AUROC needs both sets")
    greater = (b[:, None] > a[None, :]).sum()
    ties = (b[:, None] == a[None, :]).sum()
    return float((greater + 0.5 * ties) / (a.size * b.size))


def score_inputs(
    stats: OodStats,
    sess: ort.InferenceSession,
    x: np.ndarray,
    layout: str,
    grid: Sequence[int],
) -> np.ndarray:
    """(N,) OOD scores of N preprocessed inputs (with the statistics' own version)."""
    _, feats = run_features(sess, x)
    return scores(stats, vectors(feats, x, layout, grid, stats.version))
