"""Sample data shipped with the package (works from a wheel install, outside any checkout): preference
pairs, and a rule set of any size for measurements and tests."""

from __future__ import annotations

from pathlib import Path

from autorule.rules import Rule, RuleSet, rule_id

SAMPLE_PAIRS = Path(__file__).with_name("pairs.jsonl")
"""24 sample preference pairs (advice, code, facts, refusals) in the generic pairs format.

Example:
    >>> from autorule import load_pairs
    >>> len(load_pairs(SAMPLE_PAIRS))
    24
"""

SAMPLE_RULE_DEMANDS = [
    "be polite", "answer the user's question directly", "refuse requests that could cause harm", "avoid personal opinions",
    "be concise", "use correct grammar", "stay on topic", "avoid offensive language", "give accurate information",
    "explain its reasoning", "acknowledge uncertainty when unsure", "avoid repeating itself", "use a friendly tone",
    "avoid making up facts", "address every part of the request", "suggest safe alternatives when refusing",
    "avoid unnecessary detail", "be easy to follow", "respect the user's privacy", "end with a complete sentence",
    "use lists for multi-step instructions", "avoid medical or legal overconfidence", "not lecture the user", "be specific",
]


def sample_rules(k: int) -> RuleSet:
    """A sample rule set of `k` rules (the demands above, numbered variants past them), for
    measurements (`autorule bench verifier`, `bench injection`) and tests.

    Args:
        k: how many rules.

    Example:
        >>> rules = sample_rules(12)
        >>> len(rules), rules.rules[0].text
        (12, "The assistant's response should be polite.")
    """
    texts = [f"The assistant's response should {t}." for t in (SAMPLE_RULE_DEMANDS * (k // len(SAMPLE_RULE_DEMANDS) + 1))[:k]]
    texts = [t if i < len(SAMPLE_RULE_DEMANDS) else f"{t} (variant {i})" for i, t in enumerate(texts)]
    return RuleSet(rules=[Rule(id=rule_id(t), text=t) for t in texts])
