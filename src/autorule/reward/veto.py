"""Vetoes: an essential rule a response fails caps its total reward at a floor, so no other
part (a reward model's high score, other rules) can rescue it (OpenRS's critical-flaw veto,
DRO's gates)."""

from __future__ import annotations

import numpy as np

from autorule.rules import RuleSet
from autorule.verifier import Verdicts


def vetoing_rules(verdicts: Verdicts, rules: RuleSet) -> list[list[str]]:
    """Per response, the ids of the essential rules it failed.

    An essential rule fails when its P(Yes) is below the rule's `veto_below` (else the
    verdicts' threshold). A check with no readable verdict, a rule that does not apply
    (three-valued verdicts) and a response the server refused veto nothing.

    Args:
        verdicts: the verifier's verdicts, shape (n responses, k rules).
        rules: the RuleSet they judged (its `essential` and `veto_below`).

    Example:
        >>> from autorule.rules import Rule
        >>> rules = RuleSet(rules=[Rule(id="r1", text="Be safe.", essential=True), Rule(id="r2", text="Be kind.", essential=True)])
        >>> vetoing_rules(Verdicts(["r1", "r2"], np.array([[0.3, 0.9], [0.8, 0.1], [0.2, 0.2]])), rules)
        [['r1'], ['r2'], ['r1', 'r2']]
    """
    n = verdicts.p_satisfied.shape[0]
    out: list[list[str]] = [[] for _ in range(n)]
    for j, rule in enumerate(rules.rules):
        if not rule.essential:
            continue
        below = rule.veto_below if rule.veto_below is not None else verdicts.threshold
        failed = verdicts.applicable[:, j] & (np.nan_to_num(verdicts.p_satisfied[:, j], nan=1.0) < below)
        for i in np.flatnonzero(failed):
            if int(i) not in verdicts.errors:
                out[i].append(rule.id)
    return out


def essential_failures(verdicts: Verdicts, rules: RuleSet) -> np.ndarray:
    """Per response, whether it failed an essential rule (see `vetoing_rules`).

    Args:
        verdicts: the verifier's verdicts, shape (n responses, k rules).
        rules: the RuleSet they judged.

    Returns:
        shape (n,) bool.

    Example:
        >>> from autorule.rules import Rule
        >>> rules = RuleSet(rules=[Rule(id="r1", text="Be safe.", essential=True), Rule(id="r2", text="Be short.")])
        >>> essential_failures(Verdicts(["r1", "r2"], np.array([[0.3, 0.9], [0.8, 0.1], [float("nan"), 0.1]])), rules).tolist()
        [True, False, False]
    """
    return np.array([bool(ids) for ids in vetoing_rules(verdicts, rules)], dtype=bool)


def apply_veto(total: np.ndarray, vetoed: np.ndarray, floor) -> np.ndarray:
    """`total` with every vetoed response's value capped at `floor` (a number, or one per response).

    Example:
        >>> apply_veto(np.array([2.0, 0.5, -3.0]), np.array([True, False, True]), -1.0).tolist()
        [-1.0, 0.5, -3.0]
    """
    floor = np.broadcast_to(np.asarray(floor, dtype=float), np.shape(total))
    return np.where(vetoed, np.minimum(total, floor), total)
