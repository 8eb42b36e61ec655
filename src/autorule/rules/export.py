"""Rules out of autorule and back in: a readable document, a constitution, a pairwise
judge prompt, JSON; and plain or markdown lists back into a rules file.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template
from typing import Literal

from autorule import jsonsafe
from autorule.rules import Rule, RuleSet, RulesFileError, plain_rule
from autorule.rules.checks.registry import CodeCheck

_HERE = Path(__file__).parent / "templates"
JUDGE_PROMPT = Template((_HERE / "judge_prompt.txt").read_text(encoding="utf-8"))
CONSTITUTION = Template((_HERE / "constitution.txt").read_text(encoding="utf-8"))
Format = Literal["markdown", "constitution", "judge-prompt", "json"]
FORMATS = ("markdown", "constitution", "judge-prompt", "json")


def _agreement(rule: Rule) -> float | None:
    return rule.stats.get("validation", {}).get("agreement")


def _active(rules: RuleSet) -> list[Rule]:
    """Rules that count (weight above 0), heaviest first; ties keep the file's order."""
    return sorted((r for r in rules.rules if r.weight > 0), key=lambda r: -r.weight)


def _marked(rule: Rule) -> str:
    """The rule's text, "[essential]" before it for a veto rule (what `plain_rule` and `import_rules` read back)."""
    return f"[essential] {rule.text}" if rule.essential else rule.text


def export_rules(rules: RuleSet, fmt: Format, source: str = "") -> str:
    """The rules as text in one of `FORMATS`.

    - ``markdown``: a readable document, each rule with its id, weight, support, held-out
      agreement and lint flags (`import_rules` reads it back, weights included);
    - ``constitution``: one principle per line, heaviest first, for tools that take a
      constitution (rules with weight 0 are left out);
    - ``judge-prompt``: a pairwise LLM-judge prompt that applies the weighted rules, with
      ``{prompt}``, ``{response_a}`` and ``{response_b}`` left for your tool to fill (``str.format``);
    - ``json``: a list of objects (id, text, weight, support, agreement, lint codes, essential,
      veto_below, check).

    An essential (veto) rule is written "[essential] TEXT" in every text format, and in
    markdown its code check (`Rule.check`) and `veto_below` as nested items, so that
    `import_rules` gives them back.

    Args:
        rules: the RuleSet; fmt: one of FORMATS; source: where the rules came from (a path),
            named in the markdown and constitution headers.

    Example:
        >>> rules = RuleSet.from_texts(["The response should be short.", "The response should cite sources."], [0.5, 2.0])
        >>> print(export_rules(rules, "constitution", source="rules.yaml"))
        # Constitution: 2 principles learned from preference data by autorule
        # Source: rules.yaml
        # One principle per line, the most important first. Weigh them in this order when choosing between two responses.
        1. The response should cite sources.
        2. The response should be short.
        >>> export_rules(rules, "judge-prompt").format(prompt="Hi", response_a="Hello", response_b="Hey").count("(weight 2.00)")
        1
    """
    if fmt == "markdown":
        origin = f" from `{source}`" if source else ""
        lines = ["# Rules", "", f"{len(rules)} rules{origin}; weights are reward weights (0 = off), support is the number of preference pairs behind a rule.", ""]
        for i, r in enumerate(rules.rules, start=1):
            agreement = _agreement(r)
            facts = [f"id `{r.id}`", f"weight {r.weight:g}", f"support {r.support}"]
            if agreement is not None:
                facts.append(f"held-out agreement {agreement:.0%}")
            if r.lint:
                facts.append("lint: " + ", ".join(f.code for f in r.lint))
            lines += [f"{i}. {_marked(r)}", "   - " + " · ".join(facts)]
            if r.veto_below is not None:
                lines.append(f"   - veto below {r.veto_below:g}")
            if r.check is not None:  # read back by import_rules
                lines.append(f"   - check: {r.check.model_dump_json()}")
        return "\n".join(lines) + "\n"
    if fmt == "constitution":
        active = _active(rules)
        principles = "\n".join(f"{i}. {_marked(r)}" for i, r in enumerate(active, start=1))
        return CONSTITUTION.substitute(n=len(active), source=source or "autorule", principles=principles)
    if fmt == "judge-prompt":
        listing = "\n".join(f"{i}. {_marked(r)} (weight {r.weight:.2f})" for i, r in enumerate(_active(rules), start=1))
        return JUDGE_PROMPT.substitute(rules=listing.replace("{", "{{").replace("}", "}}"))
    if fmt == "json":
        return jsonsafe.dumps([{"id": r.id, "text": r.text, "weight": r.weight, "support": r.support, "agreement": _agreement(r),
                                "lint": [f.code for f in r.lint], "essential": r.essential, "veto_below": r.veto_below,
                                "check": r.check.model_dump() if r.check is not None else None} for r in rules.rules],
                               indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")


_ITEM = re.compile(r"^(\s*)(?:[-*+\u2022]|\d+[.)])\s+(.*\S)\s*$")
_WEIGHT = re.compile(r"\bweight\s*[:=]?\s*(-?[0-9.]+)", re.IGNORECASE)
_MARKUP = re.compile(r"\*\*|__|`")
_CHECK = re.compile(r"^check:\s*(\{.*\})\s*$")
_VETO = re.compile(r"^veto below\s+([0-9.]+)\s*$")


def import_rules(text: str, path: str = "<text>") -> RuleSet:
    """A rule set from a plain list (one rule per line) or a markdown list.

    Headings, blank lines and ``#`` comments are skipped. In a markdown list, the
    top-level items are the rules and a nested item may give a weight (``weight 0.5``, as
    `export_rules` writes it), a code check (``check: {...}``) or ``veto below 0.3``; bold,
    italics and code marks are taken off. "[essential]" before or after a rule, or a
    leading "!", marks a veto rule (`plain_rule`).

    Args:
        text: the list; path: its name, for errors.

    Example:
        >>> rules = import_rules("# House rules\\n1. **The response should be short.**\\n   - weight 0.5\\n2. The response should cite sources.")
        >>> [(r.text, r.weight) for r in rules.rules]
        [('The response should be short.', 0.5), ('The response should cite sources.', 1.0)]
    """
    lines = [line.rstrip() for line in text.splitlines()]
    body = [line for line in lines if line.strip() and not line.lstrip().startswith("#") and not line.lstrip().startswith("<!--")]
    items = [(len(m.group(1)), m.group(2), n) for n, line in enumerate(body) if (m := _ITEM.match(line))]
    entries: list[list] = []  # [text, weight, extra Rule fields]
    if items:
        top = min(indent for indent, _, _ in items)
        for indent, content, n in items:
            if indent == top:
                entries.append([_MARKUP.sub("", content).strip(), 1.0, {}])
            elif entries and (m := _CHECK.match(content)):
                try:
                    entries[-1][2]["check"] = CodeCheck.model_validate_json(m.group(1))
                except ValueError as e:
                    raise RulesFileError(f"{path}: rule {len(entries)}: its check cannot be read: {e}") from None
            elif entries and (m := _VETO.match(content)):
                entries[-1][2]["veto_below"] = float(m.group(1))
            elif entries and (m := _WEIGHT.search(content)):
                entries[-1][1] = float(m.group(1))
    else:
        entries = [[_MARKUP.sub("", line).strip(), 1.0, {}] for line in body]
    if not entries:
        raise RulesFileError(f"{path}: no rules found (expected one rule per line, or a markdown list)")
    seen: dict[str, int] = {}
    for n, (t, _, _) in enumerate(entries, start=1):
        if (rid := plain_rule(t)["id"]) in seen:
            raise RulesFileError(f"{path}: rule {n} repeats rule {seen[rid]}: {t!r}")
        seen[rid] = n
    try:
        rules = RuleSet.from_texts([t for t, _, _ in entries], [w for _, w, _ in entries])
        return RuleSet(rules=[r.model_copy(update=extra) for r, (_, _, extra) in zip(rules.rules, entries)])
    except ValueError as e:
        raise RulesFileError(f"{path}: {e}") from None
