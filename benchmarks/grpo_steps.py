"""Where a GRPO step's time goes, on CPU with the embedded model: generation, reward (rules
and reward model apart) and the policy update, with and without the verdict cache.
A developer benchmark (see BENCHMARKS.md):

    python benchmarks/grpo_steps.py --steps 3 --json

Three runs of the same training, same seed, one process:
- `no_cache`: every verdict computed;
- `cold_cache`: an empty verdict cache, filled as it goes (the cost of writing it);
- `warm_cache`: the same seed again over the cache `cold_cache` filled: the same
  completions come back (CPU sampling is deterministic for a seed), so every verdict is a
  hit. This is the best case: in real training, completions rarely repeat and the cache
  pays off on reruns, resumed runs and repeated evaluations, not within a run.

Timings come from TRL's own instrumentation: its profiling sections (generation, each
reward function; collected by wrapping `ProfilingContext._log_metrics`, TRL's logging
sink) and its per-step `step_time`; the rules/RM split from the scorer's own clock
(`reward_seconds` in metrics.jsonl). update = step_time - generation - reward.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from autorule.examples import sample_rules
from autorule.cli.bench import emit
from autorule.cli.options import Parser, whole
from autorule.data import load_pairs
from autorule.examples import SAMPLE_PAIRS
from autorule.llm import load_llm
from autorule.train.config import TrainConfig
from autorule.train.grpo import run_grpo
from autorule.train.rm import RMConfig, train_reward_model

MODES = ("no_cache", "cold_cache", "warm_cache")


@contextlib.contextmanager
def trl_profiling_records():
    """TRL's profiling sections as (name, seconds) while the block runs."""
    from trl.extras.profiling import ProfilingContext

    records: list[tuple[str, float]] = []
    original = ProfilingContext._log_metrics

    def record(self, duration: float) -> None:
        records.append((self.name, duration))
        original(self, duration)

    ProfilingContext._log_metrics = record
    try:
        yield records
    finally:
        ProfilingContext._log_metrics = original


def _per_step(run_dir: Path, records: list[tuple[str, float]], steps: int) -> list[dict]:
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_times = [row["step_time"] for row in json.loads((run_dir / "trainer_log.json").read_text()) if "step_time" in row]
    generation = [s for name, s in records if name.endswith(".transformers.generate")]
    reward = [s for name, s in records if name.endswith(".autorule_reward")]
    if not (len(metrics) == len(step_times) == len(generation) == len(reward) == steps):
        raise RuntimeError(f"expected {steps} steps of timings, got metrics {len(metrics)}, step_time {len(step_times)}, "
                           f"generation {len(generation)}, reward {len(reward)} (TRL's profiling names may have changed)")
    rows = []
    for m, total, gen, rew in zip(metrics, step_times, generation, reward):
        rules, rm = m["reward_seconds"]["rules"], m["reward_seconds"]["rm"]
        rows.append({"step": m["step"], "step_s": total, "generation_s": gen, "reward_s": rew, "reward_rules_s": rules,
                     "reward_rm_s": rm, "update_s": total - gen - rew})
    return rows


def run_grpo_benchmark(data_path: str, steps: int = 3, rules: int = 4, batch: int = 4, completion_tokens: int = 32, rm: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="autorule-bench-grpo-") as tmp:
        root = Path(tmp)
        rules_path = root / "rules.yaml"
        sample_rules(rules).save(rules_path)
        if rm is None:  # a reward model of the embedded model's size; its training is not timed
            pairs = load_pairs(data_path, on_bad_row="skip").pairs
            train_reward_model(pairs[:8], RMConfig(base="embedded", out=str(root / "rm"), max_steps=1, batch_size=4, max_length=256, eval_fraction=0.25))
            rm = str(root / "rm")
        verifier_stats = load_llm("embedded").stats  # the process's one embedded model; counts across runs
        report: dict = {"data": data_path, "steps": steps, "rules": rules, "batch": batch, "completion_tokens": completion_tokens, "modes": {}}
        for mode in MODES:
            before = dict(verifier_stats)
            with trl_profiling_records() as records:
                run_grpo(TrainConfig(
                    policy="embedded", prompts=data_path, rules=str(rules_path), verifier="embedded", rm=rm,
                    output_dir=str(root / mode), max_steps=steps, per_device_train_batch_size=batch, num_generations=batch,
                    max_completion_length=completion_tokens, monitor_every=10**9, heldout_count=2, save_steps=10**9, seed=0,
                    no_cache=mode == "no_cache", cache=str(root / "cache.sqlite"),
                ))
            per_step = _per_step(root / mode, records, steps)
            checks = verifier_stats["yes_no_checks"] - before.get("yes_no_checks", 0)
            hits = verifier_stats["cache_hits"] - before.get("cache_hits", 0)
            report["modes"][mode] = {
                "per_step": per_step,
                "mean": {k: float(np.mean([r[k] for r in per_step])) for k in per_step[0] if k != "step"},
                "verifier_checks_computed": checks, "verdict_cache_hits": hits,
            }
    no_cache, warm = report["modes"]["no_cache"]["mean"], report["modes"]["warm_cache"]["mean"]
    report["rules_share_of_step"] = no_cache["reward_rules_s"] / no_cache["step_s"]
    report["warm_cache_rules_speedup"] = no_cache["reward_rules_s"] / max(warm["reward_rules_s"], 1e-9)
    return report


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/grpo_steps.py",
               description="GRPO step breakdown on CPU, embedded model: generation, reward (rules, RM), update; with and without the verdict cache")
    p.add_argument("--steps", type=whole(1), default=3)
    p.add_argument("--rules", type=whole(1), default=4)
    p.add_argument("--batch", type=whole(1), default=4, help="completions per step (= generations per prompt)")
    p.add_argument("--completion-tokens", type=whole(1), default=32)
    p.add_argument("--rm", default=None, help="reward model directory (default: one trained for a step from the embedded model)")
    p.add_argument("--data", default=None, help="prompts / preference data (default: examples/pairs.jsonl)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    args = p.parse_args(argv)
    report = run_grpo_benchmark(args.data or str(SAMPLE_PAIRS), args.steps, args.rules, args.batch, args.completion_tokens, args.rm)
    lines = []
    for mode, r in report["modes"].items():
        m = r["mean"]
        lines.append(f"{mode:>10}: step {m['step_s']:6.2f} s = generation {m['generation_s']:5.2f} + reward {m['reward_s']:5.2f} "
                     f"(rules {m['reward_rules_s']:5.2f}, rm {m['reward_rm_s']:5.2f}) + update {m['update_s']:5.2f}; "
                     f"{r['verifier_checks_computed']} checks computed, {r['verdict_cache_hits']} cache hits")
    lines.append(f"rules' share of a step without cache: {report['rules_share_of_step']:.0%}; warm cache makes rule scoring {report['warm_cache_rules_speedup']:.0f}x faster")
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
