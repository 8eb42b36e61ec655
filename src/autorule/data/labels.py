"""What a preference label means: which of two answers it names, or a tie.

A label column only makes sense with its meaning: ``0`` is the first answer in
PKU-SafeRLHF (a 0-based id) and the second in SHP (``labels``: 1 = A preferred). So a
meaning is either given (``--label-meaning``) or fixed by a named layout; it is inferred
from the values only where one reading is possible, and refused with both readings shown
where it is not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from autorule.errors import InputError

Side = Literal["a", "b", "tie"]
Kind = Literal["ab", "index0", "index1", "sign", "reverse-sign", "onehot", "map"]

# values that name a side in the "ab" meaning (compared lower-cased, stripped); 1/2 are
# accepted there as well, as the first and second answer
AB_FIRST = frozenset({"a", "model_a", "answer_a", "response_a", "output_a", "completion_a", "first", "1"})
AB_SECOND = frozenset({"b", "model_b", "answer_b", "response_b", "output_b", "completion_b", "second", "2"})
AB_TIES = frozenset({"tie", "tie (bothbad)", "tie(bothbad)", "both_bad", "both bad", "bothbad", "neither", "equal", "draw"})
NAMED_KINDS = ("ab", "index0", "index1", "sign", "reverse-sign", "onehot")
MEANINGS_HELP = ("ab (A/B, model_a/model_b names; 1/2 too), index0 (0 = first answer, 1 = second), index1 (1 = first, 2 = second), "
                 "sign (negative = first answer, positive = second, 0 = tie), reverse-sign (positive = first), "
                 "onehot (columns A,B[,TIE] holding 1 for the winner), or a map such as 1=a,0=b or 0=b,1=a,2=tie (bools: true=a,false=b)")


class LabelError(InputError, ValueError):
    """A label meaning that cannot be parsed, a value outside it, or values whose meaning is ambiguous."""


def normalize(value: Any) -> str:
    """A label value as compared: text lower-cased and stripped, whole numbers without '.0', bools as true/false.

    Args:
        value: a cell of the label column.

    Example:
        >>> [normalize(v) for v in (1, 1.0, "1.0", " B ", True)]
        ['1', '1', '1', 'b', 'true']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number_text(float(value))
    text = str(value).strip().lower()
    number = _as_number(text)
    return _number_text(number) if number is not None else text


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _number_text(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


@dataclass(frozen=True)
class LabelMeaning:
    """How a label names the winner of two answers (the first, "a", or the second, "b").

    Args:
        kind: "ab", "index0", "index1", "sign", "reverse-sign", "onehot" or "map".
        mapping: for "map", (normalised value, side) pairs.

    Example:
        >>> LabelMeaning("index0").side(1)
        'b'
        >>> LabelMeaning("sign").side(-2), LabelMeaning("sign").side(0)
        ('a', 'tie')
    """

    kind: Kind
    mapping: tuple[tuple[str, Side], ...] = ()

    def side(self, value: Any) -> Side:
        """The side a label value names.

        Args:
            value: the label cell; for "onehot", a tuple of the A, B (and tie) cells.

        Raises:
            LabelError: the value is not one this meaning knows.

        Example:
            >>> LabelMeaning("onehot").side((0, 1, 0))
            'b'
        """
        if self.kind == "onehot":
            return self._onehot(value)
        if self.kind in ("sign", "reverse-sign"):
            number = _as_number(value)
            if number is None:
                raise LabelError(f"{value!r} is not a number (meaning {self.describe()})")
            if number == 0:
                return "tie"
            first = number < 0 if self.kind == "sign" else number > 0
            return "a" if first else "b"
        key = normalize(value)
        table: dict[str, Side]
        if self.kind == "ab":
            if key in AB_TIES:
                return "tie"
            table = {**{k: "a" for k in AB_FIRST}, **{k: "b" for k in AB_SECOND}}
        elif self.kind == "index0":
            table = {"0": "a", "1": "b"}
        elif self.kind == "index1":
            table = {"1": "a", "2": "b"}
        else:
            table = dict(self.mapping)
        if key not in table:
            raise LabelError(f"{value!r} is not a value of meaning {self.describe()}")
        return table[key]

    def _onehot(self, cells: Any) -> Side:
        if not isinstance(cells, tuple):
            raise LabelError("one-hot labels need two or three columns")
        flags = []
        for cell in cells:
            key = normalize(cell) if cell is not None else "0"
            if key not in ("0", "1", "true", "false", ""):
                raise LabelError(f"one-hot cell {cell!r} is not 0/1")
            flags.append(key in ("1", "true"))
        if sum(flags) != 1:
            raise LabelError(f"{sum(flags)} of the one-hot winner columns are set (expected exactly one): {list(cells)}")
        return ("a", "b", "tie")[flags.index(True)]  # type: ignore[return-value]

    def describe(self) -> str:
        """The meaning in words, as messages and summaries show it."""
        words = {
            "ab": "ab (A/B or model_a/model_b names the winner)",
            "index0": "index0 (0 = first answer, 1 = second)",
            "index1": "index1 (1 = first answer, 2 = second)",
            "sign": "sign (negative = first answer, positive = second, 0 = tie)",
            "reverse-sign": "reverse-sign (positive = first answer, negative = second, 0 = tie)",
            "onehot": "onehot (the column holding 1 names the winner)",
        }
        if self.kind == "map":
            return ",".join(f"{k}={v}" for k, v in self.mapping)
        return words[self.kind]


def parse_label_meaning(text: str) -> LabelMeaning:
    """A `LabelMeaning` from its flag form: a kind name, or a map such as ``0=b,1=a,2=tie``.

    Args:
        text: "ab", "index0", "index1", "sign", "reverse-sign", "onehot", or comma-separated
            ``VALUE=SIDE`` items with SIDE one of a, b, tie.

    Raises:
        LabelError: an unknown name, a map item without '=', a side other than a/b/tie,
            or a value mapped twice.

    Example:
        >>> parse_label_meaning("1=A, 0=b").side(0)
        'b'
        >>> parse_label_meaning("index1").kind
        'index1'
    """
    text = text.strip()
    if text.lower() in NAMED_KINDS:
        return LabelMeaning(text.lower())  # type: ignore[arg-type]
    if "=" not in text:
        raise LabelError(f"unknown label meaning {text!r}: choose {MEANINGS_HELP}")
    mapping: dict[str, Side] = {}
    for item in text.split(","):
        value, sep, side = item.partition("=")
        side = side.strip().lower()
        if not sep or not value.strip():
            raise LabelError(f"label map item {item.strip()!r} is not VALUE=SIDE (e.g. 0=b,1=a,2=tie)")
        if side not in ("a", "b", "tie"):
            raise LabelError(f"label map item {item.strip()!r}: the side must be a, b or tie")
        key = normalize(value)
        if key in mapping:
            raise LabelError(f"label map names the value {value.strip()!r} twice")
        mapping[key] = side  # type: ignore[assignment]
    return LabelMeaning("map", tuple(mapping.items()))


def infer_label_meaning(values: Iterable[Any], column: str) -> LabelMeaning:
    """The meaning of a label column from its first values, where only one reading is possible.

    Names (A/B, model_a/model_b, tie) read as "ab"; only 1 and 2 as "index1". Only 0 and 1
    (or bools), 0/1/2, signed numbers and anything else are ambiguous and refused.

    Args:
        values: the column's first cells (None cells are left out); column: its name, for messages.

    Raises:
        LabelError: the values allow more than one reading (the message shows them and the
            flag that picks one), or none.

    Example:
        >>> infer_label_meaning(["A", "b", "tie"], "winner").kind
        'ab'
        >>> infer_label_meaning([0, 1, 1], "labels")
        Traceback (most recent call last):
        ...
        autorule.data.labels.LabelError: label column 'labels' holds only 0 and 1 in its first rows, which reads two ways: ...
    """
    raw = [v for v in values if v is not None]
    seen = sorted({normalize(v) for v in raw})
    shown = ", ".join(seen[:8]) + (", ..." if len(seen) > 8 else "")
    flag = "--label-meaning (or Columns(label_meaning=...))"
    if not seen:
        raise LabelError(f"label column '{column}' is empty in the first rows; say what it means with {flag}: {MEANINGS_HELP}")
    names = AB_FIRST | AB_SECOND | AB_TIES
    if set(seen) <= names and set(seen) - {"1", "2"}:
        return LabelMeaning("ab")
    if set(seen) <= {"1", "2"} and "2" in seen:
        return LabelMeaning("index1")
    if set(seen) <= {"0", "1", "true", "false"}:
        one = "true" if {"true", "false"} & set(seen) else "1"
        zero = "false" if one == "true" else "0"
        raise LabelError(
            f"label column '{column}' holds only {zero} and {one} in its first rows, which reads two ways: "
            f"{zero} = first answer wins ({'0-based id, e.g. PKU-SafeRLHF better_response_id' if zero == '0' else 'false names the first answer'}) "
            f"or {one} = first answer wins ({'as SHP labels: 1 = A preferred' if one == '1' else 'true names the first answer'}); "
            f"say which with --label-meaning {'index0' if zero == '0' else 'false=a,true=b'} or --label-meaning {one}=a,{zero}=b")
    if set(seen) <= {"0", "1", "2"}:
        raise LabelError(
            f"label column '{column}' holds {shown} in its first rows, which reads more than one way: "
            "0 = first answer, 1 = second, 2 = tie (0-based ids), or 0 = tie, 1 = first, 2 = second; "
            "say which with --label-meaning 0=a,1=b,2=tie or --label-meaning 0=tie,1=a,2=b")
    numbers = [_as_number(v) for v in raw]
    if all(n is not None for n in numbers) and any(n < 0 for n in numbers):  # type: ignore[operator]
        raise LabelError(
            f"label column '{column}' holds signed numbers ({shown}) in its first rows: say which sign names the first answer "
            "with --label-meaning sign (negative = first answer, e.g. HelpSteer3 overall_preference) or --label-meaning reverse-sign")
    raise LabelError(f"cannot tell what label column '{column}' means from its first values ({shown}); say it with {flag}: {MEANINGS_HELP}")

def label_readings(records: list[dict], column: str) -> list[tuple[str, str]]:
    """The meanings a label column's first values can have, each as (``--label-meaning`` value, what it says).

    One reading where the values allow only one (A/B names, 1/2); both readings of bools, of 0/1,
    of 0/1/2, of signed numbers and of any two values; none where the values fit no two-answer
    label. Only readings that read every first value are given.

    Args:
        records: the first rows; column: the label column.

    Example:
        >>> label_readings([{"ok": True}, {"ok": False}], "ok")
        [('true=a,false=b', 'true means the first answer won'), ('false=a,true=b', 'false means the first answer won')]
        >>> label_readings([{"pref": 1}, {"pref": 2}], "pref")
        [('index1', '')]
    """
    values = [r.get(column) for r in records if r.get(column) is not None]
    seen = sorted({normalize(v) for v in values})
    try:
        return [(infer_label_meaning(values, column).kind, "")]  # the values allow one reading only
    except LabelError:
        pass
    found = set(seen)
    numbers = [_number(v) for v in seen]
    if found <= {"true", "false"}:
        readings = [("true=a,false=b", "true means the first answer won"), ("false=a,true=b", "false means the first answer won")]
    elif found <= {"0", "1"}:
        readings = [("index0", "0 means the first answer won"), ("1=a,0=b", "1 means the first answer won")]
    elif found <= {"0", "1", "2"}:
        readings = [("0=a,1=b,2=tie", "0 means the first answer won, 2 a tie"), ("0=tie,1=a,2=b", "1 means the first answer won, 0 a tie")]
    elif all(n is not None for n in numbers) and any(n < 0 for n in numbers):  # type: ignore[operator]
        readings = [("sign", "negative means the first answer won"), ("reverse-sign", "positive means the first answer won")]
    elif len(seen) == 2 and not any("," in v or "=" in v for v in seen):
        x, y = seen
        readings = [(f"{x}=a,{y}=b", f"{x} means the first answer won"), (f"{y}=a,{x}=b", f"{y} means the first answer won")]
    else:
        readings = []
    return [(m, why) for m, why in readings if _reads_all(m, values)]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _reads_all(meaning: str, values: list) -> bool:
    try:
        reading = parse_label_meaning(meaning)
        for v in values:
            reading.side(v)
    except LabelError:
        return False
    return True
