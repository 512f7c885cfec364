"""The publish hook: give a staged artifact (``model.onnx`` + ``model_card.json``) its OOD check.

``add_ood`` takes arrays, not data sets, so any task's publish sequence can call it on its
staging folder with the splits it already holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.imaging.card import CARD_FILE, MODEL_FILE, sha256_bytes
from app.imaging.ood import STATISTICS_VERSION, block_ids, scores
from training.ood import fit
from training.ood.surgery import (
    FEATURES_OUTPUT,
    add_features_output,
    check_output0_unchanged,
    remove_features_output,
)

STATS_FILE = "ood_stats.npz"
FAR_TARGET = 0.01


def add_ood(
    staging_dir: Path,
    train_x: np.ndarray,
    train_y: np.ndarray,
    train_groups: Sequence[str],
    val_x: np.ndarray,
    ood_sets: Mapping[str, np.ndarray],
    *,
    feature_tensors: Sequence[str],
    input_grid: Sequence[int],
    far: float = FAR_TARGET,
    seed: int = 0,
    version: int = STATISTICS_VERSION,
    val_split: str = "val",
    val_sources: Sequence[str] | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Rewrite ``staging_dir``'s ``model.onnx`` with the features output appended (output 0
    checked bit-equal; an existing features output is removed first), fit the statistics of
    input statistics ``version`` on the training split (``train_x`` preprocessed inputs in the
    card's layout, ``train_y`` classes, ``train_groups`` patients for the cross-validated
    shrinkage), set the threshold at ``far`` on the validation inputs ``val_x``, measure AUROC
    per kind of ``ood_sets`` (kind -> preprocessed inputs) against them, write
    ``ood_stats.npz`` and the card's ``ood`` section and ``files`` hashes. ``data`` (how the
    inputs were made) and ``val_split`` (what the validation inputs are) are recorded in the
    card; ``val_sources`` (one label per validation input, e.g. its generator seed) adds the
    false-alarm rate per source. Returns the section."""
    card_path = staging_dir / CARD_FILE
    card: dict[str, Any] = json.loads(card_path.read_text())
    layout = str(card["input"]["layout"])
    # an artifact that already has the features output (a refit) gets it made afresh
    before = remove_features_output((staging_dir / MODEL_FILE).read_bytes())
    after, width = add_features_output(before, feature_tensors)
    check_output0_unchanged(before, after, np.ascontiguousarray(train_x[:8], dtype=np.float32))

    sess = fit.session(after)
    _, feats = fit.run_features(sess, train_x)
    v_train = fit.vectors(feats, train_x, layout, input_grid, version)
    blocks = block_ids(width, tuple(input_grid), v_train.shape[1] - width)
    fitted = fit.fit_ood(v_train, np.asarray(train_y), train_groups, blocks, seed, version=version)
    stats = fitted.stats
    s_train = scores(stats, v_train)
    s_val = fit.score_inputs(stats, sess, val_x, layout, input_grid)
    threshold = fit.threshold_at(s_val, far)
    per_kind: dict[str, float] = {}
    detected: dict[str, float] = {}
    all_ood = []
    for kind, x in ood_sets.items():
        s = fit.score_inputs(stats, sess, x, layout, input_grid)
        per_kind[kind] = round(fit.auroc(s_val, s), 4)
        detected[kind] = round(float(np.mean(s > threshold)), 4)
        all_ood.append(s)
    far_by_source: dict[str, float] = {}
    if val_sources is not None:
        if len(val_sources) != len(s_val):
            raise ValueError("val_sources needs one label per validation input")
        labels = np.asarray([str(v) for v in val_sources])
        for label in sorted(set(labels.tolist())):
            far_by_source[label] = round(float(np.mean(s_val[labels == label] > threshold)), 4)
    stats_bytes = stats.to_bytes()
    section: dict[str, Any] = {
        "method": "mahalanobis",
        "description": (
            "Three blocks, each scored by the squared Mahalanobis distance to the nearest "
            "class mean under one shared covariance (Lee et al. 2018): the model's pooled "
            "features (extra ONNX output, appended last), a block-mean thumbnail of the input "
            "tensor on input_grid, and global input statistics (spread, mean absolute gradient "
            "per axis, share of values at the minimum and maximum, intensity centroid and "
            "second/third moments; statistics_version 2: the shares as logarithms, and the "
            "intensity quantiles and share of equal neighbouring values per axis). "
            "Each covariance is shrunk towards its scaled identity by "
            "the shrinkage with the best 5-fold cross-validated likelihood over patients; each "
            "block distance is standardised by its out-of-fold mean and spread on the training "
            "split; the score is the largest standardised block distance. score > threshold: "
            "out of distribution (threshold at far_target on the validation cases, far_split)."
        ),
        "output": FEATURES_OUTPUT,
        "feature_tensors": list(feature_tensors),
        "feature_width": width,
        "input_grid": [int(g) for g in input_grid],
        "statistics_file": STATS_FILE,
        "statistics_version": version,
        "blocks": ["features", "thumbnail", "input_statistics"],
        "shrinkage": [round(a, 6) for a in fitted.shrinkage],
        "threshold": threshold,
        "far_target": far,
        "far": round(float(np.mean(s_val > threshold)), 4),
        "far_split": val_split,
        **({"far_by_source": far_by_source} if far_by_source else {}),
        "auroc": round(fit.auroc(s_val, np.concatenate(all_ood)), 4),
        "auroc_per_kind": per_kind,
        "detected_at_threshold": detected,
        "score_quantiles": {
            "train_median": round(float(np.median(s_train)), 3),
            "val_median": round(float(np.median(s_val)), 3),
        },
        "n": {
            "train": len(train_x),
            "val": len(val_x),
            "ood": int(sum(len(x) for x in ood_sets.values())),
            "ood_per_kind": {k: len(x) for k, x in ood_sets.items()},
        },
        "data": dict(data or {}),
    }
    (staging_dir / MODEL_FILE).write_bytes(after)
    (staging_dir / STATS_FILE).write_bytes(stats_bytes)
    card["files"][MODEL_FILE] = sha256_bytes(after)
    card["files"][STATS_FILE] = sha256_bytes(stats_bytes)
    card["ood"] = section
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return section
