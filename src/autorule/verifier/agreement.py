"""How often two rule sets' matched rules agree: both sides of each match judged by the verifier
on the same responses (`autorule rules diff --data`)."""

from __future__ import annotations

from autorule.rules import Rule, RuleSet
from autorule.rules.diff import RuleDiff
from autorule.verifier.verifier import Verifier

def add_agreement(diff: RuleDiff, conversations: list, llm, **verifier_options) -> RuleDiff:
    """Judge `conversations` against both sides of every matched pair of rules and record,
    per match, how often the two rules gave the same verdict (unreadable checks left out).

    Args:
        diff: from `diff_rules`; conversations: responses to judge (e.g. both sides of
            held-out pairs); llm: the verifier's LLM; verifier_options: passed to `Verifier`.

    Example:
        >>> import numpy as np
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.rules import RuleSet
        >>> from autorule.rules.diff import diff_rules
        >>> d = diff_rules(RuleSet.from_texts(["The response should be short."]), RuleSet.from_texts(["The reply should be brief."]),
        ...                lambda ts: np.ones((len(ts), 1)))
        >>> m = add_agreement(d, ["Hi", "Hello"], FakeLLM(p_yes=0.8)).matches[0]
        >>> m.agreement, m.n
        (1.0, 2)
    """
    paired = [m for m in diff.matches if m.a is not None and m.b is not None]
    if not paired or not conversations:
        return diff
    # one column per distinct text: the two sets may give one text different ids, or the reverse
    texts = list(dict.fromkeys(t for m in paired for t in (m.a.text, m.b.text)))
    judged = RuleSet(rules=[Rule(id=f"c{j}", text=t) for j, t in enumerate(texts)])
    verdicts = Verifier(llm, judged, **verifier_options).verify(conversations)
    column = {t: j for j, t in enumerate(texts)}
    for m in paired:
        ja, jb = column[m.a.text], column[m.b.text]
        both = verdicts.parsed[:, ja] & verdicts.parsed[:, jb]
        m.n = int(both.sum())
        m.agreement = float((verdicts.hard[both, ja] == verdicts.hard[both, jb]).mean()) if m.n else None
    return diff
