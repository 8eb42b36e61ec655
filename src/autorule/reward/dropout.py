"""Rule dropout (Rubric Dropout, 2026): each GRPO group is scored on a seeded random subset of
the rules, so the policy cannot overfit one fixed rubric. Every completion of a group gets
the same subset (its advantages compare like with like); essential rules are never dropped."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from autorule.rules import RuleSet


def _group_seed(group) -> int:
    return int.from_bytes(hashlib.sha256(str(group).encode()).digest()[:8], "little")


def dropped_rules(rules: RuleSet, share: float, group, step: int | None, seed: int = 0) -> list[int]:
    """The indexes of the rules dropped for one GRPO group at one step, sorted.

    round(share x droppable rules) of the non-essential rules are dropped, chosen by
    ``numpy.random.default_rng([seed, step, sha256(group)])``; at least one rule is always kept.

    Args:
        rules: the rule set.
        share: the share of non-essential rules to drop, in [0, 1).
        group: the group's key (completions of one prompt share it).
        step: the trainer's step (None: 0).
        seed: the run's dropout seed.

    Raises:
        ValueError: `share` outside [0, 1).

    Example:
        >>> rules = RuleSet.from_texts([f"Rule {i}." for i in range(4)])
        >>> len(dropped_rules(rules, 0.5, "prompt-a", step=1)), dropped_rules(rules, 0.5, "prompt-a", 1) == dropped_rules(rules, 0.5, "prompt-a", 1)
        (2, True)
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"rule_dropout={share}: the share of rules dropped is in [0, 1)")
    droppable = [j for j, r in enumerate(rules.rules) if not r.essential]
    n_drop = min(int(round(share * len(droppable))), len(rules.rules) - 1, len(droppable))
    if n_drop <= 0:
        return []
    rng = np.random.default_rng([seed, step or 0, _group_seed(group)])
    return sorted(int(droppable[i]) for i in rng.choice(len(droppable), size=n_drop, replace=False))


def kept_mask(rules: RuleSet, share: float, groups: Sequence, step: int | None, seed: int = 0) -> np.ndarray:
    """Shape (n completions, k rules): True where a rule is kept for the completion's group.

    Example:
        >>> rules = RuleSet.from_texts(["A.", "B."])
        >>> kept_mask(rules, 0.5, ["g", "g", "h"], step=0).sum(axis=1).tolist()
        [1, 1, 1]
    """
    kept = np.ones((len(groups), len(rules.rules)), dtype=bool)
    subsets: dict = {}
    for i, g in enumerate(groups):
        if g not in subsets:
            subsets[g] = dropped_rules(rules, share, g, step, seed)
        kept[i, subsets[g]] = False
    return kept
