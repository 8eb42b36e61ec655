"""Preference pairs, the errors of reading them, and the options that say how to read them."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from autorule.errors import InputError
from autorule.data.messages import Message, MessageError, Role, normalise_messages  # noqa: F401



class PreferencePair(BaseModel):
    """One human (or AI) judgement: for `prompt`, `chosen` beat `rejected`.

    `prompt` holds the turns both sides share. `chosen` and `rejected` are the final
    assistant replies. When the two conversations diverge before the final reply (for
    example MT-Bench turn-2 judgements), the side-specific turns in between are kept
    in `chosen_history` / `rejected_history`, so multi-turn conversations stay whole.

    Args:
        id: a content hash of the pair; prompt: the shared turns; chosen, rejected: the
            final replies; chosen_history, rejected_history: side-specific turns before
            them; source, row: where the pair was read.

    Example:
        >>> from autorule.data import load_pairs
        >>> pair = load_pairs([{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])[0]
        >>> [(m.role, m.content) for m in pair.conversation("chosen")]
        [('user', 'Say hi.'), ('assistant', 'Hi!')]
    """

    id: str
    prompt: list[Message]
    chosen: str
    rejected: str
    chosen_history: list[Message] = Field(default_factory=list)
    rejected_history: list[Message] = Field(default_factory=list)
    source: str = ""
    row: int = 0

    def conversation(self, side: Literal["chosen", "rejected"]) -> list[Message]:
        """The whole conversation that ends with one side's reply."""
        history = self.chosen_history if side == "chosen" else self.rejected_history
        reply = self.chosen if side == "chosen" else self.rejected
        return [*self.prompt, *history, Message(role="assistant", content=reply)]


class DataError(InputError):
    """Input that cannot be used; the message names the file, the row and the reason.

    Args:
        path: the file (or source) name; reason: what is wrong; row: the row or line
            number; unit: "row" or "line".

    Example:
        >>> from autorule.data import load_pairs
        >>> load_pairs([{"question": "Q"}])
        Traceback (most recent call last):
        ...
        autorule.data.pairs.DataError: <rows>, row 1: cannot tell the format from the columns ['question']; the closest is pairs ...
    """

    def __init__(self, path: str, reason: str, row: int | None = None, unit: str = "row"):
        self.path, self.reason, self.row = path, reason, row
        where = f"{path}, {unit} {row}" if row is not None else path
        super().__init__(f"{where}: {reason}")


class BadRow(Exception):
    """A row that cannot become a pair; `reason` is a short, countable label.

    Args:
        reason: the countable label; detail: the rest of the message; skippable: False when
            skipping would hide a mistake in the options (a label meaning the file's labels do
            not fit), so the error does not suggest ``--on-bad-row skip``.
    """

    def __init__(self, reason: str, detail: str = "", skippable: bool = True):
        self.reason, self.skippable = reason, skippable
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SkipRow(Exception):
    """A valid row that carries no preference (a tie); always skipped and counted."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class NotPreferenceData(Exception):
    """The file is readable but holds something else (e.g. prompts only)."""


@dataclass
class Columns:
    """How a file's columns are read (the CLI's data options).

    Args:
        prompt, chosen, rejected: the `pairs` format's columns.
        answer_a, answer_b: the first and second answer of a two-answers-and-a-label file
            (``--format ab``); None: found from the names and values.
        label: the label column, or the one-hot columns "A,B[,TIE]"; "none" says a file
            read as `pairs` has no preference label (its label-like column means something else).
        label_meaning: what the label's values say: "ab", "index0", "index1", "sign",
            "reverse-sign", "onehot" or a map such as "0=b,1=a,2=tie" (see `autorule.data.labels`);
            None: the named layout's, or told from the values where only one reading fits.
        ranked_pairs: which pairs a ranked list gives: "best-vs-rest", "adjacent" or "all".

    Example:
        >>> from autorule.data import load_pairs
        >>> load_pairs([{"q": "Wifi?", "r0": "Crack it.", "r1": "Ask them.", "better": 1}],
        ...            columns=Columns(prompt="q", answer_a="r0", answer_b="r1", label="better", label_meaning="index0"))[0].chosen
        'Ask them.'
    """

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    answer_a: str | None = None
    answer_b: str | None = None
    label: str | None = None
    label_meaning: str | None = None
    ranked_pairs: str = "best-vs-rest"


@dataclass
class LoadResult:
    """Pairs read from one source, with what was skipped and why.

    Iterating over it (or `len`, indexing) gives its `pairs`.

    Args:
        path: the source; format: the format read; pairs: the pairs; rows: rows read;
        skipped: skipped rows (pairs, for ranked lists) by reason; examples: (row, reason)
        of the first bad rows; notes: rows read in a way worth knowing, by reason (a prompt
        column already inside the replies, pairs made from ranked lists).

    Example:
        >>> from autorule.data import load_pairs
        >>> data = load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "A"}, {"prompt": "Q", "chosen": "A", "rejected": "B"}], on_bad_row="skip")
        >>> len(data), dict(data.skipped)
        (1, {'chosen identical to rejected': 1})
    """

    path: str
    format: str
    pairs: list[PreferencePair]
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    # (row, reason) of the first skipped bad rows, for messages
    examples: list[tuple[int, str]] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]

    def summary(self) -> dict[str, Any]:
        out = {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "pairs": len(self.pairs),
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),  # always there, as skipped is: a reader of the JSON need not guess
        }
        return out



def pair_id(prompt: list[Message], chosen: str, rejected: str) -> str:
    """Content-derived id: the same pair gets the same id in every file and run."""
    blob = json.dumps([[m.model_dump() for m in prompt], chosen, rejected], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]



def chosen_first(pair_id: str, seed: int) -> bool:
    """Whether a pair is shown with its chosen side first (as A): a coin per pair, reproducible.

    Judges favour one position, so every stage that shows a pair as A and B (reasoning,
    validation's agreement) shows it in this order; it depends only on the seed and the pair's id.

    Args:
        pair_id: the pair's id (`PreferencePair.id`).
        seed: the run's seed.

    Example:
        >>> [chosen_first("x", seed) for seed in range(4)]  # the same every run
        [False, False, True, False]
    """
    return random.Random(f"{seed}:{pair_id}").random() < 0.5
