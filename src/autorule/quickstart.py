"""`autorule quickstart`: the whole pipeline on the sample data, offline, on the embedded model.

Extraction (reasoning -> candidate rules -> merged rules) on half the sample pairs;
validation of the rules on the other half; a reward model; a few GRPO steps with
RM + rule rewards and the reward-hacking monitor; the HTML report. Every setting is small
so it takes minutes on two CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from autorule import jsonsafe
from autorule.cache import Cache
from autorule.data import LoadResult, load_pairs
from autorule.extraction.run import ExtractConfig, print_summary, run_extract
from autorule.llm import load_llm
from autorule.reporting import build_report
from autorule.reward import build_scorer
from autorule.train.config import TrainConfig
from autorule.train.grpo import run_grpo
from autorule.train.rm import RMConfig, train_reward_model
from autorule.validation import run_validation

from autorule.examples import SAMPLE_PAIRS as SAMPLE_DATA  # package data: works from a wheel too
EXTRACT_PAIRS = 12  # the rest of the sample pairs are held out for validation
console = Console(stderr=True, soft_wrap=True)  # paths stay whole, not wrapped


def run_quickstart(out: Path, cache: Cache | None) -> int:
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = load_pairs(SAMPLE_DATA)
    train = LoadResult(path=data.path, format=data.format, pairs=data.pairs[:EXTRACT_PAIRS], rows=data.rows, skipped=data.skipped)
    held_out = data.pairs[EXTRACT_PAIRS:]
    console.print(f"[bold]data[/bold]: {len(data.pairs)} sample pairs; {len(train.pairs)} for extraction, {len(held_out)} held out")
    console.print("[bold]model[/bold]: the embedded SmolLM2-135M-Instruct on CPU (tiny: it runs every stage, its judgements are near chance)")
    llm = load_llm("embedded", cache=cache)

    # small token budgets keep the quickstart to minutes on two CPU cores
    # the label filter off: the tiny model's verdicts are near chance, and on 24 pairs it could leave no candidate
    config = ExtractConfig(seed=0, target_rules=8, reasoning_tokens=128, rules_tokens=96, merge_tokens=96, label_filter=False)
    extraction = run_extract(train, llm, llm, out / "extract", config, progress=True)
    print_summary(extraction.run_dir, extraction.summary, console)

    scorer = build_scorer(extraction.rules, llm)
    rules_path = out / "extract" / "rules.yaml"
    result = run_validation(extraction.rules, rules_path, held_out, scorer, warn=lambda m: console.print(f"[yellow]warning:[/yellow] {m}"), baseline=True)
    result.write_stats(extraction.rules, rules_path, str(SAMPLE_DATA))
    validation = result.report
    (out / "extract" / "validation.json").write_text(jsonsafe.dumps(validation, indent=2))
    acc = validation["rule_set"]
    cv = validation["learned_weights"]["cv_accuracy"]
    icai = validation["icai"]["summary"]
    console.print(f"[bold]validation[/bold]: on {len(held_out)} held-out pairs the rule reward picks the chosen reply in {acc['accuracy']:.0%} "
                  f"({acc['ties']} ties; flipped labels {icai['rule_set_flipped']['mean']:.0%}); the no-rules judge (the same model, no rules) "
                  f"in {icai['no_rules']['mean']:.0%} (flipped labels {icai['no_rules_flipped']['mean']:.0%}); "
                  f"learned-weight CV accuracy {'n/a' if cv is None else f'{cv:.0%}'}")

    console.print("[bold]reward model[/bold]: a few Bradley-Terry steps on the extraction pairs")
    rm_report = train_reward_model(train.pairs, RMConfig(base="embedded", out=str(out / "rm"), max_steps=4, batch_size=4, max_length=256, eval_fraction=0.25))
    console.print("[bold]GRPO[/bold]: a few steps with RM + rule rewards, watched by the monitor")
    grpo = run_grpo(TrainConfig(
        policy="embedded", prompts=str(SAMPLE_DATA), rules=str(out / "extract" / "rules.yaml"), verifier="embedded", rm=str(out / "rm"),
        output_dir=str(out / "grpo"), max_steps=2, per_device_train_batch_size=4, num_generations=4, max_completion_length=16,
        monitor_every=1, heldout_count=2, save_steps=1000, no_cache=cache is None, cache=str(cache.path) if cache is not None else None,
    ))
    seconds = round(time.time() - start, 1)
    held_acc = rm_report["eval_accuracy"]
    (out / "quickstart.json").write_text(jsonsafe.dumps({"seconds": seconds, "validation": validation, "reward_model": rm_report, "grpo": grpo}, indent=2, default=str))
    report = build_report(out)
    console.print(f"\ndone in {seconds} s. Artefacts:")
    for path, what in (
        (out / "extract" / "010_reasoning.jsonl", "reasoning per pair"),
        (out / "extract" / "020_candidates.jsonl", "candidate rules per pair"),
        (out / "extract" / "rules.yaml", f"{len(extraction.rules)} merged rules with provenance"),
        (out / "extract" / "run.json", "extraction run record"),
        (out / "extract" / "validation.json", "held-out validation"),
        (out / "rm", f"reward model (held-out accuracy {held_acc['accuracy']:.0%})" if held_acc else "reward model"),
        (out / "grpo" / "metrics.jsonl", "reward-hacking monitor, per step"),
        (out / "grpo" / "final", "trained policy"),
        (out / "quickstart.json", "summary"),
        (report, "the report: open it in a browser"),
    ):
        console.print(f"  {path}  ({what})")
    return 0
