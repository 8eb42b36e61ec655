"""The merge stage's clustering as the candidate pool grows: wall time and peak memory.

Each size runs in a fresh process (peak RSS is per process), on synthetic unit vectors of
MiniLM's width (384) drawn around as many centres as the merge asks clusters for, so the
figures are the clustering's own (no embedding, no LLM calls). A developer benchmark (see
BENCHMARKS.md):

    python benchmarks/merge_scale.py --sizes 2000,10000,100000,300000 --json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

from autorule import jsonsafe
from autorule.cli.bench import emit
from autorule.cli.options import Parser

DIM = 384


def _one(n: int, target: int, shrink: float = 3.0) -> dict:
    import numpy as np

    from autorule.extraction.merge import cluster

    rng = np.random.default_rng(0)
    k = max(target, math.ceil(n / shrink))  # the first merge round's cluster count
    centres = rng.normal(size=(max(k // 3, 1), DIM)).astype(np.float32)
    vectors = np.empty((n, DIM), dtype=np.float32)  # made in chunks: the data's own peak stays n x 384 floats
    for s in range(0, n, 10_000):
        m = min(10_000, n - s)
        chunk = centres[rng.integers(0, len(centres), size=m)] + 0.3 * rng.standard_normal((m, DIM), dtype=np.float32)
        vectors[s : s + m] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    groups = cluster(vectors, k, 10)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert sorted(i for g in groups for i in g) == list(range(n))
    return {"candidates": n, "clusters": len(groups), "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb), "rss_before_mb": round(before / 1024)}


def run_merge_scale(sizes: list[int], target: int = 25) -> dict:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n), str(target)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if len(rows) >= 2:  # growth exponents between the two largest sizes
        a, b = rows[-2], rows[-1]
        scale = math.log(b["candidates"] / a["candidates"])
        growth = {"time_exponent": round(math.log(b["seconds"] / a["seconds"]) / scale, 2),
                  "memory_exponent": round(math.log((b["peak_rss_mb"] - b["rss_before_mb"] + 1) / (a["peak_rss_mb"] - a["rss_before_mb"] + 1)) / scale, 2)}
    else:
        growth = {}
    return {"rows": rows, **growth}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/merge_scale.py", description="the merge stage's clustering at growing candidate pools: time and peak memory")
    p.add_argument("--sizes", default="2000,10000,100000,300000", help="candidate pool sizes, comma-separated")
    p.add_argument("--json", action="store_true")
    # one size in this process, as run_merge_scale starts it (peak RSS is per process): N TARGET
    p.add_argument("--one", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(jsonsafe.dumps(_one(*args.one)))
        return 0
    report = run_merge_scale([int(x) for x in args.sizes.split(",")])
    lines = [f"{r['candidates']:>8} candidates: {r['seconds']:7.2f} s, peak RSS {r['peak_rss_mb']} MB ({r['clusters']} clusters)" for r in report["rows"]]
    if "time_exponent" in report:
        lines.append(f"growth between the two largest: time ~ n^{report['time_exponent']}, memory ~ n^{report['memory_exponent']}")
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
