"""Rewards: the rule reward, a reward model's score, and their composition (presets).

One module per part: `rule_reward` (the weighted fraction of rules satisfied), `presets`
(how the parts are composed), `aggregation` (weighted sum or GDPO's normalise-then-sum per
GRPO group), `veto` (essential rules cap the total), `dropout` (rule dropout per group),
`reward_model` (a learned RM), `scorer` (`RewardScorer`, the object every adapter uses),
`rollouts` (recent scored completions), `components` (the parts' names in every trainer's logs).
"""

from autorule.reward.aggregation import AGGREGATIONS, group_normalise, normalise_then_sum
from autorule.reward.components import SAMPLE_KEYS, batch_components, log_components, sample_components
from autorule.reward.dropout import dropped_rules, kept_mask
from autorule.reward.presets import PRESETS, REWARD_KINDS, RewardPreset, check_reward_kind, compose, get_preset
from autorule.reward.reward_model import RM_STATS_FILE, RewardModel, word_counts
from autorule.reward.rollouts import Rollout, RolloutBuffer
from autorule.reward.rule_reward import rule_reward
from autorule.reward.scorer import RewardScorer, SampleReward, Scores, build_scorer
from autorule.reward.veto import apply_veto, essential_failures, vetoing_rules

__all__ = ["AGGREGATIONS", "PRESETS", "REWARD_KINDS", "RM_STATS_FILE", "SAMPLE_KEYS", "RewardModel", "RewardPreset", "RewardScorer", "Rollout",
           "RolloutBuffer", "SampleReward", "Scores", "apply_veto", "batch_components", "build_scorer", "check_reward_kind", "compose",
           "dropped_rules", "essential_failures", "get_preset", "group_normalise", "kept_mask", "log_components", "normalise_then_sum", "rule_reward",
           "sample_components", "vetoing_rules", "word_counts"]
