"""The OOD score's pieces on small real data: the statistics file, the input statistics, the
fit, the graph surgery and the publish hook (on the tiny real ONNX model), the registry's
checks of an ``ood`` card."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.config import Settings
from app.imaging.card import CARD_FILE, MODEL_FILE, ModelCard, sha256_file
from app.imaging.ood import (
    QUANTILES,
    STATISTICS_VERSION,
    OodStats,
    block_distances,
    input_statistics,
    joint_vector,
    quantiles,
    score,
    scores,
)
from app.registry import load_entry
from tests.tiny_model import SIZE, write_tiny_model
from training.ood import fit
from training.ood.hook import STATS_FILE, add_ood
from training.ood.surgery import (
    FEATURES_OUTPUT,
    add_features_output,
    check_output0_unchanged,
    remove_features_output,
)


def _films(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 8, 8, 1) smooth "films": a bright left-to-right ramp with noise, in [0, 1]."""
    ramp = np.linspace(0.2, 0.8, SIZE)[None, None, :, None]
    x = ramp + rng.normal(0, 0.05, (n, SIZE, SIZE, 1)) + rng.normal(0, 0.05, (n, 1, 1, 1))
    return np.clip(x, 0, 1).astype(np.float32)


def test_statistics_file_round_trips_and_rejects_what_is_not_one() -> None:
    rng = np.random.default_rng(0)
    blocks = np.array([0, 0, 1])
    stats = OodStats(
        rng.random(3),
        rng.random(3) + 0.1,
        rng.random((2, 3)),
        np.eye(3),
        blocks,
        np.zeros(2),
        np.ones(2),
    )
    back = OodStats.from_bytes(stats.to_bytes())
    for key in ("center", "scale", "class_means", "precision", "blocks", "block_scale"):
        assert np.array_equal(getattr(back, key), getattr(stats, key))
    with pytest.raises(ValueError):
        OodStats.from_bytes(b"not an npz")
    for bad in (
        OodStats(
            stats.center, stats.scale, stats.class_means, np.eye(4), blocks, np.zeros(2), np.ones(2)
        ),
        OodStats(
            stats.center,
            stats.scale,
            stats.class_means,
            np.eye(3),
            np.array([0, 0, 2]),
            np.zeros(2),
            np.ones(2),
        ),
        OodStats(
            stats.center,
            stats.scale,
            stats.class_means,
            np.eye(3),
            blocks,
            np.zeros(2),
            np.zeros(2),
        ),
    ):
        with pytest.raises(ValueError):
            OodStats.from_bytes(bad.to_bytes())


def test_statistics_versions_round_trip_and_an_unknown_one_is_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    blocks = np.array([0, 0, 1])
    args = (rng.random(3), rng.random(3) + 0.1, rng.random((2, 3)), np.eye(3), blocks)
    v1 = OodStats(*args, np.zeros(2), np.ones(2))
    assert v1.version == 1 and "version" not in np.load(io.BytesIO(v1.to_bytes())).files
    assert OodStats.from_bytes(v1.to_bytes()).version == 1  # a file written before versions
    v2 = OodStats(*args, np.zeros(2), np.ones(2), version=2)
    assert OodStats.from_bytes(v2.to_bytes()).version == 2
    unknown = OodStats(*args, np.zeros(2), np.ones(2), version=9)
    with pytest.raises(ValueError, match="version 9 is not known"):
        OodStats.from_bytes(unknown.to_bytes())


def test_version_2_statistics_log_the_shares_and_add_the_intensity_levels() -> None:
    x = np.random.default_rng(7).random((8, 8, 1)).astype(np.float32)
    x[:4, :4] = 0.0  # a quarter at the minimum
    s1, s2 = input_statistics(x, "NHWC", (2, 2)), input_statistics(x, "NHWC", (2, 2), 2)
    n1 = len(s1)
    assert len(s2) == n1 + len(QUANTILES) + 2
    assert np.array_equal(s2[:7], s1[:7]) and np.array_equal(s2[9:n1], s1[9:])
    assert s1[7] == 0.25 and s2[7] == pytest.approx(np.log(0.25))
    assert s2[8] == pytest.approx(np.log(1 / 64))  # one value at the maximum
    assert s2[n1] == 0.0 and s2[n1 + len(QUANTILES) - 1] <= 1.0  # quantiles of the values
    flat_rows = s2[-2:]  # equal neighbours along each axis: the zero quarter's
    assert 0.2 < flat_rows[0] < 0.3 and 0.2 < flat_rows[1] < 0.3
    # the joint vector follows the version asked for; scoring uses the file's own version
    f = np.ones(3)
    assert len(joint_vector(f, x, "NHWC", (2, 2))) == 3 + n1
    assert len(joint_vector(f, x, "NHWC", (2, 2), STATISTICS_VERSION)) == 3 + len(s2)


def _plain_statistics(x: np.ndarray, layout: str, grid: tuple[int, ...], version: int) -> list:
    """The input statistics written out with numpy's own functions (the definition the fast
    code in ``app.imaging.ood`` must keep)."""
    a = np.asarray(x, np.float64).mean(axis=-1 if layout in ("NHWC", "NDHWC") else 0)
    k = a.ndim
    thumb = a
    for axis, cells in enumerate(grid):
        edges = np.linspace(0, thumb.shape[axis], cells + 1).round().astype(int)
        sums = np.add.reduceat(thumb, edges[:-1], axis=axis)
        thumb = sums / np.diff(edges).reshape([-1 if j == axis else 1 for j in range(k)])
    diffs = [np.diff(a, axis=i) for i in range(k)]
    shares = [np.mean(a == a.min()), np.mean(a == a.max())]
    if version >= 2:
        shares = [np.log(max(v, 1 / a.size)) for v in shares]
    w = a - a.min()
    w = w / w.sum()
    coords = np.meshgrid(*(np.linspace(0, 1, n) for n in a.shape), indexing="ij")
    c = [float((w * u).sum()) for u in coords]
    second = [
        float((w * (coords[i] - c[i]) * (coords[j] - c[j])).sum())
        for i in range(k)
        for j in range(i, k)
    ]
    third = [float((w * (coords[i] - c[i]) ** 3).sum()) for i in range(k)]
    var = [float((w * (coords[i] - c[i]) ** 2).sum()) for i in range(k)]
    ratios = [np.log(var[i] / var[0]) for i in range(1, k)]
    out = [*thumb.ravel(), a.std(), *(np.abs(d).mean() for d in diffs), *shares, *c, *second]
    out += [*third, *ratios]
    if version >= 2:
        out += [*np.quantile(a, QUANTILES), *(np.mean(d == 0) for d in diffs)]
    return out


@pytest.mark.parametrize(
    ("shape", "layout", "grid"),
    [
        ((128, 128, 1), "NHWC", (8, 8)),  # the MRI model's input
        ((1, 96, 80), "NCHW", (8, 8)),
        ((50, 61, 3), "NHWC", (7, 5)),  # blocks of unequal sizes, channels averaged
        ((3, 50, 61), "NCHW", (4, 4)),
        ((16, 32, 32, 1), "NDHWC", (2, 4, 4)),
        ((1, 15, 33, 20), "NCDHW", (2, 3, 3)),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_input_statistics_are_the_plain_formulas(
    shape: tuple[int, ...], layout: str, grid: tuple[int, ...], version: int
) -> None:
    rng = np.random.default_rng(len(shape) * 10 + version)
    x = np.clip(rng.normal(0.4, 0.3, shape), 0, 1).astype(np.float32)  # clipped: equal values
    fast = input_statistics(x, layout, grid, version)
    np.testing.assert_allclose(fast, _plain_statistics(x, layout, grid, version), rtol=1e-9)


def test_input_statistics_see_constant_and_noisy_inputs() -> None:
    flat = np.full((8, 8, 1), 0.5, np.float32)
    noisy = np.random.default_rng(1).random((8, 8, 1)).astype(np.float32)
    s_flat, s_noisy = (input_statistics(x, "NHWC", (2, 2)) for x in (flat, noisy))
    moments_2d = 2 + 3 + 2 + 1
    assert s_flat.shape == s_noisy.shape == (2 * 2 + 1 + 2 + 2 + moments_2d,)
    assert s_flat[4] == 0 and s_flat[5] == s_flat[6] == 0 and s_flat[7] == s_flat[8] == 1
    assert s_noisy[4] > 0.2 and s_noisy[5] > 0.2
    # An image taller than wide, and the same turned by 90 degrees: the elongation flips sign.
    tall = np.zeros((8, 8, 1))
    tall[1:7, 3:5] = 1.0
    ratio_tall = input_statistics(tall, "NHWC", (2, 2))[-1]
    ratio_wide = input_statistics(np.rot90(tall), "NHWC", (2, 2))[-1]
    assert ratio_tall < -1 and ratio_wide == pytest.approx(-ratio_tall)
    vol = np.random.default_rng(2).random((4, 6, 6, 1))
    moments_3d = 3 + 6 + 3 + 2
    assert input_statistics(vol, "NDHWC", (2, 3, 3)).shape == (18 + 1 + 3 + 2 + moments_3d,)


def _moments_of(image: np.ndarray) -> np.ndarray:
    """The moments of a 2-D image's input statistics (one thumbnail cell): centroid (2),
    second moments (3), third moments (2), elongation ratio."""
    return input_statistics(image[..., None], "NHWC", (1, 1))[6:]


def test_moments_of_a_line_or_a_point_have_exactly_no_spread_across_it() -> None:
    tiny = np.finfo(np.float64).tiny
    row = np.zeros((64, 48))
    row[10, 5:40] = 0.8
    c0, c1, var0, cov, var1, third0, _, ratio = _moments_of(row)
    # weight on one row: no spread and no skew across the rows, and the elongation's
    # logarithm of the spread along the row over the floor (not of rounding noise)
    assert c0 == pytest.approx(10 / 63, abs=1e-15) and c1 == pytest.approx(22 / 47, abs=1e-15)
    assert var0 == 0 and var1 > 0.01
    assert abs(cov) < 1e-16 and abs(third0) < 1e-16
    assert ratio == pytest.approx(np.log((var1 + tiny) / tiny))
    assert _moments_of(np.ascontiguousarray(row.T))[4] == 0  # the same turned: along columns
    point = np.zeros((32, 32))
    point[3, 30] = 1.0
    moments = _moments_of(point)
    assert moments[:2] == pytest.approx([3 / 31, 30 / 31], abs=1e-15)
    assert moments[2] == moments[4] == 0 and moments[-1] == 0
    # a faint second row is a small spread, not one lost in the floor: the plain formula's
    two_rows = row.copy()
    two_rows[11, 5:40] = 1e-3
    got = _moments_of(two_rows)
    plain = _plain_statistics(two_rows[..., None], "NHWC", (1, 1), 1)[6:]
    assert 0 < got[2] < 1e-6
    np.testing.assert_allclose(got[[0, 1, 2, 4, 5, 7]], np.asarray(plain)[[0, 1, 2, 4, 5, 7]], 1e-9)
    # a NaN makes every moment NaN (the score then says: surely out), the spread included
    with_nan = row.copy()
    with_nan[0, 0] = np.nan
    assert np.isnan(_moments_of(with_nan)).all()


def test_block_distances_are_the_plain_formula_alone_or_in_a_batch() -> None:
    """Per block, min over the classes of (z - m)^T P (z - m) on the standardised vector, and
    the same numbers for an input scored alone as in a batch."""
    rng = np.random.default_rng(11)
    blocks = np.array([0] * 5 + [1] * 3)
    precision = np.zeros((8, 8))
    for b in (0, 1):
        idx = np.flatnonzero(blocks == b)
        precision[np.ix_(idx, idx)] = rng.normal(size=(idx.size, idx.size))
    stats = OodStats(
        center=rng.normal(size=8),
        scale=rng.random(8) + 0.5,
        class_means=rng.normal(size=(3, 8)),
        precision=precision,
        blocks=blocks,
        block_center=np.zeros(2),
        block_scale=np.ones(2),
    )
    vectors = rng.normal(size=(6, 8))
    got = block_distances(stats, vectors)
    for n, v in enumerate(vectors):
        z = (v - stats.center) / stats.scale
        for b in (0, 1):
            idx = np.flatnonzero(blocks == b)
            p = precision[np.ix_(idx, idx)]
            plain = min(float((z[idx] - m[idx]) @ p @ (z[idx] - m[idx])) for m in stats.class_means)
            assert got[n, b] == pytest.approx(plain, rel=1e-12, abs=1e-12)
        assert np.array_equal(block_distances(stats, v[None]), got[n : n + 1])


def test_fitted_gaussian_separates_a_shifted_set_and_chooses_a_shrinkage() -> None:
    rng = np.random.default_rng(3)
    train = rng.normal(size=(300, 6))
    y = (rng.random(300) < 0.5).astype(np.int64)
    train[y == 1, 0] += 2.0
    groups = [f"p{i // 3}" for i in range(300)]
    blocks = np.array([0, 0, 0, 0, 1, 1])
    fitted = fit.fit_ood(train, y, groups, blocks, seed=0)
    assert all(a in fit.SHRINKAGE_GRID for a in fitted.shrinkage)
    stats = fitted.stats
    # standardised out-of-fold block distances: about mean 0, spread 1
    assert np.allclose(((fitted.oof_d2 - stats.block_center) / stats.block_scale).std(0), 1)
    held_in = rng.normal(size=(200, 6))
    held_in[rng.random(200) < 0.5, 0] += 2.0
    # a shift in one value of the small block is not drowned by the large block
    shifted = rng.normal(size=(200, 6)) + np.array([0, 0, 0, 0, 4.0, 0])
    s_in, s_out = scores(stats, held_in), scores(stats, shifted)
    assert fit.auroc(s_in, s_out) > 0.95
    thr = fit.threshold_at(s_in, 0.01)
    assert np.mean(s_in > thr) <= 0.01
    assert fit.auroc(np.array([1.0, 2.0]), np.array([1.5])) == 0.5


def test_surgery_appends_the_features_last_and_keeps_output_0_bit_equal(tmp_path: Path) -> None:
    folder = write_tiny_model(tmp_path, name="pneumonia_xray")
    before = (folder / MODEL_FILE).read_bytes()
    after, width = add_features_output(before, ["flat"])
    assert width == SIZE * SIZE
    outputs = [o.name for o in onnx.load_from_string(after).graph.output]
    assert outputs == ["logit", FEATURES_OUTPUT]
    check_output0_unchanged(before, after, _films(np.random.default_rng(4), 5))
    with pytest.raises(ValueError, match="already"):
        add_features_output(after, ["flat"])
    # a refit removes the output it made and appends it again: output 0 still bit-equal
    stripped = remove_features_output(after)
    assert [o.name for o in onnx.load_from_string(stripped).graph.output] == ["logit"]
    assert remove_features_output(before) == before
    again, _ = add_features_output(stripped, ["flat"])
    check_output0_unchanged(before, again, _films(np.random.default_rng(4), 5))
    with pytest.raises(ValueError, match="not produced"):
        add_features_output(before, ["nope"])


def _with_ood(tmp_path: Path) -> Path:
    folder = write_tiny_model(tmp_path, name="pneumonia_xray")
    rng = np.random.default_rng(5)
    train, val = _films(rng, 240), _films(rng, 120)
    y = (train.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    ood = {"noise": rng.random((20, SIZE, SIZE, 1)).astype(np.float32)}
    add_ood(
        folder,
        train,
        y,
        [f"p{i // 2}" for i in range(len(train))],
        val,
        ood,
        feature_tensors=["mm"],
        input_grid=[2, 2],
    )
    return folder


def test_hook_writes_a_card_the_registry_loads_and_scores_with(tmp_path: Path) -> None:
    folder = _with_ood(tmp_path)
    card = ModelCard.model_validate_json((folder / CARD_FILE).read_text())
    assert card.ood is not None and card.ood.statistics_file == STATS_FILE
    assert card.files[STATS_FILE] == sha256_file(folder / STATS_FILE)
    assert card.files[MODEL_FILE] == sha256_file(folder / MODEL_FILE)
    section = json.loads((folder / CARD_FILE).read_text())["ood"]
    assert section["auroc_per_kind"]["noise"] > 0.95 and section["far"] <= 0.02
    entry = load_entry("pneumonia_xray", folder, Settings(model_dir=tmp_path))
    assert entry.ready, entry.reason
    x = _films(np.random.default_rng(6), 1)
    out0, feats = entry.run_with_features(x)
    assert np.array_equal(out0, entry.run(x)) and feats is not None
    assert entry.ood_stats is not None
    s = score(entry.ood_stats, feats[0], x[0], "NHWC", (2, 2))
    assert s == entry.ood_score(feats[0], x[0])
    # the statistics taken before the model runs (as the pipeline does) give the same score
    statistics = entry.ood_statistics(x[0])
    assert statistics is not None and entry.ood_score(feats[0], x[0], statistics) == s
    other = entry.ood_statistics(np.zeros_like(x[0]))
    assert other is not None and entry.ood_score(feats[0], x[0], other) != s
    blank = np.zeros_like(x)
    _, f_blank = entry.run_with_features(blank)
    assert f_blank is not None and entry.ood_score(f_blank[0], blank[0]) > card.ood.threshold


def test_registry_refuses_a_changed_or_unfit_statistics_file(tmp_path: Path) -> None:
    folder = _with_ood(tmp_path)
    stats_path = folder / STATS_FILE
    good = stats_path.read_bytes()
    stats_path.write_bytes(good + b"x")
    entry = load_entry("pneumonia_xray", folder, Settings(model_dir=tmp_path))
    assert not entry.ready and entry.reason == f"sha256 of {STATS_FILE} does not match the card"
    # A valid file of the wrong width, listed with its true hash: found by the load self-test.
    stats = OodStats.from_bytes(good)
    d = stats.dim - 1
    narrow = OodStats(
        stats.center[:d],
        stats.scale[:d],
        stats.class_means[:, :d],
        np.eye(d),
        stats.blocks[:d],
        stats.block_center,
        stats.block_scale,
        stats.version,
    )
    stats_path.write_bytes(narrow.to_bytes())
    raw = json.loads((folder / CARD_FILE).read_text())
    raw["files"][STATS_FILE] = sha256_file(stats_path)
    (folder / CARD_FILE).write_text(json.dumps(raw))
    entry = load_entry("pneumonia_xray", folder, Settings(model_dir=tmp_path))
    assert not entry.ready and entry.reason == "ood self-test failed (ValueError)"


def test_registry_refuses_unreadable_statistics_and_a_misnamed_features_output(
    tmp_path: Path,
) -> None:
    unreadable = _with_ood(tmp_path / "a")
    (unreadable / STATS_FILE).write_bytes(b"not an npz file")
    raw = json.loads((unreadable / CARD_FILE).read_text())
    raw["files"][STATS_FILE] = sha256_file(unreadable / STATS_FILE)
    (unreadable / CARD_FILE).write_text(json.dumps(raw))
    entry = load_entry("pneumonia_xray", unreadable, Settings(model_dir=tmp_path / "a"))
    assert not entry.ready and entry.reason == "the ood statistics file is not valid"
    assert entry.session is None

    misnamed = _with_ood(tmp_path / "b")
    raw = json.loads((misnamed / CARD_FILE).read_text())
    raw["ood"]["output"] = "logit"  # output 0's name, not the features output (last)
    (misnamed / CARD_FILE).write_text(json.dumps(raw))
    entry = load_entry("pneumonia_xray", misnamed, Settings(model_dir=tmp_path / "b"))
    assert not entry.ready
    assert entry.reason == "the card's ood output is not the graph's last output"


def test_registry_refuses_statistics_of_another_or_an_unknown_version(tmp_path: Path) -> None:
    folder = _with_ood(tmp_path)
    raw = json.loads((folder / CARD_FILE).read_text())
    assert raw["ood"]["statistics_version"] == STATISTICS_VERSION
    raw["ood"]["statistics_version"] = 1  # the card says one version, the file holds another
    (folder / CARD_FILE).write_text(json.dumps(raw))
    entry = load_entry("pneumonia_xray", folder, Settings(model_dir=tmp_path))
    assert not entry.ready
    assert (
        entry.reason == f"the ood statistics file is version {STATISTICS_VERSION}, the card says 1"
    )

    stats = OodStats.from_bytes((folder / STATS_FILE).read_bytes())
    future = OodStats(**{**stats.__dict__, "version": 99})
    (folder / STATS_FILE).write_bytes(future.to_bytes())
    raw["files"][STATS_FILE] = sha256_file(folder / STATS_FILE)
    raw["ood"]["statistics_version"] = 99
    (folder / CARD_FILE).write_text(json.dumps(raw))
    entry = load_entry("pneumonia_xray", folder, Settings(model_dir=tmp_path))
    assert not entry.ready and entry.reason is not None
    assert entry.reason.startswith("the ood statistics file is not usable: ")
    assert "version 99 is not known" in entry.reason


def _float32_values(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


@pytest.mark.parametrize("n", [4096, 5000, 49_152, 200_000])
def test_ranked_quantiles_equal_numpys_to_the_bit(n: int) -> None:
    """Version 2's quantiles: float32 values sorted give np.quantile's numbers exactly, with
    ties (clipping, posterisation, constants), negative values and infinities; other inputs
    (NaN, float64 values) take np.quantile itself."""
    rng = np.random.default_rng(n)
    inputs = [
        _float32_values(rng.random(n)),
        _float32_values(np.clip(rng.random(n) * 1.4 - 0.2, 0, 1)),
        _float32_values(np.round(rng.random(n) * 7) / 7),
        np.zeros(n),
        _float32_values(np.full(n, 0.3)),
        _float32_values(rng.random(n) * 1e6),
        rng.random(n),
        _float32_values(rng.random(n) - 0.5),
        _float32_values(rng.random(n)).reshape(-1, 8)[:, :3],  # not contiguous, 2-D
    ]
    nan = _float32_values(rng.random(n))
    nan[3] = np.nan
    inputs.append(nan)
    infinite = _float32_values(rng.random(n))
    infinite[[5, 9]] = np.inf
    infinite[7] = -np.inf
    inputs.append(infinite)
    for values in inputs:
        for qs in (QUANTILES, (0.0, 0.5, 1.0), (0.25, 0.999999)):
            with np.errstate(invalid="ignore"):  # inf - inf between infinite neighbours
                got, expected = quantiles(values, qs), np.quantile(values, qs)
            assert got.dtype == np.float64
            np.testing.assert_array_equal(got, expected)
    for size in (1, 2, 3, 100):
        small = _float32_values(rng.random(size))
        np.testing.assert_array_equal(quantiles(small, QUANTILES), np.quantile(small, QUANTILES))
