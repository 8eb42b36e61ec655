"""autorule: learn readable rules from preference data; use them as a fast RL reward.

The public API (imported lazily, so `import autorule` stays fast)::

    import autorule
    pairs = autorule.load_pairs("prefs.jsonl")                 # or a list of dict rows
    rules = autorule.extract(pairs, model="openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
    result = autorule.validate(rules, held_out, verifier="openai:...")
    autorule.score(rules, "responses.jsonl", verifier="openai:...", out="scores.jsonl").summary
    scorer = autorule.RewardScorer(rules, autorule.load_llm("openai:..."))
    scorer.score([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]]).total
    autorule.lint_rules(rules).flagged                          # rule quality: lint, diff, export, calibrate

Library calls are quiet; pass ``progress=True`` for progress bars, and configure the
"autorule" logger to see stage messages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_pairs": "autorule.data",
    "PreferencePair": "autorule.data",
    "Message": "autorule.data",
    "LoadResult": "autorule.data",
    "AutoruleError": "autorule.errors",
    "DataError": "autorule.data",
    "load_llm": "autorule.llm",
    "LLM": "autorule.llm",
    "LLMError": "autorule.llm",
    "Rule": "autorule.rules",
    "RuleSet": "autorule.rules",
    "extract": "autorule.api",
    "verify": "autorule.api",
    "validate": "autorule.api",
    "score": "autorule.api",
    "ScoreResult": "autorule.api",
    "rescore": "autorule.rescoring",
    "RescoreResult": "autorule.rescoring",
    "report": "autorule.api",
    "Verdicts": "autorule.verifier",
    "Verifier": "autorule.verifier",
    "Validation": "autorule.validation",
    "rule_reward": "autorule.reward",
    "RewardScorer": "autorule.reward",
    "RewardModel": "autorule.reward",
    "Scores": "autorule.reward",
    "RuleReward": "autorule.integrations.trl",
    "SAMPLE_PAIRS": "autorule.examples",
    "AsyncRuleReward": "autorule.integrations.trl",
    "lint_rules": "autorule.rules.lint",
    "diff_rules": "autorule.rules.diff",
    "export_rules": "autorule.rules.export",
    "import_rules": "autorule.rules.export",
    "load_gold": "autorule.verifier.calibration",
    "calibrate": "autorule.verifier.calibration",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'autorule' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs
    from autorule.api import ScoreResult, extract, report, score, validate, verify
    from autorule.verifier.calibration import calibrate, load_gold
    from autorule.rules.diff import diff_rules
    from autorule.rules.export import export_rules, import_rules
    from autorule.rules.lint import lint_rules
    from autorule.examples import SAMPLE_PAIRS
    from autorule.errors import AutoruleError
    from autorule.data import DataError, LoadResult, Message, PreferencePair, load_pairs
    from autorule.integrations.trl import AsyncRuleReward, RuleReward
    from autorule.llm import LLM, LLMError, load_llm
    from autorule.rescoring import RescoreResult, rescore
    from autorule.reward import RewardModel, RewardScorer, Scores, rule_reward
    from autorule.rules import Rule, RuleSet
    from autorule.validation import Validation
    from autorule.verifier import Verdicts, Verifier
