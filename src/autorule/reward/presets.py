"""Presets: how the rule reward is computed and composed with a reward model and length."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from autorule.reward.aggregation import (
    check_aggregation,
    lowest_normalised,
    normalise_then_sum,
)


@dataclass(frozen=True)
class RewardPreset:
    """How the rule reward is computed and combined with a reward model and length.

    With ``aggregation="sum"`` (the default):
    total = rm_weight * rm + rule_scale * (rule - rule_offset) - length_penalty * overlength,
    clipped to [-clip, clip] when `clip` is set. `rm` is normalised with the RM's stored
    mean and std when `normalise_rm` is on. overlength = max(0, words - length_target) / length_target.

    With ``aggregation="normalize_then_sum"`` (GDPO; `autorule.reward.aggregation`) each part
    (rule, rm, -overlength) becomes a z-score within its GRPO group first, then
    total = rule_scale * z(rule) + rm_weight * z(rm) + length_penalty * z(-overlength), clipped likewise.

    A response that fails an essential rule has its total capped at `veto_floor`; None: the
    lowest value the preset can give (see `floor`).
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
    aggregation: str = "sum"  # "sum" or "normalize_then_sum"
    veto_floor: float | None = None

    def __post_init__(self) -> None:
        check_aggregation(self.aggregation)

    def weights(self, rm: bool) -> dict[str, float]:
        """Each part's weight: "rule", "rm" (with a reward model), "length" (with a length penalty).

        Example:
            >>> RewardPreset("x", rule_scale=2.0, length_penalty=0.5).weights(rm=True)
            {'rule': 2.0, 'rm': 1.0, 'length': 0.5}
        """
        out = {"rule": self.rule_scale}
        if rm:
            out["rm"] = self.rm_weight
        if self.length_penalty:
            out["length"] = self.length_penalty
        return out

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
    """A named preset, with the overrides that are not None.

    Args:
        name: "default", "ternary" or "paper".
        **overrides: RewardPreset fields (rule_scale, length_penalty, aggregation, veto_floor, ...).

    Raises:
        ValueError: an unknown preset or aggregation.

    Example:
        >>> get_preset("paper", aggregation="normalize_then_sum").aggregation
        'normalize_then_sum'
    """
    if name not in PRESETS:
        raise ValueError(f"unknown reward preset {name!r} (choose from {', '.join(PRESETS)})")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def overlength(preset: RewardPreset, words) -> np.ndarray:
    """max(0, words - length_target) / length_target per response."""
    return np.maximum(0.0, np.asarray(words, dtype=float) - preset.length_target) / preset.length_target


def compose(preset: RewardPreset, rule: np.ndarray, rm: np.ndarray | None = None, words: np.ndarray | None = None,
            groups=None) -> np.ndarray:
    """The total reward of each response from its parts, per the preset's aggregation.

    Args:
        preset: the RewardPreset.
        rule: shape (n,), the rule reward (fraction satisfied).
        rm: shape (n,), the reward model's scores (None: no RM).
        words: shape (n,), words per response (for the length penalty).
        groups: shape (n,), each response's GRPO group; needed by ``normalize_then_sum``.

    Raises:
        ValueError: ``normalize_then_sum`` without `groups`.

    Example:
        >>> compose(RewardPreset("x", rule_scale=10.0, rule_offset=0.75, clip=10.0), np.array([1.0, 0.5]), np.array([0.5, 30.0])).tolist()
        [3.0, 10.0]
        >>> compose(RewardPreset("x", aggregation="normalize_then_sum"), np.array([0.2, 0.6, 0.9]), groups=["a", "a", "b"]).round(3).tolist()
        [-0.707, 0.707, 0.0]
    """
    if preset.aggregation == "normalize_then_sum":
        if groups is None:
            raise ValueError("aggregation='normalize_then_sum' needs each response's GRPO group (groups=...)")
        parts = {"rule": np.asarray(rule, dtype=float)}
        if rm is not None:
            parts["rm"] = np.asarray(rm, dtype=float)
        if preset.length_penalty and words is not None:
            parts["length"] = -overlength(preset, words)
        total = normalise_then_sum(parts, preset.weights(rm is not None), groups)
    else:
        total = preset.rule_term(rule)
        if rm is not None:
            total = total + preset.rm_weight * np.asarray(rm, dtype=float)
        if preset.length_penalty and words is not None:
            total = total - preset.length_penalty * overlength(preset, words)
    if preset.clip is not None:
        total = np.clip(total, -preset.clip, preset.clip)
    return total


def floor(preset: RewardPreset, rm: np.ndarray | None = None, words: np.ndarray | None = None, group_sizes=None) -> np.ndarray | float:
    """Where a vetoed response's total is capped: `veto_floor` if set, else the lowest value the preset can give.

    That is -clip for a clipped preset; for ``normalize_then_sum``, every part at its group's
    lowest z-score (one value per response, by its group's size); for an unclipped sum, the
    rule term at 0 satisfied plus the batch's lowest RM score and largest length penalty
    (a reward model has no lower bound of its own).

    Args:
        preset: the RewardPreset.
        rm: shape (n,), the batch's RM scores (None: no RM).
        words: shape (n,), words per response.
        group_sizes: shape (n,), the size of each response's group (``normalize_then_sum``).

    Example:
        >>> floor(PRESETS["paper"]), floor(PRESETS["default"]), floor(PRESETS["default"], rm=np.array([1.5, -2.0]))
        (-10.0, 0.0, -2.0)
        >>> floor(RewardPreset("g", aggregation="normalize_then_sum"), rm=np.array([0.0, 1.0]), group_sizes=[2, 2]).round(4).tolist()
        [-1.4142, -1.4142]
    """
    if preset.veto_floor is not None:
        return float(preset.veto_floor)
    if preset.aggregation == "normalize_then_sum":
        weights = preset.weights(rm is not None)
        if not (preset.length_penalty and words is not None):
            weights.pop("length", None)
        lowest = np.array([lowest_normalised(weights, n) for n in (group_sizes if group_sizes is not None else [1])])
        return np.maximum(lowest, -preset.clip) if preset.clip is not None else lowest
    if preset.clip is not None:
        return -float(preset.clip)
    value = float(preset.rule_term(0.0))
    if rm is not None and len(rm) and not np.isnan(rm).all():
        value += preset.rm_weight * float(np.nanmin(rm))
    if preset.length_penalty and words is not None and len(words):
        value -= preset.length_penalty * float(overlength(preset, words).max())
    return value


# what an adapter returns: the composed reward, the rule term alone, or the reward model's score
# (the last two as separate reward functions for a trainer's own normalise-then-sum, TRL's)
REWARD_KINDS = ("total", "rule", "rm")


def check_reward_kind(kind: str) -> str:
    """`kind` if it names a reward every adapter can return, else a ValueError saying which do.

    Args:
        kind: "total" (the preset's composed reward), "rule" (the rule term alone) or "rm"
            (the reward model's score alone).

    Example:
        >>> check_reward_kind("rule")
        'rule'
        >>> check_reward_kind("sum")
        Traceback (most recent call last):
        ...
        ValueError: reward='sum': choose 'total' (the scorer's composed reward), 'rule' (the rule term alone) or 'rm' (the reward model's score alone)
    """
    if kind not in REWARD_KINDS:
        raise ValueError(f"reward={kind!r}: choose 'total' (the scorer's composed reward), 'rule' (the rule term alone) "
                         "or 'rm' (the reward model's score alone)")
    return kind
