"""TRL reward functions: `GRPOTrainer(reward_funcs=[rm, RuleReward(...)], ...)`.

TRL 1.x calls each reward function as
`f(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=..., **dataset_columns)`
and expects one float (or None) per completion. Prompts and completions are text, or
lists of chat messages for conversational datasets; both are handled.

The reward functions are picklable classes, like TRL's own (`trl.rewards`): the verifier
is built from its settings in each process on first use, so they survive `pickle` and
`copy.deepcopy` (multiprocessing, async rollout workers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from autorule.data.messages import MessageError
from autorule.errors import AutoruleError
from autorule.integrations.conversation import conversation
from autorule.llm.specs import spec_kind
from autorule.reward import (
    RewardPreset,
    RewardScorer,
    SampleReward,
    Scores,
    build_scorer,
    check_reward_kind,
    get_preset,
    log_components,
)
from autorule.rules import RuleSet

log = logging.getLogger(__name__)

# calls in a row in which every completion failed, after which RuleReward raises
MAX_FAILED_CALLS = 3


class RewardFailed(AutoruleError, RuntimeError):
    """The rule reward failed every completion of `max_failed_calls` calls in a row.

    Returning None for every completion forever would train on nothing while looking
    healthy, so `RuleReward` stops the run with the verifier's reason instead.

    Args:
        message: how many calls failed and the first reason.

    Example:
        >>> str(RewardFailed("all 8 completions failed in 3 calls in a row"))
        'all 8 completions failed in 3 calls in a row'
    """


class RuleReward:
    """A TRL reward function: the rule reward of each completion (picklable).

    What it returns (`reward`): "total" (default) is the scorer's composed reward,
    `RewardScorer`'s `Scores.total`: rule_scale * (fraction satisfied - rule_offset) of
    the preset, plus autorule's own reward model when `rm` is set, minus the preset's
    length penalty, clipped per the preset. With no `rm` (the usual TRL setup, where the
    RM is another entry of `reward_funcs`) and the default preset, that is the weighted
    fraction of rules satisfied. "rule" is the rule term alone, even when `rm` is set.
    "rm" is autorule's reward model's score alone: with "rule", two reward functions for
    TRL's own ``multi_objective_aggregation="normalize_then_sum"`` (see `normalize_then_sum_funcs`).
    A completion the verifier's server refused gets None, which TRL leaves out.
    The reward's parts go to TRL's `log_metric` as ``<name>/<part>`` with the names of
    `autorule.reward.components` (``total_reward``, ``rule_reward``, ``rm_reward``, ``vetoed``,
    ``dropped_rules``, the weights, ``pass_rate/<rule id>``, ...), the same names verl and
    OpenRLHF log.

    Essential rules veto (`autorule.reward.veto`): with "total" a vetoed completion's reward
    is capped at the preset's floor; with "rule" / "rm" each part is at its lowest. A
    reward model that is another entry of TRL's `reward_funcs` is outside autorule and a
    veto cannot cap it: give autorule the RM (`rm`) for a veto that overrides it.

    Args:
        rules: a RuleSet or the path of a rules file.
        verifier: a model spec ("embedded", "openai:MODEL@URL", ...) or an LLM object
            (then it must itself be picklable for the reward to be).
        preset: a preset name ("default", "ternary", "paper") or a `RewardPreset`.
        reward: "total", "rule" or "rm", as above.
        rm: path of a Hugging Face sequence-classification reward model for "total".
        cache: cache verdicts in autorule's SQLite cache (True: the default location;
            a path: that file; False: none).
        llm_options: options for `load_llm` (``api_key``, ``concurrency``, ``extra_body``...).
        name: the name TRL logs the reward under.
        scorer: an existing RewardScorer to use in this process (the settings above
            are then read from it; `llm_options` must repeat what a copy needs).
        judge_reasoning: judge a completion's reasoning too (``<think>...</think>``); by
            default only the answer after it is judged, and the characters cut are
            logged as ``<name>/reasoning_chars_stripped``.
        empty_rule_reward: the rule reward (fraction, before the preset composes it) of
            a completion with nothing to judge (empty, or cut off while reasoning);
            logged as ``<name>/empty_completions``.
        max_failed_calls: calls in a row in which *every* completion failed (all None)
            after which the reward raises `RewardFailed` naming the first reason (each
            such call also logs an error); None: never raise. A call in which only some
            completions fail logs a warning with the count and the first reason.
        aggregation: "sum" or "normalize_then_sum" (the preset's, per GRPO group: the
            completions of one prompt in a call); None: the preset's own.
        rule_dropout: the share of non-essential rules each GRPO group is scored without,
            the subset seeded by `dropout_seed`, the step (TRL's ``trainer_state``) and the prompt.

    Raises:
        RewardFailed: from a call, after `max_failed_calls` all-failed calls in a row.

    Example:
        >>> import pickle
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> reward = RuleReward(RuleSet.from_texts(["The assistant's response should be short."]), FakeLLM(p_yes=0.75))
        >>> reward(prompts=["Say hi."], completions=["Hi!"])
        [0.75]
        >>> pickle.loads(pickle.dumps(reward))(prompts=["Say hi."], completions=[[{"role": "assistant", "content": "Hi!"}]])
        [0.75]
        >>> reward(prompts=["Say hi.", "Say hi."], completions=["<think>Be brief.</think>Hi!", [{"role": "assistant", "content": 7}]])  # 7: malformed
        [0.75, None]
    """

    def __init__(
        self,
        rules: RuleSet | str | Path | None = None,
        verifier: Any = "embedded",
        *,
        preset: str | RewardPreset = "default",
        reward: str = "total",
        rm: str | None = None,
        cache: bool | str | Path = True,
        llm_options: dict | None = None,
        name: str = "rule_reward",
        scorer: RewardScorer | None = None,
        max_failed_calls: int | None = MAX_FAILED_CALLS,
        judge_reasoning: bool = False,
        empty_rule_reward: float = 0.0,
        aggregation: str | None = None,
        rule_dropout: float = 0.0,
        dropout_seed: int = 0,
    ):
        check_reward_kind(reward)
        self.judge_reasoning, self.empty_rule_reward = judge_reasoning, empty_rule_reward
        self.rule_dropout, self.dropout_seed = rule_dropout, dropout_seed
        if aggregation is not None:
            preset = get_preset(preset, aggregation=aggregation) if isinstance(preset, str) else replace(preset, aggregation=aggregation)
        self.max_failed_calls, self._failed_calls = max_failed_calls, 0
        if scorer is not None:
            llm = scorer.verifier.llm.backend
            # a copy in another process loads the same model from its spec (connections do not pickle)
            loadable = spec_kind(llm.spec) not in (None, "vllm")
            rules, verifier, preset = scorer.rules, llm.spec if loadable else llm, scorer.preset
            rm = rm or (scorer.rm.path if scorer.rm is not None else None)
            self.judge_reasoning, self.empty_rule_reward = scorer.judge_reasoning, scorer.empty_rule_reward
            self.rule_dropout, self.dropout_seed = scorer.rule_dropout, scorer.dropout_seed
        if rules is None:
            raise ValueError("RuleReward needs rules (a RuleSet or a rules file) or a scorer")
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet.load(rules)
        self.verifier, self.preset, self.reward, self.rm = verifier, preset, reward, rm
        self.cache, self.llm_options, self.__name__ = cache, dict(llm_options or {}), name
        self._scorer = scorer

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_scorer"] = None  # live models and connections stay behind; a copy rebuilds them
        return state

    @property
    def scorer(self) -> RewardScorer:
        """The RewardScorer behind the reward, built on first use in each process."""
        if self._scorer is None:
            self._scorer = build_scorer(self.rules, self.verifier, self.preset, rm=self.rm, cache=self.cache, llm_options=self.llm_options,
                                        judge_reasoning=self.judge_reasoning, empty_rule_reward=self.empty_rule_reward,
                                        rule_dropout=self.rule_dropout, dropout_seed=self.dropout_seed)
        return self._scorer

    def __call__(self, prompts: list[Any], completions: list[Any], log_metric: Callable | None = None, **kwargs: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions; they must be the same length")
        scorer = self.scorer
        convs = [self._conversation(i, p, c) for i, (p, c) in enumerate(zip(prompts, completions))]
        ok = [i for i, c in enumerate(convs) if c is not None]  # the rest are malformed: reward None, counted
        state = kwargs.get("trainer_state")
        step = getattr(state, "global_step", None)
        # the parts of one reward (`normalize_then_sum_funcs`) share one scoring of a batch
        scores = scorer.score_once([convs[i] for i in ok], step)
        samples = scorer.samples(scores, self.reward)
        log_components(log_metric, self.__name__, samples + [SampleReward.unreadable()] * (len(convs) - len(ok)), scorer, scores.pass_rates())
        if log_metric is not None:
            log_metric(f"{self.__name__}/logprobs_refused", float(scorer.verifier.llm.stats.get("logprobs_refused", 0)))
        self._watch_failures(scores, len(ok))
        rewards: list[float | None] = [None] * len(convs)
        for i, sample in zip(ok, samples):
            rewards[i] = sample.value  # None when refused: TRL leaves it out
        return rewards

    def _conversation(self, i: int, prompt: Any, completion: Any) -> list | None:
        """The sample as a conversation, or None (logged) when a message cannot be read."""
        try:
            return conversation(prompt, completion)
        except MessageError as e:
            log.warning("%s: completion %d is malformed (reward None, counted in %s/malformed): %s", self.__name__, i, self.__name__, e)
            return None

    def _watch_failures(self, scores: Scores, n: int) -> None:
        """Say when completions failed (their reward is None); raise after too many all-failed calls."""
        if not scores.errors:
            self._failed_calls = 0
            return
        first = next(iter(scores.errors.values()))
        if len(scores.errors) < n:
            self._failed_calls = 0
            log.warning("%s: %d of %d completions failed (reward None, left out by TRL); first reason: %s", self.__name__, len(scores.errors), n, first)
            return
        self._failed_calls += 1
        log.error("%s: all %d completions failed (%d such calls in a row); every reward of this call is None. First reason: %s",
                  self.__name__, n, self._failed_calls, first)
        if self.max_failed_calls is not None and self._failed_calls >= self.max_failed_calls:
            self._failed_calls = 0
            raise RewardFailed(f"{self.__name__}: every completion failed in {self.max_failed_calls} calls in a row, so no reward "
                               f"reached the trainer. First reason: {first}")


class AsyncRuleReward(RuleReward):
    """`RuleReward` as a coroutine (TRL runs async reward functions concurrently with each other).

    Args:
        *args, **kwargs: as for `RuleReward`.

    Example:
        >>> import asyncio
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> reward = AsyncRuleReward(RuleSet.from_texts(["The assistant's response should be short."]), FakeLLM(p_yes=0.5))
        >>> asyncio.run(reward(prompts=["Q"], completions=["A"]))
        [0.5]
    """

    async def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:  # type: ignore[override]
        return await asyncio.to_thread(RuleReward.__call__, self, prompts, completions, **kwargs)



def normalize_then_sum_funcs(rules: RuleSet | str | Path, verifier: Any = "embedded", *, rm: str | None = None, preset: str | RewardPreset = "default",
                             **options: Any) -> tuple[list[RuleReward], list[float]]:
    """Reward functions and their weights for TRL's own normalise-then-sum (GDPO).

    Pass them as ``GRPOTrainer(reward_funcs=funcs, args=GRPOConfig(reward_weights=weights,
    multi_objective_aggregation="normalize_then_sum"))``: TRL normalises each within its
    GRPO group, then sums them with the weights. With `rm`, the rule term and autorule's RM
    are two functions (weights: the preset's rule_scale and rm_weight) scored in one pass,
    and a veto puts the completion at each part's lowest; without, the rule term alone
    (add your own RM to the lists, with its weight; a veto then cannot cap it).

    Args:
        rules, verifier, preset: as for `RuleReward`.
        rm: a sequence-classification reward model's path (None: rules only).
        **options: other `RuleReward` options (cache, llm_options, rule_dropout, ...).

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> funcs, weights = normalize_then_sum_funcs(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5), preset="paper")
        >>> [f.__name__ for f in funcs], weights
        (['rule_reward'], [10.0])
    """
    rule = RuleReward(rules, verifier, preset=preset, reward="rule", rm=rm, **options)
    weights = (get_preset(preset) if isinstance(preset, str) else preset).weights(rm is not None)
    if rm is None:
        return [rule], [weights["rule"]]
    rm_part = RuleReward(scorer=rule.scorer, reward="rm", name="rm_reward", llm_options=options.get("llm_options"), cache=options.get("cache", True),
                         max_failed_calls=options.get("max_failed_calls", MAX_FAILED_CALLS))
    return [rule, rm_part], [weights["rule"], weights["rm"]]


def __getattr__(name: str):
    # RuleRefreshCallback (online rule refresh, autorule.train.refresh) subclasses transformers' TrainerCallback: imported when asked for
    if name == "RuleRefreshCallback":
        from autorule.train.refresh import RuleRefreshCallback

        return RuleRefreshCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
