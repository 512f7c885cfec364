"""3D augmentation for volume classifiers, applied in the ``tf.data`` pipeline (never exported).

Batches are NDHWC, (N, D, H, W, C) float32 in [0, 1], in the canonical orientation of
``app.imaging.types.Volume``: D inferior → superior, H anterior → posterior, W patient right
→ left. Per study (the same transform for every slice of one study):

- a small in-plane (axial) rotation, ±``rotation_deg``: patients lie a little rotated on the
  table; the transform is about the slice axis, so every slice turns alike;
- a small in-plane shift, ±``shift`` of the side: the body is not always centred;
- a LEFT-RIGHT flip (W axis) with probability ``flip_lr``. Defensible here because COVID-19
  pneumonia is bilateral and the label does not depend on the side; the price is that a
  flipped study shows mirrored anatomy (heart and aortic arch on the right, the higher
  diaphragm dome on the left) which the model will never be served, so it is optional
  (``flip_lr=0`` turns it off);
- no SUPERIOR-INFERIOR flip: apex and base are different anatomy (lung apices vs diaphragm
  domes, liver, heart) and the disease is basal-predominant — a flipped study is a body that
  does not exist, with the disease in the wrong place. No anterior-posterior flip either:
  gravity-dependent density and COVID-19 opacities are posterior-predominant, and the
  heart, sternum and spine would swap sides;
- a small global intensity jitter (contrast ± ``contrast``, brightness ± ``brightness``),
  as HU calibration and reconstruction kernels differ a little between scanners.

Out-of-volume pixels after rotation and shift are filled with 0 (= -1000 HU or below after the
window: air). The result is clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Augment3DConfig:
    rotation_deg: float = 10.0
    shift: float = 0.05
    flip_lr: float = 0.5
    contrast: float = 0.1
    brightness: float = 0.03
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inplane_transforms(
    tf: Any, n: Any, height: Any, width: Any, cfg: Augment3DConfig, seeds: Any
) -> Any:
    """(N, 8) projective transforms (output → input pixel maps) for
    ``ImageProjectiveTransformV3``: a rotation by θ about the slice centre, then a shift."""
    max_rad = cfg.rotation_deg * math.pi / 180.0
    theta = tf.random.stateless_uniform([n], seeds[0], -max_rad, max_rad)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    tx = tf.random.stateless_uniform([n], seeds[1], -cfg.shift, cfg.shift) * w
    ty = tf.random.stateless_uniform([n], seeds[2], -cfg.shift, cfg.shift) * h
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    # input = R(θ) · (output - centre - shift) + centre
    a0, a1 = cos, -sin
    b0, b1 = sin, cos
    ox, oy = cx + tx, cy + ty
    a2 = cx - a0 * ox - a1 * oy
    b2 = cy - b0 * ox - b1 * oy
    zeros = tf.zeros_like(theta)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment_batch(x: Any, seed: Any, cfg: Augment3DConfig) -> Any:
    """(N, D, H, W, C) float32 → the same shape, augmented per study (see the module text).

    ``seed``: a shape-(2,) int32/int64 tensor (stateless randomness: the same seed gives the
    same batch, whatever the runtime's thread schedule).
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(x, tf.float32)
    shape = tf.shape(x)
    n, d, h, w, c = shape[0], shape[1], shape[2], shape[3], shape[4]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=6)
    if cfg.flip_lr > 0:
        flip = tf.random.stateless_uniform([n], seeds[3]) < cfg.flip_lr
        x = tf.where(flip[:, None, None, None, None], tf.reverse(x, axis=[3]), x)
    if cfg.rotation_deg > 0 or cfg.shift > 0:
        transforms = _inplane_transforms(tf, n, h, w, cfg, seeds)
        per_slice = tf.repeat(transforms, repeats=d, axis=0)  # (N*D, 8), study-major
        planes = tf.reshape(tf.transpose(x, [0, 1, 4, 2, 3]), [n * d * c, h, w, 1])
        per_plane = tf.repeat(per_slice, repeats=c, axis=0)
        planes = tf.raw_ops.ImageProjectiveTransformV3(
            images=planes,
            transforms=per_plane,
            output_shape=tf.stack([h, w]),
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="CONSTANT",
        )
        x = tf.transpose(tf.reshape(planes, [n, d, c, h, w]), [0, 1, 3, 4, 2])
    if cfg.contrast > 0 or cfg.brightness > 0:
        gain = 1.0 + tf.random.stateless_uniform([n], seeds[4], -cfg.contrast, cfg.contrast)
        bias = tf.random.stateless_uniform([n], seeds[5], -cfg.brightness, cfg.brightness)
        x = x * gain[:, None, None, None, None] + bias[:, None, None, None, None]
    return tf.clip_by_value(x, 0.0, 1.0)


def make_augment_fn(cfg: Augment3DConfig) -> Callable[[Any, Any], tuple[Any, Any]]:
    """A ``(x, y) -> (x', y)`` function for ``tf.data.Dataset.map`` on batches. Each call takes
    the batch's stateless seed from a ``tf.random.Generator`` seeded with ``cfg.seed`` whose
    state lives on across epochs: every epoch is augmented differently, and a new function with
    the same seed replays the same sequence (with a deterministic batch order)."""
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(cfg.seed)

    def fn(x: Any, y: Any) -> tuple[Any, Any]:
        seed = generator.make_seeds(1)[:, 0]
        return augment_batch(x, seed, cfg), y

    return fn
