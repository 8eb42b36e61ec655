"""The rule set over time: the online refresh's records (`autorule.train.refresh`) as one HTML table."""

from __future__ import annotations

import html

ACTIVE, ADDED, RETIRED = "\u25cf", "+", "\u2715"  # shown in the cells: active, added at this step, retired at this step


def rule_timeline(records: list[dict]) -> list[dict]:
    """Every rule that was ever active, in order of first appearance, with its state at the start and after each refresh.

    Args:
        records: refresh records by step (`autorule.train.refresh.read_records`).

    Returns:
        One dict per rule: ``id``, ``text`` and ``states`` (the start, then one per record:
        "active", "added", "retired" or "" when it was not in the set), ``why`` (per record,
        why it was added or retired; "" otherwise).

    Example:
        >>> records = [{"step": 5, "rules_before": ["a", "b"], "rules_after": [{"id": "a", "text": "A"}, {"id": "c", "text": "C"}],
        ...             "added": [{"id": "c", "text": "C", "reason": "agreement 0.9"}], "retired": [{"id": "b", "text": "B", "reason": "every completion passed"}]},
        ...            {"step": 10, "rules_before": ["a", "c"], "rules_after": [{"id": "a", "text": "A"}, {"id": "c", "text": "C"}], "added": [], "retired": []}]
        >>> [(r["id"], r["states"]) for r in rule_timeline(records)]
        [('a', ['active', 'active', 'active']), ('b', ['active', 'retired', '']), ('c', ['', 'added', 'active'])]
    """
    if not records:
        return []
    texts: dict[str, str] = {}
    for rec in records:
        for entry in (*rec.get("retired", []), *rec.get("added", []), *rec.get("rules_after", [])):
            texts.setdefault(entry["id"], entry["text"])
    order = list(dict.fromkeys([*records[0].get("rules_before", []), *(e["id"] for rec in records for e in rec.get("rules_after", []))]))
    order += [rid for rid in texts if rid not in order]  # a rule added and cut in one refresh never shows in a set
    start = set(records[0].get("rules_before", []))
    out = []
    for rid in order:
        states, why = ["active" if rid in start else ""], [""]
        for rec in records:
            added = {e["id"]: e.get("reason", "") for e in rec.get("added", [])}
            retired = {e["id"]: e.get("reason", "") for e in rec.get("retired", [])}
            after = {e["id"] for e in rec.get("rules_after", [])}
            if rid in added:
                states.append("added")
                why.append(added[rid])
            elif rid in retired:
                states.append("retired")
                why.append(retired[rid])
            else:
                states.append("active" if rid in after else "")
                why.append("")
        out.append({"id": rid, "text": texts.get(rid, rid), "states": states, "why": why})
    return out


def timeline_html(records: list[dict]) -> str:
    """The rule set over time as an HTML section ("" without records): a row per rule, a column per refresh.

    Args:
        records: refresh records by step.

    Example:
        >>> records = [{"step": 5, "rules_before": ["a"], "rules_after": [{"id": "a", "text": "A"}], "added": [], "retired": [], "rejected": [{}]}]
        >>> page = timeline_html(records)
        >>> "step 5" in page, page.count("<tr>"), "1 candidates dropped" in page
        (True, 2, True)
    """
    if not records:
        return ""
    symbol = {"active": ACTIVE, "added": ADDED, "retired": RETIRED, "": ""}
    head = "<tr><th>rule</th><th>start</th>" + "".join(f"<th>step {int(r['step'])}</th>" for r in records) + "</tr>"
    rows = []
    for rule in rule_timeline(records):
        cells = "".join(f"<td class='num' title='{html.escape(w, quote=True)}'>{symbol[s]}</td>" for s, w in zip(rule["states"], rule["why"]))
        rows.append(f"<tr><td><code>{html.escape(rule['id'])}</code> {html.escape(rule['text'])}</td>{cells}</tr>")
    notes = "".join(
        f"<li>step {int(r['step'])}: {len(r.get('added', []))} added, {len(r.get('retired', []))} retired, "
        f"{len(r.get('rejected', []))} candidates dropped, {len(r.get('rules_after', []))} rules active"
        + (f"; extraction failed: {html.escape(str(r['extraction']['error']))}" if (r.get("extraction") or {}).get("error") else "") + "</li>"
        for r in records
    )
    return ("<section id='rule-refresh'><h2>Rules over time (online refresh)</h2>"
            f"<p>{ACTIVE} active, {ADDED} added, {RETIRED} retired at that step (hover a mark for why); records in <code>refresh/</code>.</p>"
            f"<table>{head}{''.join(rows)}</table><ul>{notes}</ul></section>")
