"""Synthetic kV X-ray frames of a breathing-motion thorax phantom with a moving tumour insert.

Writes the layout of data set 4 (``/work/shared/datasets.md``)::

    OUT/phantom/images/seq003_frame012.tif   (H, W) uint16, 0..65535, dense = bright
    OUT/phantom/labels/seq003_frame012.tif   (H, W) uint16, 65535 inside the tumour, 0 outside
    OUT/phantom/frames.csv                   ground truth per frame (not read by the loader)

``H, W`` is 768 × 1024 (rows × columns) by default, a field of view of about 397 × 298 mm
(0.388 mm per pixel); other sizes keep that field of view, so a small test image is the same
projection at a coarser pixel. Ids encode the sequence and the frame: a *sequence* is one
set-up of the phantom imaged over consecutive frames while the insert moves.

What a frame holds, modelled as a line integral of attenuation ``A`` (about 0-4.5):

- the phantom, fixed within a sequence (as in a dynamic thorax phantom only the insert moves):
  an elliptical body cross-section (soft-tissue gradient towards the outline), two lungs with
  domed diaphragms and a heart shadow, a segmented spine (vertebral bodies, discs, pedicles),
  posterior and fainter anterior ribs drawn as hollow bone tubes, clavicles, lung texture, and
  sometimes one or two small calcified nodules as distractors;
- the tumour insert: a lobulated soft-tissue ellipsoid (24-44 mm across) inside one lung whose
  position follows a breathing trace (Lujan ``1 - cos^2n``: superior-inferior 5-20 mm, a few mm
  left-right), sampled at consecutive frames with cycle-to-cycle variation; about 15 % of the
  sequences are imaged without the insert (empty labels), so the lesion-present score can be
  calibrated;
- image formation: primary ``N0 * exp(-A)`` plus broad scatter, quantum (Poisson) noise, a
  slight detector blur, then log-processing to 16 bits. The exposure ``N0`` and the detector
  gain differ between sequences, so the absolute intensity of the same anatomy differs by tens
  of thousands of grey values from one sequence to the next.

The label is the projection of the insert: every pixel whose ray crosses it.

Deterministic: sequence ``s`` draws from ``numpy.random.default_rng([seed, 1, s])`` and frame
``f`` of it from ``default_rng([seed, 2, s, f])``, so a file depends only on the seed, the size
and its id.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, zoom

from training.core.progress import progress

ROOT = "phantom"
IMAGES, LABELS = "images", "labels"
FOV_MM = (297.98, 397.31)  # rows, columns: 768 x 1024 at 0.388 mm
DEFAULT_SIZE = (768, 1024)
LABEL_VALUE = 65535

# attenuation per mm (effective, ~70 kV), relative units
MU_SOFT = 0.0155
MU_LUNG = 0.004
MU_BONE = 0.035


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: ``n`` frames in sequences of ``frames_per_sequence`` (min, max)
    consecutive frames; ``size`` is (H, W) pixels; ``empty_fraction`` of the sequences have no
    insert; ``image_format`` is ``tif`` or ``png`` (both 16-bit)."""

    n: int = 240
    seed: int = 0
    size: tuple[int, int] = DEFAULT_SIZE
    frames_per_sequence: tuple[int, int] = (4, 8)
    empty_fraction: float = 0.15
    image_format: Literal["tif", "png"] = "tif"

    @property
    def pixel_mm(self) -> tuple[float, float]:
        """(row, column) pixel size in mm."""
        return FOV_MM[0] / self.size[0], FOV_MM[1] / self.size[1]


@dataclass(frozen=True)
class PlannedFrame:
    id: str
    sequence: int
    frame: int


def frame_id(sequence: int, frame: int) -> str:
    return f"seq{sequence:03d}_frame{frame:03d}"


def plan(cfg: SynthConfig) -> list[PlannedFrame]:
    """The frames to write, sequence by sequence (no pixels yet)."""
    rng = np.random.default_rng([cfg.seed, 0])
    lo, hi = cfg.frames_per_sequence
    out: list[PlannedFrame] = []
    seq = 0
    while len(out) < cfg.n:
        k = min(int(rng.integers(lo, hi + 1)), cfg.n - len(out))
        out.extend(PlannedFrame(frame_id(seq, f), seq, f) for f in range(k))
        seq += 1
    return out


# --------------------------------------------------------------------------- sequence set-up


@dataclass(frozen=True)
class Sequence:
    """One set-up of the phantom: the static attenuation map, the insert and the exposure."""

    static: np.ndarray  # (H, W) float32 line integral without the insert
    has_tumour: bool
    tumour: dict[str, float]
    motion: dict[str, float]
    n0: float  # photons per pixel (at 0.388 mm) through air
    gain: float  # grey values per unit of log attenuation
    pedestal: float
    scatter: float


def _grid(cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 x (left → right) and y (superior → inferior) of pixel centres, in mm from
    the centre of the field."""
    h, w = cfg.size
    ry, rx = cfg.pixel_mm
    y = ((np.arange(h, dtype=np.float32) + 0.5) * ry - FOV_MM[0] / 2)[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) * rx - FOV_MM[1] / 2)[None, :]
    return np.broadcast_to(x, (h, w)), np.broadcast_to(y, (h, w))


def _chord(d: np.ndarray, r: float) -> np.ndarray:
    """Path length through a cylinder of radius ``r`` at distance ``d`` from its axis."""
    return np.asarray(2.0 * np.sqrt(np.clip(r * r - d * d, 0.0, None)))


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 zero-mean unit-std noise with features about ``W / cells`` wide."""
    h, w = shape
    ch = max(2, round(cells * h / w))
    small = rng.standard_normal((ch, cells)).astype(np.float32)
    arr = np.asarray(
        Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32
    )
    return np.asarray((arr - arr.mean()) / (arr.std() + 1e-6))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t))


def _static_phantom(
    cfg: SynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """(H, W) float32 attenuation line integral of the phantom and the lung geometry."""
    x0, y0 = _grid(cfg)
    ang = math.radians(rng.uniform(-3, 3))
    dx, dy = rng.uniform(-15, 15), rng.uniform(-15, 15)
    mag = rng.uniform(0.92, 1.08)  # magnification (source-detector geometry)
    ca, sa = math.cos(ang), math.sin(ang)
    x = ((x0 - dx) * ca + (y0 - dy) * sa) / mag
    y = (-(x0 - dx) * sa + (y0 - dy) * ca) / mag
    shape = x.shape

    # body: elliptical cross-section, wider towards the abdomen
    half_w = rng.uniform(150, 178) * (1.0 + 0.06 * np.clip(y / 150, -1, 1))
    depth = rng.uniform(190, 240)
    u = np.clip(np.abs(x) / half_w, 0, 1)
    body_path = depth * np.sqrt(np.clip(1 - u**2, 0, None))
    a = MU_SOFT * body_path * (1.0 + 0.03 * _smooth_noise(rng, shape, 6))

    # lungs: lateral/medial walls, apex above the field, domed diaphragm
    lungs: list[dict[str, float]] = []
    lung_path = np.zeros(shape, np.float32)
    dome_base = rng.uniform(55, 95)
    for side in (-1.0, 1.0):
        medial = rng.uniform(22, 32) + (6 if side > 0 else 0)  # the heart side is wider
        lateral = float(np.mean(half_w)) - rng.uniform(12, 22)
        # the lateral wall narrows towards the apex, the medial one widens at the hilum
        lat = lateral - rng.uniform(25, 45) * np.clip((60 - y) / 260, 0, None) ** 1.5
        med = medial + 6 * np.exp(-(((y + 20) / 40) ** 2))
        centre = side * (med + lat) / 2
        half = (lat - med) / 2
        dome_top = dome_base + rng.uniform(-10, 10) - (12 if side < 0 else 0)
        dome_h = rng.uniform(22, 38)
        top = rng.uniform(-190, -160)
        xn = (x - centre) / half
        across = np.sqrt(np.clip(1 - np.abs(xn) ** 3, 0, None))
        # dome peak in the medial half; steep towards the costophrenic angle
        peak = -side * 0.25
        diaphragm = dome_top + dome_h * (np.clip(np.abs(xn - peak), 0, 1.6) / 1.25) ** 2.2
        above = _smoothstep((diaphragm - y) / 3.0)
        recess = 0.3 * _smoothstep((diaphragm + 45 - y) / 45.0) * (1 - above)
        vertical = (above + recess) * _smoothstep((y - top) / 60.0)
        thick = rng.uniform(110, 150) * across * vertical
        lung_path = np.maximum(lung_path, thick.astype(np.float32))
        c_mean, h_mean = float(np.mean(centre)), float(np.mean(half))
        lungs.append(
            {"centre": c_mean, "half": h_mean, "dome_top": dome_top, "dome_h": dome_h, "top": top}
        )
    # heart: an ellipse low in the mediastinum, bulging to the image's right
    hx, hy = rng.uniform(22, 40), rng.uniform(55, 80)
    hr = ((x - hx) / rng.uniform(62, 78)) ** 2 + ((y - hy) / rng.uniform(55, 70)) ** 2
    heart = _smoothstep((1.0 - hr) / 0.35)
    lung_path *= 1.0 - 0.6 * heart
    texture = 1.0 + 0.035 * _smooth_noise(rng, shape, 70) + 0.03 * _smooth_noise(rng, shape, 16)
    a -= (MU_SOFT - MU_LUNG) * lung_path * texture

    # spine: vertebral bodies separated by discs, pedicles, slight curvature
    sx = rng.uniform(-4, 4) + rng.uniform(-6, 6) * np.sin(y / rng.uniform(90, 160))
    vb_r = rng.uniform(20, 25)
    period, phase = rng.uniform(24, 29), rng.uniform(0, 30)
    pos = np.mod(y + phase, period) / period
    disc = 0.55 + 0.45 * _smoothstep(np.minimum(pos, 1 - pos) * period / 3.0)
    spine = (MU_BONE - MU_SOFT) * 0.3 * _chord(x - sx, vb_r) * disc
    spine += (MU_BONE - MU_SOFT) * 0.4 * _chord(x - sx, vb_r * 0.35)  # spinous processes
    for side in (-1.0, 1.0):
        d = np.hypot((x - sx - side * 0.62 * vb_r) / 1.0, (pos - 0.45) * period / 1.6)
        spine += (MU_BONE - MU_SOFT) * 0.7 * _chord(d, 5.0)
    a += spine

    # ribs: posterior ribs from the spine outwards and down; anterior ribs fainter
    rib_w = rng.uniform(4.5, 6.0)
    spacing = rng.uniform(25, 31)
    first = rng.uniform(-190, -165)
    hw = float(np.mean(half_w))
    ribs = np.zeros(shape, np.float32)
    for k in range(12):
        for side in (-1.0, 1.0):
            t = np.clip(side * (x - sx) / hw, 0, None)
            centre_y = first + k * spacing - 28 * t + 120 * t**2 + rng.uniform(-3, 3)
            d = (y - centre_y) / np.sqrt(1 + (-28 + 240 * t) ** 2 / hw**2)
            tube = _chord(d, rib_w) - 0.8 * _chord(d, rib_w * 0.6)
            ribs += tube * _smoothstep((t - 0.06) / 0.05) * _smoothstep((0.97 - t) / 0.05)
            # anterior rib: from the lateral wall downwards towards the midline
            centre_a = first + 55 + k * spacing * 0.95 + 70 * (1 - t) ** 2 - 40
            da = (y - centre_a) / np.sqrt(1 + (140 * (1 - t)) ** 2 / hw**2)
            tube_a = _chord(da, rib_w * 1.1) - 0.85 * _chord(da, rib_w * 0.75)
            ribs += 0.45 * tube_a * _smoothstep((t - 0.3) / 0.1) * _smoothstep((0.95 - t) / 0.05)
    a += (MU_BONE - MU_SOFT) * 2.2 * ribs

    # clavicles
    for side in (-1.0, 1.0):
        t = side * (x - sx) / hw
        centre_y = -128 + rng.uniform(-8, 8) + 30 * (t - 0.35) ** 2
        tube = _chord(y - centre_y, rng.uniform(6, 8))
        a += (MU_BONE - MU_SOFT) * 0.8 * tube * _smoothstep((t - 0.08) / 0.05) * (t < 0.75)

    # distractors: small calcified nodules (bright, a few mm)
    for _ in range(int(rng.choice([0, 0, 1, 2]))):
        lung = lungs[int(rng.integers(0, 2))]
        cx = lung["centre"] + rng.uniform(-0.6, 0.6) * lung["half"]
        cy = rng.uniform(-60, lung["dome_top"] - 10)
        a += (MU_BONE - MU_LUNG) * 1.2 * _chord(np.hypot(x - cx, y - cy), rng.uniform(2.5, 4.5))

    geometry = {"dx": dx, "dy": dy, "mag": mag, "cos": ca, "sin": sa, "lungs": lungs}
    return a.astype(np.float32), geometry


def _setup(cfg: SynthConfig, seq: int) -> Sequence:
    rng = np.random.default_rng([cfg.seed, 1, seq])
    static, geo = _static_phantom(cfg, rng)
    has_tumour = bool(rng.random() >= cfg.empty_fraction)
    lung = geo["lungs"][int(rng.integers(0, 2))]
    amp_si = rng.uniform(5, 20)
    # phantom coordinates of the insert at end-exhale (it moves inferior, +y, on inhale)
    cx = lung["centre"] + rng.uniform(-0.45, 0.45) * lung["half"]
    cy_lo = -95.0
    cy_hi = lung["dome_top"] - amp_si - 18
    cy = rng.uniform(cy_lo, max(cy_lo + 1, cy_hi))
    mag = geo["mag"]
    tumour = {
        "cx": cx,
        "cy": cy,
        "rx": rng.uniform(12, 22),
        "ry": rng.uniform(12, 22),
        "rz": rng.uniform(12, 22),
        "angle": rng.uniform(0, math.pi),
        "mu": rng.uniform(1.05, 1.45) * MU_SOFT,
        "lobe3": rng.uniform(0, 0.08),
        "lobe5": rng.uniform(0, 0.05),
        "phi3": rng.uniform(0, 2 * math.pi),
        "phi5": rng.uniform(0, 2 * math.pi),
        # geometry of the set-up: phantom → field coordinates
        "dx": geo["dx"],
        "dy": geo["dy"],
        "mag": mag,
        "cos": geo["cos"],
        "sin": geo["sin"],
    }
    motion = {
        "period": rng.uniform(7, 14),  # frames per breathing cycle
        "phase": rng.uniform(0, 1),
        "n": float(rng.integers(1, 4)),
        "amp_si": amp_si,
        "amp_lr": rng.uniform(-3, 3),
        "cycle_var": rng.uniform(0.0, 0.15),
    }
    n0 = float(np.exp(rng.uniform(np.log(600), np.log(9000))))
    return Sequence(
        static=static,
        has_tumour=has_tumour,
        tumour=tumour,
        motion=motion,
        n0=n0,
        gain=rng.uniform(5200, 7600),
        pedestal=rng.uniform(500, 3000),
        scatter=rng.uniform(0.25, 0.8),
    )


def breathing(frame: int, motion: dict[str, float], rng: np.random.Generator) -> float:
    """Inhale fraction in [0, ~1.15] at ``frame`` (0 = end-exhale), Lujan ``1 - cos^2n``."""
    t = frame / motion["period"] + motion["phase"]
    cycle = math.floor(t)
    scale = 1.0 + motion["cycle_var"] * math.sin(cycle * 2.399 + motion["phase"] * 6.283)
    base = 1.0 - math.cos(math.pi * (t - cycle)) ** (2 * int(motion["n"]))
    return max(0.0, scale * base + rng.normal(0, 0.015))


def _tumour(
    cfg: SynthConfig, tumour: dict[str, float], shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Line integral (H, W) float32 of the insert at ``shift`` (lr, si mm), its (H, W) bool
    projection and its centre in field mm."""
    x0, y0 = _grid(cfg)
    c, s, mag = tumour["cos"], tumour["sin"], tumour["mag"]
    # field → phantom coordinates (inverse of the set-up transform)
    xp = ((x0 - tumour["dx"]) * c + (y0 - tumour["dy"]) * s) / mag
    yp = (-(x0 - tumour["dx"]) * s + (y0 - tumour["dy"]) * c) / mag
    cx, cy = tumour["cx"] + shift[0], tumour["cy"] + shift[1]
    u, v = xp - cx, yp - cy
    ca, sa = math.cos(tumour["angle"]), math.sin(tumour["angle"])
    ur, vr = u * ca + v * sa, -u * sa + v * ca
    theta = np.arctan2(vr, ur)
    lobes = (
        1.0
        + tumour["lobe3"] * np.sin(3 * theta + tumour["phi3"])
        + tumour["lobe5"] * np.sin(5 * theta + tumour["phi5"])
    )
    rho2 = ((ur / tumour["rx"]) ** 2 + (vr / tumour["ry"]) ** 2) / lobes**2
    inside = rho2 < 1.0
    path = 2 * tumour["rz"] * np.sqrt(np.clip(1 - rho2, 0, None))
    line = ((tumour["mu"] - MU_LUNG) * path).astype(np.float32)
    # centre in field mm
    fx = cx * mag * c - cy * mag * s + tumour["dx"]
    fy = cx * mag * s + cy * mag * c + tumour["dy"]
    return line, inside, (float(fx), float(fy))


def _expose(
    cfg: SynthConfig, att: np.ndarray, seq: Sequence, rng: np.random.Generator
) -> np.ndarray:
    """Attenuation (H, W) → (H, W) uint16 log-processed detector image (dense = bright)."""
    area = cfg.pixel_mm[0] * cfg.pixel_mm[1] / 0.388**2
    n0 = seq.n0 * area
    primary = n0 * np.exp(-att)
    step = max(1, round(cfg.size[1] / 64))
    small = primary[::step, ::step]
    broad = gaussian_filter(small, sigma=40.0 / (cfg.pixel_mm[1] * step), mode="nearest")
    factors = (cfg.size[0] / broad.shape[0], cfg.size[1] / broad.shape[1])
    scatter = zoom(broad, factors, order=1)[: cfg.size[0], : cfg.size[1]]
    counts = primary + seq.scatter * float(np.mean(primary)) / n0 * scatter
    counts = counts + np.sqrt(counts) * rng.standard_normal(counts.shape).astype(np.float32)
    counts = gaussian_filter(counts, sigma=0.6 * 0.388 / cfg.pixel_mm[1])
    counts = np.maximum(counts, 0.5)
    reference = 20000.0 * area  # the log reference is fixed: exposure moves the grey levels
    values = seq.pedestal + seq.gain * np.log(reference / counts)
    return np.asarray(np.clip(np.rint(values), 0, 65535).astype(np.uint16))


@dataclass(frozen=True)
class Frame:
    """One rendered frame: ``image`` and ``label`` (H, W) uint16; ``centroid`` (x, y) in
    pixels of the label (None when the insert is absent)."""

    image: np.ndarray
    label: np.ndarray
    centroid: tuple[float, float] | None
    inhale: float


def render_frame(cfg: SynthConfig, seq: Sequence, item: PlannedFrame) -> Frame:
    rng = np.random.default_rng([cfg.seed, 2, item.sequence, item.frame])
    inhale = breathing(item.frame, seq.motion, rng)
    att = seq.static
    label = np.zeros(cfg.size, np.uint16)
    centroid = None
    if seq.has_tumour:
        m = seq.motion
        shift = (m["amp_lr"] * inhale + rng.normal(0, 0.2), m["amp_si"] * inhale)
        line, inside, _ = _tumour(cfg, seq.tumour, shift)
        att = att + line
        label[inside] = LABEL_VALUE
        ys, xs = np.nonzero(inside)
        if xs.size:
            centroid = (float(xs.mean()), float(ys.mean()))
    image = _expose(cfg, att, seq, rng)
    return Frame(image=image, label=label, centroid=centroid, inhale=inhale)


def render_one(cfg: SynthConfig, sequence: int, frame: int) -> tuple[bool, Frame]:
    """Frame ``frame`` of sequence ``sequence`` exactly as ``generate`` would write it (whatever
    ``cfg.n``), and whether that sequence has the insert."""
    seq = _setup(cfg, sequence)
    return seq.has_tumour, render_frame(
        cfg, seq, PlannedFrame(frame_id(sequence, frame), sequence, frame)
    )


def iter_frames(cfg: SynthConfig) -> Iterator[tuple[PlannedFrame, Frame]]:
    """Generator of (planned frame, rendered frame) in plan order (sequences built once)."""
    current: tuple[int, Sequence] | None = None
    for item in plan(cfg):
        if current is None or current[0] != item.sequence:
            current = (item.sequence, _setup(cfg, item.sequence))
        yield item, render_frame(cfg, current[1], item)


def _save(arr: np.ndarray, path: Path, fmt: str) -> None:
    img = Image.fromarray(arr)  # uint16 → I;16
    if fmt == "png":
        img.save(path, format="PNG", compress_level=3)
    else:
        img.save(path, format="TIFF", compression="tiff_adobe_deflate")


def _write_sequence(root: Path, cfg: SynthConfig, items: list[PlannedFrame]) -> list[list[str]]:
    """Render and save the frames ``items`` of one sequence; their ``frames.csv`` rows."""
    seq = _setup(cfg, items[0].sequence)
    rows = []
    for item in items:
        fr = render_frame(cfg, seq, item)
        _save(fr.image, root / IMAGES / f"{item.id}.{cfg.image_format}", cfg.image_format)
        _save(fr.label, root / LABELS / f"{item.id}.{cfg.image_format}", cfg.image_format)
        cx, cy = fr.centroid if fr.centroid else (float("nan"), float("nan"))
        ids = [item.id, str(item.sequence), str(item.frame)]
        rows.append([*ids, f"{fr.inhale:.4f}", f"{cx:.3f}", f"{cy:.3f}"])
    return rows


def generate(
    out: Path, cfg: SynthConfig, *, overwrite: bool = False, workers: int = 1
) -> list[Path]:
    """Write every frame of the plan; returns the image paths (in plan order).

    ``workers`` > 1 renders whole sequences in that many processes; the files are the same as
    with one (every sequence and frame draws from its own seeded generator)."""
    root = Path(out) / ROOT
    for sub in (IMAGES, LABELS):
        folder = root / sub
        folder.mkdir(parents=True, exist_ok=True)
        old = [p for p in folder.iterdir() if p.suffix in (".tif", ".tiff", ".png")]
        if old and not overwrite:
            raise FileExistsError(f"{folder} already holds images (use --overwrite)")
        for path in old:
            path.unlink()
    items = plan(cfg)
    sequences: dict[int, list[PlannedFrame]] = {}
    for item in items:
        sequences.setdefault(item.sequence, []).append(item)
    jobs = list(sequences.values())
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            done = pool.map(_write_sequence, repeat(root), repeat(cfg), jobs)
            per_sequence = list(
                progress(done, "synth phantom_tumor_xray", total=len(jobs), unit="sequence")
            )
    else:
        per_sequence = [
            _write_sequence(root, cfg, job)
            for job in progress(jobs, "synth phantom_tumor_xray", unit="sequence")
        ]
    ry, rx = cfg.pixel_mm
    with (root / "frames.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sequence", "frame", "inhale", "centroid_x_px", "centroid_y_px"])
        for rows in per_sequence:
            w.writerows(rows)
        f.write(f"# pixel size (row, column) mm: {ry:.5f}, {rx:.5f}\n")
    return [root / IMAGES / f"{item.id}.{cfg.image_format}" for item in items]
