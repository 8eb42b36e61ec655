"""What a column holds, told from its first values (not only its name).

Format detection and the hints shown when no format fits both need to know which
columns can be a prompt or a reply (text, chat messages, lists of turns) and which are
labels (small numbers, bools, A/B names): a hint that offered an id or a bool column as
a reply, or fixed one answer column as the winner in a file that has a label, would
load wrong data without a word.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from autorule.data.labels import AB_FIRST, AB_SECOND, AB_TIES, normalize

Kind = Literal["text", "short", "messages", "turns", "ranked", "objects", "label", "number", "empty", "mixed"]

PROMPT_NAMES = ("prompt", "question", "instruction", "input", "history", "context", "query", "post")
# names that say a column holds a reply, so single-word values ("4", "Yes.") still count as text
REPLY_WORDS = ("chosen", "rejected", "prefer", "better", "worse", "good", "bad", "response", "answer", "output",
               "completion", "reply", "win", "los", "ref")
# names that never hold a reply whatever their values (model names, sources, ids)
NOT_REPLY_WORDS = ("model", "source", "name", "category", "domain", "lang", "tag", "judge", "sha", "hash", "url", "date", "time")
# names of label columns: a column so named and holding label values says which answer won
LABEL_NAME = re.compile(r"winner|label|pref|choice|better|safer|verdict")  # pref: pref, preference, preferred_id
RANK_KEYS = ("rank",)  # lower is better
SCORE_KEYS = ("score", "overall_score", "rating")  # higher is better
RANKED_TEXT_KEYS = ("answer", "response", "text", "completion", "output", "content")
# score columns beside chosen/rejected (UltraFeedback-binarized and its variants): the scores are the label
SCORE_PAIRS = (("score_chosen", "score_rejected"), ("chosen_score", "rejected_score"), ("chosen_rating", "rejected_rating"),
               ("chosen-rating", "rejected-rating"))
# a label of two answers holds at most ~3 distinct values: 0/1/2, 1/2, or a signed strength -3..3
# (HelpSteer3); a whole number outside that is a count, an id or a score, never such a label
SMALL = 3
# names of ids and row numbers: never a label, whatever their values (unless the name says label,
# as PKU-SafeRLHF's better_response_id does)
ID_NAME = re.compile(r"(.*[_\-\s.])?(id|ids|idx|index|row|rownum|row_num|uid|uuid)|(id|idx|row)[_\-\s].*|unnamed: ?\d+")


def decode_turns(value: Any) -> Any:
    """A JSON-encoded list in a text cell (CSV) decoded, anything else as it is.

    Args:
        value: a cell.

    Example:
        >>> decode_turns('["Hi", "And then?"]')
        ['Hi', 'And then?']
        >>> decode_turns("[1] is the first citation")
        '[1] is the first citation'
    """
    if isinstance(value, str) and value.lstrip().startswith("[") and value.rstrip().endswith("]"):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, list) else value
    return value


def is_messages(value: Any) -> bool:
    """Whether a value is a non-empty list of chat messages (dicts with a role)."""
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def is_turn_list(value: Any) -> bool:
    """Whether a value is a non-empty list of text turns (None allowed for a missing turn)."""
    return isinstance(value, list) and bool(value) and all(isinstance(t, str) or t is None for t in value) and any(isinstance(t, str) for t in value)


def ranked_keys(value: Any) -> tuple[str, str] | None:
    """(text key, order key) when a value is a list of answers with a rank or score, else None.

    Example:
        >>> ranked_keys([{"answer": "x", "model": "m", "rank": 1.0}, {"answer": "y", "model": "n", "rank": 2.0}])
        ('answer', 'rank')
    """
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(d, dict) and "role" not in d for d in value):
        return None
    text = next((k for k in RANKED_TEXT_KEYS if all(k in d for d in value)), None)
    order = next((k for k in (*RANK_KEYS, *SCORE_KEYS) if all(k in d for d in value)), None)
    return (text, order) if text and order else None


def _value_kind(value: Any) -> str:
    value = decode_turns(value)
    if isinstance(value, bool):
        return "label"
    if isinstance(value, (int, float)):
        return "label" if abs(value) <= SMALL else "number"
    if isinstance(value, str):
        if not value.strip():
            return "empty"
        if len(value.strip()) > 16:  # a long run of digits is an id or a hash, not a label
            return "text" if len(value.split()) > 1 and re.search(r"[^\W\d_]", value) else "short"
        key = normalize(value)
        if key in AB_FIRST | AB_SECOND | AB_TIES | {"true", "false", "0"} or re.fullmatch(r"-?\d+", key) and abs(int(key)) <= SMALL:
            return "label"
        if re.fullmatch(r"-?\d+(\.\d+)?", key):
            return "number"
        return "text" if re.search(r"[^\W\d_]", value) and len(value.split()) > 1 else "short"
    if is_messages(value):
        return "messages"
    if is_turn_list(value):  # one-word items are tags ("anthropic-hh"), not turns
        return "turns" if any(isinstance(t, str) and len(t.split()) > 1 for t in value) else "short"
    if ranked_keys(value):
        return "ranked"
    if isinstance(value, (list, dict)):
        return "objects"
    return "mixed"


def is_id_name(name: str) -> bool:
    """Whether a column's name says it holds ids or row numbers (id, *_id, idx, index, row, ...), not a label.

    Args:
        name: the column.

    Example:
        >>> [is_id_name(n) for n in ("id", "question_id", "row", "questionId", "better_response_id", "valid")]
        [True, True, True, True, False, False]
    """
    if LABEL_NAME.search(name.lower()):
        return False
    return bool(ID_NAME.fullmatch(name.lower()) or re.search(r"[a-z]Id$", name))


def _whole_numbers(values: list[Any]) -> list[float] | None:
    """The cells as numbers when every one is a number (or number text), else None (bools are not numbers here)."""
    out = []
    for v in values:
        if isinstance(v, bool):
            return None
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return out


def is_id_values(values: list[Any]) -> bool:
    """Whether numeric cells read as ids or counts, not as a two-answer label: more than three
    distinct non-negative values, or four or more rising one after another (1, 2, 3, 4).

    A label of two answers holds at most ~3 distinct values (0/1/2, 1/2; a signed strength
    -3..3 holds more, but has negatives and does not rise row after row).

    Args:
        values: a column's first cells (None left out).

    Example:
        >>> is_id_values([3, 4, 5]), is_id_values([0, 1, 2, 3]), is_id_values([1, 2, 1, 2]), is_id_values([-2, 3, 0, 1])
        (False, True, False, False)
    """
    numbers = _whole_numbers(values)
    if not numbers:
        return False
    rising = len(numbers) >= 4 and all(a < b for a, b in zip(numbers, numbers[1:]))
    return rising or (len(set(numbers)) > 3 and min(numbers) >= 0)


def column_kind(name: str, values: Iterable[Any]) -> Kind:
    """What a column holds, from its name and first values.

    Args:
        name: the column; values: its first cells (None cells are left out).

    Example:
        >>> column_kind("response_0", ["You can try a tool.", "Never mix bleach."])
        'text'
        >>> column_kind("better_response_id", [1, 0, 0]), column_kind("response_0_source", ["Alpaca-7B"])
        ('label', 'short')
        >>> column_kind("preferred", ["y"]), column_kind("model_a", ["gpt 4 turbo"])
        ('text', 'short')
    """
    values = [v for v in values if v is not None]
    kinds = {_value_kind(v) for v in values} - {"empty"}
    lower = name.lower()
    if not kinds:
        return "empty"
    if kinds <= {"label", "number"} and _whole_numbers(values) is not None and (is_id_name(name) or (not LABEL_NAME.search(lower) and is_id_values(values))):
        return "number"  # ids, row numbers, counts: a label proposed from them fails on the first value it cannot map
    if kinds & {"text", "short", "turns"} and any(w in lower for w in NOT_REPLY_WORDS):
        return "short"
    if all(isinstance(v, str) for v in values) and kinds <= {"text", "short", "label", "number"}:
        if "text" in kinds:
            return "text"
        if kinds == {"label"}:
            return "label"  # "0"/"1"/"A" cells (CSV) even under a reply-like name such as better_response_id
        if any(w in lower for w in REPLY_WORDS):
            return "text"  # one-word replies ("Ann", "5") under a reply name
        return "number" if kinds <= {"label", "number"} else "short"
    if len(kinds) == 1:
        return kinds.pop()  # type: ignore[return-value]
    if kinds <= {"label", "number"}:
        return "number"
    return "mixed"


def column_kinds(records: list[dict]) -> dict[str, Kind]:
    """The first record's columns, each with its kind over the first records' values.

    The layout is the first row's (a later row with other columns is a bad row, not another layout).

    Args:
        records: the first rows (dicts) of a file.

    Example:
        >>> column_kinds([{"history": "Why is bread dense?", "human_ref_A": "Under-proofed dough.", "labels": 1}])
        {'history': 'text', 'human_ref_A': 'text', 'labels': 'label'}
    """
    names = list(records[0]) if records else []
    return {k: column_kind(k, [rec.get(k) for rec in records]) for k in names}


def is_reply_kind(kind: str) -> bool:
    """Whether a column of this kind can hold a reply (or a prompt)."""
    return kind in ("text", "messages", "turns")


def label_columns(kinds: dict[str, Kind]) -> list[str]:
    """Columns that may say which answer won: label names (winner*, label*, *preference*, better*,
    safer*) over anything but text first, then any column of small numbers, bools or A/B names.

    Example:
        >>> label_columns({"prompt": "text", "is_safe": "label", "pref_label": "label", "upvotes": "number"})
        ['pref_label', 'is_safe']
    """
    named = [k for k, kind in kinds.items() if LABEL_NAME.search(k.lower()) and not is_reply_kind(kind) and kind != "empty"]
    return named + [k for k, kind in kinds.items() if kind == "label" and k not in named]  # label names first


def strong_label_columns(kinds: dict[str, Kind]) -> list[str]:
    """Label columns by name and values both: what the pairs format must not silently ignore.

    Example:
        >>> strong_label_columns({"prompt": "text", "chosen": "text", "rejected": "text", "labels": "label", "turn": "label"})
        ['labels']
    """
    return [k for k, kind in kinds.items() if kind == "label" and LABEL_NAME.search(k.lower())]


# two answer columns that go together, tried in this order before names that differ only in a/b or 1/2
ANSWER_PAIRS = (("answer_a", "answer_b"), ("response_a", "response_b"), ("output_a", "output_b"), ("completion_a", "completion_b"),
                ("response_0", "response_1"), ("response1", "response2"), ("response_1", "response_2"), ("human_ref_A", "human_ref_B"),
                ("conversation_a", "conversation_b"))
ONE_HOT = (("winner_model_a", "winner_model_b", "winner_tie"), ("winner_a", "winner_b", "winner_tie"), ("winner_a", "winner_b", "tie"))

def answer_pair(kinds: dict[str, str]) -> tuple[str, str] | None:
    """Two answer columns: a known pair, else two reply columns whose names differ only in a/b, A/B or 1/2 (0/1).

    Args:
        kinds: `column_kinds` of the first rows.

    Example:
        >>> answer_pair({"post": "text", "reply_A": "text", "reply_B": "text", "pref": "label"})
        ('reply_A', 'reply_B')
        >>> answer_pair({"post": "text", "model_a": "short", "model_b": "short"}) is None
        True
    """
    replies = [k for k, kind in kinds.items() if is_reply_kind(kind)]
    for a, b in ANSWER_PAIRS:
        if a in replies and b in replies:
            return a, b
    for a in replies:
        m = re.fullmatch(r"(.*?)([aA]|\d)", a)
        if not m:
            continue
        stem, tail = m.groups()
        nxt = {"a": "b", "A": "B"}.get(tail) or (str(int(tail) + 1) if tail.isdigit() else None)
        if nxt and stem + nxt in replies:
            return a, stem + nxt
    return None

