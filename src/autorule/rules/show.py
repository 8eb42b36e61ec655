"""A rule as a person audits it: its support, validation statistics, lint flags, and the
preference pairs it came from (prompt, chosen, rejected, and the reasoning), shortened.

Used by `autorule rules show` and by the HTML report's drill-down.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autorule.display import percent
from autorule.rules import Rule, RuleSet

PAIRS_FILE = "000_pairs.jsonl"  # an extraction run's copy of its pairs, beside its rules.yaml


def shorten(text: str, width: int) -> str:
    """One line of at most `width` characters: whitespace collapsed, the middle cut.

    Args:
        text: any text; width: the most characters kept.

    Example:
        >>> shorten("a  very\\nlong sentence indeed", 16)
        'a very … indeed'
    """
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return f"{text[:head]} … {text[len(text) - (width - 3 - head):]}"


@dataclass
class SourcePair:
    """One preference pair behind a rule, as `rules show` prints it.

    Args:
        pair_id: the pair; prompt: its last user turn; chosen, rejected: the replies;
        candidate: the rule this pair yielded before merging; reasoning: the start of the
        reasoning it was drawn from. Texts are whole; `shorten` them to print.
    """

    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    candidate: str
    reasoning: str


def pairs_file_for(rules_path: str | Path) -> Path | None:
    """The pairs an extraction read (its `000_pairs.jsonl`), when the rules sit in its run directory.

    Args:
        rules_path: a rules file.

    Example:
        >>> pairs_file_for("/nonexistent/rules.yaml") is None
        True
    """
    path = Path(rules_path).parent / PAIRS_FILE
    return path if path.is_file() else None


def find_pairs(path: str | Path, ids: set[str]) -> dict[str, dict]:
    """The pairs with these ids from a pairs file, read in one streaming pass.

    An extraction's `000_pairs.jsonl` is read line by line (only wanted lines are kept);
    any other file goes through `stream_pairs` (format detected).

    Args:
        path: `000_pairs.jsonl` or any preference file `load_pairs` reads; ids: pair ids.

    Example:
        >>> from autorule.examples import SAMPLE_PAIRS
        >>> sorted(find_pairs(SAMPLE_PAIRS, {"05955e174e5c5bfc"})["05955e174e5c5bfc"])[:3]
        ['chosen', 'chosen_history', 'id']
    """
    found: dict[str, dict] = {}
    path = Path(path)
    if path.name == PAIRS_FILE:
        with path.open(encoding="utf-8") as f:
            for line in f:
                if ids - found.keys() and line.strip():
                    record = json.loads(line)
                    if record.get("id") in ids:
                        found[record["id"]] = record
        return found
    from autorule.data import stream_pairs

    for pair in stream_pairs(str(path), on_bad_row="skip"):  # the ids of the rows that read; bad rows cannot be sources
        if pair.id in ids:
            found[pair.id] = pair.model_dump()
            if not ids - found.keys():
                break
    return found


def rule_sources(rule: Rule, pairs: dict[str, dict], limit: int = 3) -> list[SourcePair]:
    """Up to `limit` of the pairs behind a rule, with the candidate each yielded.

    Args:
        rule: a rule with provenance; pairs: pair id -> pair record (`find_pairs`);
        limit: the most pairs returned.
    """
    out: list[SourcePair] = []
    for c in rule.candidates:
        if len(out) == limit:
            break
        if any(s.pair_id == c.pair_id for s in out):
            continue
        p = pairs.get(c.pair_id)
        if p is None:
            continue
        users = [m["content"] for m in p.get("prompt", []) if m.get("role") == "user"]
        out.append(SourcePair(c.pair_id, users[-1] if users else "", p["chosen"], p["rejected"], c.text, c.excerpt))
    return out


def marks(rule: Rule) -> str:
    """What a rule is besides its text: "[essential]" (a veto rule), "[code: CHECKER]" (decided by a program).

    Example:
        >>> from autorule.rules.ruleset import plain_rule
        >>> marks(Rule(**plain_rule("[essential] The response must be safe.")))
        '[essential] '
    """
    out = "[essential] " if rule.essential else ""
    if rule.check is not None:
        out += f"[code: {rule.check.checker}{' (negated)' if rule.check.negate else ''}] "
    return out


def rules_listing(rules: RuleSet) -> str:
    """Every rule on one line: number, id, support, weight, held-out agreement, lint flags, text
    (marked "[essential]" for a veto rule and "[code: CHECKER]" for one a program decides).

    Args:
        rules: a RuleSet.

    Example:
        >>> print(rules_listing(RuleSet.from_texts(["The response should be short."])))
         #  id          support  weight  agreement  lint  rule
         1  r-93083b3d        0    1.00  -          -     The response should be short.
    """
    flags = [",".join(f.code for f in r.lint) or "-" for r in rules.rules]
    width = max([4, *map(len, flags)])
    lines = [f"{'#':>2}  {'id':<10}  {'support':>7}  {'weight':>6}  {'agreement':<9}  {'lint':<{width}}  rule"]
    for i, (r, flag) in enumerate(zip(rules.rules, flags), start=1):
        agreement = percent(r.stats.get("validation", {}).get("agreement"))
        lines.append(f"{i:>2}  {r.id:<10}  {r.support:>7}  {r.weight:>6.2f}  {agreement:<9}  {flag:<{width}}  {marks(r)}{r.text}")
    return "\n".join(lines)


def rule_detail(rule: Rule, sources: list[SourcePair], width: int = 240, note: str | None = None) -> str:
    """One rule in full: text, id, weight, support, validation statistics, lint flags and
    its source pairs (each text shortened to `width` characters).

    Args:
        rule: the rule; sources: its pairs (`rule_sources`); width: characters per text;
        note: a line printed where sources are missing (e.g. why they could not be found).

    Example:
        >>> rule = RuleSet.from_texts(["The response should be short."]).rules[0]
        >>> print(rule_detail(rule, [SourcePair("p1", "Say hi.", "Hi!", "No.", "The response should be brief.", "A shorter reply...")]))
        r-93083b3d  The response should be short.
          weight 1.00 · support 0 pairs
          validation: none (run `autorule validate`)
          lint: none
          source pairs (1 of 0):
          [p1]
            prompt:    Say hi.
            chosen:    Hi!
            rejected:  No.
            candidate: The response should be brief.
            reasoning: A shorter reply...
    """
    v = rule.stats.get("validation")
    lines = [f"{rule.id}  {rule.text}", f"  weight {rule.weight:.2f} · support {rule.support} pairs"]
    if rule.essential:
        below = f"P(Yes) below {rule.veto_below:g}" if rule.veto_below is not None else "P(Yes) below the verifier's threshold"
        lines.append(f"  essential: a veto rule ({below} caps the reward at the preset's floor)")
    if rule.check is not None:
        lines.append(f"  decided by code: {rule.check.model_dump_json()}")
    if v:
        lines.append(
            f"  validation: agreement {percent(v.get('agreement'))} [{percent(v.get('ci_low'))}, {percent(v.get('ci_high'))}] on {v.get('n')} "
            f"discriminating pairs; coverage {percent(v.get('coverage'))}; pass rate chosen {percent(v.get('pass_rate_chosen'))}, "
            f"rejected {percent(v.get('pass_rate_rejected'))}; {v.get('pairs')} held-out pairs"
        )
    else:
        lines.append("  validation: none (run `autorule validate`)")
    lines.append("  lint: " + ("; ".join(f"{f.code}: {f.reason}" for f in rule.lint) or "none"))
    if sources:
        lines.append(f"  source pairs ({len(sources)} of {rule.support}):")
        for s in sources:
            lines += [f"  [{s.pair_id}]"] + [f"    {k + ':':<10} {shorten(t, width)}" for k, t in
                                            (("prompt", s.prompt), ("chosen", s.chosen), ("rejected", s.rejected), ("candidate", s.candidate), ("reasoning", s.reasoning))]
    elif rule.pairs:
        lines.append(f"  source pairs: {', '.join(rule.pairs[:10])}" + (f" and {len(rule.pairs) - 10} more" if len(rule.pairs) > 10 else ""))
        if note:
            lines.append(f"  ({note})")
    return "\n".join(lines)
