"""Stage 025: each candidate rule checked on the pair it came from (the label-consistency filter).

A candidate is drawn from one pair's reasoning about why the chosen reply is better, so on
that pair it should favour the chosen reply. Each candidate is verified on its own pair's
two conversations (chosen, then rejected) with the verifier prompt, and is kept when

    P(satisfied | chosen) - P(satisfied | rejected) > margin

A tie (a difference of at most `margin`, e.g. both replies satisfy the rule) is dropped: the
rule gives the label no support on the one pair that is its only evidence. A candidate the
verifier gave no readable verdict for (refused, or no Yes/No) is kept and counted: the
filter drops only on evidence. The verdicts are stored in 025_label_filter.jsonl, the
decisions are made when it is read (`decide`), so a rerun with another margin asks nothing again.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from autorule.data import PreferencePair
from autorule.llm import LLM
from autorule.rules import Rule, RuleSet
from autorule.verifier import Verifier
from autorule.verifier.verifier import TEMPLATE_VERSION, affinity_key

MARGIN = 0.0
# reasons a candidate is dropped, and the one it is kept without evidence for (counted in run.json)
PREFERS_REJECTED, TIE, NO_VERDICT = "prefers the rejected reply", "tie (difference within the margin)", "no readable verdict (kept)"


def decide(p_chosen: float | None, p_rejected: float | None, margin: float = MARGIN) -> str | None:
    """Why a candidate is dropped (None: kept), from its P(satisfied) on its own pair's two replies.

    Args:
        p_chosen, p_rejected: P(Yes) on the chosen and the rejected reply, in [0, 1]; None or
            NaN where the verifier gave no readable verdict.
        margin: how much more the chosen reply must satisfy the rule (>= 0).

    Returns:
        None (kept), `PREFERS_REJECTED`, `TIE`, or `NO_VERDICT` (kept, counted).

    Raises:
        ValueError: a negative margin.

    Example:
        >>> decide(0.9, 0.2), decide(0.2, 0.9), decide(0.8, 0.8), decide(0.6, 0.5, margin=0.2), decide(None, 0.3)
        (None, 'prefers the rejected reply', 'tie (difference within the margin)', 'tie (difference within the margin)', 'no readable verdict (kept)')
    """
    if margin < 0:
        raise ValueError(f"label-filter margin {margin} is negative")
    if p_chosen is None or p_rejected is None or math.isnan(p_chosen) or math.isnan(p_rejected):
        return NO_VERDICT
    diff = p_chosen - p_rejected
    if diff > margin:
        return None
    return PREFERS_REJECTED if diff < -margin else TIE


def kept(reason: str | None) -> bool:
    """Whether a candidate with this `decide` outcome goes on to the merge.

    Example:
        >>> kept(None), kept(NO_VERDICT), kept(TIE)
        (True, True, False)
    """
    return reason is None or reason == NO_VERDICT


def verify_candidates(pairs: list[PreferencePair], candidates: list[list[str]], llm: LLM) -> list[dict]:
    """Each pair's candidates verified on its chosen and its rejected reply: one 025 record per pair.

    Every item goes to the LLM in one batch (a server's slots stay busy); each pair's two
    conversations are fitted to the model's context as the verifier fits them.

    Args:
        pairs: the source pairs; candidates: each pair's candidate rule texts (same order).
        llm: the judge (the extraction model).

    Returns:
        One record per pair: ``pair_id``, ``template`` (the verifier prompt's version) and
        ``checks``: ``[{"text", "p_chosen", "p_rejected"}]`` (None where unread), plus ``error``
        when the server refused a side.

    Raises:
        ValueError: `pairs` and `candidates` of different lengths.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.data import load_pairs
        >>> pair = load_pairs([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])[0]
        >>> verify_candidates([pair], [["The response should be polite."]], FakeLLM(p_yes=0.7))[0]["checks"]
        [{'text': 'The response should be polite.', 'p_chosen': 0.7, 'p_rejected': 0.7}]
    """
    if len(pairs) != len(candidates):
        raise ValueError(f"{len(pairs)} pairs but {len(candidates)} candidate lists")
    items, keys, owners = [], [], []
    for i, (pair, texts) in enumerate(zip(pairs, candidates)):
        if not texts:
            continue
        # ids by position: two candidates may normalise to the same rule id
        verifier = Verifier(llm, RuleSet(rules=[Rule(id=f"c{j}", text=t) for j, t in enumerate(texts)]))
        for side in ("chosen", "rejected"):
            conv = pair.conversation(side)
            items.append((verifier.prefix(conv), verifier.questions))
            keys.append(affinity_key(conv))
            owners.append(i)
    errors: dict[int, str] = {}
    scored = llm.score_yes_no_batch(items, errors=errors, keys=keys) if items else []
    records, at = [], 0
    for i, (pair, texts) in enumerate(zip(pairs, candidates)):
        rec: dict = {"pair_id": pair.id, "template": TEMPLATE_VERSION, "checks": []}
        if texts:
            p_c, p_r = scored[at], scored[at + 1]
            refused = [errors[k] for k in (at, at + 1) if k in errors]
            if refused:
                rec["error"] = refused[0]
            for j, text in enumerate(texts):
                rec["checks"].append({"text": text, "p_chosen": _prob(p_c, j, at in errors), "p_rejected": _prob(p_r, j, at + 1 in errors)})
            at += 2
        records.append(rec)
    return records


def _prob(row, j: int, refused: bool) -> float | None:
    if refused or row is None or j >= len(row):
        return None
    p = float(row[j])
    return None if math.isnan(p) else p


@dataclass
class FilterCounts:
    """What the label filter did over a run: candidates checked, kept, dropped by reason.

    Args:
        margin: the margin decisions were made with; checked: candidates verified;
        kept: candidates going on to the merge (those without a verdict included);
        reasons: `decide` outcomes other than kept-with-evidence, counted;
        checks: yes/no checks asked (2 per candidate); refused_pairs: pairs with a side the server refused.

    Example:
        >>> counts = FilterCounts(0.0)
        >>> counts.add({"pair_id": "p", "checks": [{"text": "a", "p_chosen": 0.9, "p_rejected": 0.1}, {"text": "b", "p_chosen": 0.1, "p_rejected": 0.9}]})
        ['a']
        >>> counts.to_dict()["dropped"]
        {'prefers the rejected reply': 1}
    """

    margin: float
    checked: int = 0
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)
    refused_pairs: int = 0

    def add(self, record: dict) -> list[str]:
        """Count one 025 record; the texts it keeps, in order."""
        out = []
        self.refused_pairs += bool(record.get("error"))
        for check in record["checks"]:
            self.checked += 1
            reason = decide(check["p_chosen"], check["p_rejected"], self.margin)
            if reason is not None:
                self.reasons[reason] += 1
            if kept(reason):
                self.kept += 1
                out.append(check["text"])
        return out

    def to_dict(self) -> dict:
        """run.json's ``label_filter``: ``on``, ``margin``, ``checked``, ``kept``, ``dropped`` (by reason),
        ``kept_without_verdict``, ``checks`` and ``refused_pairs``."""
        dropped = {k: v for k, v in self.reasons.items() if k != NO_VERDICT}
        return {"on": True, "margin": self.margin, "checked": self.checked, "kept": self.kept, "dropped": dropped,
                "kept_without_verdict": self.reasons.get(NO_VERDICT, 0), "checks": 2 * self.checked, "refused_pairs": self.refused_pairs}


def describe(counts: dict) -> str:
    """The summary's line for the label filter (run.json's ``label_filter``).

    Example:
        >>> describe({"on": True, "margin": 0.0, "checked": 10, "kept": 7, "dropped": {TIE: 2, PREFERS_REJECTED: 1}, "kept_without_verdict": 0, "checks": 20, "refused_pairs": 0})
        '7 of 10 candidates kept (margin 0.0); dropped: tie (difference within the margin) 2, prefers the rejected reply 1'
        >>> describe({"on": False})
        'off (--no-label-filter)'
    """
    if not counts.get("on"):
        return "off (--no-label-filter)"
    text = f"{counts['kept']} of {counts['checked']} candidates kept (margin {counts['margin']})"
    if counts["dropped"]:
        text += "; dropped: " + ", ".join(f"{k} {v}" for k, v in counts["dropped"].items())
    if counts["kept_without_verdict"]:
        text += f"; kept without a readable verdict: {counts['kept_without_verdict']}"
    if counts.get("refused_pairs"):
        text += f"; pairs refused by the server: {counts['refused_pairs']}"
    return text
