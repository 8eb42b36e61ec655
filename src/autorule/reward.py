"""Rewards: the rule reward, a reward model's score, and their composition (presets)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from autorule.data import Message, to_conversation
from autorule.data.messages import alternating_turns
from autorule.data.reasoning import answer_only
from autorule.rules import RuleSet
from autorule.verifier import Verdicts


def rule_reward(verdicts: Verdicts, rules: RuleSet | None = None, *, hard: bool = False, no_rules_value: float = 0.5) -> np.ndarray:
    """Weighted mean of P(satisfied) (or of hard verdicts) over the rules that apply.

    Weights come from the RuleSet (uniform by default). A response to which no rule
    applies gets `no_rules_value`: neither rewarded nor punished for dodging every rule.
    Checks with no readable verdict are left out like rules that do not apply; a response
    the server refused (`verdicts.errors`) gets NaN: it has no reward.

    Args:
        verdicts: the verifier's `Verdicts`.
        rules: the RuleSet (for its weights); None: uniform weights.
        hard: average thresholded verdicts instead of P(satisfied).
        no_rules_value: the reward when no rule applies.

    Example:
        >>> import numpy as np
        >>> from autorule.verifier import Verdicts
        >>> rule_reward(Verdicts(["r1", "r2"], np.array([[0.9, 0.3], [0.2, float("nan")]]))).round(2).tolist()
        [0.6, 0.2]
    """
    values = verdicts.hard.astype(float) if hard else np.nan_to_num(verdicts.p_satisfied, nan=0.0)
    weights = np.array([r.weight for r in rules.rules], dtype=float) if rules is not None else np.ones(values.shape[1])
    mask = verdicts.applicable * weights[None, :]
    total = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reward = (values * mask).sum(axis=1) / total
    reward = np.where(total > 0, reward, no_rules_value)
    if verdicts.errors:
        reward[list(verdicts.errors)] = np.nan
    return reward


@dataclass(frozen=True)
class RewardPreset:
    """How the rule reward is computed and combined with a reward model and length.

    total = rm_weight * rm + rule_scale * (rule - rule_offset) - length_penalty * overlength,
    clipped to [-clip, clip] when `clip` is set. `rm` is normalised with the RM's stored
    mean and std when `normalise_rm` is on. overlength = max(0, words - length_target) / length_target.
    """

    name: str
    style: str = "default"  # verifier question: "default" or "paper"
    applicability: bool = False  # three-valued verdicts; average over applicable rules only
    hard: bool = False  # threshold verdicts before averaging
    rule_scale: float = 1.0
    rule_offset: float = 0.0
    rm_weight: float = 1.0
    normalise_rm: bool = True
    length_penalty: float = 0.0
    length_target: int = 300
    clip: float | None = None

    def rule_term(self, rule) -> np.ndarray:
        """The rule reward's part of the total: rule_scale * (rule - rule_offset)."""
        return self.rule_scale * (np.asarray(rule, dtype=float) - self.rule_offset)


PRESETS = {
    "default": RewardPreset("default"),
    "ternary": RewardPreset("ternary", applicability=True),
    # Wang & Xiong (2025): normalised RM + 10 x (fraction satisfied - 0.75), clipped to [-10, 10];
    # binary verdicts, "not applicable" counts as satisfied, every check demands conciseness
    "paper": RewardPreset("paper", style="paper", hard=True, rule_scale=10.0, rule_offset=0.75, clip=10.0),
}


def get_preset(name: str, **overrides) -> RewardPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown reward preset {name!r} (choose from {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def compose(preset: RewardPreset, rule: np.ndarray, rm: np.ndarray | None = None, words: np.ndarray | None = None) -> np.ndarray:
    total = preset.rule_term(rule)
    if rm is not None:
        total = total + preset.rm_weight * np.asarray(rm, dtype=float)
    if preset.length_penalty and words is not None:
        over = np.maximum(0.0, np.asarray(words, dtype=float) - preset.length_target) / preset.length_target
        total = total - preset.length_penalty * over
    if preset.clip is not None:
        total = np.clip(total, -preset.clip, preset.clip)
    return total


# what an adapter returns: the composed reward, or the rule term alone
REWARD_KINDS = ("total", "rule")


def check_reward_kind(kind: str) -> str:
    """`kind` if it names a reward every adapter can return, else a ValueError saying which do.

    Args:
        kind: "total" (the preset's composed reward) or "rule" (the rule term alone).

    Example:
        >>> check_reward_kind("rule")
        'rule'
        >>> check_reward_kind("rm")
        Traceback (most recent call last):
        ...
        ValueError: reward='rm': choose 'total' (the scorer's composed reward) or 'rule' (the rule term alone)
    """
    if kind not in REWARD_KINDS:
        raise ValueError(f"reward={kind!r}: choose 'total' (the scorer's composed reward) or 'rule' (the rule term alone)")
    return kind


RM_STATS_FILE = "autorule_rm.json"


class RewardModel:
    """Any Hugging Face sequence-classification model as a scalar reward.

    If the model directory holds `autorule_rm.json` (written by `autorule train-rm`),
    scores are normalised with its mean and std from the training data.

    Args:
        path: a Hugging Face sequence-classification model directory.
        device: "cuda" or "cpu" (default: cuda when available).
        batch_size: conversations per forward pass.
        max_length: tokens kept per conversation (cut from the left: the response stays).

    Example:
        >>> RewardModel("/no/such/model")
        Traceback (most recent call last):
        ...
        ValueError: cannot load reward model '/no/such/model': ...
    """

    def __init__(self, path: str, *, device: str | None = None, batch_size: int = 8, max_length: int = 2048):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.path = path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        except OSError as e:
            raise ValueError(f"cannot load reward model {path!r}: {e}") from e
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        stats_file = Path(path) / RM_STATS_FILE
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        self.mean, self.std = float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)) or 1.0

    def _text(self, messages: list[Message]) -> str:
        dicts = [m.model_dump() for m in messages]
        if self.tokenizer.chat_template:
            try:
                return self.tokenizer.apply_chat_template(dicts, tokenize=False)
            except Exception as e:  # noqa: BLE001 - a template that refuses a role (tool, system) or non-alternating turns
                if not getattr(self, "_folded_warned", False):
                    self._folded_warned = True
                    logging.getLogger("autorule").warning("the reward model's chat template refused a conversation (%s); such conversations "
                                                          "are given to it as alternating user/assistant turns", e)
                return self.tokenizer.apply_chat_template(alternating_turns(messages), tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in dicts)

    def score(self, conversations: list[list[Message]], normalise: bool = True) -> np.ndarray:
        torch = self.torch
        self.tokenizer.truncation_side = "left"  # keep the response; the RM judges it
        out = []
        for start in range(0, len(conversations), self.batch_size):
            texts = [self._text(c) for c in conversations[start : start + self.batch_size]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out.extend(self.model(**enc).logits[:, 0].float().tolist())
        scores = np.array(out)
        return (scores - self.mean) / self.std if normalise else scores


def word_counts(texts: list[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], dtype=float)


@dataclass
class Scores:
    """Rewards and their parts for a batch of responses.

    Args:
        total: the composed reward per response; rule: the rule reward (fraction
        satisfied); rm: the RM's scores (None without one); verdicts: the verdicts;
        seconds: time spent on rules and RM; reasoning_chars: per response, the
        characters of reasoning cut before judging (0 with ``judge_reasoning``);
        empty: per response, True when nothing was left to judge (not sent to the
        verifier; rule reward `RewardScorer.empty_rule_reward`).

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

    def __post_init__(self) -> None:
        n = len(self.rule)
        self.reasoning_chars = np.zeros(n, dtype=int) if self.reasoning_chars is None else np.asarray(self.reasoning_chars, dtype=int)
        self.empty = np.zeros(n, dtype=bool) if self.empty is None else np.asarray(self.empty, dtype=bool)

    @property
    def reasoning_chars_stripped(self) -> int:
        """Characters of reasoning cut from all responses before they were judged."""
        return int(self.reasoning_chars.sum())

    @property
    def empty_responses(self) -> int:
        """Responses with nothing left to judge (empty, whitespace, or cut off while reasoning)."""
        return int(self.empty.sum())

    def pass_rates(self) -> dict[str, float]:
        return self.verdicts.pass_rates()

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
                 judge_reasoning: bool = False, empty_rule_reward: float = 0.0, **verifier_options):
        from autorule.verifier import Verifier

        if not 0.0 <= empty_rule_reward <= 1.0:
            raise ValueError(f"empty_rule_reward={empty_rule_reward}: a rule reward is a fraction in [0, 1]")
        self.judge_reasoning, self.empty_rule_reward = judge_reasoning, float(empty_rule_reward)
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.rules = rules
        self.rm = rm
        self.verifier = Verifier(verifier_llm, rules, style=self.preset.style, applicability=self.preset.applicability, **verifier_options)

    def values(self, scores: Scores, kind: str = "total") -> np.ndarray:
        """The reward an adapter returns: `scores.total`, or the preset's rule term alone (`kind="rule"`).

        Args:
            scores: what `score` returned.
            kind: "total" or "rule" (see `check_reward_kind`).
        """
        return scores.total if check_reward_kind(kind) == "total" else self.preset.rule_term(scores.rule)

    def samples(self, scores: Scores, kind: str = "total") -> list[SampleReward]:
        """`scores` per response, the reward being `values(scores, kind)`.

        Args:
            scores: what `score` returned.
            kind: "total" or "rule" (see `check_reward_kind`).

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> scorer = RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.8))
            >>> scorer.samples(scorer.score(["<think>Hm.</think>Hi"]))
            [SampleReward(score=0.8, rule_reward=0.8, unparsed_checks=0, error=None, reasoning_chars_stripped=18, empty_response=False, rm_reward=None, malformed=False)]
        """
        values = self.values(scores, kind)
        unparsed = scores.unparsed_per_response()
        return [
            SampleReward(score=float(values[i]), rule_reward=float(scores.rule[i]), unparsed_checks=int(unparsed[i]), error=scores.errors.get(i),
                         reasoning_chars_stripped=int(scores.reasoning_chars[i]), empty_response=bool(scores.empty[i]),
                         rm_reward=None if scores.rm is None else float(scores.rm[i]))
            for i in range(len(values))
        ]

    def score(self, conversations: list, desc: str | None = None, on_item: Callable[[], None] | None = None) -> Scores:
        """Rewards for conversations that end with the response to reward.

        The response's reasoning is cut first (unless `judge_reasoning`); a response with
        nothing left gets `empty_rule_reward` without a verifier call.

        Args:
            conversations: each a list of `Message` or OpenAI-style dicts, or a bare reply string.
            desc: label of a progress bar (none when None).
            on_item: called as each conversation's rule checks finish (a caller's own progress bar).

        Raises:
            MessageError: (a ValueError) a message `to_conversation` cannot read.
        """
        conversations = [to_conversation(c) for c in conversations]
        conversations, reasoning_chars = zip(*(self._answer_only(c) for c in conversations)) if conversations else ((), ())
        conversations = list(conversations)
        empty = np.array([not c[-1].content.strip() for c in conversations], dtype=bool)
        start = time.perf_counter()
        verdicts = self._verify(conversations, empty, desc, on_item)
        rule = rule_reward(verdicts, self.rules, hard=self.preset.hard)
        rule[empty] = self.empty_rule_reward
        ruled = time.perf_counter()
        rm = self.rm.score(conversations, normalise=self.preset.normalise_rm) if self.rm is not None else None
        seconds = {"rules": ruled - start, "rm": time.perf_counter() - ruled}
        words = word_counts([c[-1].content for c in conversations])
        return Scores(total=compose(self.preset, rule, rm, words), rule=rule, rm=rm, verdicts=verdicts, seconds=seconds,
                      reasoning_chars=np.array(reasoning_chars, dtype=int), empty=empty)

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
        return Verdicts([r.id for r in self.rules.rules], p, applies, self.verifier.threshold, errors)


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
