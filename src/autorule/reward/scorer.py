"""RewardScorer: conversations in, rewards and their parts out; the one object every adapter uses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorule.data import Message, to_conversation
from autorule.data.reasoning import answer_only
from autorule.reward.aggregation import group_sizes
from autorule.reward.dropout import dropped_rules, kept_mask
from autorule.reward.presets import (
    RewardPreset,
    check_reward_kind,
    compose,
    floor,
    get_preset,
)
from autorule.reward.reward_model import RewardModel, word_counts
from autorule.reward.rollouts import Rollout, RolloutBuffer
from autorule.reward.rule_reward import rule_reward
from autorule.reward.veto import apply_veto, vetoing_rules
from autorule.rules import RuleSet
from autorule.verifier import Verdicts
from autorule.verifier.verifier import affinity_key


@dataclass
class Scores:
    """Rewards and their parts for a batch of responses.

    Args:
        total: the composed reward per response; rule: the rule reward (fraction
        satisfied); rm: the RM's scores (None without one); verdicts: the verdicts;
        seconds: time spent on rules and RM; reasoning_chars: per response, the
        characters of reasoning cut before judging (0 with ``judge_reasoning``);
        empty: per response, True when nothing was left to judge (not sent to the
        verifier; rule reward `RewardScorer.empty_rule_reward`); vetoed: per response, True
        when it failed an essential rule and its total was capped; kept: shape (n, k), the
        rules kept for each response by rule dropout (None: all); groups: each response's
        GRPO group; step: the trainer's step the caller gave (None: none); vetoed_by: per
        response, the ids of the essential rules it failed.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scores = RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.7)).score(["Hello"])
        >>> scores.total.tolist(), scores.pass_rates()
        ([0.7], {'r-...': 1.0})
    """

    total: np.ndarray
    rule: np.ndarray
    rm: np.ndarray | None
    verdicts: Verdicts
    seconds: dict[str, float] = field(default_factory=dict)  # time spent on "rules" and "rm"
    reasoning_chars: np.ndarray | None = None
    empty: np.ndarray | None = None
    vetoed: np.ndarray | None = None
    kept: np.ndarray | None = None
    groups: list | None = None
    step: int | None = None
    vetoed_by: list[list[str]] | None = None

    def __post_init__(self) -> None:
        n = len(self.rule)
        self.reasoning_chars = np.zeros(n, dtype=int) if self.reasoning_chars is None else np.asarray(self.reasoning_chars, dtype=int)
        self.empty = np.zeros(n, dtype=bool) if self.empty is None else np.asarray(self.empty, dtype=bool)
        self.vetoed = np.zeros(n, dtype=bool) if self.vetoed is None else np.asarray(self.vetoed, dtype=bool)

    @property
    def dropped(self) -> np.ndarray:
        """Per response, how many rules rule dropout left out of its rule reward."""
        if self.kept is None:
            return np.zeros(len(self.rule), dtype=int)
        return (~self.kept).sum(axis=1)

    @property
    def reasoning_chars_stripped(self) -> int:
        """Characters of reasoning cut from all responses before they were judged."""
        return int(self.reasoning_chars.sum())

    @property
    def empty_responses(self) -> int:
        """Responses with nothing left to judge (empty, whitespace, or cut off while reasoning)."""
        return int(self.empty.sum())

    def pass_rates(self) -> dict[str, float]:
        """Per rule: the share of the responses that judged it (applies, readable, not dropped) satisfying it; NaN where none did."""
        return self.verdicts.pass_rates(self.kept)

    def passes(self) -> list[dict[str, float]]:
        """Per response and rule: 1.0 satisfied, 0.0 not; where the response did not judge the rule, the
        batch's pass rate, so that a batch's mean of each rule's values is its pass rate (NaN when no
        response judged it). What verl and OpenRLHF log per sample as ``pass_rate/<rule id>``.

        Example:
            >>> import numpy as np
            >>> s = Scores(np.zeros(3), np.zeros(3), None, Verdicts(["r"], np.array([[0.9], [0.1], [float("nan")]])))
            >>> [p["r"] for p in s.passes()]
            [1.0, 0.0, 0.5]
        """
        judged = self.verdicts.applicable if self.kept is None else self.verdicts.applicable & self.kept
        hard = self.verdicts.hard
        rates = self.pass_rates()
        ids = self.verdicts.rule_ids
        return [{rid: float(hard[i, j]) if judged[i, j] else rates[rid] for j, rid in enumerate(ids)} for i in range(hard.shape[0])]

    @property
    def errors(self) -> dict[int, str]:
        """Responses the verifier's server refused (index -> reason): they have no reward (NaN)."""
        return self.verdicts.errors

    def unparsed_per_response(self) -> list[int]:
        """Checks per response with no readable verdict (left out of its rule reward)."""
        return self.verdicts.unparsed_per_response()


@dataclass(frozen=True)
class SampleReward:
    """One response's reward and what was cut, refused or unreadable: what every trainer adapter
    maps to its trainer's own shape (TRL: a float or None; verl: a dict; OpenRLHF: lists).

    Args:
        score: the reward an adapter returns (the total, or the rule term alone: see
            `RewardScorer.values`); NaN when there is none (refused by the verifier's
            server, or malformed).
        rule_reward: the rule reward (fraction satisfied); NaN when there is none.
        unparsed_checks: rule checks with no readable verdict (left out of `rule_reward`).
        error: why the verifier's server refused the response; None when it was judged.
        reasoning_chars_stripped: characters of reasoning cut before judging.
        empty_response: nothing was left to judge (not sent to the verifier).
        rm_reward: the reward model's score; None without one.
        malformed: the sample's messages could not be read (not judged).
        vetoed: it failed an essential rule; its total was capped at the preset's floor.
        total: the composed total (what `score` is with reward "total"); NaN when there is none.
        passes: per rule id, 1.0 satisfied / 0.0 not, or the batch's pass rate where it was not
            judged (see `Scores.passes`); None for a malformed sample.
        dropped_rules: rules rule dropout left out of its rule reward.

    Example:
        >>> SampleReward.unreadable().malformed, SampleReward.unreadable().value, SampleReward(0.5, 0.5).value
        (True, None, 0.5)
    """

    score: float
    rule_reward: float
    unparsed_checks: int = 0
    error: str | None = None
    reasoning_chars_stripped: int = 0
    empty_response: bool = False
    rm_reward: float | None = None
    malformed: bool = False
    vetoed: bool = False
    dropped_rules: int = 0
    total: float = float("nan")
    passes: dict[str, float] | None = field(default=None, repr=False)

    @property
    def value(self) -> float | None:
        """`score`, or None where there is none (refused, malformed): what TRL takes, and leaves a None out."""
        return None if math.isnan(self.score) else self.score

    @property
    def refused(self) -> bool:
        """The verifier's server refused the response: it has no reward."""
        return self.error is not None

    @classmethod
    def unreadable(cls) -> SampleReward:
        """The result of a sample whose messages could not be read: no reward, `malformed`."""
        return cls(score=float("nan"), rule_reward=float("nan"), malformed=True)


class RewardScorer:
    """Verifier + optional reward model + preset: conversations in, rewards out.

    The one object every adapter (TRL, verl, the reward server, `autorule score`) uses.

    Args:
        rules: the RuleSet.
        verifier_llm: the judge (from `load_llm`).
        preset: a preset name ("default", "ternary", "paper") or a `RewardPreset`.
        rm: an optional `RewardModel`.
        judge_reasoning: judge a response's reasoning too (``<think>...</think>`` and the
            other markers `autorule.data.reasoning` reads). By default only the answer after
            it is judged (by the rules and the RM, and counted for the length penalty),
            and the characters cut are counted in `Scores.reasoning_chars`.
        empty_rule_reward: the rule reward (fraction satisfied, before the preset's
            composition) of a response with nothing to judge: empty, whitespace only,
            or cut off while reasoning. Such a response is not sent to the verifier;
            its verdicts are 0 (it follows no rule) and it is counted in `Scores.empty`.
        rule_dropout: the share of non-essential rules each GRPO group is scored without
            (`autorule.reward.dropout`), in [0, 1); 0: none.
        dropout_seed: the seed of the dropped subsets (with the step and the group).
        keep_rollouts: how many recent scored completions `rollouts` keeps (for the online
            rule refresh and monitors).
        **verifier_options: `Verifier` options (threshold, max_input_tokens, max_unparsed).

    Raises:
        ValueError: an unknown preset, or `empty_rule_reward` outside [0, 1].

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.6), "paper")
        >>> scorer.score([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]).total.tolist()
        [2.5]
        >>> scores = scorer.score(["<think>Short is better.</think> Hello", "<think>Still thinking"])
        >>> scores.total.tolist(), scores.reasoning_chars.tolist(), scores.empty.tolist()  # 10 x (0 - 0.75) for the empty one
        ([2.5, -7.5], [31, 21], [False, True])
    """

    def __init__(self, rules: RuleSet, verifier_llm, preset: RewardPreset | str = "default", rm: RewardModel | None = None, *,
                 judge_reasoning: bool = False, empty_rule_reward: float = 0.0, rule_dropout: float = 0.0, dropout_seed: int = 0,
                 keep_rollouts: int = 4096, **verifier_options):
        from autorule.verifier import Verifier

        if not 0.0 <= empty_rule_reward <= 1.0:
            raise ValueError(f"empty_rule_reward={empty_rule_reward}: a rule reward is a fraction in [0, 1]")
        self.judge_reasoning, self.empty_rule_reward = judge_reasoning, float(empty_rule_reward)
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.rules = rules
        self.rm = rm
        dropped_rules(rules, rule_dropout, "", 0)  # a share outside [0, 1) is refused here, not at the first step
        self.rule_dropout, self.dropout_seed = float(rule_dropout), int(dropout_seed)
        self.rollouts = RolloutBuffer(keep_rollouts)
        self.rule_changes: list[dict] = []  # each set_rules: step, rules added and retired
        self._last: tuple | None = None  # score_once's last batch: (key, Scores)
        self._verifier_options = {"style": self.preset.style, "applicability": self.preset.applicability, **verifier_options}
        self.verifier = Verifier(verifier_llm, rules, **self._verifier_options)

    def set_rules(self, rules: RuleSet, step: int | None = None) -> dict:
        """Score with another rule set from now on (an online refresh); the change is recorded in `rule_changes`.

        Args:
            rules: the new active RuleSet (not empty).
            step: the trainer's step of the change.

        Returns:
            ``{"step", "added": [rule ids], "retired": [rule ids], "active": n}``.

        Raises:
            ValueError: an empty rule set.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> scorer = RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5))
            >>> change = scorer.set_rules(RuleSet.from_texts(["Be short.", "Be kind."]), step=10)
            >>> change["step"], len(change["added"]), change["retired"], len(scorer.rules)
            (10, 1, [], 2)
        """
        from autorule.verifier import Verifier

        verifier = Verifier(self.verifier.llm, rules, threshold=self.verifier.threshold,
                            **{k: v for k, v in self._verifier_options.items() if k != "threshold"})
        before, after = {r.id for r in self.rules.rules}, {r.id for r in rules.rules}
        change = {"step": step, "added": [r.id for r in rules.rules if r.id not in before],
                  "retired": [r.id for r in self.rules.rules if r.id not in after], "active": len(rules.rules)}
        self.rules, self.verifier = rules, verifier
        self._last = None  # a batch scored with the old rules is not this rule set's
        self.rule_changes.append(change)
        return change

    def values(self, scores: Scores, kind: str = "total") -> np.ndarray:
        """The reward an adapter returns: `scores.total`, the preset's rule term (`kind="rule"`) or the
        RM's score (`kind="rm"`).

        The last two are parts a trainer aggregates itself (TRL's normalise-then-sum). A vetoed
        response gets each part's lowest value there: the rule term at 0 satisfied, and the
        batch's lowest RM score, so that within its group no part rescues it.

        Args:
            scores: what `score` returned.
            kind: "total", "rule" or "rm" (see `check_reward_kind`).

        Raises:
            ValueError: an unknown kind; "rm" from a scorer without a reward model.

        Example:
            >>> from autorule.rules import Rule
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> rules = RuleSet(rules=[Rule(id="r1", text="Be safe.", essential=True)])
            >>> scorer = RewardScorer(rules, FakeLLM(p_yes=0.3), "paper")
            >>> scores = scorer.score(["Hi"])
            >>> scores.vetoed.tolist(), scorer.values(scores, "rule").tolist(), scores.total.tolist()
            ([True], [-7.5], [-10.0])
        """
        kind = check_reward_kind(kind)
        if kind == "total":
            return scores.total
        if kind == "rule":
            term = self.preset.rule_term(scores.rule)
            return np.where(scores.vetoed, np.minimum(term, self.preset.rule_term(0.0)), term)
        if scores.rm is None:
            raise ValueError("reward='rm' needs a reward model in autorule (rm=...)")
        rm = np.asarray(scores.rm, dtype=float)
        lowest = np.nanmin(rm) if len(rm) and not np.isnan(rm).all() else np.nan
        return np.where(scores.vetoed, np.minimum(rm, lowest), rm)

    def samples(self, scores: Scores, kind: str = "total") -> list[SampleReward]:
        """`scores` per response, the reward being `values(scores, kind)`.

        Args:
            scores: what `score` returned.
            kind: "total" or "rule" (see `check_reward_kind`).

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> scorer = RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.8))
            >>> scorer.samples(scorer.score(["<think>Hm.</think>Hi"]))
            [SampleReward(score=0.8, rule_reward=0.8, unparsed_checks=0, error=None, reasoning_chars_stripped=18, empty_response=False, rm_reward=None, malformed=False, vetoed=False, dropped_rules=0, total=0.8)]
        """
        values = self.values(scores, kind)
        unparsed = scores.unparsed_per_response()
        passes = scores.passes()
        return [
            SampleReward(score=float(values[i]), rule_reward=float(scores.rule[i]), unparsed_checks=int(unparsed[i]), error=scores.errors.get(i),
                         reasoning_chars_stripped=int(scores.reasoning_chars[i]), empty_response=bool(scores.empty[i]),
                         rm_reward=None if scores.rm is None else float(scores.rm[i]), vetoed=bool(scores.vetoed[i]),
                         dropped_rules=int(scores.dropped[i]), total=float(scores.total[i]), passes=passes[i])
            for i in range(len(values))
        ]

    def score(self, conversations: list, desc: str | None = None, on_item: Callable[[], None] | None = None, *,
              groups: list | None = None, step: int | None = None) -> Scores:
        """Rewards for conversations that end with the response to reward.

        The response's reasoning is cut first (unless `judge_reasoning`); a response with
        nothing left gets `empty_rule_reward` without a verifier call. Rule dropout, the
        preset's aggregation and vetoes are applied per GRPO group; every scored completion
        is kept in `rollouts`.

        Args:
            conversations: each a list of `Message` or OpenAI-style dicts, or a bare reply string.
            desc: label of a progress bar (none when None).
            on_item: called as each conversation's rule checks finish (a caller's own progress bar).
            groups: each conversation's GRPO group (any hashable key; verl's ``uid``); None:
                conversations with the same turns before the response are one group.
            step: the trainer's step (seeds rule dropout; recorded with the rollouts).

        Raises:
            MessageError: (a ValueError) a message `to_conversation` cannot read.
            ValueError: `groups` of another length than `conversations`.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> scorer = RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5), get_preset("default", aggregation="normalize_then_sum"))
            >>> scorer.score(["a", "b", "c"], groups=["g", "g", "h"]).total.tolist()  # every part equal within its group
            [0.0, 0.0, 0.0]
        """
        conversations = [to_conversation(c) for c in conversations]
        conversations, reasoning_chars = zip(*(self._answer_only(c) for c in conversations)) if conversations else ((), ())
        conversations = list(conversations)
        if groups is None:
            groups = [affinity_key(c) for c in conversations]
        elif len(groups) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(groups)} groups; give one group per conversation")
        groups = list(groups)
        empty = np.array([not c[-1].content.strip() for c in conversations], dtype=bool)
        kept = kept_mask(self.rules, self.rule_dropout, groups, step, self.dropout_seed) if self.rule_dropout else None
        start = time.perf_counter()
        verdicts = self._verify(conversations, empty, desc, on_item)
        rule = rule_reward(verdicts, self.rules, hard=self.preset.hard, kept=kept)
        rule[empty] = self.empty_rule_reward
        ruled = time.perf_counter()
        rm = self.rm.score(conversations, normalise=self.preset.normalise_rm) if self.rm is not None else None
        seconds = {"rules": ruled - start, "rm": time.perf_counter() - ruled}
        words = word_counts([c[-1].content for c in conversations])
        total = compose(self.preset, rule, rm, words, groups)
        if verdicts.errors:  # refused: no reward, whatever the other parts say
            total[list(verdicts.errors)] = np.nan
        # an empty answer breaks no rule's prohibition
        vetoed_by = [[] if blank else ids for ids, blank in zip(vetoing_rules(verdicts, self.rules), empty)]
        vetoed = np.array([bool(ids) for ids in vetoed_by], dtype=bool)
        if vetoed.any():
            total = apply_veto(total, vetoed, floor(self.preset, rm, words, group_sizes(groups)))
        scores = Scores(total=total, rule=rule, rm=rm, verdicts=verdicts, seconds=seconds, reasoning_chars=np.array(reasoning_chars, dtype=int),
                        empty=empty, vetoed=vetoed, kept=kept, groups=groups, step=step, vetoed_by=vetoed_by)
        self._keep(conversations, scores)
        return scores

    def score_once(self, conversations: list, step: int | None = None) -> Scores:
        """`score`, or the `Scores` of the previous `score_once` call when it had the same
        conversations and step: the parts of one reward that a trainer asks for one at a time
        (TRL's normalise-then-sum: the rule term, then the RM) share one scoring of a batch.

        Args:
            conversations: as for `score`; step: the trainer's step.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> scorer = RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5))
            >>> scorer.score_once(["Hi"], step=1) is scorer.score_once(["Hi"], step=1), scorer.score_once(["Hi"], step=2) is scorer._last[1]
            (True, True)
        """
        key = (step, repr(conversations))
        if self._last is None or self._last[0] != key:
            self._last = (key, self.score(conversations, step=step))
        return self._last[1]

    def _keep(self, conversations: list[list[Message]], scores: Scores) -> None:
        """Every scored completion into `rollouts` (what the online refresh and monitors read)."""
        ids = [r.id for r in self.rules.rules]
        p = scores.verdicts.p_satisfied
        for i, c in enumerate(conversations):
            kept = scores.kept[i] if scores.kept is not None else np.ones(len(ids), dtype=bool)
            self.rollouts.add(Rollout(prompt=c[:-1], completion=c[-1].content, group=str(scores.groups[i]), step=scores.step,
                                      total=float(scores.total[i]), rule=float(scores.rule[i]),
                                      rm=None if scores.rm is None else float(scores.rm[i]), vetoed=bool(scores.vetoed[i]),
                                      p_satisfied={rid: float(p[i, j]) for j, rid in enumerate(ids) if kept[j] and not np.isnan(p[i, j])}))

    def _answer_only(self, conversation: list[Message]) -> tuple[list[Message], int]:
        """The conversation with its final assistant turn's reasoning cut, and the characters cut."""
        return (conversation, 0) if self.judge_reasoning else answer_only(conversation)

    def _verify(self, conversations: list[list[Message]], empty: np.ndarray, desc: str | None, on_item) -> Verdicts:
        """Verdicts for every conversation; empty responses are not sent: they follow no rule (0)."""
        judged = [i for i in range(len(conversations)) if not empty[i]]
        if len(judged) == len(conversations):
            return self.verifier.verify_messages(conversations, desc=desc, on_item=on_item)
        for _ in range(len(conversations) - len(judged)):
            if on_item:
                on_item()
        k = len(self.rules.rules)
        p = np.zeros((len(conversations), k))
        applies = np.ones((len(conversations), k)) if self.verifier.applicability else None
        errors: dict[int, str] = {}
        if judged:
            part = self.verifier.verify_messages([conversations[i] for i in judged], desc=desc, on_item=on_item)
            p[judged] = part.p_satisfied
            if applies is not None:
                applies[judged] = part.p_applies
            errors = {judged[i]: why for i, why in part.errors.items()}
        return Verdicts([r.id for r in self.rules.rules], p, applies, self.verifier.threshold, errors,
                        by_code=[r.id for r in self.rules.rules if r.check is not None])


def build_scorer(rules: RuleSet | str | Path, verifier="embedded", preset: RewardPreset | str = "default", *,
                 rm: RewardModel | str | Path | None = None, cache=None, llm_options: dict | None = None, **scorer_options) -> RewardScorer:
    """A `RewardScorer` from settings: how every adapter (TRL, verl, the reward server, `autorule
    score`, training, the quickstart) makes one.

    Args:
        rules: a RuleSet or the path of a rules file.
        verifier: a model spec (`autorule.llm.specs`) or an LLM object (used as it is).
        preset: a preset name ("default", "ternary", "paper") or a `RewardPreset`.
        rm: a `RewardModel`, or the path of one; None or "": none.
        cache: the verdict cache for a verifier loaded from its spec (as for `load_llm`).
        llm_options: backend options for a verifier loaded from its spec (as for `load_llm`).
        **scorer_options: `RewardScorer` options (``judge_reasoning``, ``empty_rule_reward``)
            and `Verifier` options (``threshold``, ``max_input_tokens``, ``max_unparsed``).

    Raises:
        RulesFileError: a rules file that cannot be read.
        LLMError: a verifier spec that cannot be loaded (`SpecError`: not a spec).
        ValueError: an unknown preset, a reward model that cannot be loaded, a bad option.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = build_scorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.6), "paper", threshold=0.7)
        >>> scorer.preset.name, scorer.verifier.threshold, scorer.score(["Hi"]).total.tolist()
        ('paper', 0.7, [-7.5])
    """
    from autorule.llm import load_llm

    ruleset = rules if isinstance(rules, RuleSet) else RuleSet.load(rules)
    llm = load_llm(verifier, cache=cache, **(llm_options or {})) if isinstance(verifier, str) else verifier
    if isinstance(rm, (str, Path)):
        rm = RewardModel(str(rm)) if str(rm) else None
    return RewardScorer(ruleset, llm, preset, rm=rm, **scorer_options)
