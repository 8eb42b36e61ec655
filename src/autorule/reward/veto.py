"""Vetoes: an essential rule a response fails caps its total reward at a floor, so no other
part (a reward model's high score, other rules) can rescue it (OpenRS's critical-flaw veto,
DRO's gates)."""

from __future__ import annotations

import numpy as np

from autorule.rules import RuleSet
from autorule.verifier import Verdicts


def vetoing_rules(verdicts: Verdicts, rules: RuleSet) -> list[list[str]]:
    """Per response, the ids of the essential rules it failed (as `essential_failures` decides).

    Example:
        >>> from autorule.rules import Rule
        >>> rules = RuleSet(rules=[Rule(id="r1", text="Be safe.", essential=True), Rule(id="r2", text="Be kind.", essential=True)])
        >>> vetoing_rules(Verdicts(["r1", "r2"], np.array([[0.3, 0.9], [0.8, 0.1], [0.2, 0.2]])), rules)
        [['r1'], ['r2'], ['r1', 'r2']]
    """
    failed = [_failed(verdicts, rule, j) for j, rule in enumerate(rules.rules)]
    return [[r.id for r, f in zip(rules.rules, failed) if f is not None and f[i]] for i in range(verdicts.p_satisfied.shape[0])]


def _failed(verdicts: Verdicts, rule, j: int) -> np.ndarray | None:
    """Shape (n,): where an essential rule failed (None for a rule that is not essential)."""
    if not rule.essential:
        return None
    below = rule.veto_below if rule.veto_below is not None else verdicts.threshold
    failed = verdicts.applicable[:, j] & (np.nan_to_num(verdicts.p_satisfied[:, j], nan=1.0) < below)
    if verdicts.errors:
        failed[list(verdicts.errors)] = False
    return failed


def essential_failures(verdicts: Verdicts, rules: RuleSet) -> np.ndarray:
    """Per response, whether it failed an essential rule.

    An essential rule fails when its P(Yes) is below the rule's `veto_below` (else the
    verdicts' threshold). A check with no readable verdict, a rule that does not apply
    (three-valued verdicts) and a response the server refused veto nothing.

    Args:
        verdicts: the verifier's verdicts, shape (n responses, k rules).
        rules: the RuleSet they judged (its `essential` and `veto_below`).

    Returns:
        shape (n,) bool.

    Example:
        >>> from autorule.rules import Rule
        >>> rules = RuleSet(rules=[Rule(id="r1", text="Be safe.", essential=True), Rule(id="r2", text="Be short.")])
        >>> essential_failures(Verdicts(["r1", "r2"], np.array([[0.3, 0.9], [0.8, 0.1], [float("nan"), 0.1]])), rules).tolist()
        [True, False, False]
    """
    failed = np.zeros(verdicts.p_satisfied.shape[0], dtype=bool)
    for j, rule in enumerate(rules.rules):
        if (f := _failed(verdicts, rule, j)) is not None:
            failed |= f
    return failed


def apply_veto(total: np.ndarray, vetoed: np.ndarray, floor) -> np.ndarray:
    """`total` with every vetoed response's value capped at `floor` (a number, or one per response).

    Example:
        >>> apply_veto(np.array([2.0, 0.5, -3.0]), np.array([True, False, True]), -1.0).tolist()
        [-1.0, 0.5, -3.0]
    """
    floor = np.broadcast_to(np.asarray(floor, dtype=float), np.shape(total))
    return np.where(vetoed, np.minimum(total, floor), total)
