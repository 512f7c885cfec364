"""Tumour tracking through HTTP on fresh synthetic frames (issue #7's acceptance check).

    .venv/bin/python bench/phantom_tracking.py --seed 7 --n 120          # starts a server
    .venv/bin/python bench/phantom_tracking.py --url http://127.0.0.1:8000 --api-key ...

Renders ``--n`` frames (whole breathing sequences) of the phantom generator with a seed the demo
model never saw, sends each one as a 16-bit TIFF (the generator's own file format) to
``POST /segment/xray``, and compares the answer with the generator's ground truth: Dice against
the label on frames with the insert, the centroid error in pixels, the tumour-present decision
on frames without it, and the frames per second seen by the client (one frame at a time).
Prints one JSON object and, with ``--plot``, draws the true and predicted centroid of each
sequence frame by frame.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def tiff16(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


def run(url: str, api_key: str | None, seed: int, n: int) -> dict[str, Any]:
    from app.imaging.encode import rle_decode
    from training.synthetic import phantom

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=60)
    headers = {"Content-Type": "image/tiff", "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    frames: list[dict[str, Any]] = []
    busy = 0.0
    for item, fr in phantom.iter_frames(phantom.SynthConfig(n=n, seed=seed)):
        body = tiff16(fr.image)
        t = time.perf_counter()
        conn.request("POST", "/segment/xray", body=body, headers=headers)
        resp = conn.getresponse()
        payload = json.loads(resp.read())
        busy += time.perf_counter() - t
        if resp.status != 200:
            raise SystemExit(f"{item.id}: HTTP {resp.status} {payload}")
        mask_out = payload["mask"]
        pred = rle_decode(mask_out["rle"])
        truth = fr.label > 0
        row: dict[str, Any] = {
            "id": item.id,
            "sequence": item.sequence,
            "frame": item.frame,
            "has_tumour": bool(truth.any()),
            "predicted_tumour": bool(payload["positive"]),
            "probability": payload["probability"],
            "true_centroid": list(fr.centroid) if fr.centroid else None,
            "centroid": mask_out["centroid"],
        }
        if truth.any():
            inter = np.count_nonzero(pred & truth)
            row["dice"] = 2 * inter / (np.count_nonzero(pred) + np.count_nonzero(truth))
            if mask_out["centroid"] is not None and fr.centroid is not None:
                row["centroid_error_px"] = float(
                    np.hypot(
                        mask_out["centroid"][0] - fr.centroid[0],
                        mask_out["centroid"][1] - fr.centroid[1],
                    )
                )
        frames.append(row)
    conn.close()
    tumour = [f for f in frames if f["has_tumour"]]
    errors = [f["centroid_error_px"] for f in tumour if "centroid_error_px" in f]
    empty = [f for f in frames if not f["has_tumour"]]
    return {
        "seed": seed,
        "frames": len(frames),
        "frames_with_tumour": len(tumour),
        "sequences": len({f["sequence"] for f in frames}),
        "dice_mean": float(np.mean([f["dice"] for f in tumour])) if tumour else None,
        "dice_median": float(np.median([f["dice"] for f in tumour])) if tumour else None,
        "centroid_error_median_px": float(np.median(errors)) if errors else None,
        "centroid_error_p95_px": float(np.percentile(errors, 95)) if errors else None,
        "tumour_frames_without_centroid": len(tumour) - len(errors),
        "sensitivity": float(np.mean([f["predicted_tumour"] for f in tumour])) if tumour else None,
        "specificity": (
            float(np.mean([not f["predicted_tumour"] for f in empty])) if empty else None
        ),
        "client_frames_per_second": len(frames) / busy if busy else None,
        "per_frame": frames,
    }


def plot(result: dict[str, Any], path: Path, sequences: int = 4) -> None:
    from training.evaluate import pyplot

    plt = pyplot()
    seqs = sorted({f["sequence"] for f in result["per_frame"] if f["has_tumour"]})[:sequences]
    fig, axes = plt.subplots(1, len(seqs), figsize=(3.2 * len(seqs), 3.2), squeeze=False)
    for ax, s in zip(axes[0], seqs, strict=False):
        rows = [f for f in result["per_frame"] if f["sequence"] == s]
        x = [f["frame"] for f in rows]
        ax.plot(x, [f["true_centroid"][1] for f in rows], "k-o", ms=3, label="true")
        ax.plot(
            x,
            [f["centroid"][1] if f["centroid"] else np.nan for f in rows],
            "r--x",
            ms=4,
            label="via HTTP",
        )
        ax.set_title(f"sequence {s}", fontsize=9)
        ax.set_xlabel("frame")
        ax.invert_yaxis()
    axes[0][0].set_ylabel("centroid row (px, superior up)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"seed {result['seed']}: median centroid error "
        f"{result['centroid_error_median_px']:.2f} px, mean Dice {result['dice_mean']:.3f}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running medserve (default: start one on models/)")
    parser.add_argument("--api-key")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n", type=int, default=120, help="frames (whole sequences)")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--json", type=Path, help="write the result (with every frame) here")
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        from benchmark import Server

        log = Path(tempfile.mkstemp(prefix="medserve-tracking-", suffix=".log")[1])
        server = Server(args.model_dir, log, None)
        url = f"http://127.0.0.1:{server.port}"
    try:
        result = run(url, args.api_key, args.seed, args.n)
    finally:
        if server is not None:
            server.stop()
    if args.plot:
        plot(result, args.plot)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "per_frame"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
