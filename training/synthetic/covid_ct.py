"""Synthetic chest CT studies in the MosMedData layout (COVID-19 severity CT-0 … CT-4).

Writes ``OUT/MosMedData/studies/CT-{0..4}/study_NNNN.nii.gz``: one NIfTI-1 volume per study
(one study per patient, as in MosMedData), int16 Hounsfield units, with a real affine (voxel
sizes about 0.7 × 0.7 mm in-plane and several mm between slices at 512 px; the field of view
and the cranio-caudal coverage are physical, so smaller matrices get coarser pixels). Study
numbers run in one block per category, like the real set (``study_0001`` … in CT-0, then CT-1
…), with the real set's category shares (254 / 684 / 125 / 45 / 2 of 1,110).

Each study is drawn in patient coordinates (mm) and sampled on its voxel grid:

- air around the patient (-1000 HU, sometimes -2048 padding outside the reconstruction
  circle), a curved table, a body outline with subcutaneous fat and muscle, ribs (oblique bands
  on a ring), the spine, the mediastinum, the heart (left of the midline), ascending and
  descending aorta, the diaphragm domes (the right one higher) over liver and spleen/stomach;
- two lungs near -850 HU with an anterior → posterior density gradient, vessels (a branching
  tubular network, thick near the hila, soft partial-volume edges, up to blood density) and
  airways (trachea, main and lobar bronchi: an air lumen in a soft-tissue wall);
- confounders in every category: dependent (posterior) subpleural density, small nodules;
- CT-1 … CT-4 add COVID-19 pneumonia: ground-glass opacities (about -700 to -300 HU, vessels
  still visible through them) and consolidation (about -100 to +40 HU), peripheral, posterior
  and basal predominant, bilateral, covering a share of the lung volume that grows with the
  category (CT-1 < 25 %, CT-2 25-50 %, CT-3 50-75 %, CT-4 > 75 %; the consolidated part of
  the affected lung grows too);
- then a slight in-plane blur (the scanner's point-spread) and Gaussian noise (10-30 HU).

The stored orientation varies by study (LPS-, RAS- or LAS-like voxel axes with the matching
affine), so a loader that ignores the affine sees left and right, front and back disagree; the
service's readers return every study in one canonical order.

Deterministic: study ``k`` draws from ``numpy.random.default_rng([seed, k])`` only, so a file's
voxels depend on the seed, its study number and the geometry options, not on which other
categories were written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from training.core.progress import progress
from training.synthetic.shapes3d import ellipse, smooth_noise, tube

ROOT = "MosMedData"
STUDIES = "studies"
CATEGORIES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")
# MosMedData: 254 normal, then 684 / 125 / 45 / 2 studies of increasing lung involvement.
REAL_COUNTS = (254, 684, 125, 45, 2)
# Share of the lung volume affected, per category (CT-0: none).
INVOLVEMENT = {
    "CT-0": (0.0, 0.0),
    "CT-1": (0.04, 0.24),
    "CT-2": (0.26, 0.49),
    "CT-3": (0.51, 0.74),
    "CT-4": (0.76, 0.92),
}
# Share of the affected lung that is consolidated rather than ground glass.
CONSOLIDATION = {
    "CT-0": (0.0, 0.0),
    "CT-1": (0.0, 0.05),
    "CT-2": (0.03, 0.15),
    "CT-3": (0.1, 0.3),
    "CT-4": (0.25, 0.45),
}
HU_MIN, HU_MAX = -2048, 3071
AIR, FAT, SOFT, BLOOD, LIVER = -1000.0, -100.0, 45.0, 40.0, 60.0


@dataclass(frozen=True)
class SynthConfig:
    """What to generate.

    ``n`` studies in total, split over the categories in the real set's proportions;
    ``categories`` limits which are *written* (the plan, and so the study numbers and voxels,
    stay those of the full set). ``size``: in-plane matrix (rows = columns); ``slices``: (min,
    max) slices per study; the field of view (mm) and the cranio-caudal coverage (mm) are drawn
    from ``fov_mm`` and ``coverage_mm``, so the voxel size follows from them.
    """

    n: int = 200
    seed: int = 0
    size: int = 128
    slices: tuple[int, int] = (36, 44)
    fov_mm: tuple[float, float] = (330.0, 380.0)
    coverage_mm: tuple[float, float] = (270.0, 330.0)
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown:
            raise ValueError(f"unknown categories {sorted(unknown)}; choose from {CATEGORIES}")
        if self.n < 1 or self.size < 16 or not 2 <= self.slices[0] <= self.slices[1]:
            raise ValueError("need n >= 1, size >= 16 and 2 <= min slices <= max slices")


@dataclass(frozen=True)
class PlannedStudy:
    number: int  # 1-based, global (the file is study_{number:04d}.nii.gz)
    category: str

    @property
    def filename(self) -> str:
        return f"study_{self.number:04d}.nii.gz"

    @property
    def relpath(self) -> str:
        return f"{ROOT}/{STUDIES}/{self.category}/{self.filename}"


@dataclass(frozen=True)
class Study:
    """One rendered study in canonical order (see ``app.imaging.types.Volume``).

    ``hu``: (S, H, W) int16, axis 0 inferior → superior, axis 1 anterior → posterior, axis 2
    patient right → left. ``spacing``: (slice, row, col) mm. ``lung``: (S, H, W) bool lung mask;
    ``affected``: (S, H, W) bool opacities; ``involvement``: affected share of the lung.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    lung: np.ndarray
    affected: np.ndarray
    involvement: float
    category: str


# --------------------------------------------------------------------------- plan


def category_counts(n: int) -> dict[str, int]:
    """``n`` split over the categories in the real proportions (largest remainders)."""
    total = sum(REAL_COUNTS)
    exact = [n * c / total for c in REAL_COUNTS]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return dict(zip(CATEGORIES, counts, strict=True))


def plan(cfg: SynthConfig) -> list[PlannedStudy]:
    """Every study of the full set, numbered in one block per category (as MosMedData)."""
    out: list[PlannedStudy] = []
    number = 1
    for category, count in category_counts(cfg.n).items():
        for _ in range(count):
            out.append(PlannedStudy(number, category))
            number += 1
    return out


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- rendering


def render(
    rng: np.random.Generator,
    category: str,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> Study:
    """One study of ``category`` on a (S, H, W) canonical grid with ``spacing`` (mm)."""
    s_n, h_n, w_n = shape
    dz, dy, dx = spacing
    z = (np.arange(s_n, dtype=np.float32) * dz).astype(np.float32)  # mm, superior +
    y = ((np.arange(h_n) - (h_n - 1) / 2) * dy).astype(np.float32)  # mm, posterior +
    x = ((np.arange(w_n) - (w_n - 1) / 2) * dx).astype(np.float32)  # mm, patient left +
    grid = (z, y, x)
    zz, yy, xx = z[:, None, None], y[None, :, None], x[None, None, :]
    top = float(z[-1])
    fov = w_n * dx

    # ---- body
    a, b = rng.uniform(135, 168), rng.uniform(92, 118)
    xc, yc = rng.uniform(-8, 8), rng.uniform(-12, 8)
    fat, muscle = rng.uniform(5, 20), rng.uniform(6, 11)
    u2, v2 = xx - xc, yy - yc  # (1, 1, W), (1, H, 1)
    body = ellipse(u2, v2, a, b)
    ac, bc = a - fat - muscle - 6, b - fat - muscle - 6  # thoracic cavity
    hu = np.full(shape, AIR, dtype=np.float32)
    table_y = yc + b + rng.uniform(8, 20)
    table = (
        (yy >= table_y + 0.0015 * xx**2)
        & (yy <= table_y + 7 + 0.0015 * xx**2)
        & (np.abs(xx) < 0.45 * fov)
    )
    hu[np.broadcast_to(table, shape)] = rng.uniform(-250, 150)
    hu[np.broadcast_to(body, shape)] = FAT
    hu[np.broadcast_to(ellipse(u2, v2, a - fat, b - fat), shape)] = SOFT
    # ribs: a bony ring round the cavity, cut into oblique bands (ribs slope down anteriorly)
    ring = ellipse(u2, v2, ac + 6, bc + 6) & ~ellipse(u2, v2, ac, bc)
    angle = np.arctan2(v2, u2)
    phase = rng.uniform(0, 2 * math.pi)
    period = rng.uniform(22, 28)
    bands = np.sin(2 * math.pi * (zz + 18.0 * np.sin(angle)) / period + phase) > 0.2
    hu[ring & bands] = rng.uniform(450, 750)
    hu[np.broadcast_to(ellipse(u2, v2, ac, bc), shape)] = SOFT
    # ---- diaphragm (right dome higher), abdomen below it
    dome_r = rng.uniform(35, 65)
    dome_l = dome_r - rng.uniform(8, 22)
    depth = rng.uniform(45, 70)
    reach2 = (u2 / ac) ** 2 + ((v2 + 0.2 * bc) / (1.2 * bc)) ** 2
    dome = np.where(xx < xc, dome_r, dome_l) - depth * np.minimum(reach2, 1.5)
    below = zz <= dome  # (S, H, W)
    inside = np.broadcast_to(ellipse(u2, v2, ac, bc), shape)
    abdomen = below & inside
    hu[abdomen & (xx < xc + 15)] = LIVER + rng.normal(0, 5)
    hu[abdomen & (xx >= xc + 15)] = SOFT
    if rng.random() < 0.6:  # gastric air bubble under the left dome
        bubble = (
            ((xx - xc - 0.45 * ac) / 30) ** 2
            + ((yy - yc + 0.2 * bc) / 25) ** 2
            + ((zz - dome_l + 35) / 18) ** 2
        ) <= 1
        hu[bubble & abdomen] = AIR

    # ---- mediastinum, heart, great vessels, spine
    z_heart = dome_r + rng.uniform(25, 45)
    heart_c = (z_heart, yc - rng.uniform(10, 30), xc + rng.uniform(12, 30))
    heart_ax = (rng.uniform(45, 58), rng.uniform(42, 55), rng.uniform(52, 68))
    heart = (
        ((zz - heart_c[0]) / heart_ax[0]) ** 2
        + ((yy - heart_c[1]) / heart_ax[1]) ** 2
        + ((xx - heart_c[2]) / heart_ax[2]) ** 2
    ) <= 1
    med_half = rng.uniform(11, 17) + 6 * (yy < yc)  # wider anteriorly
    mediastinum = (np.abs(xx - xc) < med_half) & (yy < yc + bc - 20) & (zz > dome_r - 10)
    spine_c = (yc + bc - 8, xc)
    spine = ellipse(xx - spine_c[1], yy - spine_c[0], 20, 18) | (
        (np.abs(xx - spine_c[1]) < 30) & (yy > spine_c[0]) & ellipse(u2, v2, ac, bc)
    )
    z_arch = top - rng.uniform(40, 70)
    desc = (spine_c[0] - rng.uniform(18, 26), xc + rng.uniform(14, 24))  # (y, x)
    asc = (yc - rng.uniform(12, 22), xc + rng.uniform(0, 8))  # (y, x)
    aorta_r = rng.uniform(11, 15)
    # ---- lungs
    z_apex = top - rng.uniform(0, 22)
    apex_round = rng.uniform(45, 70)
    shrink = np.sqrt(np.clip((z_apex - zz) / apex_round, 0.0, 1.0))  # (S, 1, 1)
    half = ac / 2
    lung_b = (bc + 6) * shrink + 1e-3
    lung_a = (half + 8) * shrink + 1e-3
    right = ellipse(xx - (xc - half + 4), yy - (yc + 4), lung_a, lung_b)
    left = ellipse(xx - (xc + half - 4), yy - (yc + 4), lung_a, lung_b)
    lung = (
        (right | left)
        & ellipse(u2, v2, ac - 2, bc - 2)
        & ~below
        & (zz < z_apex)
        & ~heart
        & ~mediastinum
        & ~spine
    )
    lung &= ~np.broadcast_to(ellipse(xx - desc[1], yy - desc[0], aorta_r + 3, aorta_r + 3), shape)

    hu[mediastinum & inside & ~below] = SOFT - 10
    hu[np.broadcast_to(spine, shape) & ~below] = SOFT
    hu[heart & inside] = BLOOD
    hu[np.broadcast_to(ellipse(xx - spine_c[1], yy - spine_c[0], 16, 14), shape)] = rng.uniform(
        200, 320
    )
    canal = ellipse(xx - spine_c[1], yy - spine_c[0] - 22, 7, 7)
    hu[np.broadcast_to(canal, shape)] = 20.0
    tube(hu, grid, (z_arch, *desc), (0.0, *desc), aorta_r, 0, BLOOD, None)
    tube(hu, grid, (z_heart, *asc), (z_arch, *asc), aorta_r + 2, 0, BLOOD, None)
    tube(hu, grid, (z_arch, *asc), (z_arch, *desc), aorta_r, 0, BLOOD, None)

    # parenchyma: base density, dependent gradient, fine texture
    ypost = np.clip((yy - (yc - bc)) / (2 * bc), 0.0, 1.0)  # 0 anterior … 1 posterior
    parenchyma = rng.uniform(-880, -830) + rng.uniform(20, 60) * ypost
    texture = smooth_noise(rng, shape, (0.6, 1.5 / dy, 1.5 / dx)) * rng.uniform(10, 25)
    lung_hu = (parenchyma + texture).astype(np.float32)
    lungf = lung.astype(np.float32)
    # peripheral (subpleural) weight: 1 at the pleura, ~0 deep inside
    inner = gaussian_filter(lungf, sigma=(max(0.5, 8 / dz), 12 / dy, 12 / dx))
    periph = np.clip(1.0 - inner, 0.0, 1.0) * lungf

    # dependent subpleural density (a normal finding) in some studies of every category
    if rng.random() < 0.45:
        dependent = lung & (ypost > rng.uniform(0.78, 0.88)) & (periph > 0.35)
        lung_hu[dependent] += rng.uniform(120, 260)
    # ---- COVID-19 opacities
    lo, hi = INVOLVEMENT[category]
    share = float(rng.uniform(lo, hi)) if hi > 0 else 0.0
    affected = np.zeros(shape, dtype=bool)
    lung_count = int(lung.sum())
    if share > 0 and lung_count:
        sigma_mm = rng.uniform(14, 26)
        g = smooth_noise(rng, shape, (max(0.5, sigma_mm / dz), sigma_mm / dy, sigma_mm / dx))
        g += rng.uniform(1.0, 2.2) * periph + rng.uniform(0.3, 0.9) * ypost
        g += rng.uniform(0.2, 0.7) * np.clip((dome_r + 120 - zz) / 120, 0, 1)
        values = g[lung]
        threshold = float(np.quantile(values, 1 - share))
        affected = lung & (g > threshold)
        c_lo, c_hi = CONSOLIDATION[category]
        cons_share = share * float(rng.uniform(c_lo, c_hi))
        level = rng.uniform(-640, -420)
        ggo_tex = smooth_noise(rng, shape, (0.6, 4 / dy, 4 / dx)) * rng.uniform(50, 100)
        ggo = np.clip(level + ggo_tex, -720, -280)
        soft_edge = np.clip((g - threshold) / 0.25, 0.0, 1.0)
        lung_hu = np.where(affected, lung_hu + (ggo - lung_hu) * soft_edge, lung_hu)
        if cons_share > 0:
            c_thr = float(np.quantile(values, 1 - cons_share))
            cons = lung & (g > c_thr)
            lung_hu[cons] = rng.uniform(-90, 30) + ggo_tex[cons] * 0.3
    # small nodules (a confounder)
    if rng.random() < 0.3:
        where = np.argwhere(lung)
        for _ in range(int(rng.integers(1, 4))):
            k, r, c = where[rng.integers(len(where))]
            rad = rng.uniform(3, 7)
            ball = ((zz - z[k]) ** 2 + (yy - y[r]) ** 2 + (xx - x[c]) ** 2) <= rad**2
            lung_hu[ball & lung] = rng.uniform(-50, 40)
    # vessels: intersection of two smooth noise zero-sets = a tubular network, thick at the hila
    hila = [(z_heart + 35, yc, xc - 0.6 * half), (z_heart + 35, yc, xc + 0.6 * half)]
    d_hilum = np.minimum(
        *[np.sqrt((zz - h[0]) ** 2 + (yy - h[1]) ** 2 + (xx - h[2]) ** 2) for h in hila]
    )
    calibre = np.exp(-d_hilum / rng.uniform(70, 110)).astype(np.float32)
    n1 = smooth_noise(rng, shape, (max(0.5, 3.5 / dz), 3.5 / dy, 3.5 / dx))
    n2 = smooth_noise(rng, shape, (max(0.5, 3.5 / dz), 3.5 / dy, 3.5 / dx))
    radial = np.sqrt(n1 * n1 + n2 * n2)
    eps = 0.18 + 0.5 * calibre
    vessel = np.clip((eps - radial) / (0.5 * eps), 0.0, 1.0) * lungf
    peak = -450 + 480 * np.clip(calibre * 1.6, 0.0, 1.0)
    lung_hu = np.where(
        vessel > 0, np.maximum(lung_hu, lung_hu + (peak - lung_hu) * vessel), lung_hu
    )
    hu = np.where(lung, lung_hu, hu)
    # airways: trachea → carina → main bronchi → lobar bronchi (air lumen, soft-tissue wall)
    z_carina = z_heart + rng.uniform(45, 60)
    trachea = (yc - rng.uniform(5, 20), xc)
    carina = np.array([z_carina, trachea[0], trachea[1]])
    tube(hu, grid, (top + 10, trachea[0], trachea[1]), carina, rng.uniform(7, 10), 2.0, AIR, 0.0)
    for side, hilum in zip((-1, 1), hila, strict=True):
        h = np.array([hilum[0] - 15, hilum[1], hilum[2]])
        tube(hu, grid, carina, h, rng.uniform(5, 7), 1.5, AIR, -20.0)
        for _ in range(3):
            direction = np.array(
                [rng.uniform(-1, 0.8), rng.uniform(-0.6, 0.6), side * rng.uniform(0.3, 1.0)]
            )
            end = h + direction / np.linalg.norm(direction) * rng.uniform(30, 55)
            tube(hu, grid, h, end, rng.uniform(2.5, 3.8), 1.2, AIR, -150.0)

    # ---- scanner: point spread in-plane, noise, reconstruction circle
    hu = gaussian_filter(
        hu, sigma=(0, 0.5 / max(dy / 1.4, 1.0) + 0.3, 0.5 / max(dx / 1.4, 1.0) + 0.3)
    )
    hu += rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(10, 30))
    if rng.random() < 0.4:  # padding outside the reconstruction circle
        hu[:, ~((yy[0] ** 2 + xx[0] ** 2) <= (0.5 * fov) ** 2)] = -2048
    out = np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
    return Study(
        hu=out,
        spacing=(float(dz), float(dy), float(dx)),
        lung=lung,
        affected=affected,
        involvement=float(affected.sum() / max(lung_count, 1)),
        category=category,
    )


def study_geometry(
    rng: np.random.Generator, cfg: SynthConfig
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """(S, H, W) and (slice, row, col) spacing in mm for one study."""
    slices = int(rng.integers(cfg.slices[0], cfg.slices[1] + 1))
    pixel = float(rng.uniform(*cfg.fov_mm)) / cfg.size
    dz = float(rng.uniform(*cfg.coverage_mm)) / slices
    return (slices, cfg.size, cfg.size), (round(dz, 3), round(pixel, 4), round(pixel, 4))


def render_study(cfg: SynthConfig, item: PlannedStudy) -> Study:
    rng = np.random.default_rng([cfg.seed, item.number])
    shape, spacing = study_geometry(rng, cfg)
    return render(rng, item.category, shape, spacing)


# --------------------------------------------------------------------------- NIfTI

# voxel axes (i, j, k) as stored, in nibabel's RAS+ codes; all keep k = slices (superior)
_STORAGE = {
    "LPS": ("L", "P", "S"),  # i: right → left, j: anterior → posterior
    "RAS": ("R", "A", "S"),
    "LAS": ("L", "A", "S"),
}


def to_nifti(
    hu: np.ndarray, spacing: tuple[float, float, float], storage: str = "LPS"
) -> nib.Nifti1Image:
    """Canonical (S, H, W) int16 HU → a NIfTI-1 image whose affine maps its voxels back.

    ``storage`` picks the stored voxel axes (see ``_STORAGE``); the data are flipped to match,
    so every choice decodes to the same canonical array.
    """
    dz, dy, dx = spacing
    data = np.transpose(hu, (2, 1, 0))  # (i=col, j=row, k=slice) as (L, P, S)
    codes = _STORAGE[storage]
    affine = np.diag([dx, dy, dz, 1.0])
    if codes[0] == "L":
        affine[0, 0] = -dx  # i runs toward patient left = -x in RAS
    else:
        data = data[::-1]
    if codes[1] == "P":
        affine[1, 1] = -dy
    else:
        data = data[:, ::-1]
    shape = data.shape
    # centre the volume on the scanner origin in-plane
    affine[:3, 3] = -affine[:3, :3] @ np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2, 0.0])
    affine[2, 3] = -200.0
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.int16), affine)  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm", "sec")  # type: ignore[no-untyped-call]
    img.set_qform(affine, code=1)  # type: ignore[no-untyped-call]
    img.set_sform(affine, code=1)  # type: ignore[no-untyped-call]
    img.header.set_slope_inter(1.0, 0.0)  # type: ignore[no-untyped-call]
    return img


def generate(out: Path, cfg: SynthConfig, *, overwrite: bool = False) -> list[Path]:
    """Write the studies of ``cfg.categories`` under ``out/MosMedData/studies``.

    Refuses (FileExistsError) to write into category folders that already hold studies, unless
    ``overwrite``, which first deletes their ``*.nii.gz`` (stale files of a run with another
    ``n`` would mix in).
    """
    base = Path(out) / ROOT / STUDIES
    for category in cfg.categories:
        folder = base / category
        folder.mkdir(parents=True, exist_ok=True)
        old = sorted(folder.glob("*.nii.gz"))
        if old and not overwrite:
            raise FileExistsError(f"{folder} already holds studies (use --overwrite)")
        for path in old:
            path.unlink()
    written = []
    storages = sorted(_STORAGE)
    for item in progress(plan(cfg), "synth covid_ct", unit="study"):
        if item.category not in cfg.categories:
            continue
        study = render_study(cfg, item)
        storage = storages[item.number % len(storages)]
        path = Path(out) / item.relpath
        to_nifti(study.hu, study.spacing, storage).to_filename(str(path))
        written.append(path)
    return written


def counts(out: Path) -> dict[str, int]:
    base = Path(out) / ROOT / STUDIES
    return {c: len(list((base / c).glob("*.nii.gz"))) for c in CATEGORIES if (base / c).is_dir()}


def preview(
    out_png: Path, cfg: SynthConfig, fractions: Sequence[float] = (0.3, 0.5, 0.7), tile: int = 128
) -> None:
    """One row per category (its first planned study): axial slices at ``fractions`` of the
    height, lung window (W 1500, L -600); the row label gives the affected share of the lung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts: dict[str, PlannedStudy] = {}
    for item in plan(cfg):
        firsts.setdefault(item.category, item)
    rows = [firsts[c] for c in CATEGORIES if c in firsts]
    cols = len(fractions)
    fig, axes = plt.subplots(len(rows), cols, figsize=(cols * 1.6, len(rows) * 1.6), dpi=tile / 1.6)
    axes = np.atleast_2d(axes)
    for r, item in enumerate(rows):
        study = render_study(cfg, item)
        for c, frac in enumerate(fractions):
            k = min(study.hu.shape[0] - 1, round(frac * (study.hu.shape[0] - 1)))
            ax = axes[r, c]
            ax.imshow(study.hu[k], cmap="gray", vmin=-1350, vmax=150, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{item.category}\n{study.involvement:.0%}", fontsize=7)
            if r == 0:
                ax.set_title(f"slice at {frac:.0%} of height", fontsize=6)
    fig.tight_layout(pad=0.2)
    fig.savefig(out_png)
    plt.close(fig)
