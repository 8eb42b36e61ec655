"""Disagreement pairs: completions of one prompt the reward model and the rules rank the other way round."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from autorule.data import PreferencePair
from autorule.data.pairs import pair_id
from autorule.reward.rollouts import Rollout


@dataclass(frozen=True)
class DisagreementPair:
    """Two completions of one prompt that the reward model and the rules rank the other way round.

    Args:
        group: the GRPO group (one prompt's completions at one step).
        rule_preferred: the completion with the higher rule reward (shown as *chosen*).
        rm_preferred: the completion with the higher RM score (shown as *rejected*).

    Example:
        >>> a = Rollout([], "Long flattering answer", "g", 4, 0.0, rule=0.2, rm=1.5, vetoed=False)
        >>> b = Rollout([], "Short answer", "g", 4, 0.0, rule=0.8, rm=0.5, vetoed=False)
        >>> pair = DisagreementPair("g", rule_preferred=b, rm_preferred=a)
        >>> pair.rm_margin, round(pair.rule_margin, 6), round(pair.score, 6), pair.to_pair().chosen
        (1.0, 0.6, 0.6, 'Short answer')
    """

    group: str
    rule_preferred: Rollout
    rm_preferred: Rollout

    @property
    def rm_margin(self) -> float:
        """How much higher the RM scores its preferred completion."""
        return float(self.rm_preferred.rm - self.rule_preferred.rm)

    @property
    def rule_margin(self) -> float:
        """How much higher the rule reward is for its preferred completion (a fraction of rules)."""
        return float(self.rule_preferred.rule - self.rm_preferred.rule)

    @property
    def score(self) -> float:
        """The disagreement: RM margin x rule margin (both positive)."""
        return self.rm_margin * self.rule_margin

    def to_pair(self) -> PreferencePair:
        """The preference pair extraction reads: chosen = the rules' pick, rejected = the RM's."""
        prompt = list(self.rule_preferred.prompt)
        chosen, rejected = self.rule_preferred.completion, self.rm_preferred.completion
        return PreferencePair(id=pair_id(prompt, chosen, rejected), prompt=prompt, chosen=chosen, rejected=rejected,
                              source=f"rollouts of group {self.group}")

    def to_dict(self) -> dict:
        """The pair as its record holds it: the prompt, both completions and their rewards."""
        def side(r: Rollout) -> dict:
            return {"completion": r.completion, "rm": r.rm, "rule": r.rule, "total": r.total, "step": r.step}

        return {"pair_id": self.to_pair().id, "group": self.group, "prompt": [m.model_dump() for m in self.rule_preferred.prompt],
                "chosen_rule_preferred": side(self.rule_preferred), "rejected_rm_preferred": side(self.rm_preferred),
                "rm_margin": self.rm_margin, "rule_margin": self.rule_margin, "disagreement": self.score}


def _usable(r: Rollout) -> str | None:
    """Why a rollout cannot enter a disagreement pair, or None."""
    if r.rm is None or not math.isfinite(r.rm):
        return "no reward-model score"
    if r.rule is None or not math.isfinite(r.rule):
        return "no rule reward (refused by the verifier)"
    return None


def disagreement_pairs(rollouts: Sequence[Rollout], limit: int) -> tuple[list[DisagreementPair], Counter]:
    """The most disagreeing pair of each group, the `limit` groups that disagree most first.

    Args:
        rollouts: scored completions (their `group`, `rm` and `rule` are read).
        limit: the most pairs returned.

    Returns:
        The pairs, most disagreeing first, and counts: rollouts read, those left out by reason,
        groups, groups with no disagreeing pair, pairs left out past `limit`.

    Example:
        >>> rows = [("g1", 0.9, 0.0), ("g1", 0.1, 1.0), ("g2", 0.5, 0.5), ("g2", 0.6, 0.6)]
        >>> rollouts = [Rollout([], f"c{i}", g, 1, 0.0, rule, rm, False) for i, (g, rm, rule) in enumerate(rows)]
        >>> pairs, counts = disagreement_pairs(rollouts, 4)
        >>> [(p.group, p.rm_preferred.completion, p.rule_preferred.completion) for p in pairs], counts["groups without a disagreement"]
        ([('g1', 'c0', 'c1')], 1)
    """
    counts: Counter = Counter(rollouts=len(rollouts))
    groups: dict[str, list[Rollout]] = {}
    for r in rollouts:
        why = _usable(r)
        if why:
            counts[f"rollouts left out: {why}"] += 1
        else:
            groups.setdefault(r.group, []).append(r)
    counts["groups"] = len(groups)
    best: list[tuple[float, int, DisagreementPair]] = []
    for order, (group, members) in enumerate(groups.items()):
        top: DisagreementPair | None = None
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                if (a.rm - b.rm) * (a.rule - b.rule) >= 0:
                    continue  # both rewards rank them alike (or one calls it a tie)
                pair = DisagreementPair(group, rule_preferred=a if a.rule > b.rule else b, rm_preferred=a if a.rm > b.rm else b)
                if top is None or pair.score > top.score:
                    top = pair
        if top is None:
            counts["groups without a disagreement"] += 1
        else:
            best.append((-top.score, order, top))
    best.sort(key=lambda t: (t[0], t[1]))
    chosen = [p for _, _, p in best[:limit]]
    counts["pairs chosen"] = len(chosen)
    counts["pairs left out past the limit"] = max(0, len(best) - limit)
    return chosen, counts
