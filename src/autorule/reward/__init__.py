"""Rewards: the rule reward, a reward model's score, and their composition (presets).

One module per part: `rule_reward` (the weighted fraction of rules satisfied), `presets`
(how the parts are composed), `reward_model` (a learned RM), `scorer` (`RewardScorer`, the
object every adapter uses).
"""

from autorule.reward.presets import (
           PRESETS,
           REWARD_KINDS,
           RewardPreset,
           check_reward_kind,
           compose,
           get_preset,
)
from autorule.reward.reward_model import RM_STATS_FILE, RewardModel, word_counts
from autorule.reward.rule_reward import rule_reward
from autorule.reward.scorer import RewardScorer, SampleReward, Scores, build_scorer

__all__ = ["PRESETS", "REWARD_KINDS", "RM_STATS_FILE", "RewardModel", "RewardPreset", "RewardScorer", "SampleReward", "Scores",
           "build_scorer", "check_reward_kind", "compose", "get_preset", "rule_reward", "word_counts"]
