"""How autorule's own work grows with the data. A developer benchmark (see BENCHMARKS.md):

    python benchmarks/scale.py --pairs 1000,10000,100000 --candidates 10000,100000,300000 --validate-pairs 1000,10000 --json

Every LLM call goes to the mock OpenAI-compatible server, in a process of its own, at zero
latency, so the figures are autorule's overhead: reading and writing stage files, prompts,
parsing, embeddings, clustering, statistics. Each (stage, size) runs in a fresh process and
reports its wall time and peak RSS; the growth exponents are fitted over the sizes.

- extract: synthetic pairs through stages 000-020 (and the merge, whose pool the mock judge
  keeps small), streamed from a JSONL file;
- merge: synthetic candidate pools (varied rule texts, real MiniLM embeddings), merged by an
  in-process judge that answers at once (LLM calls excluded, as the targets say);
- validate: synthetic pairs x 20 rules, verified through the mock server; it serves
  ``/v1/completions`` in vLLM's shapes by default (`--completions`), so the checks go batched,
  one request per conversation (`--completions none`: chat only, one request per check).

Synthetic pairs are real hh-rlhf pairs (or the sample pairs where the shared data is absent)
with seeded edits to every text, so no two pairs are alike and nothing is deduplicated away.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autorule.cli.bench import emit
from autorule.cli.options import Parser
from autorule.llm.base import LLM, Completion
from autorule import jsonsafe
from autorule.testing.mock_server import mock_judge

TARGETS = {  # the targets on a 2-core machine
    "extract": "100k pairs through 000-020 with peak RSS under 2 GB",
    "merge": "300k candidates in under 30 minutes and 4 GB (LLM calls excluded)",
    "validate": "10k pairs x 20 rules with peak RSS under 2 GB",
}
WORDS = ("clear careful brief detailed polite direct honest friendly formal simple precise complete gentle concrete neutral "
         "structured cautious specific practical balanced").split()
VERBS = "state explain cite avoid include mention list summarise refuse acknowledge offer question name define compare".split()
OBJECTS = ("sources steps risks limits examples assumptions caveats alternatives numbers dates names units terms reasons "
           "warnings options costs outcomes facts questions").split()
QUALIFIERS = ("when asked for advice", "in medical questions", "before giving code", "for legal topics", "in the first sentence",
              "at the end", "when the user is upset", "for every claim", "in lists", "without jargon", "in under 100 words",
              "for children", "when unsure", "in every reply", "for follow-up questions")


def _base_pairs() -> list[dict]:
    from autorule.data import load_pairs
    from autorule.examples import SAMPLE_PAIRS

    hh = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-dev.jsonl.gz"
    data = load_pairs(hh, on_bad_row="skip") if hh.is_file() else load_pairs(SAMPLE_PAIRS)
    return [{"prompt": [m.model_dump() for m in p.prompt], "chosen": p.chosen, "rejected": p.rejected} for p in data]


def _edit(text: str, rng: random.Random) -> str:
    """A seeded edit: a word replaced and a clause added, so every copy differs."""
    words = text.split(" ")
    if len(words) > 3:
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words) + f" ({rng.choice(WORDS)} {rng.choice(OBJECTS)} {rng.randrange(10**6)})"


def write_synthetic_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """`n` varied pairs as JSONL (`prompt` messages, `chosen`, `rejected`), written as they are made."""
    rng = random.Random(seed)
    base = _base_pairs()
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            b = base[i % len(base)]
            prompt = [dict(m) for m in b["prompt"]]
            prompt[-1]["content"] = _edit(prompt[-1]["content"], rng)
            chosen, rejected = _edit(b["chosen"], rng), _edit(b["rejected"], rng)
            if chosen == rejected:
                rejected += " (rejected)"
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}) + "\n")
    return path


def synthetic_rules(n: int, seed: int = 0) -> list[str]:
    """`n` rule texts from a combinatorial space of about 35M (so few repeat exactly), with
    real near-duplicates among them (texts that differ in one word or number)."""
    rng = random.Random(seed)
    return [f"The assistant's response should {rng.choice(VERBS)} {rng.choice(WORDS)} {rng.choice(OBJECTS)} {rng.choice(QUALIFIERS)}"
            f" and stay within {rng.randrange(10, 400)} words." for _ in range(n)]


def _peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


# ---------------------------------------------------------------------------- one measurement, in its own process


def _extract(n: int, url: str, work: Path) -> dict:
    from autorule.data import stream_pairs
    from autorule.extraction.run import ExtractConfig, run_extract
    from autorule.llm import load_llm

    data = write_synthetic_pairs(work / "pairs.jsonl", n)
    llm = load_llm(f"openai:scripted@{url}", cache=False, concurrency=32)
    before = _peak_mb()
    start = time.perf_counter()
    result = run_extract(stream_pairs(data), llm, llm, work / "run", ExtractConfig(label_filter=False))  # the mock judges nothing
    return {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": _peak_mb(), "rss_before_mb": before,
            "stages": result.summary["stages"], "candidates": result.summary["candidates"], "rules": result.summary["rules"]}


class InstantJudge(LLM):
    """The mock judge answered in-process: merge calls cost nothing, so the merge's own work is measured."""

    spec = "instant-judge"

    def __init__(self):
        super().__init__()
        self.reply = mock_judge()

    def _generate(self, requests, desc, on_result):
        out = []
        for i, r in enumerate(requests):
            out.append(Completion(text=self.reply(r.messages, {})["content"]))
            self.stats["requests"] += 1
            if on_result:
                on_result(i, out[-1])
        return out

    def _score_yes_no_batch(self, items, on_item, errors, keys=None):
        raise NotImplementedError("the instant judge only merges")


def _merge(n: int) -> dict:
    from autorule.extraction.merge import cached_embedder, candidate_refs, load_embedder, merge_rules

    load_embedder()
    before = _peak_mb()  # imports and the embedder: what does not grow with the pool
    texts = synthetic_rules(n)
    units = [u for i, t in enumerate(texts) for u in candidate_refs(f"pair-{i // 3}", [t], "excerpt of the reasoning")]
    start = time.perf_counter()
    rules, log = merge_rules(units, InstantJudge(), cached_embedder(), target=25)
    return {"seconds": round(time.perf_counter() - start, 2), "peak_rss_mb": _peak_mb(), "rss_before_mb": before, "rules": len(rules),
            "near_duplicates_merged": log.near_duplicates_merged, "duplicates_dropped": log.duplicates_dropped, "rounds": len(log.rounds)}


def _validate(n: int, url: str, work: Path, rules_count: int = 20) -> dict:
    from autorule.data import stream_pairs
    from autorule.llm import load_llm
    from autorule.reward import RewardScorer
    from autorule.rules import RuleSet
    from autorule.validation import run_validation

    data = write_synthetic_pairs(work / "pairs.jsonl", n)
    rules = RuleSet.from_texts(synthetic_rules(rules_count, seed=1))
    llm = load_llm(f"openai:scripted@{url}", cache=False, concurrency=32)
    scorer = RewardScorer(rules, llm)
    before = _peak_mb()
    start = time.perf_counter()
    result = run_validation(rules, None, stream_pairs(data), scorer, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 2), "peak_rss_mb": _peak_mb(), "rss_before_mb": before, "checks": 2 * n * rules_count,
            "checks_per_s": round(2 * n * rules_count / seconds, 1), "pairs": result.report["pairs"],
            "yes_no_mode": llm.yes_no_mode.describe(), "requests": llm.stats.get("requests", 0)}


def _one(stage: str, n: int, url: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="autorule-scale-") as tmp:
        if stage == "extract":
            return _extract(n, url, Path(tmp))
        if stage == "merge":
            return _merge(n)
        return _validate(n, url, Path(tmp))


# ---------------------------------------------------------------------------- the benchmark


def _exponent(rows: list[dict], key) -> float | None:
    points = [(math.log(r["size"]), math.log(max(key(r), 1e-3))) for r in rows]
    if len(points) < 2:
        return None
    import numpy as np

    slope = np.polyfit([x for x, _ in points], [y for _, y in points], 1)[0]
    return round(float(slope), 2)


def run_scale(pairs: list[int], candidates: list[int], validate_pairs: list[int], completions: str | None = "vllm") -> dict:
    """Each stage at each size in a fresh process; rows plus fitted growth exponents.

    `completions`: the shape of the mock's ``/v1/completions`` for validate ("vllm" or "llama":
    the verifier's checks go batched, one request per conversation; None: a chat-only mock,
    one request per check).

    The memory exponent is fitted to the memory each run added over its imports (peak RSS
    minus RSS before the work), the part that can grow with the data.
    """
    from autorule.testing.mock_server import mock_server_process

    report: dict = {"targets": TARGETS, "stages": {}, "validate_completions": completions}
    plan = [("extract", pairs, "judge"), ("merge", candidates, None), ("validate", validate_pairs, "echo")]
    for stage, sizes, reply in plan:
        rows = []
        for n in sizes:
            cmd = [sys.executable, __file__, "--measure", stage, str(n)]
            if reply:
                with mock_server_process(reply, 0.0, completions=completions if stage == "validate" else None) as url:
                    out = subprocess.run([*cmd, url], capture_output=True, text=True)
            else:
                out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(f"benchmarks/scale.py {stage} {n} failed:\n{out.stderr[-3000:]}")
            rows.append({"size": n, **json.loads(out.stdout.strip().splitlines()[-1])})
        report["stages"][stage] = {
            "rows": rows,
            "time_exponent": _exponent(rows, lambda r: r["seconds"]),
            "memory_exponent": _exponent(rows, lambda r: r["peak_rss_mb"] - r["rss_before_mb"] + 1),
        }
    return report


def _sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, each a whole number >= 1 (empty: none)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 1000,10000") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 1")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/scale.py",
               description="autorule's own time and memory as pairs and candidate pools grow (mock server, zero latency)")
    p.add_argument("--pairs", type=_sizes, default=[1000, 10000, 100000], help="pair counts through extraction stages 000-020 (default: 1000,10000,100000)")
    p.add_argument("--candidates", type=_sizes, default=[10000, 100000, 300000], help="candidate pools for the merge (default: 10000,100000,300000)")
    p.add_argument("--validate-pairs", type=_sizes, default=[1000, 10000], help="pair counts for validate with 20 rules (default: 1000,10000)")
    p.add_argument("--completions", choices=("vllm", "llama", "none"), default="vllm",
                   help="validate's mock serves /v1/completions in this server's shapes, so checks go batched; none: chat only, "
                        "one request per check (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    # one (stage, size) in this process, as run_scale starts it: STAGE N [URL]
    p.add_argument("--measure", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        stage, n, *url = args.measure
        print(jsonsafe.dumps(_one(stage, int(n), url[0] if url else "")))
        return 0
    report = run_scale(args.pairs, args.candidates, args.validate_pairs, None if args.completions == "none" else args.completions)
    lines = []
    for stage, result in report["stages"].items():
        lines.append(f"{stage} (target: {report['targets'][stage]})")
        for r in result["rows"]:
            parts = [f"{r['size']:>8,}: {r['seconds']:8.1f} s, peak RSS {r['peak_rss_mb']:,} MB (before the work {r['rss_before_mb']:,} MB)"]
            if "checks_per_s" in r:
                parts.append(f"{r['checks_per_s']:,.0f} checks/s, {r['requests']:,} requests ({r['yes_no_mode'].split(' (')[0]})")
            if "stages" in r:
                parts.append(", ".join(f"{k} {v['seconds']} s / {v['peak_rss_mb']} MB" for k, v in r["stages"].items()))
            lines.append("; ".join(parts))
        if result["time_exponent"] is not None:
            lines.append(f"  growth: time ~ n^{result['time_exponent']}, added memory ~ n^{result['memory_exponent']}")
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
