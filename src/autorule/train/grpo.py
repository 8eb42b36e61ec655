"""`autorule train`: GRPO on TRL's GRPOTrainer with the composed AutoRule reward
(reward model + rule reward + optional length penalty, per the preset), watched by the
reward-hacking monitor."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from autorule import jsonsafe
from autorule import reward
from autorule.cache import DEFAULT_CACHE_PATH, Cache
from autorule.data import DataError, first_record, iter_rows, load_pairs
from autorule.integrations.conversation import conversation, to_messages
from autorule.llm.local import local_model_path
from autorule.llm.specs import parse_spec
from autorule.reward import RewardScorer, get_preset, log_components
from autorule.train.config import ConfigError, TrainConfig
from autorule.train.monitor import RewardMonitor, console
from autorule.train.refresh import refresh_callbacks


def load_prompts(path: str, fmt: str = "auto", limit: int | None = None) -> list[list[dict]]:
    """Prompts as chat-message lists: from a prompt file, or the prompts of preference data."""
    first = first_record(Path(path))
    if first is None:
        raise DataError(path, "no prompts found")
    prompts: list[list[dict]] = []
    if not ({"chosen", "rejected"} <= set(first) or {"output_1", "output_2"} <= set(first) or "conversation_a" in first):
        rows, unit = iter_rows(Path(path))
        for row, rec in rows:
            if not isinstance(rec, dict):  # a broken line: the reader hands it over as a BadRow
                raise DataError(path, str(rec), row, unit)
            value = rec.get("prompt") or rec.get("instruction") or (rec.get("turns") or [None])[0] or rec.get("question")
            if not value:
                raise DataError(path, "expected a 'prompt', 'instruction', 'question' or MT-Bench 'turns' field", row, unit)
            prompts.append([m.model_dump() for m in to_messages(value)])
    else:
        seen = set()
        for pair in load_pairs(path, fmt, on_bad_row="skip").pairs:
            key = json.dumps([m.model_dump() for m in pair.prompt])
            if key not in seen:
                seen.add(key)
                prompts.append([m.model_dump() for m in pair.prompt])
    return prompts[:limit] if limit else prompts


def build_scorer(config: TrainConfig) -> RewardScorer:
    """The training run's reward: its rules, verifier, preset (with the config's overrides, the
    aggregation and the veto floor), RM and rule dropout."""
    preset = get_preset(config.preset, rule_scale=config.rule_scale, length_penalty=config.length_penalty, aggregation=config.aggregation,
                        veto_floor=config.veto_floor)
    cache = None if config.no_cache else Cache(config.cache or DEFAULT_CACHE_PATH)
    return reward.build_scorer(config.rules, config.verifier, preset, rm=config.rm, cache=cache,
                               llm_options=parse_spec(config.verifier).options(concurrency=config.verifier_concurrency),
                               rule_dropout=config.rule_dropout, dropout_seed=config.dropout_seed)


def build_gold_scorer(config: TrainConfig, scorer: RewardScorer) -> RewardScorer | None:
    """The gold monitor: `gold_rules` judged by `gold_verifier` (else the training verifier, shared),
    logged every step, never rewarded; None without `gold_rules`."""
    if not config.gold_rules:
        return None
    if config.gold_verifier is None or config.gold_verifier == config.verifier:
        verifier = scorer.verifier.llm  # the same judge: loaded once
    else:
        verifier = config.gold_verifier
    cache = None if config.no_cache else Cache(config.cache or DEFAULT_CACHE_PATH)
    return reward.build_scorer(config.gold_rules, verifier, get_preset(config.preset), cache=cache)


def reward_functions(config: TrainConfig, scorer: RewardScorer, monitor: RewardMonitor, gold: RewardScorer | None = None) -> tuple[list, list[float] | None]:
    """TRL reward functions for the run, and their weights (None: TRL's default).

    With ``aggregation="sum"``: one function, the composed total. With
    ``normalize_then_sum``: the rule term and (with an RM) the RM's score as two functions,
    weighted by the preset's rule_scale and rm_weight, for TRL's own
    ``multi_objective_aggregation="normalize_then_sum"``. Either way a batch is scored
    once, recorded once by the monitor (with the gold monitor's rule reward), and its
    parts logged under `autorule.reward.components`' names as ``autorule/<part>``.
    """
    recorded: dict = {}  # the batch the monitor last recorded: each batch once, whichever part asks first

    def scores_for(prompts, completions, completion_ids, log_metric, trainer_state):
        step = getattr(trainer_state, "global_step", None)
        conversations = [conversation(p, c) for p, c in zip(prompts, completions)]
        scores = scorer.score_once(conversations, step)  # the other part of the same batch: scored once
        if recorded.get("scores") is scores:
            return scores
        gold_rule = gold.score(conversations).rule if gold is not None else None
        lengths = np.array([len(ids) for ids in completion_ids]) if completion_ids is not None else np.array([len(str(c).split()) for c in completions])
        monitor.record_batch(rm=scores.rm, rule=scores.rule, total=scores.total, lengths=lengths, pass_rates=scores.pass_rates(), log_metric=log_metric,
                             seconds=scores.seconds, vetoed=scores.vetoed, dropped=scores.dropped, gold=gold_rule, active_rules=len(scorer.rules))
        log_components(log_metric, "autorule", scorer.samples(scores), scorer, scores.pass_rates())
        recorded["scores"] = scores
        return scores

    def rewards(kind: str, prompts, completions, completion_ids, log_metric, trainer_state) -> list[float | None]:
        values = scorer.values(scores_for(prompts, completions, completion_ids, log_metric, trainer_state), kind)
        return [None if math.isnan(v) else float(v) for v in values]  # refused by the verifier's server: no reward (None)

    def autorule_reward(prompts, completions, completion_ids=None, log_metric=None, trainer_state=None, **kwargs):
        return rewards("total", prompts, completions, completion_ids, log_metric, trainer_state)

    def rule_reward(prompts, completions, completion_ids=None, log_metric=None, trainer_state=None, **kwargs):
        return rewards("rule", prompts, completions, completion_ids, log_metric, trainer_state)

    def rm_reward(prompts, completions, completion_ids=None, log_metric=None, trainer_state=None, **kwargs):
        return rewards("rm", prompts, completions, completion_ids, log_metric, trainer_state)

    if scorer.preset.aggregation == "sum":
        return [autorule_reward], None
    weights = scorer.preset.weights(scorer.rm is not None)
    if scorer.rm is None:
        return [rule_reward], [weights["rule"]]
    return [rule_reward, rm_reward], [weights["rule"], weights["rm"]]


# settings a resumed run may change: how long and how often, not what is trained
RESUMABLE_CHANGES = {"resume", "max_steps", "save_steps", "logging_steps", "monitor_every", "report_to", "verifier_concurrency", "cache", "no_cache"}


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def check_output_dir(out: Path, config: TrainConfig) -> Path | None:
    """The checkpoint to resume from (None: start afresh); refuses a directory holding another run.

    Without `resume`, a directory with an earlier run's config, metrics or checkpoints is
    refused (its metrics would mix with this run's). With `resume`, the earlier run must
    have trained the same thing (`RESUMABLE_CHANGES` aside).
    """
    previous = out / "train_config.json"
    held = previous.is_file() or (out / "metrics.jsonl").is_file() or any(out.glob("checkpoint-*"))
    if not held:
        return None
    if not config.resume:
        raise ConfigError(f"{out} holds another training run; use --resume to continue it, or another --output-dir")
    if previous.is_file():
        before = json.loads(previous.read_text())
        changed = [f"{k}: {before.get(k)!r} -> {v!r}" for k, v in config.model_dump().items() if k not in RESUMABLE_CHANGES and before.get(k) != v]
        if changed:
            raise ConfigError(f"{out} holds a run with other settings ({'; '.join(changed)}); --resume continues only the same run")
    checkpoints = sorted(out.glob("checkpoint-*"), key=_step_of)
    return checkpoints[-1] if checkpoints else None


def run_grpo(config: TrainConfig, scorer: RewardScorer | None = None) -> dict:
    """GRPO on TRL with the composed reward; `scorer` (else built from `config`) scores the completions."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    start = time.time()
    out = Path(config.output_dir)
    checkpoint = check_output_dir(out, config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(config.model_dump_json(indent=2))
    prompts = load_prompts(config.prompts, config.prompts_format, config.limit_prompts)
    if config.heldout_prompts:
        heldout = load_prompts(config.heldout_prompts, limit=config.heldout_count)
    elif len(prompts) > 2 * config.heldout_count:
        prompts, heldout = prompts[: -config.heldout_count], prompts[-config.heldout_count :]
    else:
        heldout = prompts[: config.heldout_count]  # too few prompts to hold any out: watch training prompts
    if not prompts:
        raise DataError(config.prompts, "no prompts to train on")

    scorer = scorer or build_scorer(config)
    monitor = RewardMonitor(out / "metrics.jsonl", window=config.monitor_window, resume_step=_step_of(checkpoint) if checkpoint else None)

    gold = build_gold_scorer(config, scorer)
    reward_funcs, reward_weights = reward_functions(config, scorer, monitor, gold)

    policy_path = local_model_path(config.policy)
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(policy_path)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear")

    def heldout_score(policy) -> float:
        """Greedy completions for the held-out prompts, judged by the RM (or the rules without one)."""
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in heldout]
        tokenizer.padding_side = "left"
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(policy.device)
        was_training = policy.training
        policy.eval()
        with torch.inference_mode():
            gen = policy.generate(**enc, max_new_tokens=config.max_completion_length, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        if was_training:
            policy.train()
        replies = tokenizer.batch_decode(gen[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        convs = [conversation(p, r) for p, r in zip(heldout, replies)]
        if scorer.rm is not None:
            return float(scorer.rm.score(convs).mean())
        return float(scorer.score(convs).rule.mean())

    class MonitorCallback(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            held = heldout_score(model) if model is not None and state.global_step % config.monitor_every == 0 else None
            row = monitor.end_step(state.global_step, held)
            summary = f"step {row['step']}: reward {row.get('total_reward', float('nan')):.3f}, rule {row.get('rule_reward', float('nan')):.3f}"
            if "rm_reward" in row:
                summary += f", rm {row['rm_reward']:.3f}"
            if row.get("length") is not None:
                summary += f", length {row['length']:.1f}"
            if held is not None:
                summary += f", held-out {held:.3f}"
            console.print(summary)

    cuda = torch.cuda.is_available()
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_train_batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
        report_to=config.report_to_list(),
        use_cpu=not cuda,
        disable_tqdm=False,
        multi_objective_aggregation="normalize_then_sum" if config.aggregation == "normalize_then_sum" else "sum_then_normalize",
        reward_weights=reward_weights,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MonitorCallback(), *refresh_callbacks(config, scorer, out)],
    )
    if config.resume and checkpoint is None:
        console.print(f"no checkpoint in {out}; starting from the beginning")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # TRL's own per-step logs (loss, KL, step_time, ...) beside the monitor's metrics
    (out / "trainer_log.json").write_text(jsonsafe.dumps(trainer.state.log_history, indent=1))
    final = out / "final"
    policy = trainer.model.merge_and_unload() if config.lora else trainer.model
    policy.save_pretrained(final)
    tokenizer.save_pretrained(final)
    summary = {
        "steps": trainer.state.global_step,
        "final_model": str(final),
        "metrics": str(monitor.path),
        "warnings": monitor.warnings,
        "first": monitor.history[0] if monitor.history else None,
        "last": monitor.history[-1] if monitor.history else None,
        "seconds": round(time.time() - start, 1),
        "verifier_mode": scorer.verifier.llm.yes_no_record,
        "llm_stats": dict(scorer.verifier.llm.stats),
        "reward": {"preset": scorer.preset.name, "aggregation": scorer.preset.aggregation, "weights": scorer.preset.weights(scorer.rm is not None),
                   "essential_rules": sum(r.essential for r in scorer.rules.rules), "rule_dropout": scorer.rule_dropout,
                   "vetoed": sum(row.get("vetoed", 0) for row in monitor.history), "rule_changes": scorer.rule_changes,
                   "gold_rules": config.gold_rules},
    }
    (out / "train_summary.json").write_text(jsonsafe.dumps(summary, indent=2))
    return summary
