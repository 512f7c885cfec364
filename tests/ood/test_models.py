"""The committed models' OOD check on fresh synthetic data (a seed no fit or threshold saw),
scored the way the service scores an upload: the registry's entry runs output 0 and the
features, ``app.imaging.ood`` scores them with the preprocessed input.

Per model: the in-distribution false-alarm rate is within a few points of the card's; the
AUROC over the OOD kinds is at least 0.95; at the card's threshold every kind is flagged (at
least ``FLAGGED`` of its inputs), except at most one kind per model, named below with why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from app.config import Settings
from app.imaging.card import ModelCard
from app.registry import ModelEntry, build_registry
from training.ood import data, kinds
from training.ood.fit import auroc

MODELS = Path(__file__).resolve().parents[2] / "models"
UNSEEN_SEED = 424242
FAR_TOLERANCE = 0.05
FLAGGED = 0.75
MIN_AUROC = 0.95
# In-distribution cases and OOD inputs per kind: small, so four models fit in the suite's time.
N_IN = {"pneumonia_xray": 160, "brain_tumor_mri": 160, "covid_ct": 40, "phantom_tumor_xray": 36}
PER_KIND = 4
# The one kind each model may miss, and why.
MISSED = {
    "pneumonia_xray": (
        "wrong_bit_depth",
        "a 4-bit copy of a film: the percentile window stretches its 16 grey levels back over "
        "the full range, so only the posterisation differs; statistics version 2's "
        "equal-neighbour shares see it in most copies (81 % at export), not all",
    ),
    "phantom_tumor_xray": (
        "wrong_bit_depth",
        "an 8-bit copy of a 16-bit frame keeps 256 grey levels; after the percentile window "
        "the posterisation is slight and about a third of the copies score within the "
        "threshold (the expected_bits conformance warning reports it when the header says so)",
    ),
    "brain_tumor_mri": (
        "rotated_180",
        "the synthetic heads are ellipses symmetric under a half turn (no anterior-posterior "
        "asymmetry), so a slice turned by 180 degrees is a plausible slice of another patient",
    ),
}


@pytest.fixture(scope="module")
def entries() -> Iterator[dict[str, ModelEntry]]:
    registry = build_registry(Settings(model_dir=MODELS))
    yield registry.models


def _scores(entry: ModelEntry, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(x)):
        batch = x[i : i + 1]
        _, feats = entry.run_with_features(batch)
        assert feats is not None
        out.append(entry.ood_score(feats[0], batch[0]))
    return np.asarray(out)


@pytest.mark.parametrize("name", sorted(N_IN))
def test_ood_on_unseen_synthetic_data(entries: dict[str, ModelEntry], name: str) -> None:
    entry = entries[name]
    assert entry.ready, entry.reason
    card = entry.card
    assert isinstance(card, ModelCard) and card.ood is not None and card.ood.far is not None
    held_out = data.in_distribution(card, N_IN[name], UNSEEN_SEED, keep_raw=None)
    s_in = _scores(entry, held_out.x)
    far = float(np.mean(s_in > card.ood.threshold))
    assert abs(far - card.ood.far) <= FAR_TOLERANCE, (far, card.ood.far, len(s_in))

    # the kinds made from in-distribution images (inverted, rotated, tiled, wrong bit depth)
    # start from the held-out cases: unseen by the fit and the threshold as well
    sets = kinds.make_kinds(card, held_out.raw, PER_KIND, UNSEEN_SEED + 1)
    expected = kinds.KINDS_3D if card.input.preprocessing.kind == "volume3d" else kinds.KINDS_2D
    assert set(sets) == set(expected)
    flagged, all_out = {}, []
    for kind, items in sets.items():
        s = _scores(entry, np.stack([data.tensor(card, it) for it in items]))
        flagged[kind] = float(np.mean(s > card.ood.threshold))
        all_out.append(s)
    total = auroc(s_in, np.concatenate(all_out))
    assert total >= MIN_AUROC, (total, flagged)
    missed = sorted(k for k, f in flagged.items() if f < FLAGGED)
    allowed = [MISSED[name][0]] if name in MISSED else []
    assert set(missed) <= set(allowed), (missed, flagged)
