"""Presets: how the rule reward is computed and composed with a reward model and length."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


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
