"""verl adapters (verl 0.9.x): a reward function and a reward manager for verl's reward loop.

verl loads both by path, as a standalone module, so this file imports autorule with
absolute imports only. Print its path with::

    python -c "import autorule.integrations.verl as m; print(m.__file__)"

Reward function (verl's default `naive` manager calls it once per sample)::

    reward.custom_reward_function.path=pkg://autorule.integrations.verl   # or the file path above
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.rules=/abs/rules.yaml
    +reward.custom_reward_function.reward_kwargs.verifier=openai:MODEL@http://HOST:8000/v1

Reward manager (batches every sample of a reward-loop worker into one verifier pass)::

    reward.reward_manager.source=importlib
    reward.reward_manager.name=AutoRuleRewardManager
    reward.reward_manager.module.path=pkg://autorule.integrations.verl   # or the file path

Settings come from `reward_kwargs` (function) or `reward.reward_kwargs` (manager), else
from the environment: AUTORULE_RULES, AUTORULE_VERIFIER (default "embedded"),
AUTORULE_PRESET (default "default"), AUTORULE_RM (a reward model's path), AUTORULE_REWARD
("total" or "rule"), AUTORULE_NO_CACHE, AUTORULE_JUDGE_REASONING (1: judge a response's
``<think>`` reasoning too; by default only the answer after it), AUTORULE_EMPTY_RULE_REWARD
(the rule reward of a response with nothing to judge; default 0), AUTORULE_AGGREGATION ("sum"
or "normalize_then_sum", per GRPO group: batch reward function only), AUTORULE_RULE_DROPOUT
(the share of non-essential rules each GRPO group is scored without), AUTORULE_DROPOUT_SEED.

Essential rules veto (`autorule.reward.veto`): a sample that fails one gets the preset's floor.
GRPO groups: the manager reads verl's ``uid`` (the group of a prompt's rollouts) and the step
from ``meta_info["global_steps"]``; the batch function groups by prompt. normalise-then-sum
needs a whole group in one call, which verl's reward loop never gives a reward manager (it
hands over one sample at a time), so the manager refuses it; verl's GRPO advantage normalises
the summed score per group itself.

Each sample's result (verl logs every key but `score` as reward_extra_info) carries the reward's
parts under `autorule.reward.components`' names, the same TRL and OpenRLHF log: `total_reward`,
`rule_reward`, `rm_reward` (with an RM), `vetoed`, `dropped_rules`, the weights, and what was cut
or refused: `reasoning_chars_stripped`, `empty_response` (1: nothing left to judge) and
`malformed` (1: its prompt's messages could not be read; score 0, not judged).

verl 0.9 does not call its own reward model for a sample when a custom reward function is
set; for RM + rules, give autorule the RM (`rm`) and keep reward="total".

What the reward is: `reward="total"` (default) is the scorer's composed reward
(`RewardScorer`: rule term + autorule's own RM when one is configured + length penalty,
clipped per the preset); with no RM in autorule that is the rule term.
`reward="rule"` is the rule term alone. verl places it on the last valid response token.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from autorule.data import Message
from autorule.data.messages import MessageError
from autorule.integrations.batching import RequestBatcher
from autorule.integrations.conversation import to_messages
from autorule.reward import (
    RewardScorer,
    SampleReward,
    Scores,
    build_scorer,
    check_reward_kind,
    get_preset,
    sample_components,
)
from autorule.reward.components import settings
from autorule.verifier.verifier import affinity_key

log = logging.getLogger(__name__)

_SCORERS: dict[tuple, RewardScorer] = {}
_SCORERS_LOCK = threading.Lock()


def _setting(options: dict, key: str, default: str | None = None) -> str | None:
    value = options.get(key)
    return str(value) if value is not None else os.environ.get(f"AUTORULE_{key.upper()}", default)


def load_scorer(options: dict | None = None) -> RewardScorer:
    """The process's RewardScorer for these settings, built once (verl calls per sample).

    Args:
        options: ``rules`` (a rules file), ``verifier`` (a model spec), ``preset``, ``rm``
            (a sequence-classification reward model's path, for reward="total"),
            ``aggregation``, ``rule_dropout``, ``dropout_seed``; each falls back to the
            AUTORULE_* environment variable of the same name.

    Example:
        >>> load_scorer({})
        Traceback (most recent call last):
        ...
        ValueError: no rules file: set reward_kwargs.rules (verl config) or AUTORULE_RULES to a rules.yaml
    """
    options = options or {}
    rules = _setting(options, "rules")
    if not rules:
        raise ValueError("no rules file: set reward_kwargs.rules (verl config) or AUTORULE_RULES to a rules.yaml")
    key = (rules, _setting(options, "verifier", "embedded"), _setting(options, "preset", "default"), bool(os.environ.get("AUTORULE_NO_CACHE")),
           _setting(options, "rm"), _setting(options, "judge_reasoning", "0").lower() in ("1", "true", "yes"),
           float(_setting(options, "empty_rule_reward", "0")), _setting(options, "aggregation", "sum"),
           float(_setting(options, "rule_dropout", "0")), int(_setting(options, "dropout_seed", "0")))
    with _SCORERS_LOCK:  # verl's reward loop calls from many threads at once
        if key not in _SCORERS:
            _SCORERS[key] = build_scorer(rules, key[1], get_preset(key[2], aggregation=key[7]), rm=key[4], cache=not key[3], judge_reasoning=key[5],
                                         empty_rule_reward=key[6], rule_dropout=key[8], dropout_seed=key[9])
        return _SCORERS[key]


def _reward_kind(options: dict) -> str:
    return check_reward_kind(_setting(options, "reward", "total"))


def sample_results(scores: Scores, scorer: RewardScorer, kind: str) -> list[dict]:
    """One dict per sample: `score` (the reward) plus what verl logs as reward_extra_info.

    A response the verifier's server refused scores 0 (verl needs a number) with
    `refused` = 1, and each batch with refusals logs a warning with their count and the
    first reason, so a 0 is never passed off as a judged reward; `unparsed_checks` counts
    checks with no readable verdict; `reasoning_chars_stripped` is the reasoning cut before
    judging; `empty_response` is 1 when nothing was left to judge; `vetoed` is 1 when an
    essential rule capped the reward; `malformed` is 0 (see `malformed_result`).

    Args:
        scores: the scorer's `Scores` for the batch.
        scorer: the RewardScorer that made them.
        kind: "total", "rule" or "rm" (see `check_reward_kind`).

    Example:
        >>> from autorule import RuleSet
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["The assistant's response should be short."]), FakeLLM(p_yes=0.8))
        >>> result = sample_results(scorer.score(["Hi!"]), scorer, "total")[0]
        >>> result["score"], result["rule_reward"], result["vetoed"], result["refused"], result["active_rules"]
        (0.8, 0.8, 0.0, 0.0, 1.0)
    """
    samples = scorer.samples(scores, kind)
    if scores.errors:
        log.warning("autorule: %d of %d samples failed and score 0 with refused=1 (no judged reward); first reason: %s",
                    len(scores.errors), len(samples), next(iter(scores.errors.values())))
    return [verl_result(s, scorer) for s in samples]


def verl_result(sample: SampleReward, scorer: RewardScorer | None = None) -> dict:
    """A sample's reward as verl takes it: `score` a number (0 where there is none), the parts logged.

    Every sample of one scorer has the same keys (verl gathers them per key): the
    scorer's settings, and `rm_reward` (0 where there is none) when it has an RM.

    Args:
        sample: the sample's `SampleReward`.
        scorer: the scorer it came from (None: its settings are left out).

    Example:
        >>> verl_result(SampleReward(score=float("nan"), rule_reward=float("nan"), error="400 Bad Request"))["refused"]
        1.0
    """
    parts = sample_components(sample, settings(scorer) if scorer is not None else None, [r.id for r in scorer.rules.rules] if scorer is not None else None)
    if scorer is not None and scorer.rm is not None:
        parts.setdefault("rm_reward", 0.0)
    return {"score": float(np.nan_to_num(sample.score)), **parts}


def malformed_result(scorer: RewardScorer | None = None) -> dict:
    """The result of a sample whose messages could not be read: score 0 (verl needs a number), `malformed` = 1.

    Example:
        >>> malformed_result()["malformed"], malformed_result()["score"]
        (1.0, 0.0)
    """
    return verl_result(SampleReward.unreadable(), scorer)


def _score_samples(scorer: RewardScorer, convs: list, kind: str) -> list[dict]:
    """Results for conversations, None marking a malformed sample (logged, not judged)."""
    ok = [i for i, c in enumerate(convs) if c is not None]
    if len(ok) < len(convs):
        log.warning("autorule: %d of %d samples have messages that cannot be read: score 0 with malformed=1", len(convs) - len(ok), len(convs))
    results: list[dict] = [malformed_result(scorer) for _ in convs]
    if ok:
        for i, result in zip(ok, sample_results(scorer.score([convs[i] for i in ok]), scorer, kind)):
            results[i] = result
    return results


def _sample(extra_info: Any, response: str) -> list[Message] | None:
    """One sample's conversation, or None when its prompt's messages cannot be read."""
    try:
        return [*_prompt_of(extra_info), Message(role="assistant", content=response)]
    except MessageError as e:
        log.warning("autorule: a sample's prompt cannot be read: %s", e)
        return None


def _prompt_of(extra_info: Any) -> list[Message]:
    if isinstance(extra_info, dict):
        for key in ("prompt", "question", "instruction"):
            value = extra_info.get(key)
            if isinstance(value, str) and value:
                return [Message(role="user", content=value)]
            if isinstance(value, (list, tuple, np.ndarray)) and len(value):
                return to_messages(list(value))
    return []


def compute_score(
    data_source: str | None = None,
    solution_str: str | None = None,
    ground_truth: Any = None,
    extra_info: Any = None,
    *,
    data_sources: list[str] | None = None,
    solution_strs: list[str] | None = None,
    ground_truths: list[Any] | None = None,
    extra_infos: list[Any] | None = None,
    scorer: RewardScorer | None = None,
    **options: Any,
) -> dict | list[dict]:
    """verl's reward function, per sample (verl 0.9's reward loop) or per batch (older `batch` manager).

    The prompt is read from `extra_info["prompt"]` (or "question", "instruction": text
    or chat messages) when the data puts it there, so rules about the request can be
    judged; without it only the response is shown to the verifier.

    Args:
        data_source, solution_str, ground_truth, extra_info: one sample, as verl's naive
            reward manager passes them; returns one dict.
        data_sources, solution_strs, ground_truths, extra_infos: a batch (verl's batch
            manager); returns a list of dicts, one per solution.
        scorer: a RewardScorer to use instead of the one built from the settings.
        **options: verl's `reward_kwargs`: ``rules``, ``verifier``, ``preset``,
            ``reward`` ("total" or "rule"); other keys verl adds are ignored.

    Returns:
        ``{"score": reward, "rule_reward": fraction satisfied, "unparsed_checks": n,
        "refused": 0 or 1}`` per sample; verl uses `score` and logs the rest.

    Example:
        >>> from autorule import RuleSet, RewardScorer
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["The assistant's response should be short."]), FakeLLM(p_yes=0.8))
        >>> compute_score("chat", "Hi!", None, {"prompt": "Say hi."}, scorer=scorer)["score"]
        0.8
        >>> compute_score(solution_strs=["a", "b"], extra_infos=[None], scorer=scorer)
        Traceback (most recent call last):
        ...
        ValueError: verl passed 2 solutions but 1 extra_infos; they must be the same length
    """
    kind = _reward_kind(options)
    scorer = scorer or load_scorer(options)
    if solution_strs is None:
        if solution_str is None:
            raise ValueError("compute_score needs solution_str (one sample) or solution_strs (a batch)")
        return _score_samples(scorer, [_sample(extra_info, solution_str)], kind)[0]
    solution_strs = list(solution_strs)
    if extra_infos is None:
        extra_infos = [None] * len(solution_strs)
    extra_infos = list(extra_infos)
    if len(extra_infos) != len(solution_strs):
        raise ValueError(f"verl passed {len(solution_strs)} solutions but {len(extra_infos)} extra_infos; they must be the same length")
    if not solution_strs:
        return []
    return _score_samples(scorer, [_sample(info, text) for text, info in zip(solution_strs, extra_infos)], kind)


try:  # verl is an optional dependency: without it the manager below still imports (for docs and tests)
    from verl.experimental.reward_loop.reward_manager.base import (
        RewardManagerBase as _Base,
    )
except Exception:  # noqa: BLE001 - any import failure means "no usable verl"
    _Base = object


class AutoRuleRewardManager(_Base):
    """A verl reward manager for verl's reward loop: rule rewards, batched across samples.

    verl's reward-loop worker calls `run_single` once per sample, all at once; the
    manager gathers the calls that arrive within `max_wait_ms` and scores them in one
    verifier pass (a local verifier batches them, a server sees them concurrently).
    verl then puts each reward on the sample's last valid response token
    (`assemble_rm_scores`).

    Args:
        config: verl's config; settings are read from ``config.reward.reward_kwargs``
            (``rules``, ``verifier``, ``preset``, ``reward``), else the environment.
        tokenizer: the policy's tokenizer (decodes responses).
        compute_score: ignored (verl passes its default); the rules are the reward.
        reward_router_address, reward_model_tokenizer: passed by verl; unused.
        scorer: a RewardScorer to use instead of the one built from the settings.
        max_wait_ms: how long the first call waits for others to join its batch.

    Example:
        >>> import asyncio
        >>> from autorule import RuleSet, RewardScorer
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["The assistant's response should be short."]), FakeLLM(p_yes=0.25))
        >>> manager = AutoRuleRewardManager.__new__(AutoRuleRewardManager)
        >>> manager.setup(scorer=scorer)
        >>> [r["score"] for r in asyncio.run(manager.score_conversations([[Message(role="assistant", content="Hi")]]))]
        [0.25]
    """

    def __init__(self, config=None, tokenizer=None, compute_score=None, reward_router_address=None, reward_model_tokenizer=None,
                 scorer: RewardScorer | None = None, max_wait_ms: float = 5.0, **kwargs: Any):
        if _Base is not object:
            super().__init__(config, tokenizer, compute_score)  # sets config and tokenizer, as for verl's own managers
        else:
            self.config, self.tokenizer = config, tokenizer
        options = dict((config.get("reward") or {}).get("reward_kwargs") or {}) if config is not None else {}
        self.setup(scorer=scorer, options={**options, **kwargs}, max_wait_ms=max_wait_ms)

    def setup(self, *, scorer: RewardScorer | None = None, options: dict | None = None, max_wait_ms: float = 5.0) -> None:
        """Settings shared by verl's constructor and direct use (no verl config needed)."""
        self.options = options or {}
        self.kind = _reward_kind(self.options)
        self.scorer = scorer
        aggregation = scorer.preset.aggregation if scorer is not None else _setting(self.options, "aggregation", "sum")
        if aggregation == "normalize_then_sum":
            raise ValueError("aggregation='normalize_then_sum' needs every completion of a GRPO group in one call, and verl's reward loop "
                             "hands a reward manager one sample at a time; use the batch reward function (compute_score with "
                             "solution_strs), or aggregation='sum' (verl's GRPO advantage normalises the summed reward per group)")
        self._batcher: RequestBatcher[tuple, dict] = RequestBatcher(self._score_batch, max_wait_ms=max_wait_ms)

    def _decode(self, data) -> list[Message]:
        item = data[-1]  # multi-sequence outputs: the last sequence, as verl's own managers do
        response_ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        response = self.tokenizer.decode(response_ids[:valid], skip_special_tokens=True)
        raw_prompt = item.non_tensor_batch.get("raw_prompt")
        if raw_prompt is not None:
            prompt = to_messages(list(raw_prompt))
        else:  # no chat messages kept: decode the prompt tokens
            prompt_ids = item.batch["prompts"]
            mask = item.batch["attention_mask"][: prompt_ids.shape[-1]].bool()
            prompt = to_messages(self.tokenizer.decode(prompt_ids[mask], skip_special_tokens=True))
        return [*prompt, Message(role="assistant", content=response)]

    async def run_single(self, data) -> dict:
        """verl 0.9's reward-loop call: one sample in, ``{"reward_score", "reward_extra_info"}`` out."""
        try:
            conversation = self._decode(data)
        except MessageError as e:  # a raw_prompt whose messages cannot be read: counted, not judged
            log.warning("autorule: a sample's prompt cannot be read (score 0, malformed=1): %s", e)
            return {"reward_score": 0.0, "reward_extra_info": malformed_result(self.scorer or load_scorer(self.options))}
        uid = data[-1].non_tensor_batch.get("uid")  # verl's GRPO group: the rollouts of one prompt share it
        step = (getattr(data, "meta_info", None) or {}).get("global_steps")
        [result] = await self.score_conversations([conversation], groups=None if uid is None else [str(uid)], step=step)
        return {"reward_score": result["score"], "reward_extra_info": result}

    async def score_conversations(self, conversations: list[list[Message]], groups: list | None = None, step: int | None = None) -> list[dict]:
        """Score conversations, batched with every other call made within `max_wait_ms`.

        Args:
            conversations: each ends with the response to reward.
            groups: each conversation's GRPO group (verl's ``uid``); None: by prompt.
            step: the trainer's step (seeds rule dropout).
        """
        groups = groups if groups is not None else [None] * len(conversations)
        return await self._batcher.submit([(c, g, step) for c, g in zip(conversations, groups)])

    def _score_batch(self, items: list[tuple]) -> list[dict]:
        scorer = self.scorer or load_scorer(self.options)
        results: list[dict | None] = [None] * len(items)
        for step in dict.fromkeys(step for _, _, step in items):  # calls of several steps in one batch: each scored with its own
            index = [i for i, item in enumerate(items) if item[2] == step]
            convs = [items[i][0] for i in index]
            groups = [items[i][1] if items[i][1] is not None else affinity_key(items[i][0]) for i in index]
            for i, result in zip(index, sample_results(scorer.score(convs, groups=groups, step=step), scorer, self.kind)):
                results[i] = result
        return results  # type: ignore[return-value]


try:  # so that `reward.reward_manager.name=autorule` works in processes that imported this module
    from verl.experimental.reward_loop.reward_manager import register as _register

    _register("autorule")(AutoRuleRewardManager)
except Exception:  # noqa: BLE001 - verl absent, or this file loaded a second time by path
    pass
