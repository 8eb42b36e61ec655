"""`autorule quickstart`: the pipeline's stages on the sample data, offline, on the embedded model.

Today: extraction (reasoning -> candidate rules -> merged rules) on most sample pairs, then
the rule verifier scores both sides of the held-out pairs. Later stages join as they land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from .cache import Cache
from .data import LoadResult, load_pairs
from .extract.run import ExtractConfig, run_extract
from .llm import load_llm
from .reward import RewardScorer

# the sample data lives in the repository's examples/ (the README's setup installs the checkout in place)
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "pairs.jsonl"
HELD_OUT = 4
console = Console(stderr=True, soft_wrap=True)  # paths stay whole, not wrapped


def run_quickstart(out: Path, cache: Cache | None) -> int:
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = load_pairs(SAMPLE_DATA)
    train = LoadResult(path=data.path, format=data.format, pairs=data.pairs[:-HELD_OUT], rows=data.rows, skipped=data.skipped)
    held_out = data.pairs[-HELD_OUT:]
    console.print(f"[bold]data[/bold]: {len(data.pairs)} sample pairs; {len(train.pairs)} for extraction, {len(held_out)} held out")
    console.print("[bold]model[/bold]: the embedded SmolLM2-135M-Instruct on CPU (tiny: it runs every stage, its judgements are near chance)")
    llm = load_llm("embedded", cache=cache)

    # small token budgets keep the quickstart to minutes on two CPU cores
    config = ExtractConfig(seed=0, target_rules=8, reasoning_tokens=128, rules_tokens=96, merge_tokens=96)
    extraction = run_extract(train, llm, llm, out / "extract", config)

    scorer = RewardScorer(extraction.rules, llm)
    convs = [p.conversation(side) for p in held_out for side in ("chosen", "rejected")]
    scores = scorer.score(convs, desc="verifying held-out pairs")
    chosen, rejected = scores.rule[0::2], scores.rule[1::2]
    verification = {
        "pairs": len(held_out),
        "rules": len(extraction.rules),
        "chosen_preferred": float((chosen > rejected).mean()),
        "mean_rule_reward_chosen": float(chosen.mean()),
        "mean_rule_reward_rejected": float(rejected.mean()),
        "pass_rates": scores.pass_rates(),
    }
    (out / "verification.json").write_text(json.dumps(verification, indent=2))
    seconds = round(time.time() - start, 1)
    console.print(f"[bold]verification[/bold]: on {len(held_out)} held-out pairs the chosen reply has the higher rule reward in {verification['chosen_preferred']:.0%}")
    console.print(f"\ndone in {seconds} s. Artefacts:")
    for path in (out / "extract" / "010_reasoning.jsonl", out / "extract" / "020_candidates.jsonl", out / "extract" / "rules.yaml", out / "extract" / "run.json", out / "verification.json"):
        console.print(f"  {path}")
    return 0
