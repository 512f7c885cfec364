"""Synthetic lower-grade-glioma MRI slices in the ``kaggle_3m`` layout (Buda et al., TCGA/TCIA).

Writes ``OUT/kaggle_3m/<patient>/<patient>_<n>.tif`` (256×256 RGB, 8-bit, channels
pre-contrast / FLAIR / post-contrast) and ``<patient>_<n>_mask.tif`` (256×256, one channel, 0 or
255), one folder per patient named like ``TCGA_CS_4941_19960909``, slices numbered 1..S from
inferior to superior.

Each patient is a small 3D model sliced axially: a head (scalp fat, dark skull, thin CSF) whose
cross-section grows and shrinks along the stack, a brain with a cortical grey-matter ribbon,
dark sulci, ventricles in the middle slices, a multiplicative bias field and Rician noise. Brain
size, position, rotation and intensity vary per patient, and per slice a little. The tumour is a
3D blob with an irregular (harmonic + noise) border whose cross-section grows and shrinks over a
run of consecutive slices, so most slices of a patient are empty, sizes and positions vary, and
the mask of one slice resembles its neighbours'. On FLAIR the lesion is hyperintense, by a
factor that varies from subtle to obvious; FLAIR-bright NON-lesion structures are there too —
scalp fat, periventricular caps/rims, the cortical ribbon in bright patients, small white-matter
foci — so raw intensity alone does not separate lesion from brain: the signal is local contrast
and shape, which a model must learn. About 1 patient in 10 has no tumour at all.

Deterministic: the plan comes from ``default_rng([seed, 0])``; patient ``k`` is rendered from
``default_rng([seed, 1, k])``, so a file's pixels depend only on the seed and its place in the plan.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from training.core.progress import progress

ROOT = "kaggle_3m"
SIZE = 256
INSTITUTIONS = ("CS", "DU", "EZ", "FG", "HT")


@dataclass(frozen=True)
class SynthConfig:
    """``n`` slices in total, split into patients of ``slices_per_patient`` (min, max) slices
    (the last patient takes what is left, at least 1); ``lesion_patient_fraction`` of patients
    carry a tumour; ``size`` is the slice side (the real set: 256)."""

    n: int = 600
    seed: int = 0
    slices_per_patient: tuple[int, int] = (16, 28)
    lesion_patient_fraction: float = 0.9
    size: int = SIZE


@dataclass(frozen=True)
class PlannedPatient:
    name: str
    serial: int
    slices: int


def plan(cfg: SynthConfig) -> list[PlannedPatient]:
    """The patients to write (names and slice counts); no pixels yet."""
    if cfg.n < 1:
        raise ValueError("n must be at least 1")
    lo, hi = cfg.slices_per_patient
    if not 1 <= lo <= hi:
        raise ValueError("slices_per_patient must be 1 <= min <= max")
    rng = np.random.default_rng([cfg.seed, 0])
    out: list[PlannedPatient] = []
    used: set[str] = set()
    remaining = cfg.n
    while remaining > 0:
        k = min(int(rng.integers(lo, hi + 1)), remaining)
        remaining -= k
        while True:
            inst = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
            number = int(rng.integers(4000, 9000))
            year, month, day = (
                int(rng.integers(1990, 2006)),
                int(rng.integers(1, 13)),
                int(rng.integers(1, 29)),
            )
            name = f"TCGA_{inst}_{number:04d}_{year:04d}{month:02d}{day:02d}"
            if name not in used:
                used.add(name)
                break
        out.append(PlannedPatient(name=name, serial=len(out), slices=k))
    return out


# --------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(size, size) float32 Gaussian-filtered noise, zero mean, unit std."""
    f = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma)
    return np.asarray((f - f.mean()) / (f.std() + 1e-6))


def _soft(x: np.ndarray, width: float = 0.8) -> np.ndarray:
    """Signed distance-like field → (0, 1) edge with ``width`` px of blur."""
    out: np.ndarray = 0.5 * (1.0 + np.tanh(x / width))
    return out


def _patient(rng: np.random.Generator, slices: int, cfg: SynthConfig) -> dict[str, object]:
    s = cfg.size / 256.0
    has_lesion = rng.random() < cfg.lesion_patient_fraction
    p: dict[str, object] = {
        "cx": cfg.size / 2 + rng.uniform(-10, 10) * s,
        "cy": cfg.size / 2 + rng.uniform(-8, 12) * s,
        "a": rng.uniform(76, 100) * s,  # head half-width (x)
        "elong": rng.uniform(1.08, 1.24),  # head half-height / half-width
        "angle": math.radians(rng.uniform(-12, 12)),
        "scalp": rng.uniform(4, 8) * s,
        "bone": rng.uniform(4, 7) * s,
        "csf": rng.uniform(1.5, 3.5) * s,
        "ribbon": rng.uniform(5, 9) * s,
        "wm": rng.uniform(0.36, 0.5),  # FLAIR white matter
        "gm_ratio": rng.uniform(1.08, 1.3),  # FLAIR grey/white
        "fat": rng.uniform(0.7, 1.0),  # FLAIR scalp fat
        "rim": rng.uniform(1.25, 1.6) if rng.random() < 0.65 else 0.0,  # periventricular caps
        "foci": int(rng.integers(0, 5)) if rng.random() < 0.5 else 0,
        "ventricle_size": rng.uniform(0.7, 1.3),
        "noise": rng.uniform(0.015, 0.04),
        "bias": rng.uniform(0.05, 0.18),
        "seed": int(rng.integers(0, 2**31)),
        "lesion": None,
    }
    if has_lesion:
        extent = rng.uniform(0.3, 0.62) * slices  # slices it spans
        angle = rng.uniform(0, 2 * math.pi)
        p["lesion"] = {
            "zc": rng.uniform(0.3, 0.72) * (slices - 1),
            "dz": max(extent / 2, 1.2),
            "radius": rng.uniform(10, 34) * s,
            "pos_r": rng.uniform(0.0, 0.55),  # centre, as a fraction of the brain radius
            "pos_angle": angle,
            "drift": rng.uniform(-0.6, 0.6, size=2) * s,  # px per slice
            "harm_amp": rng.uniform(0.05, 0.2, size=5) / np.arange(2, 7) ** 0.5,
            "harm_phase": rng.uniform(0, 2 * math.pi, size=5),
            "rough": rng.uniform(0.1, 0.35),
            "contrast": rng.uniform(1.3, 1.9),  # FLAIR lesion / white matter
            "t1": rng.uniform(0.6, 0.85),  # pre-contrast hypointensity
            "enhance": rng.uniform(1.1, 1.5) if rng.random() < 0.3 else 0.0,
            "core": rng.uniform(0.8, 0.95) if rng.random() < 0.3 else 1.0,
        }
    return p


def _head_scale(u: float) -> float:
    """Head cross-section relative to its widest, along the stack (0 inferior, 1 superior)."""
    return math.sqrt(max(0.0, 1.0 - ((u - 0.52) / 0.8) ** 2))


def render_slice(
    p: dict[str, object], z: int, slices: int, rng: np.random.Generator, size: int = SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Slice ``z`` of patient ``p``: ((size, size, 3) uint8 pre/FLAIR/post, (size, size) bool)."""
    u = z / max(slices - 1, 1)
    hs = _head_scale(u) * rng.uniform(0.98, 1.02)
    a = float(p["a"]) * hs  # type: ignore[arg-type]
    b = a * float(p["elong"])  # type: ignore[arg-type]
    ang = float(p["angle"])  # type: ignore[arg-type]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - float(p["cx"]), yy - float(p["cy"])  # type: ignore[arg-type]
    ca, sa = math.cos(ang), math.sin(ang)
    ux, uy = ca * dx + sa * dy, -sa * dx + ca * dy
    theta = np.arctan2(uy / b, ux / a)
    rho = np.hypot(ux / a, uy / b)  # 1 on the head's outline
    # Distance inwards from the outline in px (approximately), with a slightly lumpy outline.
    local_r = np.hypot(a * np.cos(theta), b * np.sin(theta))
    fields: dict[str, np.ndarray] = p["fields"]  # type: ignore[assignment]
    lumps = fields["lumps"]  # the same for every slice of a patient (geometry)
    depth = (1.0 - rho) * local_r + lumps * 0.3
    scalp, bone, csf = (float(p[k]) for k in ("scalp", "bone", "csf"))  # type: ignore[arg-type]
    head = _soft(depth)
    in_bone = _soft(depth - scalp)
    in_csf = _soft(depth - scalp - bone)
    gyri = fields["gyri"]
    brain_depth = depth - scalp - bone - csf + gyri * 0.35
    brain = _soft(brain_depth)
    brain_mask = brain_depth > 0

    wm = float(p["wm"]) * rng.uniform(0.95, 1.05)  # type: ignore[arg-type]
    gm = wm * float(p["gm_ratio"])  # type: ignore[arg-type]
    ribbon = _soft(float(p["ribbon"]) - brain_depth, 1.5) * brain  # type: ignore[arg-type]
    sulci = fields["sulci"] * ribbon  # CSF in sulci
    tissue = wm + (gm - wm) * ribbon
    texture = 1.0 + 0.04 * _smooth_noise(rng, size, 3)

    # Ventricles (middle slices): two tilted ellipses either side of the midline, dark on FLAIR,
    # with bright periventricular caps at their horns in most patients (a classic lesion mimic).
    vent = np.zeros((size, size), np.float32)
    rim = np.zeros((size, size), np.float32)
    vs = float(p["ventricle_size"]) * max(0.0, 1.0 - ((u - 0.55) / 0.22) ** 2)  # type: ignore[arg-type]
    if vs > 0.08:
        for side in (-1.0, 1.0):
            tilt = side * math.radians(14)
            vx0, vy0 = ux - side * a * 0.13, uy + b * 0.04
            vx = math.cos(tilt) * vx0 + math.sin(tilt) * vy0
            vy = -math.sin(tilt) * vx0 + math.cos(tilt) * vy0
            semi_x, semi_y = a * 0.075 * vs + 1.0, b * 0.34 * vs + 2.0
            rv = np.hypot(vx / semi_x, vy / semi_y)
            vent = np.maximum(vent, _soft((1.0 - rv) * semi_x, 0.8))
            for tip in (-1.0, 1.0):  # caps just beyond the anterior and posterior horns
                cap = np.exp(-((vx / (semi_x * 1.6)) ** 2 + ((vy - tip * semi_y) / 5.0) ** 2))
                rim = np.maximum(rim, cap.astype(np.float32))
        vent *= brain
        rim *= brain * (1.0 - vent)

    flair = np.zeros((size, size), np.float32)
    t1 = np.zeros((size, size), np.float32)
    fat = float(p["fat"])  # type: ignore[arg-type]
    flair += head * (1.0 - in_bone) * fat * (0.8 + 0.2 * texture)  # scalp fat: bright
    t1 += head * (1.0 - in_bone) * 0.9
    flair += in_bone * (1.0 - in_csf) * 0.06  # cortical bone: dark
    t1 += in_bone * (1.0 - in_csf) * 0.05
    flair += in_csf * (1.0 - brain) * 0.1  # CSF: suppressed on FLAIR
    t1 += in_csf * (1.0 - brain) * 0.15
    brain_flair = tissue * texture * (1.0 - 0.7 * sulci)
    brain_flair = brain_flair * (1.0 - vent) + 0.08 * vent
    if float(p["rim"]) > 0:  # type: ignore[arg-type]
        brain_flair = brain_flair + rim * wm * (float(p["rim"]) - 1.0)  # type: ignore[arg-type]
    brain_t1 = (0.62 - 0.15 * ribbon) * texture * (1.0 - 0.6 * sulci)
    brain_t1 = brain_t1 * (1.0 - vent) + 0.15 * vent

    # Small FLAIR-bright white-matter foci (not tumour).
    for k in range(int(p["foci"])):  # type: ignore[call-overload]
        frng = np.random.default_rng([int(p["seed"]), 7, k])  # type: ignore[call-overload]
        fr, fa = frng.uniform(0.2, 0.7), frng.uniform(0, 2 * math.pi)
        fz = frng.uniform(0.3, 0.8)
        if abs(u - fz) > 0.08:
            continue
        fx = float(p["cx"]) + fr * a * 0.7 * math.cos(fa)  # type: ignore[arg-type]
        fy = float(p["cy"]) + fr * b * 0.7 * math.sin(fa)  # type: ignore[arg-type]
        rad = frng.uniform(1.5, 3.5) * size / 256
        focus = _soft(rad - np.hypot(xx - fx, yy - fy), 1.0) * brain
        brain_flair = brain_flair + focus * wm * frng.uniform(0.4, 0.8)

    mask = np.zeros((size, size), bool)
    enhance = np.zeros((size, size), np.float32)
    les = p["lesion"]
    if isinstance(les, dict):
        d = (z - les["zc"]) / les["dz"]
        if abs(d) < 1.0:
            prof = (1.0 - abs(d) ** 3) ** (1.0 / 3.0)
            radius = les["radius"] * prof
            if radius >= 4.0 * size / 256:
                bx = a * 0.62 * les["pos_r"] * math.cos(les["pos_angle"])
                by = b * 0.62 * les["pos_r"] * math.sin(les["pos_angle"])
                lx = float(p["cx"]) + ca * bx - sa * by + les["drift"][0] * (z - les["zc"])  # type: ignore[arg-type]
                ly = float(p["cy"]) + sa * bx + ca * by + les["drift"][1] * (z - les["zc"])  # type: ignore[arg-type]
                ldx, ldy = xx - lx, yy - ly
                phi = np.arctan2(ldy, ldx)
                r_theta = np.ones_like(phi)
                for k, (amp, ph) in enumerate(
                    zip(les["harm_amp"], les["harm_phase"], strict=True), start=2
                ):
                    r_theta += amp * np.cos(k * phi + ph + 0.15 * z)
                lrng = np.random.default_rng([int(p["seed"]), 11, z])  # type: ignore[call-overload]
                rough = les["rough"] * _smooth_noise(lrng, size, max(radius / 4, 1.5))
                field = (
                    1.0
                    - np.hypot(ldx, ldy) / (radius * r_theta)
                    + 0.35 * rough * (1.0 - np.clip(np.hypot(ldx, ldy) / (radius * 1.6), 0, 1))
                )
                inside = field * radius  # ~ px inside the border
                mask = (inside > 0) & brain_mask
                lesion = _soft(inside, 0.9) * brain
                core = 1.0 - (1.0 - les["core"]) * _soft(inside - radius * 0.5, 2.0)
                lev = wm * les["contrast"] * core * (1.0 + 0.06 * _smooth_noise(lrng, size, 2))
                brain_flair = brain_flair * (1.0 - lesion) + lev * lesion
                brain_t1 = brain_t1 * (1.0 - lesion * (1.0 - les["t1"]))
                if les["enhance"] > 0:
                    patchy = np.clip(_smooth_noise(lrng, size, 3), 0, None)
                    enhance = lesion * patchy * (les["enhance"] - 1.0)
    flair += brain * brain_flair
    t1 += brain * brain_t1
    post = t1 * (1.0 + enhance) + 0.05 * head * (1.0 - in_csf) * (_smooth_noise(rng, size, 6) > 1)

    bias = fields["bias"]
    noise = float(p["noise"])  # type: ignore[arg-type]
    out = np.empty((size, size, 3), np.uint8)
    for c, chan in enumerate((t1, flair, post)):
        img = gaussian_filter(chan * bias, 0.7)
        re = img + noise * rng.standard_normal((size, size)).astype(np.float32)
        im = noise * rng.standard_normal((size, size)).astype(np.float32)
        mag = np.sqrt(re**2 + im**2)  # Rician magnitude noise
        inside = head > 0.5
        ref = float(np.percentile(mag[inside], 99.5)) if inside.any() else 1.0
        scale = rng.uniform(205, 250) / max(ref, 1e-3)
        out[:, :, c] = np.clip(np.round(mag * scale), 0, 255).astype(np.uint8)
    return out, mask


def render_patient(pp: PlannedPatient, cfg: SynthConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every slice of one planned patient, inferior → superior."""
    rng = np.random.default_rng([cfg.seed, 1, pp.serial])
    params = _patient(rng, pp.slices, cfg)
    prng = np.random.default_rng(int(params["seed"]))  # type: ignore[call-overload]
    size = cfg.size
    low = prng.standard_normal((4, 4)).astype(np.float32)  # a very smooth bias field
    smooth = np.asarray(Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC))
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-6)
    params["fields"] = {
        "lumps": 1.5 * _smooth_noise(prng, size, 10),
        "gyri": 2.5 * _smooth_noise(prng, size, 4),
        "sulci": np.clip(_smooth_noise(prng, size, 2.5) - 0.6, 0, None),
        "bias": 1.0 + 2.0 * float(params["bias"]) * smooth,  # type: ignore[arg-type]
    }
    return [render_slice(params, z, pp.slices, rng, cfg.size) for z in range(pp.slices)]


# --------------------------------------------------------------------------- writing


def _tif_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tif")] if folder.is_dir() else []


def generate(out: Path, cfg: SynthConfig, *, overwrite: bool = False) -> list[Path]:
    """Write ``out/kaggle_3m/<patient>/...``; returns the image files (masks not listed).

    Refuses a ``kaggle_3m`` that already holds TIFFs unless ``overwrite``, which first deletes
    its patient folders (so no stale patient of another run survives).
    """
    root = Path(out) / ROOT
    if _tif_files(root):
        if not overwrite:
            raise FileExistsError(f"{root} already holds images (use --overwrite)")
        for child in root.iterdir():
            if child.is_dir() and child.name.startswith("TCGA_"):
                shutil.rmtree(child)
    root.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pp in progress(plan(cfg), "synth brain_tumor_mri", unit="patient"):
        folder = root / pp.name
        folder.mkdir(exist_ok=True)
        for z, (img, mask) in enumerate(render_patient(pp, cfg), start=1):
            path = folder / f"{pp.name}_{z}.tif"
            Image.fromarray(img, mode="RGB").save(path, format="TIFF")
            Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(
                folder / f"{pp.name}_{z}_mask.tif", format="TIFF"
            )
            written.append(path)
    return written


def counts(out: Path) -> dict[str, int]:
    """Patients, slices and slices with a non-empty mask under ``out/kaggle_3m``."""
    root = Path(out) / ROOT
    patients = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    slices = lesion = 0
    for folder in patients:
        for mask in folder.glob("*_mask.tif"):
            slices += 1
            with Image.open(mask) as im:
                lesion += int(np.asarray(im).any())
    return {"patients": len(patients), "slices": slices, "with_lesion": lesion}


def preview_grid(out_png: Path, cfg: SynthConfig, columns: int = 6, tile: int = 128) -> None:
    """A small PNG: row 1 the RGB slices (pre/FLAIR/post as R/G/B), row 2 FLAIR with the mask
    outline in red, for ``columns`` slices of several patients (mostly with a lesion)."""
    from scipy.ndimage import binary_erosion

    picks: list[tuple[np.ndarray, np.ndarray]] = []
    for pp in plan(cfg):
        slices = render_patient(pp, cfg)
        with_lesion = [s for s in slices if s[1].any()]
        empty = [s for s in slices if not s[1].any()]
        if with_lesion:
            picks.append(with_lesion[len(with_lesion) // 2])
        if len(picks) % 3 == 2 and empty:
            picks.append(empty[len(empty) // 2])
        if len(picks) >= columns:
            break
    picks = picks[:columns]
    sheet = np.zeros((2 * tile, len(picks) * tile, 3), np.uint8)
    for i, (img, mask) in enumerate(picks):
        rgb = np.asarray(Image.fromarray(img).resize((tile, tile), Image.Resampling.BILINEAR))
        small = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((tile, tile))) > 127
        flair = np.asarray(Image.fromarray(img[:, :, 1]).resize((tile, tile)))
        over = np.repeat(flair[:, :, None], 3, axis=2).copy()
        edge = small & ~binary_erosion(small)
        over[edge] = (255, 40, 40)
        sheet[:tile, i * tile : (i + 1) * tile] = rgb
        sheet[tile:, i * tile : (i + 1) * tile] = over
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out_png, format="PNG", optimize=True)
