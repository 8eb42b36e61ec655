"""The reward's parts, under one set of names in every trainer's logs.

TRL logs each name's mean per call as ``<reward name>/<name>``; verl takes the per-sample
dicts as ``reward_extra_info``; OpenRLHF's reward service returns them per sample in
``extra_logs``. The names are the same in all three.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from autorule.reward.scorer import RewardScorer, SampleReward

# per sample: the weighted total and its parts, what capped or thinned it, what was cut or refused
SAMPLE_KEYS = ("total_reward", "rule_reward", "rm_reward", "vetoed", "dropped_rules", "unparsed_checks", "refused",
               "reasoning_chars_stripped", "empty_response", "malformed")
# averaged over a batch's judged samples (the SampleReward field each reads); every other sample key is a count
AVERAGED = {"total_reward": "total", "rule_reward": "rule_reward", "rm_reward": "rm_reward", "dropped_rules": "dropped_rules"}
# per batch, the same for every sample: the weights applied and the rule set's state
SETTING_KEYS = ("rule_weight", "rm_weight", "length_weight", "active_rules", "refreshed_rules")


def settings(scorer: RewardScorer) -> dict[str, float]:
    """The weights the scorer's preset applies and its rule set's state.

    `refreshed_rules` counts rules added or retired by `RewardScorer.set_rules` so far.

    Example:
        >>> from autorule.rules import RuleSet
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> settings(RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5), "paper"))
        {'rule_weight': 10.0, 'rm_weight': 0.0, 'length_weight': 0.0, 'active_rules': 1.0, 'refreshed_rules': 0.0}
    """
    weights = scorer.preset.weights(scorer.rm is not None)
    refreshed = sum(len(c["added"]) + len(c["retired"]) for c in scorer.rule_changes)
    return {"rule_weight": float(weights["rule"]), "rm_weight": float(weights.get("rm", 0.0)), "length_weight": float(weights.get("length", 0.0)),
            "active_rules": float(len(scorer.rules)), "refreshed_rules": float(refreshed)}


def sample_components(sample: SampleReward, scorer_settings: dict[str, float] | None = None, rule_ids: list[str] | None = None) -> dict[str, float]:
    """One sample's parts as numbers (NaN -> 0, flags -> 0/1; `rm_reward` only with an RM), plus
    `scorer_settings`, plus ``pass_rate/<rule id>`` for each of `rule_ids` (`SampleReward.passes`;
    NaN for a sample with none, e.g. malformed), so every sample of one scorer has the same keys.

    Args:
        sample: the sample's `SampleReward`.
        scorer_settings: what `settings` returned for its scorer (None: left out).
        rule_ids: the scorer's rule ids (None: no per-rule values).

    Example:
        >>> sample_components(SampleReward(0.5, 0.5, total=0.5, vetoed=True))
        {'total_reward': 0.5, 'rule_reward': 0.5, 'vetoed': 1.0, 'dropped_rules': 0.0, 'unparsed_checks': 0.0, 'refused': 0.0, 'reasoning_chars_stripped': 0.0, 'empty_response': 0.0, 'malformed': 0.0}
    """
    out = {"total_reward": float(np.nan_to_num(sample.total)), "rule_reward": float(np.nan_to_num(sample.rule_reward))}
    if sample.rm_reward is not None:
        out["rm_reward"] = float(np.nan_to_num(sample.rm_reward))
    out.update({"vetoed": float(sample.vetoed), "dropped_rules": float(sample.dropped_rules), "unparsed_checks": float(sample.unparsed_checks),
                "refused": float(sample.refused), "reasoning_chars_stripped": float(sample.reasoning_chars_stripped),
                "empty_response": float(sample.empty_response), "malformed": float(sample.malformed)})
    out.update(scorer_settings or {})
    for rid in rule_ids or []:
        out[f"pass_rate/{rid}"] = float((sample.passes or {}).get(rid, float("nan")))
    return out


def batch_components(samples: list[SampleReward], scorer: RewardScorer, pass_rates: dict[str, float] | None = None) -> dict[str, float]:
    """A batch's parts: the mean of each per-sample name over the judged samples (counts for
    `vetoed`, `refused`, `malformed`, `empty_response`), the settings, and ``pass_rate/<rule id>``.

    Args:
        samples: the batch's `SampleReward`s (malformed ones included: they are counted).
        scorer: the scorer that made them.
        pass_rates: per rule id, the fraction of responses satisfying it (NaN ones left out).

    Example:
        >>> from autorule.rules import RuleSet
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5))
        >>> parts = batch_components([SampleReward(0.2, 0.2, total=0.2), SampleReward(0.6, 0.6, total=0.6, vetoed=True), SampleReward.unreadable()], scorer)
        >>> round(parts["total_reward"], 3), parts["vetoed"], parts["malformed"]
        (0.4, 1.0, 1.0)
    """
    judged = [s for s in samples if not s.malformed and not s.refused]
    rows = [sample_components(s) for s in samples]
    out: dict[str, float] = {}
    for key in SAMPLE_KEYS:
        if key in AVERAGED:
            if key == "rm_reward" and scorer.rm is None:
                continue
            values = [v for v in (getattr(s, AVERAGED[key]) for s in judged) if v is not None and not math.isnan(v)]
            out[key] = float(np.mean(values)) if values else float("nan")
        else:  # a count over the batch
            out[key] = float(sum(r.get(key, 0.0) for r in rows))
    out.update(settings(scorer))
    for rid, rate in (pass_rates or {}).items():
        if not math.isnan(rate):
            out[f"pass_rate/{rid}"] = float(rate)
    return out


def log_components(log_metric: Callable[[str, float], None] | None, prefix: str, samples: list[SampleReward], scorer: RewardScorer,
                   pass_rates: dict[str, float] | None = None) -> None:
    """`batch_components` to a trainer's metric logger (TRL's `log_metric`), each as ``<prefix>/<name>``.

    Args:
        log_metric: called with each name and value; None: nothing is logged.
        prefix: the names' prefix (the reward's name in TRL; ``autorule`` in `autorule train`).
        samples, scorer, pass_rates: as for `batch_components`.

    Example:
        >>> from autorule.rules import RuleSet
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> scorer = RewardScorer(RuleSet.from_texts(["Be short."]), FakeLLM(p_yes=0.5))
        >>> logged = {}
        >>> log_components(logged.__setitem__, "autorule", [SampleReward(0.5, 0.5, total=0.5)], scorer)
        >>> logged["autorule/total_reward"], logged["autorule/active_rules"]
        (0.5, 1.0)
    """
    if log_metric is None:
        return
    for name, value in batch_components(samples, scorer, pass_rates).items():
        log_metric(f"{prefix}/{name}", value)
