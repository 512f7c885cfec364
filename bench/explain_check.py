"""Do the explanations point at the lesion? Synthetic cases with a known lesion, through HTTP.

    .venv/bin/python bench/explain_check.py                   # in-process app on models/
    .venv/bin/python bench/explain_check.py --n 40 --ct 8 --budget-ms 2000
    .venv/bin/python bench/explain_check.py --url http://127.0.0.1:8000 --api-key ...

Chest films: a normal patient of the pneumonia generator with one opacity placed in one lung
(``tests/explain/lesion.py``: the film is rendered with and without it from the same draws, so
the lesion is exactly where they differ), side, height, position across the lung and size
varied case by case, seeds the model never saw. Each is sent as PNG to
``POST /classify/xray?explain=occlusion``. For the films the model calls positive:

- ``cell``: the cell with the largest probability drop covers lesion pixels;
- ``side``: that cell's centre lies on the lesion's half of the film (left or right lung);
- ``peak``: the maximum of the heat map (each pixel the mean drop of the cells covering it)
  lies within one stride of a lesion pixel.

Chest CT (``--ct``): unseen CT-1/CT-2 studies of the COVID generator as ``.nii.gz`` to
``POST /classify/ct?explain=occlusion``; ``cell``: the column with the largest drop holds
affected voxels (on any slice), printed next to the share of all cells that do (the rate a
random cell would reach, since involvement is broad).

Prints one JSON object (hit counts and rates, the grids used, the time per explanation).
Not a test: no thresholds; the README quotes a run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.explain.lesion import answer_grid, film_png, lesion_film, pointing  # noqa: E402

EXPLAIN = {"explain": "occlusion"}


def film_case(k: int, seed: int) -> dict[str, Any]:
    """The k-th film's lesion parameters (cycled so that sides, heights and sizes all occur)."""
    return {
        "seed": seed + k,
        "shape": (240 + 16 * (k % 4), 256 + 24 * (k % 3)),
        "side": k % 2,
        "along": 0.35 + 0.1 * (k % 5),
        "across": -0.5 + 0.25 * ((k // 2) % 5),
        "sigma": 0.09 + 0.02 * (k % 4),
        "contrast": 0.3 + 0.05 * (k % 3),
    }


def check_films(client: Any, n: int, seed: int) -> dict[str, Any]:
    cases, seconds = [], []
    for k in range(n):
        params = film_case(k, seed)
        film = lesion_film(**params)
        t = time.perf_counter()
        r = client.post("/classify/xray", content=film_png(film.pixels), params=EXPLAIN)
        seconds.append(time.perf_counter() - t)
        r.raise_for_status()
        body = r.json()
        drops = np.asarray(body["explanation"]["grid"])
        points = pointing(film, body["explanation"])
        cases.append(
            {
                "seed": params["seed"],
                "side": film.side,
                "probability": body["probability"],
                "positive": body["positive"],
                "grid": list(drops.shape),
                "patch": body["explanation"]["patch"],
                "max_drop": round(float(drops.max()), 4),
                "cell": points.cell,
                "side_ok": points.side,
                "peak_px_from_lesion": round(points.peak_distance, 1),
                "stride": points.stride,
            }
        )
    called = [c for c in cases if c["positive"]]
    hits = {
        "cell": sum(c["cell"] for c in called),
        "side": sum(c["side_ok"] for c in called),
        "peak": sum(c["peak_px_from_lesion"] <= c["stride"] for c in called),
    }
    return {
        "films": n,
        "called_positive": len(called),
        "hits": hits,
        "hit_rate": {k: round(v / max(len(called), 1), 3) for k, v in hits.items()},
        "grids": sorted({f"{c['grid'][0]}x{c['grid'][1]} patch {c['patch']}" for c in cases}),
        "seconds_per_explanation": round(float(np.median(seconds)), 3),
        "misses": [c for c in called if not (c["cell"] and c["side_ok"])],
    }


def check_ct(client: Any, n: int, seed: int) -> dict[str, Any]:
    from training.synthetic import covid_ct as synth

    cfg = synth.SynthConfig(n=400, seed=seed, size=128, slices=(36, 44))
    items = [i for i in synth.plan(cfg) if i.category in ("CT-1", "CT-2")][:n]
    cases, seconds = [], []
    for item in items:
        study = synth.render_study(cfg, item)
        data = gzip.compress(synth.to_nifti(study.hu, study.spacing, "LPS").to_bytes())
        t = time.perf_counter()
        r = client.post("/classify/ct", content=data, params=EXPLAIN)
        seconds.append(time.perf_counter() - t)
        r.raise_for_status()
        body = r.json()
        affected = np.asarray(study.affected.any(axis=0))
        grid, drops = answer_grid(body["explanation"], affected.shape)
        i, j = np.unravel_index(int(np.argmax(drops)), drops.shape)
        r0, r1, c0, c1 = grid.region(int(i), int(j))
        covering = [
            bool(affected[a:b, c:d].any())
            for a, b, c, d in (
                grid.region(p, q) for p in range(grid.rows) for q in range(grid.cols)
            )
        ]
        cases.append(
            {
                "category": item.category,
                "probability": body["probability"],
                "positive": body["positive"],
                "grid": list(drops.shape),
                "cell": bool(affected[r0:r1, c0:c1].any()),
                "random_cell_rate": round(sum(covering) / len(covering), 3),
            }
        )
    called = [c for c in cases if c["positive"]]
    return {
        "studies": len(cases),
        "called_positive": len(called),
        "hits": {"cell": sum(c["cell"] for c in called)},
        "hit_rate": {"cell": round(sum(c["cell"] for c in called) / max(len(called), 1), 3)},
        "random_cell_rate": round(
            float(np.mean([c["random_cell_rate"] for c in called])) if called else 0.0, 3
        ),
        "grids": sorted({f"{c['grid'][0]}x{c['grid'][1]}" for c in cases}),
        "seconds_per_explanation": round(float(np.median(seconds)), 3) if seconds else None,
    }


def checks(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"films": check_films(client, args.n, args.seed)}
    if args.ct:
        out["ct"] = check_ct(client, args.ct, args.ct_seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=24, help="chest films")
    ap.add_argument("--ct", type=int, default=4, help="CT studies (0: none)")
    ap.add_argument("--seed", type=int, default=9100, help="first film seed (unseen)")
    ap.add_argument("--ct-seed", type=int, default=4242)
    ap.add_argument("--budget-ms", type=float, default=None, help="MEDSERVE_EXPLAIN_BUDGET_MS")
    ap.add_argument("--url", default=None, help="a running service (else an in-process app)")
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()
    if args.url:
        import httpx

        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        with httpx.Client(base_url=args.url, headers=headers, timeout=120) as client:
            out = checks(client, args)
    else:
        from fastapi.testclient import TestClient

        from app.config import Settings
        from app.main import create_app

        extra = {} if args.budget_ms is None else {"explain_budget_ms": args.budget_ms}
        settings = Settings(model_dir=ROOT / "models", **extra)
        with TestClient(create_app(settings)) as client:
            out = {**checks(client, args), "budget_ms": settings.explain_budget_ms}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
