"""What to tell a user whose file no format fits: the closest format, and flags that read it.

Hints look at the first rows' values: only a column holding text, chat messages or lists
of turns is ever proposed as a prompt or a reply (never an id, a bool, a number, a model
name or a list of other objects), and a file with a label-like column is never offered
the `pairs` options, which would fix one column as the winner in every row.
"""

from __future__ import annotations

import shlex

from autorule.data.column_kinds import LABEL_NAME, ONE_HOT, PROMPT_NAMES, answer_pair, column_kinds, is_reply_kind, label_columns
from autorule.data.labels import MEANINGS_HELP, LabelError, label_readings, normalize
from autorule.data.layouts import Undetected, detect, reader
from autorule.data.pairs import BadRow, Columns, NotPreferenceData, SkipRow

BETTER_WORDS = ("chosen", "better", "preferred", "good", "win")
WORSE_WORDS = ("rejected", "worse", "dispreferred", "bad", "los")
# the flag each Columns field is given by, in the order a hint prints them
FLAGS = (("prompt", "--prompt-column"), ("answer_a", "--answer-a-column"), ("answer_b", "--answer-b-column"), ("chosen", "--chosen-column"),
         ("rejected", "--rejected-column"), ("label", "--label-column"), ("label_meaning", "--label-meaning"))


def _values(records: list[dict], column: str) -> str:
    seen = sorted({normalize(r[column]) for r in records if r.get(column) is not None})
    return ", ".join(seen[:6]) + (", ..." if len(seen) > 6 else "")





def flags(fmt: str, columns: Columns) -> str:
    """The command-line flags that read a file as `fmt` with these columns (defaults but the prompt's left out, names quoted for a shell).

    Args:
        fmt: a format name; columns: the column options.

    Example:
        >>> flags("ab", Columns(prompt="q", answer_a="first reply", answer_b="r1", label="ok", label_meaning="true=a,false=b"))
        "--format ab --prompt-column q --answer-a-column 'first reply' --answer-b-column r1 --label-column ok --label-meaning true=a,false=b"
    """
    default = Columns()
    parts = ["--format", fmt]
    for name, flag in FLAGS:
        value = getattr(columns, name)
        if value is not None and (value != getattr(default, name) or name == "prompt"):  # the prompt column always shows
            parts += [flag, shlex.quote(value)]
    return " ".join(parts)


def reads(records: list[dict], fmt: str, columns: Columns) -> bool:
    """Whether these options read the first rows into at least one pair with no bad row: a hint proposes nothing else.

    Args:
        records: the first rows; fmt: a format name; columns: the column options.

    Example:
        >>> rows = [{"q": "Hi?", "x": "Hello there.", "y": "Go away.", "ok": True}]
        >>> reads(rows, "ab", Columns(prompt="q", answer_a="x", answer_b="y", label="ok", label_meaning="true=a,false=b"))
        True
        >>> reads(rows, "ab", Columns(prompt="q", answer_a="x", answer_b="y", label="ok", label_meaning="index0"))
        False
    """
    try:
        _, parse = reader(fmt, records, columns)
        pairs = 0
        for rec in records:
            try:
                out = parse(rec, columns)
            except SkipRow:
                continue
            for item in out if isinstance(out, list) else [out]:
                if isinstance(item, BadRow):
                    return False
                pairs += not isinstance(item, SkipRow)
    except (BadRow, NotPreferenceData, LabelError, ValueError, TypeError):
        return False
    return pairs > 0


def undetected_message(records: list[dict], columns: Columns) -> str:
    """Why no format fits the first rows, the closest one, and flags that would read the file where the values allow.

    Every set of flags proposed is first tried on the rows (`reads`): a hint never proposes
    options that fail on the file, such as a label meaning its values do not fit.

    Args:
        records: the first rows (dicts); columns: the column options given.

    Example:
        >>> rows = [{"post": "Is rice fine overnight?", "ref_one": "Yes, always.", "ref_two": "No, chill it within an hour.", "pref_label": 0}]
        >>> msg = undetected_message(rows, Columns())
        >>> "--chosen-column" in msg, "--answer-a-column ref_one --answer-b-column ref_two --label-column pref_label --label-meaning index0" in msg
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
    prompt = prompts[0] if prompts else None
    prompt_flag = f"--prompt-column {shlex.quote(prompt)}" if prompt else "--prompt-column PROMPT_COLUMN"
    worse = [k for k in replies if any(w in k.lower() for w in WORSE_WORDS)]
    better = [k for k in replies if k not in worse and any(w in k.lower() for w in BETTER_WORDS)]
    hints = []
    closest = "pairs ('prompt', 'chosen', 'rejected')"
    if ranked:
        closest = "ranked (a prompt and a list of answers with a rank or score)"
        option = Columns(prompt=prompt or columns.prompt)
        if prompt and reads(records, "ranked", option):
            hints.append(f"'{ranked[0]}' holds ranked answers: read it with {flags('ranked', option)} (--ranked-pairs best-vs-rest, adjacent or all)")
        else:
            hints.append(f"'{ranked[0]}' holds ranked answers: read it with --format ranked {prompt_flag} (--ranked-pairs best-vs-rest, adjacent or all)")
    elif labels:
        # a label says which answer won: no column may be fixed as the winner
        closest = "ab (a prompt, two answers and a label naming the better one)"
        hints.append(_label_hint(records, kinds, labels, replies, prompt, prompt_flag))
        if better and worse and prompt and not any(LABEL_NAME.search(k.lower()) for k in labels):
            # no column is named as a label: its values may mean something else (a flag, a count)
            option = Columns(prompt=prompt, chosen=better[0], rejected=worse[0], label="none")
            if reads(records, "pairs", option):
                hints.append(f"if '{better[0]}' is the better response in every row and {', '.join(repr(k) for k in labels[:4])} "
                             f"say nothing about which won: {flags('pairs', option)}")
    elif prompt:
        option = None
        if better and worse:
            option = Columns(prompt=prompt, chosen=better[0], rejected=worse[0])
            lead = "read it with"
        elif len(replies) >= 2:
            option = Columns(prompt=prompt, chosen=replies[0], rejected=replies[1])
            lead = f"if '{replies[0]}' is always the better response:"
        if option is not None and reads(records, "pairs", option):
            hints.append(f"{lead} {flags('pairs', option)}")
    if not ranked and not labels and "instruction" in kinds:
        closest = "alpacaeval ('instruction', 'output_1', 'output_2', 'preference')"
    return (f"cannot tell the format from the columns {shown}; the closest is {closest}"
            + ("; " + "; ".join(hints) if hints else "; use --format and the column options (--prompt-column, --chosen-column, --rejected-column, "
               "or for two answers and a label --answer-a-column, --answer-b-column, --label-column, --label-meaning)"))


def _label_hint(records: list[dict], kinds: dict, labels: list[str], replies: list[str], prompt: str | None, prompt_flag: str) -> str:
    """The hint for a file whose label says which answer won: each reading of its label that reads the rows, in full."""
    described = ", ".join(f"'{k}' (values {_values(records, k)})" for k in labels[:4])
    head = f"the label-like columns {described} say which answer won, so no column is the winner by position"
    pair = answer_pair(kinds) or (tuple(replies[:2]) if len(replies) >= 2 else None)
    if not pair:
        return f"{head}, but fewer than two columns hold answer text (text columns: {replies or 'none'})"
    onehot = next((tuple(c for c in group if c in kinds) for group in ONE_HOT if set(group[:2]) <= set(kinds)), None)
    if onehot:
        candidates = [(",".join(onehot), "onehot", "")]
    else:
        candidates = [(label, meaning, why) for label in labels for meaning, why in label_readings(records, label)]
    if prompt:
        options = [(Columns(prompt=prompt, answer_a=pair[0], answer_b=pair[1], label=label, label_meaning=meaning), why)
                   for label, meaning, why in candidates]
        options = [(o, why) for o, why in options if reads(records, "ab", o)]
        if options:
            first = options[0][0].label
            shown = [f"{flags('ab', o)}" + (f" (if {why})" if why else "") for o, why in options if o.label == first]
            return f"{head}: read it with " + " or ".join(shown)
    label = labels[0] if not onehot else ",".join(onehot)
    # no reading of the values reads the rows: name the flags, propose no values
    return (f"{head}: the ab format reads it, given {prompt_flag}, --answer-a-column {shlex.quote(pair[0])}, --answer-b-column {shlex.quote(pair[1])}, "
            f"--label-column {shlex.quote(label)} and a --label-meaning that says what its values mean: {MEANINGS_HELP}")


def detect_format(rec: dict | list[dict], columns: Columns) -> str:
    """The format of a file from its first row or rows: names and values (see `autorule.data.layouts.detect`).

    Args:
        rec: the first row, or the first rows; columns: the column options given.

    Raises:
        NotPreferenceData: no format fits; the message names the closest and the flags that read it.

    Example:
        >>> detect_format({"history": "Q?", "human_ref_A": "x y", "human_ref_B": "z w", "labels": 0}, Columns())
        'shp'
    """
    return detect([rec] if isinstance(rec, dict) else list(rec), columns)


Undetected.explain = undetected_message  # layouts raises, hints explains (it sits above layouts)
