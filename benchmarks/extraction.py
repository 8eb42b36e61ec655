"""Extraction throughput against an OpenAI-compatible server with a fixed per-request latency
(a developer benchmark, see BENCHMARKS.md):

    python benchmarks/extraction.py --pairs 24 --latency 0.2 --concurrency 8 --json

The server is the deterministic mock (every answer takes `latency` seconds, as a remote
model would), so the run measures autorule's request scheduling, not a model: with
concurrency C, the stages' independent calls overlap and the run should approach C times
the speed of one-at-a-time; a rerun with a warm cache should send no requests at all.

Three runs of the same extraction, one process:
- `sequential`: concurrency 1, no cache (the baseline);
- `concurrent`: concurrency C, an empty cache (filled by this run);
- `warm`: concurrency C, the cache the `concurrent` run filled, a fresh run directory.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from autorule.cache import Cache
from autorule.cli.bench import emit
from autorule.cli.options import Parser, number, whole
from autorule.data import LoadResult, load_pairs
from autorule.examples import SAMPLE_PAIRS
from autorule.extraction.merge import load_embedder
from autorule.extraction.run import ExtractConfig, run_extract
from autorule.llm import load_llm
from autorule.testing.mock_server import ScriptedServer, mock_judge


def _run(server: ScriptedServer, data: LoadResult, out: Path, concurrency: int, cache: Cache | None, target_rules: int) -> tuple[dict, list[str]]:
    """The run's figures, and its rules' texts (to compare runs)."""
    llm = load_llm(f"openai:judge@{server.base_url}", cache=cache, concurrency=concurrency, max_retries=2, timeout=30)
    sent = len(server.requests)
    start = time.perf_counter()
    result = run_extract(data, llm, llm, out, ExtractConfig(seed=0, target_rules=target_rules, label_filter=False))  # the mock judges nothing: throughput of 010-030 only
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "requests": len(server.requests) - sent, "rules": len(result.rules)}, [r.text for r in result.rules.rules]


def run_extraction_benchmark(data_path: str, pairs: int = 32, latency: float = 0.2, concurrency: int = 8, target_rules: int = 4) -> dict:
    data = load_pairs(data_path, on_bad_row="skip", limit=pairs)
    load_embedder()  # the merge stage's embedder loads once per process; keep that out of the timings
    with tempfile.TemporaryDirectory(prefix="autorule-bench-") as tmp, ScriptedServer(mock_judge(), latency=latency) as server:
        root = Path(tmp)
        cache = Cache(root / "cache.sqlite")
        settings = {"sequential": (1, None), "concurrent": (concurrency, cache), "warm": (concurrency, cache)}
        results = {name: _run(server, data, root / name, c, run_cache, target_rules) for name, (c, run_cache) in settings.items()}
        max_active = server.max_active
    runs = {name: figures for name, (figures, _) in results.items()}
    same_rules = len({tuple(texts) for _, texts in results.values()}) == 1
    sequential, concurrent, warm = (runs[k]["seconds"] for k in ("sequential", "concurrent", "warm"))
    return {
        "data": str(data.path), "pairs": len(data.pairs), "latency_s": latency, "concurrency": concurrency,
        "runs": runs, "max_requests_in_flight": max_active,
        "speedup": sequential / concurrent, "ideal_speedup": concurrency, "efficiency": sequential / concurrent / concurrency,
        # one request at a time can go no faster than its requests' latency added up
        "sequential_floor_s": runs["sequential"]["requests"] * latency,
        "warm_vs_concurrent": warm / concurrent, "warm_requests": runs["warm"]["requests"], "same_rules": same_rules,
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/extraction.py",
               description="extraction throughput against a server with a fixed latency: concurrency C vs 1, warm-cache rerun")
    p.add_argument("--pairs", type=whole(1), default=32)
    p.add_argument("--latency", type=number(0), default=0.2, help="seconds each request takes at the mock server")
    p.add_argument("--concurrency", type=whole(1), default=8)
    p.add_argument("--data", default=None, help="preference data (default: examples/pairs.jsonl)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    args = p.parse_args(argv)
    report = run_extraction_benchmark(args.data or str(SAMPLE_PAIRS), args.pairs, args.latency, args.concurrency)
    runs = report["runs"]
    lines = [f"{name:>10}: {r['seconds']:6.2f} s, {r['requests']} requests, {r['rules']} rules" for name, r in runs.items()]
    lines += [f"concurrency {report['concurrency']} vs 1: {report['speedup']:.2f}x (ideal {report['ideal_speedup']}x, efficiency {report['efficiency']:.0%}); "
              f"at most {report['max_requests_in_flight']} requests in flight",
              f"warm-cache rerun: {report['warm_vs_concurrent']:.3f}x the cold run's time, {report['warm_requests']} requests; same rules in all runs: {report['same_rules']}"]
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
