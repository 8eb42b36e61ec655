"""Stage 020: candidate rules drawn from each pair's reasoning, parsed robustly."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from ..llm import ChatRequest
from . import prompt

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
    repaired: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.){8,}?)"')
_STEM = re.compile(r"^(the )?(assistant'?s? )?(response|answer|reply) (should|must)( not)?\s*", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+(.*\S)\s*$")


def parse_rule_list(text: str) -> list[str]:
    """Rules from a model's answer: a JSON array (bare or fenced), or a numbered/bulleted list.

    Items that are too short or too long to be a checkable rule are dropped; the
    caller sees an empty list when nothing usable is left.
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
    out, seen = [], set()
    for item in items:
        rule = " ".join(item.strip().strip('"').split())
        # a bare stem ("The assistant's response should") says nothing checkable
        body = _STEM.sub("", rule)
        if len(body.split()) < 2:
            continue
        if MIN_WORDS <= len(rule.split()) <= MAX_WORDS and rule.lower() not in seen:
            seen.add(rule.lower())
            out.append(rule)
    return out


def rules_request(justification: str, max_tokens: int, seed: int) -> ChatRequest:
    text = TEMPLATE.substitute(justification=justification.strip())
    return ChatRequest([{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION, prefill=PREFILL)


def repair_request(previous: str, max_tokens: int, seed: int) -> ChatRequest:
    text = REPAIR.substitute(previous=previous.strip()[:4000])
    return ChatRequest([{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=REPAIR_VERSION, prefill=PREFILL)
