"""training.core, segmentation kind: the numpy metrics and calibration helpers do what the
service does."""

from __future__ import annotations

import numpy as np
import pytest

from app.imaging.postprocess import lesion_logit, mask_at
from training.core.calibrate import calibrate
from training.core.seg_metrics import (
    choose_pixel_threshold,
    dice_iou,
    evaluate_segmentation,
    lesion_logits,
    predicted_mask,
    threshold_scan,
)
from training.core.seg_train import LOSSES, SegSplit, target_masks


def _disc(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_dice_iou_values() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert dice_iou(a, b) == (1.0, 1.0)  # both empty
    a[0, :2] = True
    assert dice_iou(a, b) == (0.0, 0.0)
    b[0, 1:3] = True  # one of two overlaps
    d, j = dice_iou(a, b)
    assert d == pytest.approx(0.5) and j == pytest.approx(1 / 3)


def test_target_masks_are_covered_fractions() -> None:
    m = np.zeros((8, 8), bool)
    m[:4, :2] = True  # half of the top-left 4x4 block
    t = target_masks([m], (2, 2))
    assert t.shape == (1, 2, 2, 1) and t.dtype == np.float32
    np.testing.assert_allclose(t[0, :, :, 0], [[0.5, 0.0], [0.0, 0.0]])


def test_predicted_mask_is_the_service_mask() -> None:
    rng = np.random.default_rng(0)
    prob = rng.uniform(0, 1, (16, 16)).astype(np.float32)
    np.testing.assert_array_equal(predicted_mask(prob, (40, 24), 0.6), mask_at(prob, (40, 24), 0.6))


def test_lesion_logits_match_the_service() -> None:
    rng = np.random.default_rng(1)
    maps = rng.uniform(0, 1, (5, 8, 8)).astype(np.float32)
    maps[0] = 0.0  # clipped peak, finite logit
    maps[1] = 1.0
    got = lesion_logits(maps)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, [lesion_logit(m) for m in maps])


def test_threshold_scan_equals_brute_force() -> None:
    rng = np.random.default_rng(2)
    masks = [_disc((32, 32), 12, 14, 6), np.zeros((32, 32), bool), _disc((32, 48), 20, 30, 9)]
    probs = []
    for m in masks:
        small = target_masks([m], (16, 16))[0, :, :, 0]
        probs.append(np.clip(small * 0.8 + rng.uniform(0, 0.3, small.shape), 0, 1))
    prob_maps = np.stack(probs).astype(np.float32)
    th = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    brute = [
        np.mean(
            [
                dice_iou(predicted_mask(p, m.shape, t), m)[0]
                for p, m in zip(prob_maps, masks, strict=True)
            ]
        )
        for t in th
    ]
    np.testing.assert_allclose(threshold_scan(prob_maps, masks, th), brute, atol=1e-12)
    best, table = choose_pixel_threshold(prob_maps, masks, th)
    assert best == th[int(np.argmax(brute))]
    assert table["thresholds"] == th.tolist()
    with pytest.raises(ValueError):
        threshold_scan(prob_maps, masks, th[::-1])


def test_evaluate_segmentation_perfect_and_empty() -> None:
    masks = [_disc((32, 32), 16, 16, 7), np.zeros((32, 32), bool)] * 3
    prob_maps = np.stack([target_masks([m], (16, 16))[0, :, :, 0] for m in masks])
    prob_maps = np.where(prob_maps > 0.5, 0.99, 0.01).astype(np.float32)
    y = np.array([int(m.any()) for m in masks])
    cal = calibrate(lesion_logits(prob_maps), y, default_operating_point="balanced")
    metrics = evaluate_segmentation(prob_maps, masks, 0.5, cal)
    assert metrics["n"] == 6 and metrics["n_with_lesion"] == 3
    assert metrics["dice"] > 0.9 and metrics["dice_all"] > 0.95
    assert metrics["sensitivity"] == 1.0 and metrics["specificity"] == 1.0
    assert metrics["confusion_matrix"] == [[3, 0], [0, 3]]
    assert metrics["mask_detection"]["specificity"] == 1.0
    assert 0.99 < metrics["pixel_accuracy"] <= 1.0


def test_segsplit_properties() -> None:
    masks = [np.zeros((4, 5), bool), np.ones((6, 7), bool)]
    split = SegSplit(x=np.zeros((2, 4, 4, 1), np.float32), masks=masks, groups=np.array(["a", "b"]))
    assert len(split) == 2
    assert split.has_lesion.tolist() == [0, 1]
    assert split.shapes == [(4, 5), (6, 7)]


def test_losses_and_metrics_on_logits() -> None:
    pytest.importorskip("keras")
    from training.core.seg_train import dice_coefficient, iou_coefficient, make_loss

    target = np.zeros((2, 8, 8, 1), np.float32)
    target[0, 2:6, 2:6] = 1.0
    good = np.where(target > 0.5, 12.0, -12.0).astype(np.float32)
    bad = -good
    for name in LOSSES:
        loss = make_loss(name)
        assert float(loss(target, good)) < 0.01
        assert float(loss(target, bad)) > 0.9
    assert float(dice_coefficient(target, good)) == pytest.approx(1.0)
    assert float(iou_coefficient(target, bad)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        make_loss("focal")


def test_shift_augmentation_moves_image_and_mask_together() -> None:
    from training.core.seg_train import SegTrainConfig, make_seg_dataset

    rng = np.random.default_rng(0)
    x = np.zeros((6, 32, 40, 1), np.float32)
    for k in range(6):  # one bright square per image, away from the borders
        r, c = rng.integers(10, 16), rng.integers(10, 20)
        x[k, r : r + 8, c : c + 8] = 1.0
    y = (x > 0.5).astype(np.float32)
    config = SegTrainConfig(
        seed=3, flip_lr=False, intensity_jitter=0.0, max_shift=0.2, batch_size=6
    )
    img, mask = next(iter(make_seg_dataset(x, y, 6, training=True, config=config)))
    img, mask = np.asarray(img), np.asarray(mask)
    assert img.shape == x.shape and mask.shape == y.shape
    np.testing.assert_array_equal(mask, (img > 0.5).astype(np.float32))  # still aligned
    assert np.all(img.sum(axis=(1, 2, 3)) == 64)  # the square is moved, not cut or mirrored
    centres = [np.argwhere(m[..., 0]).mean(axis=0) for m in mask]
    originals = {tuple(np.argwhere(m[..., 0]).mean(axis=0)) for m in y}
    assert any(tuple(c) not in originals for c in centres)  # at least one was shifted
