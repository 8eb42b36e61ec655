"""Stage 020: candidate rules drawn from each pair's reasoning, parsed robustly."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from autorule.llm.fitting import Fitted
from autorule.rules.lint import fragment_reason, repeats_instructions
from autorule.llm import ChatRequest
from autorule.extraction import prompt
from autorule.extraction.context import Context

TEMPLATE, TEMPLATE_VERSION = prompt("rules")
REPAIR, REPAIR_VERSION = prompt("rules_repair")

MIN_WORDS, MAX_WORDS = 4, 80
# the start of every rule; local models are given it as the start of their answer
PREFILL = '["The assistant\'s response should'


class Candidates(BaseModel):
    pair_id: str
    source: str  # "reasoning" or "explanation": the text the rules came from
    rules: list[str]
    excerpt: str  # the start of that text, for provenance
    failure: str | None = None  # why no rules came out, when none did
    dropped: dict[str, int] = {}  # items of the answer not kept as rules, by reason
    repaired: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    omitted_chars: int = 0  # characters cut from the middle of the justification (and repair) to fit the context


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){8,}?)"')
_STEM = re.compile(r"^(the )?(assistant'?s? )?(response|answer|reply) (should|must)( not)?\s*", re.IGNORECASE)
# the required form: "The assistant's response should ...", and the close variants models write
_FORM = re.compile(r"^(the )?(ai )?(assistant'?s?|model'?s?)?\s*(final )?(response|answer|reply|assistant)s? (should|must)\b", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+(.*\S)\s*$")

# reasons an item is not kept as a rule (counted in run.json)
TOO_SHORT, TOO_LONG, NO_FORM, ECHO, BARE_STEM, FRAGMENT = (
    "rule too short", f"rule longer than {MAX_WORDS} words", "rule not in the required form", "rule repeats the prompt's instructions", "bare stem",
    "fragment (unfinished sentence)",
)


@dataclass
class ParsedRules:
    """What one answer held: the rules kept, and each dropped item's reason.

    Args:
        rules: the items kept, in order, without duplicates.
        dropped: how many items were dropped, by reason.
        found_list: whether the answer held a list at all (JSON or bulleted); when it did,
            a repair prompt cannot help, whatever was dropped from it.

    Example:
        >>> parse_rules('["The response should cite a source for every statistic.", "Be nice."]').dropped
        Counter({'rule too short': 1})
    """

    rules: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    found_list: bool = False

    @property
    def failure(self) -> str | None:
        """Why no rule was kept when items were dropped (the commonest reason), else None."""
        return None if self.rules or not self.dropped else self.dropped.most_common(1)[0][0]


def parse_rules(text: str) -> ParsedRules:
    """Rules from a model's answer: a JSON array (bare or fenced), or a numbered/bulleted list.

    Items too short or too long to be a checkable rule, items not in the required form
    ("The assistant's response should ..."), and items that repeat the extraction
    prompt's own instructions are dropped, each with its reason.
    """
    items: list[str] | None = None
    for candidate in [*_FENCE.findall(text), text]:
        start, end = candidate.find("["), candidate.rfind("]")
        if start == -1 or end <= start:
            continue
        try:
            value = json.loads(candidate[start : end + 1])
        except json.JSONDecodeError:
            continue
        if isinstance(value, list):
            items = [v if isinstance(v, str) else (v.get("rule") or v.get("text") or "") if isinstance(v, dict) else "" for v in value]
            break
    if items is None and "[" in text:
        # an array cut off or malformed part-way: take the complete quoted items
        items = _QUOTED.findall(text[text.find("[") :]) or None
    if items is None:
        items = [m.group(1) for line in text.splitlines() if (m := _ITEM.match(line))]
    out = ParsedRules(found_list=bool(items))
    seen: set[str] = set()
    for item in items:
        rule = " ".join(item.strip().strip('"').split())
        words = len(rule.split())
        # a bare stem ("The assistant's response should") says nothing checkable
        if len(_STEM.sub("", rule).split()) < 2:
            reason = BARE_STEM if _STEM.match(rule) else TOO_SHORT
        elif words < MIN_WORDS:
            reason = TOO_SHORT
        elif words > MAX_WORDS:
            reason = TOO_LONG
        elif not _FORM.match(rule):
            reason = NO_FORM
        elif repeats_instructions(rule):
            reason = ECHO
        elif fragment_reason(rule):
            reason = FRAGMENT
        elif rule.lower() in seen:
            continue
        else:
            seen.add(rule.lower())
            out.rules.append(rule)
            continue
        out.dropped[reason] += 1
    return out


def parse_rule_list(text: str) -> list[str]:
    """The rules `parse_rules` keeps from a model's answer (an empty list when none).

    Example:
        >>> parse_rule_list("- The response should answer in the language of the question.")
        ['The response should answer in the language of the question.']
    """
    return parse_rules(text).rules


def _fitted(render, text: str, max_tokens: int, context: Context | None) -> Fitted:
    return context.fit(render, [text], max_tokens) if context is not None else Fitted(render([text]))


def rules_request(justification: str, max_tokens: int, seed: int, context: Context | None = None) -> tuple[ChatRequest, Fitted]:
    """The rule-extraction prompt for one justification, and how it was fitted.

    Args:
        justification: the reasoning (or explanation) rules are drawn from.
        max_tokens: the answer's tokens.
        seed: the sampling seed.
        context: the model's context; a justification too long for it is cut in its middle.

    Example:
        >>> request, fitted = rules_request("A is clearer. " * 2000, 512, 0, Context(2048, "server", lambda s: len(s) // 3))
        >>> fitted.fits, fitted.omitted > 0, request.messages[0]["content"].endswith("Return only a JSON array of strings.\\n")
        (True, True, True)
    """
    fitted = _fitted(lambda ts: TEMPLATE.substitute(justification=ts[0]), justification.strip(), max_tokens, context)
    request = ChatRequest([{"role": "user", "content": fitted.text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION, prefill=PREFILL)
    return request, fitted


def repair_request(previous: str, max_tokens: int, seed: int, context: Context | None = None) -> tuple[ChatRequest, Fitted]:
    """The repair prompt for an answer that held no list, and how it was fitted (as `rules_request`).

    Example:
        >>> request, fitted = repair_request("Rules: be nice", 512, 0)
        >>> fitted.omitted, "Rules: be nice" in request.messages[0]["content"]
        (0, True)
    """
    fitted = _fitted(lambda ts: REPAIR.substitute(previous=ts[0]), previous.strip(), max_tokens, context)
    request = ChatRequest([{"role": "user", "content": fitted.text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=REPAIR_VERSION, prefill=PREFILL)
    return request, fitted
