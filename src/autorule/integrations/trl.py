"""TRL reward functions: `GRPOTrainer(reward_funcs=[rm, rule_reward], ...)`.

TRL 1.x calls each reward function as
`f(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)`
and expects one float per completion. Prompts and completions are text, or lists of chat
messages for conversational datasets; both are handled.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..reward import RewardScorer
from .conversation import conversation


def _log(scores, log_metric: Callable | None, prefix: str) -> None:
    if log_metric is None:
        return
    log_metric(f"{prefix}/mean", float(np.nanmean(scores.rule)) if not np.isnan(scores.rule).all() else float("nan"))
    log_metric(f"{prefix}/unparsed_checks", float(scores.verdicts.unparsed))
    log_metric(f"{prefix}/refused", float(len(scores.errors)))
    for rule_id, rate in scores.pass_rates().items():
        log_metric(f"{prefix}/pass_rate/{rule_id}", rate)


def make_rule_reward(scorer: RewardScorer, *, include_rm: bool = False, name: str = "rule_reward") -> Callable[..., list[float]]:
    """A TRL reward function.

    include_rm=False (default): the rule term only, `rule_scale * (rule - rule_offset)` of the
    scorer's preset; pass the reward model to TRL separately and weight both with
    `GRPOConfig(reward_weights=[...])`. include_rm=True: the scorer's whole composed reward
    (RM + rules + length penalty, clipped), for the paper's exact formula.
    """
    def reward(prompts: list[Any], completions: list[Any], log_metric: Callable | None = None, **kwargs: Any) -> list[float]:
        scores = scorer.score([conversation(p, c) for p, c in zip(prompts, completions)])
        _log(scores, log_metric, name)
        values = scores.total if include_rm else scorer.preset.rule_term(scores.rule)
        # a response the verifier's server refused has no reward: None, which TRL leaves out
        return [None if math.isnan(x) else float(x) for x in values]

    reward.__name__ = name  # TRL names its logged columns after the function
    return reward


def make_async_rule_reward(scorer: RewardScorer, **options: Any) -> Callable[..., Any]:
    """The same reward as a coroutine function (TRL runs async reward functions concurrently)."""
    sync = make_rule_reward(scorer, **options)

    async def reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        return await asyncio.to_thread(sync, prompts, completions, **kwargs)

    reward.__name__ = sync.__name__
    return reward
