"""Looking at the synthetic phantom set: a preview grid of frames with the label outlined, and
the grey-value spread between sequences (which the per-frame percentile window cancels)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.synthetic.phantom import (
    PlannedFrame,
    SynthConfig,
    _setup,
    frame_id,
    plan,
    render_frame,
)


def preview_grid(out_png: Path, cfg: SynthConfig, columns: int = 5, tile_w: int = 256) -> None:
    """Frames of three sequences (one row each, consecutive frames), each tile windowed on its
    own 0.5-99.5 percentiles (the raw grey levels differ between sequences), the label outlined
    in red. Written as an optimised 8-bit RGB PNG."""
    tile_h = round(tile_w * cfg.size[0] / cfg.size[1])
    items = plan(cfg)
    seqs = sorted({i.sequence for i in items})[:3]
    canvas = np.zeros((len(seqs) * tile_h, columns * tile_w, 3), np.uint8)
    for r, s in enumerate(seqs):
        seq = _setup(cfg, s)
        frames = [i for i in items if i.sequence == s][:columns]
        for c, item in enumerate(frames):
            fr = render_frame(cfg, seq, item)
            img = fr.image.astype(np.float32)
            lo, hi = np.percentile(img, [0.5, 99.5])
            g = np.clip((img - lo) / max(hi - lo, 1), 0, 1) * 255
            small = Image.fromarray(g.astype(np.uint8)).resize(
                (tile_w, tile_h), Image.Resampling.BOX
            )
            rgb = np.repeat(np.asarray(small)[..., None], 3, axis=2).copy()
            lab = (
                np.asarray(
                    Image.fromarray((fr.label > 0).astype(np.uint8) * 255).resize(
                        (tile_w, tile_h), Image.Resampling.BOX
                    )
                )
                > 127
            )
            edge = lab & ~(
                np.roll(lab, 1, 0) & np.roll(lab, -1, 0) & np.roll(lab, 1, 1) & np.roll(lab, -1, 1)
            )
            rgb[edge] = (255, 40, 40)
            canvas[r * tile_h : (r + 1) * tile_h, c * tile_w : (c + 1) * tile_w] = rgb
    Image.fromarray(canvas).save(out_png, optimize=True)


def exposure_summary(cfg: SynthConfig, sequences: int = 6) -> list[dict[str, float]]:
    """Per sequence: the 5th/50th/95th grey-value percentiles of its first frame (shows that
    absolute intensity differs between sequences)."""
    out = []
    for s in range(sequences):
        seq = _setup(cfg, s)
        fr = render_frame(cfg, seq, PlannedFrame(frame_id(s, 0), s, 0))
        p5, p50, p95 = np.percentile(fr.image, [5, 50, 95])
        out.append({"sequence": s, "p5": float(p5), "p50": float(p50), "p95": float(p95)})
    return out
