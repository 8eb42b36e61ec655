"""`autorule train` configuration: a YAML file whose every key is also a command-line flag."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autorule.errors import InputError, describe


class ConfigError(InputError):
    """A config that cannot be used; the message names the file and the key."""


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # what is trained, on which prompts
    policy: str = Field("embedded", description="policy model spec: embedded, gguf:FILE, hf:DIR or a directory")
    prompts: str = Field(..., description="preference data (its prompts are used) or a prompt file (JSONL with 'prompt', 'instruction' or MT-Bench 'turns')")
    prompts_format: str = Field("auto", description="format of --prompts when it holds preference data")
    limit_prompts: int | None = Field(None, ge=1, description="use at most this many prompts")
    lora: bool = Field(False, description="train LoRA adapters (peft) instead of all weights")
    lora_r: int = Field(16, ge=1, description="LoRA rank")

    # rewards
    rules: str = Field(..., description="rules file")
    verifier: str = Field("embedded", description="verifier model spec; for scale a vLLM server: openai:MODEL@URL")
    rm: str | None = Field(None, description="reward model directory (from `autorule train-rm`)")
    preset: Literal["default", "ternary", "paper"] = Field("default", description="reward preset")
    rule_scale: float | None = Field(None, gt=0, description="override the preset's rule scale")
    length_penalty: float | None = Field(None, ge=0, description="override the preset's length penalty")
    aggregation: Literal["sum", "normalize_then_sum"] = Field("sum", description="how RM and rules combine: the preset's weighted sum, or "
                                                                         "normalise-then-sum per GRPO group (GDPO; TRL's multi_objective_aggregation)")
    veto_floor: float | None = Field(None, description="where an essential rule's veto caps the reward (default: the lowest value the preset can give)")
    rule_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="share of non-essential rules each GRPO group is scored without (Rubric Dropout)")
    dropout_seed: int = Field(0, description="seed of the rule dropout subsets")
    gold_rules: str | None = Field(None, description="a second rules file scored every step but never rewarded: a gold monitor")
    gold_verifier: str | None = Field(None, description="the gold monitor's verifier spec (default: the verifier)")
    verifier_concurrency: int | None = Field(None, ge=1, description="concurrent requests to a verifier server (default: its slot count where it reports one, else 16)")
    cache: str | None = Field(None, description="verdict cache file (default: ~/.cache/autorule/cache.sqlite)")
    no_cache: bool = Field(False, description="do not cache verdicts")

    # GRPO (TRL); CPU-friendly defaults
    output_dir: str = Field("runs/grpo", description="checkpoints, metrics.jsonl, the final model")
    max_steps: int = Field(10, ge=1, description="optimizer steps")
    learning_rate: float = Field(1e-5, gt=0, description="learning rate")
    per_device_train_batch_size: int = Field(4, ge=1, description="completions per device per step")
    num_generations: int = Field(4, ge=2, description="completions per prompt (the GRPO group)")
    max_completion_length: int = Field(32, ge=1, description="max new tokens per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for rollouts")
    beta: float = Field(1e-3, ge=0, description="KL coefficient (the paper: 1e-3; 0 skips the reference model)")
    seed: int = Field(0, description="seed")
    logging_steps: int = Field(1, ge=1, description="log every N steps")
    save_steps: int = Field(50, ge=1, description="checkpoint every N steps")
    resume: bool = Field(False, description="resume from the last checkpoint in output_dir (without it, a directory holding a run is refused)")
    report_to: str = Field("none", description="where TRL logs: none, or a comma-separated list of TRL's integrations (tensorboard, wandb, mlflow, trackio, ...)")
    bf16: bool = Field(False, description="bf16 (GPU)")
    gradient_checkpointing: bool = Field(False, description="activation checkpointing (GPU memory)")
    use_vllm: bool = Field(False, description="generate rollouts with vLLM (GPU; TRL's vllm_mode)")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="vLLM mode when use_vllm")

    # reward-hacking monitor
    heldout_prompts: str | None = Field(None, description="prompts for the held-out score (default: some training prompts are held out)")
    heldout_count: int = Field(8, ge=1, description="held-out prompts scored")
    monitor_every: int = Field(5, ge=1, description="score the held-out prompts every N steps")
    monitor_window: int = Field(6, ge=2, description="steps over which reward trends are compared for warnings")

    # online rule refresh (autorule.train.refresh): off unless refresh_every is set
    refresh_every: int | None = Field(None, ge=1, description="every N steps, draw new rules from rollouts where the RM and the rules disagree, "
                                                                 "keep those held-out pairs support, retire rules with no signal (off when unset)")
    max_active_rules: int = Field(25, ge=1, description="the most rules active after a refresh")
    refresh_model: str | None = Field(None, description="extraction model spec for the refresh (default: the verifier's)")
    refresh_pairs: str | None = Field(None, description="held-out preference pairs new rules are validated on (default: --prompts when it holds pairs)")
    refresh_heldout: int = Field(200, ge=1, description="use at most this many held-out pairs (the first ones)")
    refresh_disagreements: int = Field(8, ge=1, description="disagreement pairs (one per prompt) extracted from per refresh")
    refresh_near_duplicate: float = Field(0.85, gt=0, le=1, description="cosine similarity from which a new rule is a near-duplicate of an active one")

    @field_validator("policy", "verifier", "gold_verifier")
    @classmethod
    def _known_spec(cls, value: str | None) -> str | None:
        from autorule.llm.specs import SpecError, parse_spec

        if value is None:
            return value
        try:
            parse_spec(value)  # the form only: the model is loaded later
        except SpecError as e:
            raise ValueError(str(e)) from None
        return value

    @model_validator(mode="after")
    def _aggregation_parts(self) -> TrainConfig:
        # TRL normalises each reward function; the length penalty is not one of autorule's functions there
        if self.aggregation == "normalize_then_sum" and self.length_penalty:
            raise ValueError("length_penalty with aggregation='normalize_then_sum' is not supported: TRL normalises each reward function "
                             "and the length penalty is not one; use aggregation='sum', or add a length reward function of your own")
        return self

    def report_to_list(self) -> list[str]:
        """`report_to` as the list TRL's `report_to` takes ([] for none)."""
        names = [n.strip() for n in self.report_to.split(",") if n.strip()]
        return [] if names in ([], ["none"]) else names


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every TrainConfig field as a flag; unset flags leave the file's value alone."""
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        if annotation is bool and name.startswith("no_"):  # a negative switch: --no-cache, never --no-no-cache
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=field.description)
        elif annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:
            kind = {int: int, float: float}.get(annotation, None)
            if annotation in (int | None,):
                kind = int
            elif annotation in (float | None,):
                kind = float
            parser.add_argument(flag, dest=name, type=kind or str, default=None, help=field.description)


def load_config(path: str | None, overrides: dict) -> TrainConfig:
    data: dict = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        where = path or "command line"
        raise ConfigError(f"{where}: {describe(e)}") from None
