"""How close the plan's time is to the run's: the quickstart's stages on the embedded model,
and hh-rlhf through the mock server (zero latency: autorule's own overhead). A developer
benchmark (see BENCHMARKS.md):

    python benchmarks/plan_accuracy.py --hh ../shared/data/hh-rlhf-harmless-dev.jsonl.gz --json
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from autorule.cache import Cache
from autorule.cli.bench import emit
from autorule.cli.options import Parser, whole
from autorule.data import LoadResult, load_pairs
from autorule.examples import SAMPLE_PAIRS
from autorule.extraction.run import ExtractConfig, run_extract
from autorule.llm import load_llm
from autorule.plan import plan_checks, plan_extract
from autorule.reward import RewardScorer
from autorule.validation import both_sides, run_validation


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _measure(name: str, extract_llm, verifier_llm, train: list, held_out: list, config: ExtractConfig, work: Path) -> list[dict]:
    """Plan, then run, extraction and validation; one row per command."""
    rows = []
    data = LoadResult(path=name, format="pairs", pairs=train)
    plan = plan_extract(train, extract_llm, extract_llm, config)
    result = {}
    seconds = _timed(lambda: result.update(r=run_extract(data, extract_llm, extract_llm, work / name, config)))
    rows.append({"run": name, "command": "extract", "pairs": len(train), "planned_s": round(plan.seconds, 1), "measured_s": round(seconds, 1)})
    rules = result["r"].rules
    scorer = RewardScorer(rules, verifier_llm)
    plan = plan_checks("verify both sides", scorer.verifier, both_sides(held_out))
    seconds = _timed(lambda: run_validation(rules, None, held_out, scorer, warn=lambda m: None, progress=False))
    rows.append({"run": name, "command": "validate", "pairs": len(held_out), "rules": len(rules), "planned_s": round(plan.seconds, 1), "measured_s": round(seconds, 1)})
    for row in rows:
        row["planned_over_measured"] = round(row["planned_s"] / row["measured_s"], 2)
    return rows


def run_plan_benchmark(sample_path: str, hh_path: str, server_pairs: int = 50) -> dict:
    """Plans against measured times, each on an empty cache (every call is made)."""
    from autorule.testing.mock_server import ScriptedServer, mock_judge, value_verifier

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # hh-rlhf through the mock server at zero latency (first: the embedder loads as in a fresh run)
        hh = load_pairs(hh_path, limit=2 * server_pairs, on_bad_row="skip").pairs
        with ScriptedServer(mock_judge()) as judge, ScriptedServer(value_verifier) as verifier:
            judge_llm = load_llm(f"openai:judge@{judge.base_url}", cache=Cache(work / "judge.sqlite"))
            verifier_llm = load_llm(f"openai:value@{verifier.base_url}", cache=Cache(work / "value.sqlite"))
            rows += _measure(f"hh-rlhf --limit {server_pairs} (mock server)", judge_llm, verifier_llm, hh[:server_pairs], hh[server_pairs:],
                             ExtractConfig(seed=0, label_filter=False), work)  # the embedded model judges at chance (as in the quickstart)
        # the quickstart's extraction and validation: 12 sample pairs each, its token budgets
        sample = load_pairs(sample_path).pairs
        llm = load_llm("embedded", cache=Cache(work / "embedded.sqlite"))
        quick = ExtractConfig(seed=0, target_rules=8, reasoning_tokens=128, rules_tokens=96, merge_tokens=96, label_filter=False)
        rows += _measure("quickstart (embedded)", llm, llm, sample[:12], sample[12:], quick, work)
    return {"rows": rows, "within_2x": all(0.5 <= r["planned_over_measured"] <= 2.0 for r in rows)}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/plan_accuracy.py",
               description="the plan's time against the measured time: quickstart stages (embedded) and hh-rlhf via the mock server")
    p.add_argument("--hh", required=True, metavar="PATH", help="hh-rlhf preference data (e.g. ../shared/data/hh-rlhf-harmless-dev.jsonl.gz)")
    p.add_argument("--pairs", type=whole(1), default=50, help="hh-rlhf pairs to extract from (and as many to validate on)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    report = run_plan_benchmark(str(SAMPLE_PAIRS), args.hh, args.pairs)
    lines = [f"{r['run']:>34} {r['command']:>8}: planned {r['planned_s']:7.1f} s, measured {r['measured_s']:7.1f} s, ratio {r['planned_over_measured']:.2f}"
             for r in report["rows"]]
    lines.append(f"every plan within 2x of its run: {report['within_2x']}")
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
