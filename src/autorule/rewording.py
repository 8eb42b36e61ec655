"""Rewording validated rules from their held-out errors (Autorubric's refinement loop).

For each rule whose held-out agreement (`autorule.validation.rule_stats`: among pairs where
the rule tells the two replies apart, the share where the chosen reply satisfies it) is below
`below`, the LLM is shown up to `examples` held-out pairs where the rule favoured the rejected
reply and asked for a rewording (prompt: rewording_prompts/reword.txt). The rewording is
verified on the same held-out pairs; the text with the higher agreement is kept (a tie keeps
the text it had). Rounds repeat while the rule stays below `below`, at most `rounds` of them,
and stop early when a rewording is not kept (asked again at temperature 0, the model would
answer the same). Every round is recorded in the rule's `history` (`RuleRevision`): both
texts, both agreements and the pairs shown.

The pairs shown are among those the rewording is judged on, so its agreement there is
optimistic: validate the result on other held-out pairs before trusting the figure.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np

from autorule.extraction.candidates import PREFILL, parse_rules
from autorule.llm import LLM, ChatRequest
from autorule.rules import Rule, RuleSet, rule_id
from autorule.rules.ruleset import RuleRevision
from autorule.validation import ab_signs, both_sides, rule_stats
from autorule.verifier import Verifier

_TEXT = (Path(__file__).parent / "rewording_prompts" / "reword.txt").read_text(encoding="utf-8")
TEMPLATE, TEMPLATE_VERSION = Template(_TEXT), "reword@" + hashlib.sha256(_TEXT.encode()).hexdigest()[:8]
BELOW, ROUNDS, EXAMPLES = 0.6, 3, 4
EXAMPLE_CHARS = 1500  # each prompt and reply shown is cut to this many characters

# why a rule was not (or no longer) reworded, counted in the result
AT_OR_ABOVE, NO_EVIDENCE, NOT_BETTER, UNREADABLE, SAME_AS_OTHER, ROUNDS_USED = (
    "agreement at or above the threshold", "no discriminating held-out pair", "rewording not better", "no readable rewording",
    "rewording is another rule's text", "rounds used up")


@dataclass
class RewordResult:
    """What `reword_rules` did.

    Args:
        rules: the rule set with the kept texts (reworded rules get the id of their new text;
            their old statistics are dropped, their rounds are in `Rule.history`).
        reworded: old id -> new id of each rule whose text changed.
        outcomes: per rule id (the original), why its rewording stopped (see the module's reasons).
        rounds: rounds run; llm_calls: rewording requests sent; checks: yes/no checks asked.
    """

    rules: RuleSet
    reworded: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    rounds: int = 0
    llm_calls: int = 0
    checks: int = 0

    def counts(self) -> dict[str, int]:
        """How many rules stopped for each reason.

        Example:
            >>> RewordResult(RuleSet(), outcomes={"r-1": NOT_BETTER, "r-2": NOT_BETTER, "r-3": AT_OR_ABOVE}).counts()
            {'rewording not better': 2, 'agreement at or above the threshold': 1}
        """
        return dict(Counter(self.outcomes.values()))


def _short(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS // 2] + " [...] " + text[-EXAMPLE_CHARS // 2 :]


def reword_request(rule: str, pairs: list, seed: int = 0, max_tokens: int = 256) -> ChatRequest:
    """The rewording prompt: the rule and held-out pairs where it favoured the rejected reply.

    Each pair shows its prompt and both replies, the preferred one named; the replies are in
    the pair's seeded A/B order (`validation.ab_signs`), so the preferred one is not always first.

    Args:
        rule: the rule's text; pairs: `PreferencePair`s it disagreed on; seed: the A/B order's seed;
        max_tokens: the answer's tokens.

    Example:
        >>> from autorule.data import load_pairs
        >>> pairs = load_pairs([{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "It is Paris, a city in France."}]).pairs
        >>> text = reword_request("The response should be detailed.", pairs).messages[0]["content"]
        >>> "Capital of France?" in text and "The response should be detailed." in text, text.count("Preferred:")
        (True, 1)
    """
    blocks = []
    for i, (pair, sign) in enumerate(zip(pairs, ab_signs([p.id for p in pairs], seed)), 1):
        first, second = (pair.chosen, pair.rejected) if sign > 0 else (pair.rejected, pair.chosen)
        prompt = "\n\n".join(m.content for m in pair.conversation("chosen")[:-1])
        blocks.append(f"<example {i}>\nPrompt:\n{_short(prompt)}\n\nResponse 1:\n{_short(first)}\n\nResponse 2:\n{_short(second)}\n\n"
                      f"Preferred: Response {1 if sign > 0 else 2}\n</example {i}>")
    content = TEMPLATE.substitute(rule=rule, examples="\n\n".join(blocks))
    return ChatRequest([{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION, prefill=PREFILL)


def _verdicts(llm: LLM, texts: list[str], pairs: list, verifier_options: dict) -> tuple[np.ndarray, np.ndarray]:
    """(pairs x texts) P(satisfied) on the chosen and on the rejected replies."""
    rules = RuleSet(rules=[Rule(id=f"t{j}", text=t) for j, t in enumerate(texts)])
    verdicts = Verifier(llm, rules, **verifier_options).verify_messages(both_sides(pairs))
    n = len(pairs)
    return verdicts.p_satisfied[:n], verdicts.p_satisfied[n:]


def reword_rules(rules: RuleSet, pairs: list, llm: LLM, verifier_llm: LLM | None = None, *, below: float = BELOW, rounds: int = ROUNDS,
                 examples: int = EXAMPLES, seed: int = 0, threshold: float = 0.5, data: str | None = None,
                 verifier_options: dict | None = None) -> RewordResult:
    """Reword the rules whose held-out agreement is below `below`, keeping whichever text agrees better.

    Args:
        rules: the rules (not changed: the result holds a copy).
        pairs: held-out `PreferencePair`s (not the ones the rules were extracted from).
        llm: the model that rewords; verifier_llm: the judge (default: `llm`).
        below: rules with an agreement under this are reworded (0-1).
        rounds: at most this many rewordings per rule (>= 1).
        examples: at most this many disagreeing pairs shown per rewording (>= 1), in data order.
        seed: the A/B order of the examples; threshold: P(Yes) that counts as satisfied.
        data: the held-out data's name, recorded in each `RuleRevision`.
        verifier_options: more `Verifier` settings (``style``, ``max_input_tokens``, ...).

    Returns:
        A `RewordResult`: the rules with their kept texts and histories, and why each stopped.

    Raises:
        ValueError: no pairs, or `below`, `rounds` or `examples` out of range.
        UnparsedVerdicts: too many checks without a readable Yes/No (the verifier's `max_unparsed`).

    Example:
        >>> from autorule.data import load_pairs
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> pairs = load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}]).pairs
        >>> result = reword_rules(RuleSet.from_texts(["The response should be short."]), pairs, FakeLLM(p_yes=0.9))
        >>> result.counts()  # both replies satisfy it: no pair tells them apart, nothing to learn from
        {'no discriminating held-out pair': 1}
    """
    if not pairs:
        raise ValueError("no held-out pairs to reword rules on")
    if not 0 <= below <= 1 or rounds < 1 or examples < 1:
        raise ValueError(f"below={below} must be in [0, 1], rounds={rounds} and examples={examples} at least 1")
    verifier_llm = verifier_llm or llm
    options = {"threshold": threshold, **(verifier_options or {})}
    out = rules.model_copy(deep=True)
    result = RewordResult(out)
    signs = ab_signs([p.id for p in pairs], seed)
    index = {p.id: i for i, p in enumerate(pairs)}

    def judge(texts: list[str]):
        result.checks += 2 * len(pairs) * len(texts)
        p_c, p_r = _verdicts(verifier_llm, texts, pairs, options)
        return rule_stats([f"t{j}" for j in range(len(texts))], p_c, p_r, signs, threshold=threshold), p_c, p_r

    # code-checked rules are decided by a program: a rewording would not change what the program checks
    active = [r for r in out.rules if r.check is None]
    stats, p_c, p_r = judge([r.text for r in active]) if active else ([], None, None)
    current = {}  # rule id -> (stats, chosen verdicts, rejected verdicts) of its current text
    for j, (rule, s) in enumerate(zip(active, stats)):
        if math.isnan(s.agreement):
            result.outcomes[rule.id] = NO_EVIDENCE
        elif s.agreement >= below:
            result.outcomes[rule.id] = AT_OR_ABOVE
        else:
            current[rule.id] = (s, p_c[:, j], p_r[:, j])
    originals = {r.id: r.id for r in out.rules}  # current id -> the id the rule came in with
    for round_no in range(1, rounds + 1):
        todo = [r for r in out.rules if r.id in current]
        if not todo:
            break
        result.rounds = round_no
        shown = {}
        for r in todo:
            _, c, rj = current[r.id]
            wrong = [p for p in pairs if (np.nan_to_num(c[index[p.id]]) < threshold) and (np.nan_to_num(rj[index[p.id]]) >= threshold)
                     and not math.isnan(c[index[p.id]]) and not math.isnan(rj[index[p.id]])]
            shown[r.id] = wrong[:examples]
        requests = [reword_request(r.text, shown[r.id], seed) for r in todo]
        result.llm_calls += len(requests)
        replies = llm.generate(requests)
        texts = {}
        for r, reply in zip(todo, replies):
            parsed = parse_rules(reply.text).rules
            texts[r.id] = parsed[0] if parsed else None
        asked = [r for r in todo if texts[r.id] is not None]
        judged = {}  # rule id -> (stats, chosen verdicts, rejected verdicts) of its rewording, on the same pairs
        if asked:
            new_stats, n_c, n_r = judge([texts[r.id] for r in asked])
            judged = {r.id: (new_stats[j], n_c[:, j], n_r[:, j]) for j, r in enumerate(asked)}
        taken = {r.id for r in out.rules}
        for r in todo:
            old, _, _ = current.pop(r.id)
            first = originals[r.id]
            revision = {"round": round_no, "text": r.text, "agreement": _num(old.agreement), "n": old.n, "reworded": texts[r.id], "kept": "original",
                            "pairs": [p.id for p in shown[r.id]], "data": data}
            if r.id not in judged:
                result.outcomes[first] = UNREADABLE
                r.history.append(RuleRevision(**revision))
                continue
            s, n_c, n_r = judged[r.id]
            revision.update(reworded_agreement=_num(s.agreement), reworded_n=s.n)
            new_id = rule_id(texts[r.id])
            better = not math.isnan(s.agreement) and s.agreement > old.agreement  # a tie keeps the text it had
            if better and new_id != r.id and new_id in taken:
                result.outcomes[first] = SAME_AS_OTHER
            elif better:
                revision["kept"] = "reworded"
                r.history.append(RuleRevision(**revision))
                r.text, r.stats = texts[r.id], {k: v for k, v in r.stats.items() if k != "validation"}  # its old figures are in the history
                originals[new_id] = originals.pop(r.id)
                r.id = new_id
                result.reworded[first] = new_id
                if s.agreement >= below:
                    result.outcomes[first] = AT_OR_ABOVE
                else:
                    current[new_id] = (s, n_c, n_r)
                continue
            else:
                result.outcomes[first] = NOT_BETTER
            r.history.append(RuleRevision(**revision))
    for rid in current:
        result.outcomes[originals[rid]] = ROUNDS_USED
    return result


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)
