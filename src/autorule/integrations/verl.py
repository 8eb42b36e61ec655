"""verl adapters: a batch `compute_score` and a reward manager that adds RM and rule rewards.

Batch function (verl's `BatchRewardManager`, `reward_model.reward_manager=batch`):

    custom_reward_function:
      path: <site-packages>/autorule/integrations/verl.py
      name: compute_score
    # the rules and verifier come from the environment:
    #   AUTORULE_RULES=rules.yaml AUTORULE_VERIFIER=openai:MODEL@URL AUTORULE_PRESET=default

verl passes only the response text (`solution_strs`); the prompt is read from
`extra_infos[i]["prompt"]` (or "question") when your data puts it there, so rules about
the request can be judged.

When verl also runs a reward model it returns the RM's scores verbatim and ignores the
custom function. `AutoRuleRewardManager` (registered as "autorule" when verl is
installed) adds the rule reward to `rm_scores` instead.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..data import Message

_SCORER = None


def _scorer():
    """The process's RewardScorer, built once from AUTORULE_* environment variables."""
    global _SCORER
    if _SCORER is None:
        from ..cache import Cache
        from ..llm import load_llm
        from ..reward import RewardScorer
        from ..rules import RuleSet

        rules_path = os.environ.get("AUTORULE_RULES")
        if not rules_path:
            raise RuntimeError("set AUTORULE_RULES to a rules.yaml (and optionally AUTORULE_VERIFIER, AUTORULE_PRESET)")
        cache = None if os.environ.get("AUTORULE_NO_CACHE") else Cache()
        llm = load_llm(os.environ.get("AUTORULE_VERIFIER", "embedded"), cache=cache)
        _SCORER = RewardScorer(RuleSet.load(rules_path), llm, os.environ.get("AUTORULE_PRESET", "default"))
    return _SCORER


def _prompt_of(extra_info: Any) -> list[Message]:
    if isinstance(extra_info, dict):
        for key in ("prompt", "question", "instruction"):
            value = extra_info.get(key)
            if isinstance(value, str) and value:
                return [Message(role="user", content=value)]
            if isinstance(value, list) and value:
                from .conversation import to_messages

                return to_messages(list(value))
    return []


def compute_score(
    data_sources: list[str] | None = None,
    solution_strs: list[str] | None = None,
    ground_truths: list[Any] | None = None,
    extra_infos: list[Any] | None = None,
    scorer=None,
    **kwargs: Any,
) -> list[dict]:
    """verl's batch signature: lists in, one dict per sample out (`score` is the reward)."""
    scorer = scorer or _scorer()
    solution_strs = list(solution_strs or [])
    extra_infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    convs = [[*_prompt_of(info), Message(role="assistant", content=text)] for text, info in zip(solution_strs, extra_infos)]
    scores = scorer.score(convs)
    # a response the verifier's server refused scores 0 (verl needs a number), flagged in "refused"
    terms, fractions = np.nan_to_num(scorer.preset.rule_term(scores.rule)).tolist(), np.nan_to_num(scores.rule).tolist()
    return [{"score": t, "rule_fraction": r, "refused": float(i in scores.errors)} for i, (t, r) in enumerate(zip(terms, fractions))]


def compute_score_single(data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None, **kwargs: Any) -> float:
    """verl's per-sample signature (`NaiveRewardManager`): one float."""
    return compute_score([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]["score"]


def add_rule_rewards(rm_scores, response_mask, rule_scores):
    """RM token-level scores plus each sample's rule reward on its last response token."""
    import torch

    reward = rm_scores.clone() if rm_scores is not None else torch.zeros_like(response_mask, dtype=torch.float32)
    last = response_mask.sum(dim=-1).long() - 1
    rows = torch.arange(reward.shape[0], device=reward.device)
    valid = last >= 0
    reward[rows[valid], last[valid]] += torch.as_tensor(rule_scores, dtype=reward.dtype, device=reward.device)[valid]
    return reward


class AutoRuleRewardManager:
    """A verl reward manager: RM scores (when verl computed them) + rule rewards.

    Same constructor and call contract as verl's built-in managers:
    `__init__(tokenizer, num_examine, compute_score=None, reward_fn_key="data_source", **kwargs)`
    and `__call__(data: DataProto, return_dict=False)`.
    """

    def __init__(self, tokenizer, num_examine: int = 0, compute_score=None, reward_fn_key: str = "data_source", scorer=None, **reward_kwargs: Any):
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.scorer = scorer
        self.reward_kwargs = reward_kwargs

    def __call__(self, data, return_dict: bool = False):
        prompts, responses = data.batch["prompts"], data.batch["responses"]
        prompt_len = prompts.shape[-1]
        attention = data.batch["attention_mask"]
        response_mask = attention[:, prompt_len:]
        texts, convs = [], []
        for i in range(len(responses)):
            n = int(response_mask[i].sum())
            text = self.tokenizer.decode(responses[i][:n], skip_special_tokens=True)
            prompt_ids = prompts[i][attention[i, :prompt_len].bool()]
            prompt_text = self.tokenizer.decode(prompt_ids, skip_special_tokens=True)
            texts.append(text)
            convs.append([Message(role="user", content=prompt_text), Message(role="assistant", content=text)])
        scorer = self.scorer or _scorer()
        scores = scorer.score(convs)
        rule_terms = np.nan_to_num(scorer.preset.rule_term(scores.rule)).tolist()
        rm_scores = data.batch["rm_scores"] if "rm_scores" in data.batch.keys() else None
        reward = add_rule_rewards(rm_scores, response_mask, rule_terms)
        if return_dict:
            return {"reward_tensor": reward, "reward_extra_info": {"rule_reward": rule_terms, **{f"pass_rate/{k}": [v] * len(texts) for k, v in scores.pass_rates().items()}}}
        return reward


try:  # register with verl when it is installed, so `reward_model.reward_manager=autorule` works
    from verl.workers.reward_manager import register as _register

    _register("autorule")(AutoRuleRewardManager)
except Exception:  # verl absent (or a version without the registry): the class is still importable
    pass
