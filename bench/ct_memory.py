"""Peak memory of the CT path of the service: decode_volume + preprocess_volume on a large series.

    .venv/bin/python bench/ct_memory.py                  # 512 x 512 x 300, zip / parts / NIfTI
    .venv/bin/python bench/ct_memory.py --slices 120 --kinds zip

Builds a 512 x 512 x S int16 chest CT (the synthetic covid_ct generator at 512 px, resampled to
S slices with fresh noise per slice), encodes it as an in-memory zip of single-frame DICOM slices
(``tests/ct_series.py``), as the same slices sent as separate parts, and as .nii.gz; then, for
each, a FRESH Python process loads the upload bytes (what the web server holds anyway), imports
the service code, and measures:

- ``peak_rss_increase_mb``: the high-water mark of the resident size during the work
  (``ru_maxrss`` and a 2 ms sampling thread, which also gives the peak per stage) minus the
  resident size just before it, so every temporary counts;
- ``tracemalloc_peak_mb``: the peak of Python + numpy allocations, in a second fresh process
  (tracemalloc's own bookkeeping would inflate the RSS of the first);
- the wall time of each stage and the size of the float32 volume the readers return.

Not part of ``make test`` (it needs about 2 GB and a minute); prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_volume(size: int, slices: int, seed: int):  # type: ignore[no-untyped-def]
    """(slices, size, size) int16 HU in canonical order and its (slice, row, col) spacing."""
    import numpy as np

    from training.synthetic import covid_ct

    cfg = covid_ct.SynthConfig(n=10, seed=seed, size=size, slices=(38, 38))
    study = covid_ct.render_study(cfg, covid_ct.plan(cfg)[-1])
    coverage = study.spacing[0] * study.hu.shape[0]
    src = np.clip(np.rint(np.linspace(0, study.hu.shape[0] - 1, slices)), 0, None).astype(int)
    rng = np.random.default_rng(seed)
    hu = study.hu[src].astype(np.int16)
    hu += rng.integers(-12, 13, size=hu.shape, dtype=np.int16)
    spacing = (round(coverage / slices, 4), study.spacing[1], study.spacing[2])
    return hu, spacing


def write_inputs(folder: Path, size: int, slices: int, seed: int) -> dict[str, Path]:
    import gzip

    from tests.ct_series import series_from_volume, zip_files
    from training.synthetic.covid_ct import to_nifti

    hu, spacing = build_volume(size, slices, seed)
    files = series_from_volume(hu, spacing)
    paths = {"zip": folder / "series.zip", "nifti": folder / "study.nii.gz"}
    paths["zip"].write_bytes(zip_files(files, shuffle_seed=seed))
    raw = to_nifti(hu, spacing).to_bytes()
    paths["nifti"].write_bytes(gzip.compress(raw, compresslevel=6, mtime=0))
    paths["parts"] = paths["zip"]  # the child unpacks it into separate parts first
    return paths


class _Sampler:
    """Samples the resident size every few ms in a thread; keeps the peak per stage."""

    def __init__(self) -> None:
        self.stage = "decode"
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes()
            self.peaks[self.stage] = max(self.peaks.get(self.stage, 0), rss)
            time.sleep(0.002)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def child(kind: str, path: Path, size: list[int], traced: bool) -> dict[str, object]:
    """Runs in a fresh process: the measurement proper.

    ``traced``: measure Python + numpy allocations with tracemalloc instead (its own
    bookkeeping inflates the RSS, so the two are never measured in the same run).
    """
    from app.imaging.card import Intensity, Preprocessing
    from app.imaging.limits import DecodeLimits
    from app.imaging.preprocess import preprocess_volume
    from app.imaging.readers import decode_volume

    data = path.read_bytes()
    if kind == "parts":
        with zipfile.ZipFile(BytesIO(data)) as zf:
            parts = [zf.read(name) for name in zf.namelist()]
        del data
    else:
        parts = [data]
    upload = sum(len(p) for p in parts)
    prep = Preprocessing(
        kind="volume3d",
        size=size,
        intensity=Intensity(method="window", low=-1000, high=400),
        resize="trilinear",
    )
    limits = DecodeLimits()
    gc.collect()
    if traced:
        tracemalloc.start()
        volume = decode_volume(parts, limits)
        preprocess_volume(volume, prep, "NDHWC")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {"tracemalloc_peak_mb": round(peak / MB, 1)}
    before = _rss_bytes()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    with _Sampler() as sampler:
        t0 = time.perf_counter()
        volume = decode_volume(parts, limits)
        t1 = time.perf_counter()
        sampler.stage = "preprocess"
        tensor = preprocess_volume(volume, prep, "NDHWC")
        t2 = time.perf_counter()
        time.sleep(0.01)
    after = _rss_bytes()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "kind": kind,
        "upload_mb": round(upload / MB, 1),
        "volume_shape": list(volume.shape),
        "volume_float32_mb": round(volume.voxels.nbytes / MB, 1),
        "tensor_shape": list(tensor.shape),
        "rss_before_mb": round(before / MB, 1),
        # ru_maxrss counts only when it was not already reached while preparing the upload
        "peak_rss_increase_mb": round(
            (
                max(0 if maxrss_before > before + 16 * MB else maxrss, *sampler.peaks.values())
                - before
            )
            / MB,
            1,
        ),
        "peak_rss_increase_decode_mb": round((sampler.peaks["decode"] - before) / MB, 1),
        "peak_rss_increase_preprocess_mb": round(
            (sampler.peaks.get("preprocess", after) - before) / MB, 1
        ),
        "rss_increase_after_mb": round((after - before) / MB, 1),
        "maxrss_reached_before_work": maxrss_before > before + 16 * MB,
        "decode_s": round(t1 - t0, 2),
        "preprocess_s": round(t2 - t1, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kinds", nargs="+", default=["zip", "parts", "nifti"], choices=("zip", "parts", "nifti")
    )
    parser.add_argument(
        "--model-size", type=int, nargs=3, default=[32, 64, 64], metavar=("D", "H", "W")
    )
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help="reuse (or keep) the generated inputs in this folder")
    args = parser.parse_args(argv)
    if args.child:
        kind, path = args.child
        print(json.dumps(child(kind, Path(path), args.model_size, args.tracemalloc)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="ct_memory-") as tmp:
        folder = Path(args.inputs or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "zip": folder / "series.zip",
            "parts": folder / "series.zip",
            "nifti": folder / "study.nii.gz",
        }
        if not all(p.exists() for p in paths.values()):
            paths = write_inputs(folder, args.size, args.slices, args.seed)
        for kind in args.kinds:
            cmd = [sys.executable, __file__, "--child", kind, str(paths[kind]), "--model-size"]
            cmd += [str(v) for v in args.model_size]
            row: dict[str, object] = {}
            for extra in ([], ["--tracemalloc"]):
                proc = subprocess.run(cmd + extra, capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return proc.returncode
                row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            results.append(row)
    print(
        json.dumps(
            {"series": f"{args.size}x{args.size}x{args.slices} int16", "results": results}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
