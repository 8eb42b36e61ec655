"""What to tell a user whose file no format fits: the closest format, and flags that read it.

Hints look at the first rows' values: only a column holding text, chat messages or lists
of turns is ever proposed as a prompt or a reply (never an id, a bool, a number, a model
name or a list of other objects), and a file with a label-like column is never offered
the `pairs` options, which would fix one column as the winner in every row.
"""

from __future__ import annotations

from autorule.data.column_kinds import ONE_HOT, PROMPT_NAMES, answer_pair, column_kinds, is_reply_kind, label_columns
from autorule.data.pairs import Columns
from autorule.data.labels import MEANINGS_HELP, normalize

BETTER_WORDS = ("chosen", "better", "preferred", "good", "win")
WORSE_WORDS = ("rejected", "worse", "dispreferred", "bad", "los")


def _values(records: list[dict], column: str) -> str:
    seen = sorted({normalize(r[column]) for r in records if r.get(column) is not None})
    return ", ".join(seen[:6]) + (", ..." if len(seen) > 6 else "")


def undetected_message(records: list[dict], columns: Columns) -> str:
    """Why no format fits the first rows, the closest one, and flags that would read the file where the values allow.

    Args:
        records: the first rows (dicts); columns: the column options given.

    Example:
        >>> rows = [{"post": "Is rice fine overnight?", "ref_one": "Yes, always.", "ref_two": "No, chill it within an hour.", "pref_label": 0}]
        >>> msg = undetected_message(rows, Columns())
        >>> "--chosen-column" in msg, "--answer-a-column ref_one --answer-b-column ref_two --label-column pref_label" in msg
        (False, True)
    """
    kinds = column_kinds(records)
    shown = sorted(kinds)
    labels = label_columns(kinds)
    prompt_kinds = ("text", "short", "messages", "turns")
    prompts = [k for k in dict.fromkeys((columns.prompt, *PROMPT_NAMES)) if kinds.get(k) in prompt_kinds]
    replies = [k for k, kind in kinds.items() if is_reply_kind(kind) and k not in prompts[:1]]
    ranked = [k for k, kind in kinds.items() if kind == "ranked"]
    responses = [k for k in ("response", "completion", "output", "answer") if k in replies]
    if responses and prompts and len(replies) == 1 and not labels:
        return (f"the columns {shown} hold one response per prompt ('{prompts[0]}', '{responses[0]}'), not a preference pair. "
                "Extraction and validation need two responses and which one won; to score single responses against rules, "
                "use `autorule score --rules RULES --data FILE`")
    prompt_flag = f"--prompt-column {prompts[0]}" if prompts else "--prompt-column PROMPT_COLUMN"
    hints = []
    closest = "pairs ('prompt', 'chosen', 'rejected')"
    if ranked:
        closest = "ranked (a prompt and a list of answers with a rank or score)"
        hints.append(f"'{ranked[0]}' holds ranked answers: read it with --format ranked {prompt_flag} (--ranked-pairs best-vs-rest, adjacent or all)")
    elif labels:
        # a label says which answer won: no column may be fixed as the winner
        closest = "ab (a prompt, two answers and a label naming the better one)"
        onehot = next((tuple(c for c in group if c in kinds) for group in ONE_HOT if set(group[:2]) <= set(kinds)), None)
        label_flag = f"--label-column {','.join(onehot)} --label-meaning onehot" if onehot else f"--label-column {labels[0]} --label-meaning MEANING"
        pair = answer_pair(kinds) or (tuple(replies[:2]) if len(replies) >= 2 else None)
        described = ", ".join(f"'{k}' (values {_values(records, k)})" for k in labels[:4])
        if pair:
            hints.append(f"the label-like columns {described} say which answer won, so no column is the winner by position: "
                         f"read it with --format ab {prompt_flag} --answer-a-column {pair[0]} --answer-b-column {pair[1]} {label_flag}"
                         + ("" if onehot else f", where MEANING is {MEANINGS_HELP}"))
        else:
            hints.append(f"the label-like columns {described} say which answer won, but fewer than two columns hold answer text "
                         f"(text columns: {replies or 'none'})")
    elif prompts:
        worse = [k for k in replies if any(w in k.lower() for w in WORSE_WORDS)]
        better = [k for k in replies if k not in worse and any(w in k.lower() for w in BETTER_WORDS)]
        pairs_flag = f"--format pairs --prompt-column {prompts[0]}"
        if better and worse:
            hints.append(f"read it with {pairs_flag} --chosen-column {better[0]} --rejected-column {worse[0]}")
        elif len(replies) >= 2:
            hints.append(f"if '{replies[0]}' is always the better response: {pairs_flag} --chosen-column {replies[0]} --rejected-column {replies[1]}")
    if not ranked and not labels and "instruction" in kinds:
        closest = "alpacaeval ('instruction', 'output_1', 'output_2', 'preference')"
    return (f"cannot tell the format from the columns {shown}; the closest is {closest}"
            + ("; " + "; ".join(hints) if hints else "; use --format and the column options (--prompt-column, --chosen-column, --rejected-column, "
               "or for two answers and a label --answer-a-column, --answer-b-column, --label-column, --label-meaning)"))
