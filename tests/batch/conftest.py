"""One local Ray for the batch tests (start-up is slow on two cores), and the input files."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the batch extra is not installed")


@pytest.fixture(scope="package")
def local_ray() -> Iterator[None]:
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    yield
    ray.shutdown()


def film(rng: np.random.Generator, height: int, width: int) -> bytes:
    """An 8-bit gray PNG with structure: two lung fields, a random opacity, noise."""
    from PIL import Image

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    img = 90 + 60 * np.exp(-((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.05)
    img += 60 * np.exp(-((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.05)
    img += rng.random() * 90 * np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / 0.01)
    img += rng.normal(0, 8, (height, width))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_films(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        size = int(rng.integers(48, 160))
        path = folder / f"film{i:04d}.png"
        path.write_bytes(film(rng, size, size + int(rng.integers(0, 32))))
        paths.append(path)
    return paths


def write_bad(folder: Path) -> list[Path]:
    """Zero bytes, a truncated PNG, random bytes, a DICOM without pixel data, a zip."""
    from tests.data.bad.make_corpus import dicom_slice

    folder.mkdir(parents=True, exist_ok=True)
    good = film(np.random.default_rng(9), 64, 64)
    files = {
        "zero.png": b"",
        "truncated.png": good[: len(good) // 3],
        "random.bin": np.random.default_rng(3).bytes(4096),
        "nopixels.dcm": dicom_slice(pixels=False),
        "empty.zip": b"PK\x05\x06" + b"\x00" * 18,
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


def ct_volume(seed: int, slices: int = 30, size: int = 64) -> np.ndarray:
    """(S, H, W) HU: air outside, soft tissue body, two lungs with random ground glass."""
    rng = np.random.default_rng(seed)
    _, yy, xx = np.mgrid[0:slices, 0:size, 0:size].astype(np.float32)
    yy, xx = yy / size - 0.5, xx / size - 0.5
    hu = np.full((slices, size, size), -1000.0, np.float32)
    body = (xx / 0.45) ** 2 + (yy / 0.35) ** 2 < 1
    hu[body] = 40
    for cx in (-0.2, 0.2):
        lung = ((xx - cx) / 0.15) ** 2 + (yy / 0.25) ** 2 < 1
        hu[lung] = -850
    glass = rng.random() * 500 * np.exp(-((xx - 0.2) ** 2 + yy**2) / 0.01)
    hu += np.where(hu < -500, glass, 0)
    hu += rng.normal(0, 20, hu.shape)
    return np.rint(hu).astype(np.float32)


def write_ct(folder: Path, n: int) -> list[Path]:
    """``n`` gzipped NIfTI CT volumes (RAS affine, 1 x 1 x 5 mm)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        hu = ct_volume(100 + i)
        # canonical (S, H, W), axis 2 right → left, axis 1 anterior → posterior → RAS (x, y, z)
        data = np.transpose(hu, (2, 1, 0))[::-1, ::-1, :].astype(np.int16)
        img = nib.Nifti1Image(data, np.diag([1.0, 1.0, 5.0, 1.0]))
        path = folder / f"ct{i}.nii.gz"
        path.write_bytes(gzip.compress(img.to_bytes()))
        paths.append(path)
    return paths


def write_mri(folder: Path, n: int) -> list[Path]:
    """Brain-MRI-like RGB slices (pre, FLAIR, post) with a bright lesion in FLAIR."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        size = 128 + 16 * i
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        brain = ((xx / 0.4) ** 2 + (yy / 0.45) ** 2 < 1) * 100.0
        lesion = 140 * np.exp(-((xx - rng.uniform(-0.2, 0.2)) ** 2 + (yy - 0.1) ** 2) / 0.004)
        flair = brain + (lesion if i % 2 == 0 else 0) + rng.normal(0, 5, brain.shape)
        rgb = np.stack([brain, flair, brain], axis=-1)
        path = folder / f"mri{i}.png"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
