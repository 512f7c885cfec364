"""Synthetic paediatric chest radiographs in the Kermany layout (pneumonia vs normal).

Writes ``OUT/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`` with the real data set's
patient-encoding file names (``person12_virus_44.jpeg``, ``person1_bacteria_1.jpeg``,
``IM-0115-0001.jpeg``, ``NORMAL2-IM-0006-0001.jpeg``), several images for some patients, about
3:1 pneumonia:normal, a tiny ``val/`` like the shipped one, 8-bit grayscale JPEGs of varying size.

Every film is drawn from a density map (air dark, soft tissue grey, bone bright): a thorax with
two lung fields, mediastinum and heart, spine, ribs, clavicles, hilar vascular markings, then a
random exposure (gain, offset, gamma), rotation of a few degrees, patient size and position,
blur, quantum noise and sometimes a burned-in side marker. Pneumonia adds opacities *inside the
lung fields* (lobar consolidation, patchy bronchopneumonia or perihilar interstitial shadowing)
of varying size and contrast, some of them subtle. Normal films carry the confounders too
(markers, vascular markings, wide thymic mediastinum), so neither global brightness nor a marker
separates the classes.

Deterministic: the plan comes from ``seed``; each patient and each image draws from its own
``numpy.random.default_rng([seed, kind, serial])``, so a file's pixels depend only on the seed and
its position in the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from training.core.progress import progress

CLASSES = ("NORMAL", "PNEUMONIA")
SPLITS = ("train", "val", "test")
ROOT = "chest_xray"


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    ``n`` images in total; ``size_range`` (min, max) pixels per side (height and width drawn
    independently, so aspect ratios vary); ``val_images`` defaults to a tiny ``val/`` (about 1 %
    of ``n``, 4 to 16 images, half of each class) like the shipped one.
    """

    n: int = 600
    seed: int = 0
    size_range: tuple[int, int] = (192, 320)
    pneumonia_fraction: float = 0.74
    test_fraction: float = 0.12
    test_pneumonia_fraction: float = 0.625
    val_images: int | None = None
    jpeg_quality: int = 90


@dataclass(frozen=True)
class PlannedImage:
    split: str
    label: str
    filename: str
    patient: str
    patient_serial: int
    image_serial: int
    kind: str  # "normal", "bacteria" or "virus"


@dataclass
class _Counters:
    person: int = 0
    normal: int = 0
    image: int = 0
    patient: int = 0
    per_kind: dict[str, int] = field(default_factory=lambda: {"bacteria": 0, "virus": 0})


# --------------------------------------------------------------------------- plan


def _split_counts(cfg: SynthConfig) -> dict[str, dict[str, int]]:
    n_val = cfg.val_images if cfg.val_images is not None else min(16, max(4, round(cfg.n * 0.01)))
    n_test = max(2, round(cfg.n * cfg.test_fraction))
    n_train = max(2, cfg.n - n_val - n_test)
    test_pn = round(n_test * cfg.test_pneumonia_fraction)
    train_pn = round(n_train * cfg.pneumonia_fraction)
    val_pn = n_val // 2 + n_val % 2
    return {
        "train": {"NORMAL": n_train - train_pn, "PNEUMONIA": train_pn},
        "val": {"NORMAL": n_val - val_pn, "PNEUMONIA": val_pn},
        "test": {"NORMAL": n_test - test_pn, "PNEUMONIA": test_pn},
    }


def plan(cfg: SynthConfig) -> list[PlannedImage]:
    """The list of files to write (names, patients, classes); no pixels yet."""
    rng = np.random.default_rng([cfg.seed, 0])
    counters = _Counters()
    out: list[PlannedImage] = []
    for split, per_class in _split_counts(cfg).items():
        for label in CLASSES:
            remaining = per_class[label]
            while remaining > 0:
                if label == "PNEUMONIA":
                    k = int(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15]))
                else:
                    k = int(rng.choice([1, 2], p=[0.75, 0.25]))
                k = min(k, remaining)
                remaining -= k
                counters.patient += 1
                out.extend(_patient_files(split, label, k, rng, counters))
    return out


def _patient_files(
    split: str, label: str, k: int, rng: np.random.Generator, c: _Counters
) -> list[PlannedImage]:
    files = []
    if label == "PNEUMONIA":
        c.person += 1
        kind = "bacteria" if rng.random() < 0.62 else "virus"
        patient = f"person{c.person}"
        for _ in range(k):
            c.per_kind[kind] += 1
            c.image += 1
            name = f"person{c.person}_{kind}_{c.per_kind[kind]}.jpeg"
            files.append(PlannedImage(split, label, name, patient, c.patient, c.image, kind))
    else:
        c.normal += 1
        prefix = "NORMAL2-IM-" if rng.random() < 0.4 else "IM-"
        patient = f"{prefix}{c.normal:04d}"
        for j in range(k):
            c.image += 1
            name = f"{patient}-{j + 1:04d}.jpeg"
            files.append(PlannedImage(split, label, name, patient, c.patient, c.image, "normal"))
    return files


# --------------------------------------------------------------------------- rendering


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32, zero mean, unit-ish std, features about ``shape / cells`` pixels wide."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(small).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    return np.asarray((arr - arr.mean()) / (arr.std() + 1e-6))


def _patient_params(rng: np.random.Generator, kind: str) -> dict[str, object]:
    p: dict[str, object] = {
        "scale": rng.uniform(0.82, 1.08),  # patient size relative to the film
        "body_w": rng.uniform(0.78, 0.95),
        "lung_x": rng.uniform(0.33, 0.42),
        "lung_hw": rng.uniform(0.2, 0.27),
        "lung_top": rng.uniform(-0.78, -0.62),
        "lung_bottom": rng.uniform(0.42, 0.62),
        "dome": rng.uniform(0.08, 0.18),
        "right_dia_up": rng.uniform(0.02, 0.07),
        "heart": (
            rng.uniform(0.05, 0.12),
            rng.uniform(0.12, 0.2),
            rng.uniform(0.24, 0.32),
            rng.uniform(0.2, 0.26),
        ),
        "mediastinum_w": rng.uniform(0.08, 0.15),  # wide thymic shadows in small children
        "rib_spacing": rng.uniform(0.12, 0.17),
        "rib_phase": rng.uniform(0, 1),
        "rib_contrast": rng.uniform(0.05, 0.11),
        "vessels": rng.uniform(0.05, 0.1),
        "opacity": None,
    }
    if kind != "normal":
        p["opacity"] = _opacity_params(rng, kind)
    return p


def _opacity_params(rng: np.random.Generator, kind: str) -> dict[str, object]:
    if kind == "bacteria":
        pattern = "lobar" if rng.random() < 0.55 else "patchy"
    else:
        pattern = "interstitial" if rng.random() < 0.6 else "patchy"
    # Contrast in density units (lung air ~0.15, soft tissue ~0.45): from faint to dense.
    contrast = float(rng.uniform(0.14, 0.38))
    sides = [int(rng.integers(0, 2))]
    if pattern != "lobar" and rng.random() < 0.5:
        sides = [0, 1]
    blobs = []
    for _ in range(int(rng.integers(2, 8))):
        blobs.append(
            (
                int(rng.choice(sides)),
                rng.uniform(0.25, 0.95),  # position along the lung (apex → base)
                rng.uniform(-0.8, 0.8),  # across the lung
                rng.uniform(0.06, 0.16),  # sigma
                rng.uniform(0.5, 1.0),  # weight
            )
        )
    return {
        "pattern": pattern,
        "contrast": contrast,
        "sides": sides,
        "level": rng.uniform(0.35, 0.75),  # lobar: where the fissure sits
        "slope": rng.uniform(-0.6, 0.6),
        "extent": rng.uniform(0.18, 0.4),  # lobar: radius of the consolidated region
        "blobs": blobs,
        "seed": int(rng.integers(0, 2**31)),
    }


def _lung_mask(
    u: np.ndarray, v: np.ndarray, cx: float, hw: float, top: float, bottom: float, dome: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft (H, W) mask of one lung field and the position ``s`` along it (0 apex, 1 base)."""
    e = 0.012
    rel = (u - cx) / hw
    base = bottom - dome * np.clip(1.0 - rel**2, 0.0, 1.0)  # diaphragm dome, low lateral angles
    s = np.clip((v - top) / (bottom - top), 0.0, 1.0)
    width = hw * (0.2 + 0.8 * s**0.35)  # rounded apex, wide base
    centre = cx * (0.8 + 0.25 * s)  # the fields splay out towards the base
    mask = (
        _sigmoid((v - top) / e)
        * _sigmoid((base - v) / e)
        * _sigmoid((width - np.abs(u - centre)) / e)
    )
    return mask, s


def render(
    shape: tuple[int, int], patient: dict[str, object], rng: np.random.Generator
) -> np.ndarray:
    """One film: (H, W) uint8, bright = dense (the usual radiograph display)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (xx - w / 2) / (h / 2)
    y = (yy - h / 2) / (h / 2)
    angle = math.radians(rng.uniform(-4.0, 4.0))
    scale = float(patient["scale"]) * rng.uniform(0.95, 1.05)  # type: ignore[arg-type]
    tx, ty = rng.uniform(-0.06, 0.06), rng.uniform(-0.06, 0.06)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (ca * x + sa * y) / scale - tx
    v = (-sa * x + ca * y) / scale - ty

    bw = float(patient["body_w"])  # type: ignore[arg-type]
    top_lung = float(patient["lung_top"])  # type: ignore[arg-type]
    # Thorax narrowing to the neck above the shoulders.
    half = bw * (0.35 + 0.65 * _sigmoid((v - top_lung + 0.12) / 0.08))
    body = _sigmoid((half - np.abs(u)) / 0.03) * _sigmoid((1.35 - np.abs(v)) / 0.05)
    dens = 0.04 + 0.41 * body

    lx, hw = float(patient["lung_x"]), float(patient["lung_hw"])  # type: ignore[arg-type]
    top, bottom = float(patient["lung_top"]), float(patient["lung_bottom"])  # type: ignore[arg-type]
    dome, up = float(patient["dome"]), float(patient["right_dia_up"])  # type: ignore[arg-type]
    hx, hdy, hrx, hry = cast(tuple[float, float, float, float], patient["heart"])
    hy = bottom - hdy  # the heart sits on the diaphragm
    heart = _sigmoid((1.0 - ((u - hx) / hrx) ** 2 - ((v - hy) / hry) ** 2) / 0.04)
    # Image left is the patient's right: the right hemidiaphragm sits a little higher.
    lung_r, s_r = _lung_mask(u, v, -lx, hw, top, bottom - up, dome)
    lung_l, s_l = _lung_mask(u, v, lx, hw, top, bottom, dome)
    lung_r = lung_r * (1.0 - heart)
    lung_l = lung_l * (1.0 - heart)
    lungs = lung_r + lung_l
    # More air (darker) in the middle of each field than at its edges.
    depth = lung_r * (0.7 + 0.3 * np.clip(1.0 - ((u + lx) / hw) ** 2, 0, 1)) + lung_l * (
        0.7 + 0.3 * np.clip(1.0 - ((u - lx) / hw) ** 2, 0, 1)
    )

    mw = float(patient["mediastinum_w"])  # type: ignore[arg-type]
    mediastinum = _sigmoid((mw - np.abs(u)) / 0.02) * _sigmoid((hy - v) / 0.05) * body
    spine = _sigmoid((0.055 - np.abs(u)) / 0.01) * body
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * v / 0.09)
    # Heart and mediastinum are soft tissue: they show as the absence of lung air, plus a little.
    dens = dens + 0.06 * mediastinum + spine * (0.06 + 0.04 * vertebrae)
    dens = dens - 0.32 * depth

    # Posterior ribs: arcs that fall laterally, visible over the lung fields.
    spacing = float(patient["rib_spacing"])  # type: ignore[arg-type]
    au = np.abs(u)
    phase = (v - 0.3 * au + 0.8 * au**2) / spacing + float(patient["rib_phase"])  # type: ignore[arg-type]
    ribs = ((1.0 + np.cos(2 * np.pi * phase)) / 2) ** 6
    thorax = _sigmoid((lx + hw * 1.2 - au) / 0.04) * _sigmoid((bottom + 0.05 - v) / 0.03)
    dens = dens + float(patient["rib_contrast"]) * ribs * thorax * _sigmoid((v - top + 0.1) / 0.03)  # type: ignore[arg-type]
    clavicle = np.exp(-(((v - (top + 0.02 + 0.18 * au)) / 0.025) ** 2)) * _sigmoid(
        (0.65 - au) / 0.03
    )
    dens = dens + 0.12 * clavicle * _sigmoid((au - 0.07) / 0.02)

    # Hilar vascular markings in both classes.
    vessels = np.maximum(np.tanh(_smooth_noise(rng, shape, 36)), 0.0)
    hila = np.exp(-(((au - 0.16) / 0.28) ** 2 + ((v - 0.05) / 0.4) ** 2))
    dens = dens + float(patient["vessels"]) * vessels * hila * lungs  # type: ignore[arg-type]

    opacity = patient["opacity"]
    if opacity is not None:
        dens = dens + _opacity(opacity, u, v, (lung_r, lung_l), (s_r, s_l), lx, hw, shape)  # type: ignore[arg-type]

    # Exposure, detector blur, noise, 8-bit quantisation.
    blur = rng.uniform(0.4, 1.2) * h / 256
    dens = gaussian_filter(np.clip(dens, 0.0, 1.2), blur)
    gamma = rng.uniform(0.75, 1.35)
    img = rng.uniform(0.75, 1.1) * np.power(dens / 1.2, gamma) * 1.25 + rng.uniform(-0.05, 0.12)
    img = img + rng.uniform(0.008, 0.03) * rng.standard_normal(shape).astype(np.float32)
    img = img + 0.015 * _smooth_noise(rng, shape, 6)
    if rng.random() < 0.5:  # burned-in side marker, in either class
        mh, mw_ = max(4, h // 18), max(3, w // 24)
        r0 = int(rng.integers(2, max(3, h // 6)))
        c0 = int(rng.integers(2, max(3, w // 6))) if rng.random() < 0.5 else w - mw_ - 3
        img[r0 : r0 + mh, c0 : c0 + mw_] = rng.uniform(0.85, 1.0)
    return np.asarray(np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8))


def _opacity(
    op: dict[str, object],
    u: np.ndarray,
    v: np.ndarray,
    lungs: tuple[np.ndarray, np.ndarray],
    pos: tuple[np.ndarray, np.ndarray],
    lx: float,
    hw: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Added density (H, W) of the consolidation, confined to the lung fields."""
    rng = np.random.default_rng(int(op["seed"]))  # type: ignore[call-overload]
    contrast = float(op["contrast"])  # type: ignore[arg-type]
    texture = 0.75 + 0.25 * np.tanh(_smooth_noise(rng, shape, 20))
    pattern = op["pattern"]
    out = np.zeros(shape, np.float32)
    if pattern == "lobar":
        side = op["sides"][0]  # type: ignore[index]
        s = pos[side]
        cx = -lx if side == 0 else lx
        fissure = float(op["level"]) + float(op["slope"]) * (u - cx) / hw  # type: ignore[arg-type]
        lobe = _sigmoid((s - fissure) / 0.03)
        # Consolidation filling part of the lobe: a large soft region around a seed point.
        b = op["blobs"][0]  # type: ignore[index]
        sy = max(float(b[1]), float(op["level"]) + 0.1)  # type: ignore[arg-type]
        ext = float(op["extent"])  # type: ignore[arg-type]
        region = _sigmoid(
            (1.0 - ((u - cx - b[2] * hw * 0.5) / (ext * 1.3)) ** 2 - ((s - sy) / ext) ** 2) / 0.15
        )
        out = 1.3 * contrast * lobe * region * texture * lungs[side]
    elif pattern == "patchy":
        acc = np.zeros(shape, np.float32)
        for side, along, across, sigma, weight in op["blobs"]:  # type: ignore[attr-defined]
            cx = (-lx if side == 0 else lx) + across * hw * (0.3 + 0.7 * math.sqrt(along)) * 0.8
            cy_mask = pos[side]
            d2 = ((u - cx) / (sigma * 1.4)) ** 2 + ((cy_mask - along) / (sigma * 1.2)) ** 2
            acc += weight * np.exp(-d2)
        mottle = _sigmoid(1.5 * _smooth_noise(rng, shape, 16) + 1.0)
        out = contrast * np.clip(acc, 0, 1.2) * mottle * (lungs[0] + lungs[1])
    else:  # interstitial: streaky perihilar shadowing, usually both sides
        reticular = np.maximum(np.tanh(_smooth_noise(rng, shape, 30)), 0.0)
        hila = np.exp(-(((np.abs(u) - 0.18) / 0.22) ** 2 + (v / 0.35) ** 2))
        mask = sum(lungs[s] for s in op["sides"])  # type: ignore[attr-defined,misc]
        out = contrast * (0.5 + reticular) * hila * mask
    return np.asarray(out)


# --------------------------------------------------------------------------- driver


def generate(out: Path, cfg: SynthConfig, *, overwrite: bool = False) -> list[Path]:
    """Write the whole data set under ``out/chest_xray``; return the written files.

    Refuses (FileExistsError) to write into class folders that already hold images, unless
    ``overwrite``, which first deletes their ``*.jpeg`` files (stale files from a run with another
    ``n`` would otherwise mix in).
    """
    root = Path(out) / ROOT
    for split in SPLITS:
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            old = sorted(folder.glob("*.jpeg"))
            if old and not overwrite:
                raise FileExistsError(f"{folder} already holds images (use --overwrite)")
            for path in old:
                path.unlink()
    lo, hi = cfg.size_range
    written = []
    patients: dict[int, dict[str, object]] = {}
    for item in progress(plan(cfg), "synth pneumonia_xray", unit="image"):
        if item.patient_serial not in patients:
            prng = np.random.default_rng([cfg.seed, 1, item.patient_serial])
            patients[item.patient_serial] = _patient_params(prng, item.kind)
        irng = np.random.default_rng([cfg.seed, 2, item.image_serial])
        h = int(irng.integers(lo, hi + 1))
        w = int(np.clip(h * irng.uniform(0.85, 1.3), lo, hi))
        pixels = render((h, w), patients[item.patient_serial], irng)
        path = root / item.split / item.label / item.filename
        Image.fromarray(pixels, mode="L").save(path, format="JPEG", quality=cfg.jpeg_quality)
        written.append(path)
    return written


def preview_grid(
    out_png: Path, cfg: SynthConfig, columns: int = 6, rows: int = 3, tile: int = 160
) -> None:
    """A grid of films as a PNG: first half normal, rest pneumonia (framed in white)."""
    items = plan(cfg)
    normals = [i for i in items if i.label == "NORMAL"][: columns * rows // 2]
    pneu = [i for i in items if i.label == "PNEUMONIA"][: columns * rows - len(normals)]
    canvas = np.zeros((rows * tile, columns * tile), np.uint8)
    for k, item in enumerate([*normals, *pneu]):
        prng = np.random.default_rng([cfg.seed, 1, item.patient_serial])
        irng = np.random.default_rng([cfg.seed, 2, item.image_serial])
        params = _patient_params(prng, item.kind)
        h = int(irng.integers(*cfg.size_range))
        w = int(np.clip(h * irng.uniform(0.85, 1.3), *cfg.size_range))
        px = render((h, w), params, irng)
        im = Image.fromarray(px).resize((tile, tile), Image.Resampling.BOX)
        arr = np.asarray(im).copy()
        if item.label == "PNEUMONIA":  # a white frame marks the pneumonia tiles
            arr[:3, :] = arr[-3:, :] = arr[:, :3] = arr[:, -3:] = 255
        r, c = divmod(k, columns)
        canvas[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = arr
    Image.fromarray(canvas).save(out_png, optimize=True)


def counts(root: Path) -> dict[str, dict[str, int]]:
    """Files per split and class under ``root/chest_xray`` (for reports and tests)."""
    base = Path(root) / ROOT
    return {s: {c: len(list((base / s / c).glob("*.jpeg"))) for c in CLASSES} for s in SPLITS}
