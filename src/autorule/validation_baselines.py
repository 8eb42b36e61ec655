"""The ICAI protocol beside a rule set's accuracy: a no-rules judge, a flipped-label control,
per-rule performance, and mean ± s.d. over seeds.

Inverse Constitutional AI (Findeis et al., 2024; github.com/rdnfn/icai) reports every
constitution next to a judge given no principles and next to the same figures on flipped
labels, so that a reader sees whether the principles help at all. Here:

- the **no-rules judge** is the verifier's own LLM asked "Is Assistant A's reply better than
  Assistant B's?" (one yes/no check per pair per seed, P(Yes) read as P(A), so it runs on every
  backend the verifier runs on), with the A/B order of each pair set by the seeded coin
  `chosen_first` that reasoning and validation share. It picks the chosen reply when
  P(chosen) > 0.5; exactly 0.5 is a tie; no readable verdict (or a refused request) is no pick.
- the **flipped-label control** scores the same picks against every label flipped: right and
  wrong swap, ties and non-picks stay (they are correct under neither labelling), so
  accuracy + flipped accuracy = 1 − (ties + no picks) / pairs.
- per rule, ICAI's ``relevance`` (share of judged pairs where the rule gives a verdict: its
  verdicts on the two replies differ), ``acc`` (agreement with the label on those, autorule's
  ``agreement``) and ``perf = (acc − 0.5) · relevance · 2`` (= (agree − disagree) / pairs).

The prompts are template files in ``validation_prompts/``; their text is part of each check's
cache key (the prompt is), like the verifier's.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np

from autorule.data import Message, PreferencePair
from autorule.data.pairs import chosen_first

PROMPTS = Path(__file__).parent / "validation_prompts"
_PREFIX_TEXT = (PROMPTS / "no_rules.txt").read_text(encoding="utf-8")
NO_RULES_PREFIX = Template(_PREFIX_TEXT)
NO_RULES_QUESTION = (PROMPTS / "no_rules_question.txt").read_text(encoding="utf-8").rstrip("\n")
TEMPLATE_VERSION = "no-rules@" + hashlib.sha256((_PREFIX_TEXT + NO_RULES_QUESTION).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- pure statistics


def icai_perf(acc: float, relevance: float) -> float:
    """ICAI's performance of one principle: ``(acc − 0.5) · relevance · 2``.

    A rule that never gives a verdict (relevance 0, acc undefined) has perf 0, as in ICAI;
    with no judged pair at all (relevance undefined) perf is NaN.

    Args:
        acc: agreement with the label on the pairs where the rule gives a verdict (0..1, NaN if none).
        relevance: share of pairs where it gives one (0..1, NaN when no pair was judged).

    Returns:
        perf, in −1..1: 1 when the rule decides every pair and always agrees.

    Example:
        >>> icai_perf(2 / 3, 0.75), icai_perf(float("nan"), 0.0), icai_perf(1.0, 1.0)
        (0.25, 0.0, 1.0)
    """
    if math.isnan(relevance):
        return float("nan")
    if relevance == 0:
        return 0.0
    return round((acc - 0.5) * relevance * 2, 12)


def pick_counts(p_chosen: np.ndarray) -> dict:
    """A judge's picks against the labels, from P(the chosen reply is better) per pair.

    Args:
        p_chosen: (pairs,) P(chosen better); NaN where no verdict was read (or the request was refused).

    Returns:
        ``correct`` (P > 0.5), ``wrong`` (P < 0.5), ``ties`` (P = 0.5), ``unread`` (NaN), ``accuracy``
        (correct over all pairs: a tie or no pick is not a correct pick) and ``accuracy_without_ties``
        (correct over right + wrong); accuracies are NaN without pairs.

    Example:
        >>> pick_counts(np.array([0.9, 0.2, 0.5, float("nan")]))
        {'accuracy': 0.25, 'accuracy_without_ties': 0.5, 'correct': 1, 'wrong': 1, 'ties': 1, 'unread': 1}
    """
    p = np.asarray(p_chosen, dtype=float)
    read = ~np.isnan(p)
    correct, wrong = int((p[read] > 0.5).sum()), int((p[read] < 0.5).sum())
    ties, unread = int((p[read] == 0.5).sum()), int((~read).sum())
    n, decided = len(p), correct + wrong
    return {"accuracy": correct / n if n else float("nan"), "accuracy_without_ties": correct / decided if decided else float("nan"),
            "correct": correct, "wrong": wrong, "ties": ties, "unread": unread}


def flipped(counts: dict) -> dict:
    """The same picks scored against every label flipped: right and wrong swap; ties (and unread
    pairs) stay, correct under neither labelling.

    Args:
        counts: ``correct``, ``wrong``, ``ties`` and optionally ``unread`` (as `pick_counts` or
            `PreferenceAccuracy.to_dict` give).

    Returns:
        The same keys, for the flipped labels.

    Example:
        >>> flipped({"correct": 2, "wrong": 1, "ties": 1})
        {'accuracy': 0.25, 'accuracy_without_ties': 0.3333333333333333, 'correct': 1, 'wrong': 2, 'ties': 1}
    """
    correct, wrong, ties = counts["wrong"], counts["correct"], counts["ties"]
    n = correct + wrong + ties + counts.get("unread", 0)
    out = {"accuracy": correct / n if n else float("nan"), "accuracy_without_ties": correct / (correct + wrong) if correct + wrong else float("nan"),
           "correct": correct, "wrong": wrong, "ties": ties}
    if "unread" in counts:
        out["unread"] = counts["unread"]
    return out


def mean_sd(values: list[float]) -> dict:
    """Mean and sample standard deviation (n − 1) over seeds; s.d. is None for one value.

    Args:
        values: one figure per seed (NaN for an undefined one: then the mean is NaN too).

    Example:
        >>> mean_sd([0.75, 0.5])
        {'mean': 0.625, 'sd': 0.176777, 'values': [0.75, 0.5]}
        >>> mean_sd([0.5])
        {'mean': 0.5, 'sd': None, 'values': [0.5]}
    """
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return {"mean": float("nan"), "sd": None, "values": vals}
    sd = round(statistics.stdev(vals), 6) if len(vals) > 1 else None
    return {"mean": round(statistics.fmean(vals), 12), "sd": sd, "values": vals}


# --------------------------------------------------------------------------- the no-rules judge


def _turn(m: Message) -> str:
    return f"<{m.role}>\n{m.content}\n</{m.role}>"


def _nonce(texts: list[str]) -> str:
    # from the content itself, so the content cannot contain it (and the cache key stays stable)
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]


@dataclass
class JudgeRun:
    """One seed's no-rules verdicts.

    Args:
        seed: the A/B order's seed.
        p_chosen: (pairs,) P(the chosen reply is better); NaN where none was read or the request was refused.
        a_is_chosen: (pairs,) whether the chosen reply was shown as A.
        refused: pair index -> why the server refused its request.
    """

    seed: int
    p_chosen: np.ndarray
    a_is_chosen: np.ndarray
    refused: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The seed's picks (`pick_counts`), the flipped-label control, refusals and how often A was picked.

        ``a_picked``: among the pairs with a pick, the share where the judge picked A (0.5: no
        position preference; the A/B coin keeps a preference from favouring either label).

        Example:
            >>> run = JudgeRun(0, np.array([0.8, 0.3]), np.array([True, False]))
            >>> d = run.to_dict(); d["accuracy"], d["a_picked"], d["flipped"]["accuracy"]
            (0.5, 1.0, 0.5)
        """
        counts = pick_counts(self.p_chosen)
        p_a = np.where(self.a_is_chosen, self.p_chosen, 1 - self.p_chosen)
        decided = ~np.isnan(p_a) & (p_a != 0.5)
        a_picked = float((p_a[decided] > 0.5).mean()) if decided.any() else float("nan")
        return {**counts, "refused": len(self.refused), "a_picked": a_picked, "flipped": flipped(counts)}


class NoRulesJudge:
    """The verifier's LLM asked which of a pair's replies is better, with no rules: ICAI's no-principles baseline.

    One yes/no check per pair ("Is Assistant A's reply better than Assistant B's?"); P(Yes) is
    P(A). The pair's conversation is cut in the middle of its turns to fit the context, like the
    verifier's.

    Args:
        llm: the verifier's LLM (any backend with `LLM.score_yes_no_batch`).
        context: an `autorule.llm.fitting.Context` to fit prompts to (the verifier's; None: not fitted).

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.data import load_pairs
        >>> pairs = load_pairs([{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]).pairs
        >>> run = NoRulesJudge(FakeLLM(p_yes=0.8)).judge(pairs, seed=0)
        >>> run.a_is_chosen.tolist(), run.p_chosen.round(6).tolist()  # the chosen reply shown as B: P(chosen) = 1 - 0.8
        ([False], [0.2])
    """

    def __init__(self, llm, context=None):
        self.llm, self.context = llm, context
        self._question_tokens = llm.count_tokens(NO_RULES_QUESTION)

    def prefix(self, pair: PreferencePair, a_is_chosen: bool) -> str:
        """The prompt before the question: instructions, the shared turns, then reply A and reply B.

        Args:
            pair: the preference pair; a_is_chosen: show the chosen side as A.

        Example:
            >>> from autorule.data import load_pairs
            >>> pair = load_pairs([{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])[0]
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> text = NoRulesJudge(FakeLLM()).prefix(pair, True)
            >>> text.index("Hi!") < text.index("No.")
            True
        """
        sides = ("chosen", "rejected") if a_is_chosen else ("rejected", "chosen")
        shared = list(pair.prompt)
        parts = [[*(pair.chosen_history if s == "chosen" else pair.rejected_history), Message(role="assistant", content=getattr(pair, s))] for s in sides]
        messages = [*shared, *parts[0], *parts[1]]

        def render(texts: list[str]) -> str:
            ms = [Message(role=m.role, content=t) for m, t in zip(messages, texts)]
            a, b = ms[len(shared): len(shared) + len(parts[0])], ms[len(shared) + len(parts[0]):]
            return NO_RULES_PREFIX.substitute(
                nonce=_nonce([m.content for m in messages]), turns="\n".join(_turn(m) for m in ms[: len(shared)]),
                reply_a="\n".join(_turn(m) for m in a[:-1]) + ("\n" if len(a) > 1 else "") + a[-1].content,
                reply_b="\n".join(_turn(m) for m in b[:-1]) + ("\n" if len(b) > 1 else "") + b[-1].content)

        texts = [m.content for m in messages]
        if self.context is None:
            return render(texts)
        return self.context.fit(render, texts, self._question_tokens).text

    def judge(self, pairs: list[PreferencePair], seed: int) -> JudgeRun:
        """One check per pair, in the A/B order of `seed`.

        Args:
            pairs: the pairs; seed: the A/B coin's seed (`chosen_first`).

        Returns:
            `JudgeRun`; a request the server refuses gives NaN and its reason, the others still run.
        """
        a_first = np.array([chosen_first(p.id, seed) for p in pairs], dtype=bool)
        errors: dict[int, str] = {}
        items = [(self.prefix(p, bool(a)), [NO_RULES_QUESTION]) for p, a in zip(pairs, a_first)]
        scored = self.llm.score_yes_no_batch(items, errors=errors) if items else []
        p_a = np.array([row[0] if row else np.nan for row in scored], dtype=float)
        for i in errors:
            p_a[i] = np.nan
        return JudgeRun(seed, np.where(a_first, p_a, 1 - p_a), a_first, errors)


# --------------------------------------------------------------------------- the protocol's summary


def seed_list(seed: int, seeds: int) -> list[int]:
    """The seeds a run with ``--seed SEED --seeds N`` uses: SEED, SEED + 1, ..., SEED + N − 1.

    Raises:
        ValueError: fewer than one seed.

    Example:
        >>> seed_list(3, 2)
        [3, 4]
    """
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, not {seeds}")
    return list(range(seed, seed + seeds))


def icai_summary(rule_set: dict, judge_runs: list[JudgeRun] | None, cv_by_seed: dict[int, float]) -> dict:
    """The protocol's figures side by side, per seed and as mean ± s.d. over seeds.

    The rule verdicts do not depend on the A/B order (each reply is judged alone), so the rule
    set's figures are the same for every seed (s.d. 0); the no-rules judge's and the learned
    weights' cross-validated accuracy change with it.

    Args:
        rule_set: the rule set's `PreferenceAccuracy.to_dict`.
        judge_runs: the no-rules judge's run per seed (None: it was turned off).
        cv_by_seed: seed -> the learned weights' cross-validated accuracy under that seed's A/B order.

    Returns:
        ``seeds``, ``per_seed`` (each seed's rule set, flipped rule set, no-rules judge with its
        flipped control, CV accuracy) and ``summary`` (``{"mean", "sd", "values"}`` of each
        accuracy: ``rule_set``, ``rule_set_flipped``, ``no_rules``, ``no_rules_flipped``,
        ``learned_weights_cv``), and how ties are counted.

    Example:
        >>> s = icai_summary({"correct": 2, "wrong": 1, "ties": 1}, None, {0: 0.5})
        >>> s["summary"]["rule_set"]["mean"], s["summary"]["rule_set_flipped"]["mean"], s["no_rules_judge"]
        (0.5, 0.25, False)
    """
    seeds = sorted(cv_by_seed)
    rs = {**rule_set, "accuracy": rule_set["correct"] / max(rule_set["correct"] + rule_set["wrong"] + rule_set["ties"], 1)} if "accuracy" not in rule_set else rule_set
    judged = {r.seed: r.to_dict() for r in judge_runs or []}
    per_seed = []
    for s in seeds:
        row = {"seed": s, "rule_set": rs, "rule_set_flipped": flipped(rs), "learned_weights_cv": cv_by_seed[s]}
        if s in judged:
            row["no_rules"] = judged[s]
        per_seed.append(row)
    summary = {
        "rule_set": mean_sd([r["rule_set"]["accuracy"] for r in per_seed]),
        "rule_set_flipped": mean_sd([r["rule_set_flipped"]["accuracy"] for r in per_seed]),
        "learned_weights_cv": mean_sd([r["learned_weights_cv"] for r in per_seed]),
    }
    if judged:
        summary["no_rules"] = mean_sd([r["no_rules"]["accuracy"] for r in per_seed])
        summary["no_rules_flipped"] = mean_sd([r["no_rules"]["flipped"]["accuracy"] for r in per_seed])
        summary["no_rules_without_ties"] = mean_sd([r["no_rules"]["accuracy_without_ties"] for r in per_seed])
    return {
        "seeds": seeds,
        "no_rules_judge": bool(judged),
        "template": TEMPLATE_VERSION if judged else None,
        "ties": "a tie (equal rule-set scores; the judge's P(A) exactly 0.5) and an unread verdict are correct under neither labelling",
        "per_seed": per_seed,
        "summary": summary,
    }


def format_figure(figure: dict, digits: int = 1) -> str:
    """A summary figure as a percentage, with ± s.d. when there were several seeds.

    Example:
        >>> format_figure({"mean": 0.625, "sd": 0.176777}), format_figure({"mean": 0.5, "sd": None}), format_figure({"mean": None, "sd": None})
        ('62.5% ± 17.7', '50.0%', 'n/a')
    """
    mean = figure.get("mean")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{100 * mean:.{digits}f}%"
    return text + (f" ± {100 * figure['sd']:.{digits}f}" if figure.get("sd") is not None else "")


def plan_stage(judge: NoRulesJudge, speed, pairs, seeds: int):
    """The no-rules judge's share of a validation plan: one yes/no check per pair per seed.

    Args:
        judge: the judge (its LLM and context); speed: the backend's `Speed` (None: not timed);
        pairs: any iterable of pairs (one pass; a sample's prompts are counted); seeds: how many.

    Returns:
        an `autorule.plan.StagePlan`.
    """
    from autorule.plan import StagePlan, _limit, reservoir

    llm = judge.llm
    sample, count = reservoir(pairs, _limit(llm))
    items = [(judge.prefix(p, chosen_first(p.id, 0)), [NO_RULES_QUESTION]) for p in sample]
    prefix_tokens = sum(llm.count_tokens(p) for p, _ in items) * count / max(len(sample), 1)
    cached = llm.cached_checks(items) if hasattr(llm, "cached_checks") else 0
    cached = round(cached * count / max(len(sample), 1))
    calls = count * seeds
    todo_share = (count - cached) / count if count else 0.0
    prompt_tokens = round((prefix_tokens + count * judge._question_tokens) * todo_share * seeds)
    seconds = speed.checks_seconds(round(calls * todo_share), round(prefix_tokens * todo_share * seeds), round(calls * todo_share)) if speed else math.nan
    note = f"{count:,} pairs x {seeds} seed{'s' if seeds > 1 else ''}: one 'which reply is better' check each (--no-baseline: none)"
    if count > len(sample):
        note += f"; tokens and cache hits counted on {len(sample)} of {count:,} pairs"
    return StagePlan("no-rules judge", "yes/no checks", calls, round(cached * seeds), prompt_tokens, 0, seconds, note)
