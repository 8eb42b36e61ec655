"""The rule reward: the weighted fraction of rules a response satisfies."""

from __future__ import annotations

import numpy as np

from autorule.rules import RuleSet
from autorule.verifier import Verdicts


def rule_reward(verdicts: Verdicts, rules: RuleSet | None = None, *, hard: bool = False, no_rules_value: float = 0.5,
                kept: np.ndarray | None = None) -> np.ndarray:
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
        kept: shape (n, k) bool, the rules kept for each response (rule dropout); None: all.

    Example:
        >>> import numpy as np
        >>> from autorule.verifier import Verdicts
        >>> rule_reward(Verdicts(["r1", "r2"], np.array([[0.9, 0.3], [0.2, float("nan")]]))).round(2).tolist()
        [0.6, 0.2]
    """
    values = verdicts.hard.astype(float) if hard else np.nan_to_num(verdicts.p_satisfied, nan=0.0)
    weights = np.array([r.weight for r in rules.rules], dtype=float) if rules is not None else np.ones(values.shape[1])
    mask = verdicts.applicable * weights[None, :]
    if kept is not None:  # dropped rules count like rules that do not apply
        mask = mask * kept
    total = mask.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        reward = (values * mask).sum(axis=1) / total
    reward = np.where(total > 0, reward, no_rules_value)
    if verdicts.errors:
        reward[list(verdicts.errors)] = np.nan
    return reward
