"""A/B of two builds of the service on the hospital rows: two servers at once, requests
alternating between them, so that both see the same machine (on shared cores the speed of a
run drifts by more than most changes are worth; two runs one after the other cannot tell a 5 %
change from noise).

    git worktree add --detach /tmp/base HEAD~1          # the build to compare against
    .venv/bin/python bench/ab.py --a /tmp/base --only MRI --only phantom
    .venv/bin/python bench/ab.py --b-env MEDSERVE_ORT_SPIN_WHEN_ALONE=false   # a setting
    .venv/bin/python bench/ab.py --a /tmp/base -c 2                            # requests/s
    .venv/bin/python bench/ab.py --b-env MEDSERVE_ORT_PIN_WHEN_ALONE=false --gap-ms 20
    .venv/bin/python bench/ab.py --a-python /tmp/other-venv/bin/python        # an interpreter

``--a`` and ``--b`` are checkouts (default: this one); both run on this checkout's virtual
environment (or ``--a-python`` / ``--b-python``: another one's interpreter, with the same
packages installed) and models. At concurrency 1 it prints the median latency of each and B/A; at
``-c`` > 1, requests/s and the median latency over alternating blocks of 16 × c requests.
``--gap-ms`` leaves the machine idle after each upload, as a stream of frames does: some
effects show only then (threads that the scheduler puts on one core after an idle spell, see
``Settings.ort_pin_when_alone``) and not in uploads back to back.
``--pairs N`` starts N fresh pairs of servers in turn and prints each row's median B/A over
them: two servers of the same build gave B/A 0.978, 1.091, 1.013 and 1.010 on the MRI slice in
four pairs here (2026-12-03), so one pair cannot tell a 5 % change from a server's luck.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from benchmark import ENDPOINTS, Server, load  # noqa: E402
from hospital import Row, build_rows, post_once  # noqa: E402


def _settings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"not KEY=VALUE: {pair}")
        out[key] = value
    return out


def alternate(ports: dict[str, int], row: Row, n: int, gap_s: float = 0.0) -> dict[str, float]:
    """Median ms per server, ``n`` uploads each, one at a time, alternating (ABBA order),
    ``gap_s`` idle after each (a frame stream rather than uploads back to back)."""
    conns = {k: http.client.HTTPConnection("127.0.0.1", p, timeout=600) for k, p in ports.items()}
    samples: dict[str, list[float]] = {k: [] for k in ports}
    path = ENDPOINTS[row.model]
    try:
        for i in range(n + 2):  # two warm-up rounds
            for k in sorted(ports, reverse=i % 2 == 1):
                t = time.perf_counter()
                post_once(conns[k], path, row.upload)
                if i >= 2:
                    samples[k].append((time.perf_counter() - t) * 1000)
                time.sleep(gap_s)
    finally:
        for conn in conns.values():
            conn.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def _block(port: int, row: Row, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, median ms) of ``requests`` uploads over ``concurrency`` connections."""
    out = load(port, [(ENDPOINTS[row.model], row.upload)] * requests, concurrency, None)
    if out["statuses"] != {"200": requests}:
        raise RuntimeError(f"not every upload answered 200: {out['statuses']}")
    return out["throughput_rps"], out["latency_ms"]["p50"]


def throughput(
    ports: dict[str, int], row: Row, concurrency: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Median (requests/s, ms) per server over ``rounds`` alternating blocks."""
    per: dict[str, list[tuple[float, float]]] = {k: [] for k in ports}
    for k in ports:
        _block(ports[k], row, 4 * concurrency, concurrency)  # warm-up
    for i in range(rounds):
        for k in sorted(ports, reverse=i % 2 == 1):
            per[k].append(_block(ports[k], row, 16 * concurrency, concurrency))
    return {
        k: (statistics.median(r for r, _ in v), statistics.median(ms for _, ms in v))
        for k, v in per.items()
    }


def one_pair(args: argparse.Namespace, rows: list[Row]) -> dict[str, float]:
    """Start servers A and B, measure every row on both, print each row's figures; B/A per
    row (latency at concurrency 1, requests/s above it)."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {}
        try:
            sides = (
                ("A", args.a, args.a_env, args.a_python),
                ("B", args.b, args.b_env, args.b_python),
            )
            for key, tree, env, python in sides:
                log = Path(tmp) / f"{key}.log"
                settings = _settings(env)
                servers[key] = Server(ROOT / "models", log, None, settings, tree.resolve(), python)
            ports = {k: s.port for k, s in servers.items()}
            for row in rows:
                if args.c == 1:
                    ms = alternate(ports, row, args.n, args.gap_ms / 1000)
                    out[row.name] = ms["B"] / ms["A"]
                    print(
                        f"{row.name:46s} A {ms['A']:8.2f} ms  B {ms['B']:8.2f} ms  "
                        f"B/A {ms['B'] / ms['A']:.3f}",
                        flush=True,
                    )
                else:
                    t = throughput(ports, row, args.c, args.rounds)
                    (ra, la), (rb, lb) = t["A"], t["B"]
                    out[row.name] = rb / ra
                    print(
                        f"c={args.c} {row.name:42s} req/s A {ra:6.1f} B {rb:6.1f} "
                        f"B/A {rb / ra:.3f} | p50 A {la:7.1f} B {lb:7.1f} ms",
                        flush=True,
                    )
        finally:
            for server in servers.values():
                server.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=ROOT, help="checkout A (default: this one)")
    parser.add_argument("--b", type=Path, default=ROOT, help="checkout B (default: this one)")
    parser.add_argument("--a-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--b-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--a-python", type=Path, help="interpreter for A (default: this one)")
    parser.add_argument("--b-python", type=Path, help="interpreter for B (default: this one)")
    parser.add_argument("--only", action="append", help="rows whose name contains this")
    parser.add_argument("-n", type=int, default=40, help="uploads per server and row (c=1)")
    parser.add_argument("-c", type=int, default=1, help="concurrency (> 1: requests/s)")
    parser.add_argument(
        "--gap-ms", type=float, default=0.0, help="idle after each upload (c=1): a frame stream"
    )
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks (c > 1)")
    parser.add_argument("--scale", type=float, default=1.0, help="film side scale (quick runs)")
    parser.add_argument("--ct-slices", type=int, default=300)
    parser.add_argument(
        "--pairs", type=int, default=1, help="fresh server pairs in turn (> 1: median B/A)"
    )
    args = parser.parse_args(argv)
    rows = [
        r
        for r in build_rows(args.scale, args.ct_slices)
        if not args.only or any(o in r.name for o in args.only)
    ]
    ratios: dict[str, list[float]] = {row.name: [] for row in rows}
    for pair in range(args.pairs):
        if args.pairs > 1:
            print(f"pair {pair + 1} of {args.pairs}", flush=True)
        for name, ratio in one_pair(args, rows).items():
            ratios[name].append(ratio)
    if args.pairs > 1:
        for name, values in ratios.items():
            listed = ", ".join(f"{v:.3f}" for v in values)
            print(f"{name:46s} B/A median {statistics.median(values):.3f} ({listed})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
