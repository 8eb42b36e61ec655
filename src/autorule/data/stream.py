"""Reading a source into pairs: lazily (`stream_pairs`, flat memory) or all at once (`load_pairs`).

Every loader yields raw rows with their row number; one parser per format turns a
row into a `PreferencePair` or raises `BadRow`. Bad rows either stop the load with a
`DataError` naming the file, row and reason, or (``on_bad_row="skip"``) are skipped
and counted. Rows that are valid but carry no preference (ties) are always skipped
and counted. Nothing is dropped silently: `LoadResult.skipped` holds every count.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal


from autorule.data.formats import FORMATS
from autorule.data import hints  # noqa: F401 (it explains Undetected: the closest format and the flags that read the file)
from autorule.data.layouts import PEEK_ROWS, reader
from autorule.data.pairs import BadRow, Columns, DataError, LoadResult, NotPreferenceData, PreferencePair, SkipRow
from autorule.data.readers import _open_source


class PairStream:
    """Preference pairs read lazily, one pass over the source per iteration: memory stays flat
    however long the file is. After a full pass it holds the same counts as a `LoadResult`
    (`rows`, `skipped`, `examples`, `format`, `pairs_read`).

    Args:
        source, format, columns, on_bad_row, tie_threshold, limit, split: as for `load_pairs`.

    Example:
        >>> stream = stream_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}] * 3 + [{"prompt": "Q", "chosen": "A", "rejected": "A"}], on_bad_row="skip")
        >>> [len(chunk) for chunk in stream.chunks(2)]
        [2, 1]
        >>> stream.summary()
        {'path': '<rows>', 'format': 'pairs', 'rows': 4, 'pairs': 3, 'skipped': {'chosen identical to rejected': 1}, 'notes': {}}
    """

    def __init__(self, source, format: str = "auto", *, columns: Columns | None = None, on_bad_row: Literal["error", "skip"] = "error",
                 tie_threshold: float = 0.1, limit: int | None = None, split: str = "train"):
        if format != "auto" and format not in FORMATS:
            raise DataError(str(source), f"unknown format '{format}' (choose from auto, {', '.join(FORMATS)})")
        if not isinstance(source, (str, Path)) and not isinstance(source, list):
            source = list(source)  # rows given once (a generator) must survive a second pass
        self.source, self.format, self.columns = source, format, columns or Columns()
        self._requested = format  # "auto" is told again on every pass; `format` then holds what was read
        self.on_bad_row, self.tie_threshold, self.limit, self.split = on_bad_row, tie_threshold, limit, split
        _, _, self.path = _open_source(source, split)  # a missing or empty file fails now
        self._reset()

    def _reset(self) -> None:
        self.rows, self.pairs_read = 0, 0
        self.skipped: Counter = Counter()
        self.examples: list[tuple[int, str]] = []
        self.notes: Counter = Counter()

    def _count(self, outcome: Exception, row: int, unit: str, shown: str) -> None:
        """A row (or one ranked pair) that gave no pair: ties always counted, bad rows an error unless skipped."""
        if isinstance(outcome, SkipRow):
            self.skipped[outcome.reason] += 1
            return
        if self.on_bad_row == "error":
            advice = " (use --on-bad-row skip to skip such rows)" if getattr(outcome, "skippable", True) else ""
            raise DataError(shown, f"{outcome}{advice}", row, unit) from None
        self.skipped[outcome.reason] += 1  # type: ignore[attr-defined]
        if len(self.examples) < 5:
            self.examples.append((row, str(outcome)))

    def __iter__(self) -> Iterator[PreferencePair]:
        self._reset()
        rows, unit, shown = _open_source(self.source, self.split)
        head, rest = _peek(rows, PEEK_ROWS)
        first_rows = [rec for _, rec in head if isinstance(rec, dict)]  # the format and a label's meaning are told from these
        requested = self._requested
        parse = None
        for row, rec in itertools.chain(head, rest):
            self.rows += 1
            try:
                if isinstance(rec, BadRow):
                    raise rec
                if isinstance(rec, PreferencePair):  # already a pair (rows given in Python)
                    self.format = "pairs"
                    outcomes: list = [rec]
                else:
                    if parse is None:
                        try:
                            self.format, parse = reader(requested, first_rows or [rec], self.columns, self.tie_threshold)
                        except NotPreferenceData as e:
                            raise DataError(shown, str(e), row, unit) from None
                    parsed = parse(rec, self.columns)
                    outcomes = parsed if isinstance(parsed, list) else [parsed]
            except (SkipRow, BadRow) as e:
                self._count(e, row, unit, shown)
                continue
            for outcome in outcomes:
                if isinstance(outcome, (SkipRow, BadRow)):
                    self._count(outcome, row, unit, shown)
                    continue
                if not isinstance(outcome, PreferencePair):
                    for note in outcome.pop("notes", ()):
                        self.notes[note] += 1
                    outcome = PreferencePair(**outcome, source=shown, row=row)
                self.pairs_read += 1
                yield outcome
                if self.limit is not None and self.pairs_read >= self.limit:
                    return
        if self.rows == 0:
            raise DataError(shown, "no rows found")
        if self.pairs_read == 0:
            raise DataError(shown, no_pairs_message(self.rows, self.skipped, self.examples, self.on_bad_row))

    def chunks(self, size: int) -> Iterator[list[PreferencePair]]:
        """The pairs in lists of at most `size`, in file order."""
        return chunked(self, size)

    def summary(self) -> dict[str, Any]:
        """What the last full pass read, as `LoadResult.summary` gives it."""
        return {"path": self.path, "format": self.format if self.format != "auto" else "unknown", "rows": self.rows,
                "pairs": self.pairs_read, "skipped": dict(self.skipped), "notes": dict(self.notes)}


def no_pairs_message(rows: int, skipped: Counter, examples: list[tuple[int, str]], on_bad_row: str) -> str:
    """Why a load gave no pair: every row skipped, with the reasons and the first examples.

    A load of zero pairs is an error, never an empty success: a command that went on would
    report nothing learned, scored or checked, with exit 0.

    Args:
        rows: rows read; skipped: skipped rows by reason; examples: (row, reason) of the first
            bad rows; on_bad_row: "error" or "skip".

    Example:
        >>> no_pairs_message(2, Counter({"missing column 'chosen'": 2}), [(1, "missing column 'chosen': columns present: ['q']")], "skip")
        "no pairs: all 2 rows were skipped (2 missing column 'chosen'; e.g. row 1: missing column 'chosen': columns present: ['q']); rows skipped as bad usually mean the wrong --format or column options, not bad rows"
    """
    reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    example = f"; e.g. row {examples[0][0]}: {examples[0][1]}" if examples else ""
    advice = ("; rows skipped as bad usually mean the wrong --format or column options, not bad rows"
              if on_bad_row == "skip" and examples else "")
    return f"no pairs: all {rows} rows were skipped ({reasons}{example}){advice}"


def _peek(rows: Iterator[tuple[int, Any]], n: int) -> tuple[list[tuple[int, Any]], Iterator[tuple[int, Any]]]:
    """The first n rows, and an iterator over the rest; an error met while peeking is raised
    after the rows before it (so a bad row 1 is still reported before an unreadable line 3)."""
    head: list[tuple[int, Any]] = []
    try:
        for item in rows:
            head.append(item)
            if len(head) >= n:
                break
    except DataError as e:
        failed = e

        def fail() -> Iterator[tuple[int, Any]]:
            raise failed
            yield  # pragma: no cover

        return head, fail()
    return head, rows


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Lists of at most `size` consecutive items of any iterable (Python 3.11 has no itertools.batched).

    Args:
        items: any iterable; size: the largest list.

    Example:
        >>> list(chunked(range(5), 2))
        [[0, 1], [2, 3], [4]]
    """
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def stream_pairs(
    source: str | Path | Iterable[dict],
    format: str = "auto",
    *,
    columns: Columns | None = None,
    on_bad_row: Literal["error", "skip"] = "error",
    tie_threshold: float = 0.1,
    limit: int | None = None,
    split: str = "train",
) -> PairStream:
    """Preference pairs from a source, read lazily (for files too big to hold): see `PairStream`.

    Args: as for `load_pairs`.

    Example:
        >>> from autorule.examples import SAMPLE_PAIRS
        >>> sum(1 for _ in stream_pairs(SAMPLE_PAIRS))
        24
    """
    return PairStream(source, format, columns=columns, on_bad_row=on_bad_row, tie_threshold=tie_threshold, limit=limit, split=split)


def load_pairs(
    source: str | Path | Iterable[dict],
    format: str = "auto",
    *,
    columns: Columns | None = None,
    on_bad_row: Literal["error", "skip"] = "error",
    tie_threshold: float = 0.1,
    limit: int | None = None,
    split: str = "train",
) -> LoadResult:
    """Load preference pairs from a file, a dataset directory, a Hugging Face dataset name or rows.

    Raises `DataError` for unreadable input, and for the first bad row unless
    ``on_bad_row="skip"``. For files too big to hold in memory, `stream_pairs` reads the
    same pairs lazily.

    Args:
        source: a path (JSONL, JSON, CSV/TSV, Parquet, optionally gzipped; or a saved
            dataset directory), a Hugging Face dataset name, or an iterable of dict rows
            in any supported layout (e.g. ``{"prompt", "chosen", "rejected"}``).
        format: "auto" (told from the columns) or one of `FORMATS`.
        columns: column names for the generic "pairs" format.
        on_bad_row: "error" stops at the first bad row; "skip" counts it in `skipped`.
        tie_threshold: AlpacaEval preferences this close to 1.5 are ties (skipped).
        limit: stop after this many pairs.
        split: the split of a Hugging Face dataset.

    Example:
        >>> data = load_pairs([{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}])
        >>> data.format, len(data), data[0].chosen
        ('pairs', 1, 'Hi!')
    """
    stream = stream_pairs(source, format, columns=columns, on_bad_row=on_bad_row, tie_threshold=tie_threshold, limit=limit, split=split)
    pairs = list(stream)
    summary = stream.summary()
    return LoadResult(path=stream.path, format=summary["format"], pairs=pairs, rows=stream.rows, skipped=stream.skipped, examples=stream.examples,
                      notes=stream.notes)
