"""Preference pairs and the loaders that read them from real-world files.

Every loader yields raw rows with their row number; one parser per format turns a
row into a `PreferencePair` or raises `BadRow`. Bad rows either stop the load with a
`DataError` naming the file, row and reason, or (``on_bad_row="skip"``) are skipped
and counted. Rows that are valid but carry no preference (ties) are always skipped
and counted. Nothing is dropped silently: `LoadResult.skipped` holds every count.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from .column_kinds import SCORE_PAIRS

# every format `--format` takes; the layouts of two answers and a label, and ranked lists,
# are read in autorule.layouts
FORMATS = ("pairs", "hh-rlhf", "alpacaeval", "mt-bench-human", "ab", "ultrafeedback", "pku-saferlhf", "shp", "helpsteer3",
           "arena", "arena-kaggle", "nectar", "ranked")
# Message (and its roles) lives with the one normaliser of message content; imported here for the readers
from .messages import Message, MessageError, Role, normalise_messages  # noqa: E402,F401


def to_conversation(value: Any) -> list[Message]:
    """A conversation from the shapes users have: Messages, OpenAI-style dicts, or a bare reply.

    Message content is read by `autorule.messages.normalise_message`: null content is
    empty, content parts are joined (media parts become ``[image]``-style placeholders),
    tool calls become ``[tool call] name(arguments)`` lines and ``tool`` turns are kept.

    Args:
        value: a string (one assistant reply with no prompt), a `Message`, one message
            dict, or a list of `Message` or ``{"role": ..., "content": ...}`` dicts.

    Raises:
        MessageError: (a ValueError) a message it cannot read, named by position.

    Example:
        >>> to_conversation("Hello!")
        [Message(role='assistant', content='Hello!')]
        >>> [m.role for m in to_conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])]
        ['user', 'assistant']
        >>> to_conversation([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}])[0].content
        '[image]\\nWhat is it?'
    """
    if isinstance(value, str):
        return [Message(role="assistant", content=value)]
    return normalise_messages(value)


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


class DataError(Exception):
    """Input that cannot be used; the message names the file, the row and the reason.

    Args:
        path: the file (or source) name; reason: what is wrong; row: the row or line
            number; unit: "row" or "line".

    Example:
        >>> load_pairs([{"question": "Q"}])
        Traceback (most recent call last):
        ...
        autorule.data.DataError: <rows>, row 1: cannot tell the format from the columns ['question']; the closest is pairs ...
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
            "reverse-sign", "onehot" or a map such as "0=b,1=a,2=tie" (see `autorule.labels`);
            None: the named layout's, or told from the values where only one reading fits.
        ranked_pairs: which pairs a ranked list gives: "best-vs-rest", "adjacent" or "all".

    Example:
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


# --------------------------------------------------------------------------- reading


def _open_binary(path: Path) -> io.BufferedIOBase:
    raw = path.open("rb")
    head = raw.read(2)
    raw.seek(0)
    return gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw


def _open_text(path: Path) -> io.TextIOBase:
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", errors="strict", newline="")


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def iter_rows(path: Path) -> tuple[Iterator[tuple[int, dict]], str]:
    """Rows of a local file or dataset directory, with 1-based row (or line) numbers."""
    shown = str(path)
    if path.is_dir():
        return _iter_dataset_dir(path), "row"
    name = _strip_gz(path.name.lower())
    if name.endswith((".jsonl", ".ndjson")):
        return _iter_jsonl(path), "line"
    if name.endswith(".json"):
        return _iter_json(path), "row"
    if name.endswith((".csv", ".tsv")):
        return _iter_csv(path, "\t" if name.endswith(".tsv") else ","), "row"
    if name.endswith(".parquet"):
        return _iter_parquet(path), "row"
    raise DataError(shown, "unknown file type (expected .jsonl, .json, .csv, .tsv or .parquet, optionally .gz, or a dataset directory)")


def first_record(path: Path) -> dict | None:
    """A file's first row that is a JSON object (to choose how to read the file), or None."""
    rows, _ = iter_rows(Path(path))
    return next((rec for _, rec in rows if isinstance(rec, dict)), None)


def _read_error(path: Path, exc: Exception, row: int | None = None, unit: str = "line") -> DataError:
    if isinstance(exc, UnicodeDecodeError):
        if exc.object[:2] in (b"\xff\xfe", b"\xfe\xff"):
            return DataError(str(path), "the file is UTF-16 (it starts with a byte-order mark); save it as UTF-8", row, unit)
        return DataError(str(path), f"not valid UTF-8 text ({exc.reason} at byte {exc.start} of the {unit}); "
                                    "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)", row, unit)
    if isinstance(exc, (EOFError, gzip.BadGzipFile)):
        return DataError(str(path), f"damaged or truncated gzip file ({exc})", row, unit)
    return DataError(str(path), f"cannot read file: {exc}", row, unit)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    lineno = 0
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")  # line by line, so a bad byte is reported on its own line
                except UnicodeDecodeError as e:
                    raise _read_error(path, e, lineno) from e
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield lineno, BadRow("broken JSON", f"{e.msg} at column {e.colno}")  # type: ignore[misc]
                    continue
                if not isinstance(obj, dict):
                    yield lineno, BadRow("not a JSON object", type(obj).__name__)  # type: ignore[misc]
                    continue
                yield lineno, obj
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise _read_error(path, e, lineno + 1) from e


def _iter_json(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        with _open_text(path) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise _read_error(path, e, None) from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(str(path), f"broken JSON: {e.msg}", e.lineno, "line") from e
    if isinstance(data, dict):
        # {"data": [...]} / {"train": [...]} wrappers, or a single record
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list):
        raise DataError(str(path), "expected a JSON list of records")
    for i, obj in enumerate(data, start=1):
        yield i, obj if isinstance(obj, dict) else BadRow("not a JSON object", type(obj).__name__)  # type: ignore[misc]


def _iter_csv(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    csv.field_size_limit(1 << 30)
    row = 0
    try:
        with _open_text(path) as f:
            for row, rec in enumerate(csv.DictReader(f, delimiter=delimiter), start=1):
                yield row, {k: _maybe_json(v) for k, v in rec.items() if k is not None}
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise _read_error(path, e, row + 1, "row") from e
    except csv.Error as e:
        raise DataError(str(path), f"broken CSV: {e}", row + 1) from e


def _maybe_json(value: str | None) -> Any:
    """CSV cells holding chat-message lists are JSON text; decode those only."""
    if value and value.lstrip().startswith("[{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises many types for damaged files
        raise DataError(str(path), f"cannot read Parquet file: {e}") from e
    i = 0
    batches = source.iter_batches(batch_size=1024)  # a batch at a time: memory stays flat however many rows
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # a damaged row group shows up only when it is read
            raise DataError(str(path), f"cannot read Parquet file: {e}", i + 1, "row") from e
        if batch is None:
            return
        for rec in batch.to_pylist():
            i += 1
            yield i, rec


def _iter_dataset_dir(path: Path) -> Iterator[tuple[int, dict]]:
    """A directory written by `datasets.Dataset.save_to_disk`, or one holding data files."""
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        files = sorted(p for p in path.iterdir() if _strip_gz(p.name).endswith((".jsonl", ".json", ".csv", ".parquet")))
        if not files:
            raise DataError(str(path), "directory holds no saved dataset and no .jsonl/.json/.csv/.parquet files") from None
        row = 0
        for f in files:
            rows, _ = iter_rows(f)
            for _, rec in rows:
                row += 1
                yield row, rec
        return
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    for i, rec in enumerate(ds, start=1):
        yield i, rec


def _iter_hub_dataset(name: str, split: str) -> Iterator[tuple[int, dict]]:
    import datasets

    import os

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown name, gated, ...
        text = f"{type(e).__name__}: {e}"
        if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
            hint = "HF_HUB_OFFLINE=1 is set, so only datasets already in the local Hugging Face cache load; unset it to download"
        elif any(w in text.lower() for w in ("connection", "resolve", "timed out", "network", "offline", "unreachable")):
            hint = "the Hugging Face Hub cannot be reached from here; download the dataset elsewhere (save_to_disk) and pass its directory, or set HF_HUB_OFFLINE=1 to use the local cache"
        else:
            hint = "check the name and split (and HF_TOKEN for gated datasets)"
        raise DataError(name, f"not a local file, and loading it as a Hugging Face dataset failed ({hint}): {text.splitlines()[0][:300]}") from e
    for i, rec in enumerate(ds, start=1):
        yield i, rec


# --------------------------------------------------------------------------- format parsers


def _iter_given_rows(rows: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    for i, rec in enumerate(rows, 1):
        yield i, rec if isinstance(rec, (dict, PreferencePair)) else BadRow("not a mapping", f"row {i} is {type(rec).__name__}, expected a dict")


def pair_id(prompt: list[Message], chosen: str, rejected: str) -> str:
    """Content-derived id: the same pair gets the same id in every file and run."""
    blob = json.dumps([[m.model_dump() for m in prompt], chosen, rejected], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _require(rec: dict, key: str) -> Any:
    if key not in rec:
        raise BadRow(f"missing column '{key}'", f"columns present: {sorted(rec)}")
    if rec[key] is None:
        raise BadRow(f"null '{key}'")
    return rec[key]


def _as_messages(value: Any, what: str) -> list[Message]:
    if isinstance(value, str):
        return [Message(role="user", content=value)]
    if not isinstance(value, list):
        raise BadRow(f"bad '{what}'", f"expected text or a list of chat messages, got {type(value).__name__}")
    try:  # the one normaliser: null content, content parts, tool calls, tool turns
        return normalise_messages(value)
    except MessageError as e:
        raise BadRow(f"bad '{what}'", str(e)) from None


def _finish(prompt: list[Message], chosen_turns: list[Message], rejected_turns: list[Message]) -> dict:
    """Split two conversations into shared prompt, side histories and final replies."""
    n = 0
    while n < min(len(chosen_turns), len(rejected_turns)) - 1 and chosen_turns[n] == rejected_turns[n]:
        n += 1
    prompt = [*prompt, *chosen_turns[:n]]
    c_rest, r_rest = chosen_turns[n:], rejected_turns[n:]
    for side, rest in (("chosen", c_rest), ("rejected", r_rest)):
        if not rest or rest[-1].role != "assistant":
            raise BadRow(f"no final assistant reply in '{side}'")
    chosen, rejected = c_rest[-1].content, r_rest[-1].content
    _check_replies(chosen, rejected)
    if not any(m.role == "user" for m in prompt):
        raise BadRow("empty prompt", "no user turn before the replies")
    return {
        "id": pair_id(prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_history": c_rest[:-1],
        "rejected_history": r_rest[:-1],
    }


# a million characters is ~250k tokens: beyond any verifier's context, and a sign of a broken row
MAX_REPLY_CHARS = 1_000_000


def _check_replies(chosen: str, rejected: str) -> None:
    if not chosen.strip():
        raise BadRow("empty reply", "chosen reply is empty")
    if not rejected.strip():
        raise BadRow("empty reply", "rejected reply is empty")
    if chosen.strip() == rejected.strip():
        raise BadRow("chosen identical to rejected")
    for side, text in (("chosen", chosen), ("rejected", rejected)):
        if len(text) > MAX_REPLY_CHARS:
            raise BadRow("reply too long", f"{side} reply is {len(text):,} characters, over the {MAX_REPLY_CHARS:,} limit (no verifier context holds it)")


def _join_prompt(prompt: list[Message], a: list[Message], b: list[Message]) -> tuple[list[Message], list[Message], list[Message], list[str]]:
    """(prompt, a, b, notes) with the prompt said once: TRL's rule, as UltraFeedback-binarized needs.

    Replies that start with the prompt's turns keep them and the prompt is not repeated; a
    text prompt beside message-list replies that hold a user turn is already inside them
    (when it differs from that turn, the replies' turns are read, as TRL does; counted).

    Example:
        >>> u = Message(role="user", content="Hi")
        >>> p, a, _, notes = _join_prompt([u], [u, Message(role="assistant", content="Hello")], [u, Message(role="assistant", content="Go")])
        >>> p, [m.role for m in a], notes
        ([], ['user', 'assistant'], ['prompt already at the start of the replies (not repeated)'])
    """
    n = len(prompt)
    if not n:
        return prompt, a, b, []
    if a[:n] == prompt and b[:n] == prompt:
        return [], a, b, ["prompt already at the start of the replies (not repeated)"]
    if n == 1 and prompt[0].role == "user" and any(m.role == "user" for m in (*a, *b)):
        return [], a, b, ["prompt column differs from the replies' own user turn (the replies' turns read, as TRL does)"]
    return prompt, a, b, []


def _check_scores(rec: dict) -> None:
    """Scores beside chosen/rejected are the label: equal is a tie, a higher-scored rejected reply is refused."""
    cols = next((pair for pair in SCORE_PAIRS if set(pair) <= set(rec)), None)
    if cols is None or rec[cols[0]] is None or rec[cols[1]] is None:
        return
    try:
        chosen, rejected = float(rec[cols[0]]), float(rec[cols[1]])
    except (TypeError, ValueError):
        raise BadRow(f"bad '{cols[0]}'", f"scores {rec[cols[0]]!r} / {rec[cols[1]]!r} are not numbers") from None
    if chosen == rejected:
        raise SkipRow(f"tie ({cols[0]} = {cols[1]})")
    if chosen < rejected:
        raise BadRow(f"{cols[1]} above {cols[0]}", f"{rejected:g} > {chosen:g}: the scores say the rejected reply is better")


def parse_pairs_row(rec: dict, columns: Columns) -> dict:
    """TRL preference formats: explicit prompt, or implicit (prompt inside chosen/rejected).

    A text prompt beside message-list replies that already hold it is said once (TRL's
    rule). Scores beside the replies (``score_chosen``/``score_rejected``, as
    UltraFeedback-binarized has) are the label: equal scores are a tie, skipped and counted.

    Args:
        rec: the row; columns: the prompt/chosen/rejected column names.

    Raises:
        BadRow: a missing, null or malformed column, or scores that contradict the columns.
        SkipRow: equal scores (a tie).

    Example:
        >>> row = parse_pairs_row({"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ...                        "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}]}, Columns())
        >>> [(m.role, m.content) for m in row["prompt"]], row["chosen"]
        ([('user', 'Hi')], 'Hello')
    """
    _check_scores(rec)
    chosen_v, rejected_v = _require(rec, columns.chosen), _require(rec, columns.rejected)
    prompt = _as_messages(_require(rec, columns.prompt), "prompt") if columns.prompt in rec else []
    if isinstance(chosen_v, str) and isinstance(rejected_v, str):
        if not prompt:
            raise BadRow(f"missing column '{columns.prompt}'", "text replies need a prompt column")
        return _finish(prompt, [Message(role="assistant", content=chosen_v)], [Message(role="assistant", content=rejected_v)])
    prompt, chosen, rejected, notes = _join_prompt(prompt, _reply_turns(chosen_v, columns.chosen), _reply_turns(rejected_v, columns.rejected))
    return {**_finish(prompt, chosen, rejected), "notes": notes}


def _reply_turns(value: Any, what: str) -> list[Message]:
    """A reply as text (the assistant's) or as chat messages; anything else is refused by _as_messages."""
    if isinstance(value, str):
        return [Message(role="assistant", content=value)]
    return _as_messages(value, what)


_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh_transcript(text: str, what: str) -> list[Message]:
    if not isinstance(text, str):
        raise BadRow(f"bad '{what}'", "expected transcript text")
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise BadRow(f"bad '{what}'", "not an hh-rlhf transcript (expected '\\n\\nHuman: ...\\n\\nAssistant: ...')")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [Message(role=roles[parts[i]], content=parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def parse_hh_row(rec: dict, columns: Columns) -> dict:
    chosen = parse_hh_transcript(_require(rec, columns.chosen), columns.chosen)
    rejected = parse_hh_transcript(_require(rec, columns.rejected), columns.rejected)
    for side, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1].role != "assistant":
            # some transcripts end on a Human turn: no reply to judge
            raise BadRow("empty reply", f"{side} transcript ends without an assistant reply")
    return _finish([], chosen, rejected)


def make_alpacaeval_parser(tie_threshold: float) -> Callable[[dict, Columns], dict]:
    def parse(rec: dict, columns: Columns) -> dict:
        instruction = _require(rec, "instruction")
        out1, out2 = _require(rec, "output_1"), _require(rec, "output_2")
        pref = _require(rec, "preference")
        try:
            pref = float(pref)
        except (TypeError, ValueError):
            raise BadRow("bad 'preference'", f"not a number: {pref!r}") from None
        if not 1.0 <= pref <= 2.0:
            raise BadRow("bad 'preference'", f"{pref} is outside [1, 2]")
        if abs(pref - 1.5) < tie_threshold:
            raise SkipRow(f"near-tie (|preference - 1.5| < {tie_threshold})")
        chosen, rejected = (out1, out2) if pref < 1.5 else (out2, out1)
        if not isinstance(instruction, str) or not instruction.strip():
            raise BadRow("empty prompt", "instruction is empty")
        prompt = [Message(role="user", content=instruction)]
        return _finish(prompt, [Message(role="assistant", content=str(chosen))], [Message(role="assistant", content=str(rejected))])

    return parse


def parse_mt_bench_human_row(rec: dict, columns: Columns) -> dict:
    winner = _require(rec, "winner")
    conv_a = _as_messages(_require(rec, "conversation_a"), "conversation_a")
    conv_b = _as_messages(_require(rec, "conversation_b"), "conversation_b")
    turn = int(rec.get("turn", 1) or 1)
    if winner not in ("model_a", "model_b"):
        if str(winner).startswith("tie"):
            raise SkipRow("tie")
        raise BadRow("bad 'winner'", f"expected model_a, model_b or tie, got {winner!r}")

    def upto_turn(conv: list[Message]) -> list[Message]:
        # keep the conversation through the judged turn's assistant reply
        seen = 0
        for i, m in enumerate(conv):
            if m.role == "assistant":
                seen += 1
                if seen == turn:
                    return conv[: i + 1]
        raise BadRow("bad conversation", f"fewer than {turn} assistant turns")

    conv_a, conv_b = upto_turn(conv_a), upto_turn(conv_b)
    chosen, rejected = (conv_a, conv_b) if winner == "model_a" else (conv_b, conv_a)
    return _finish([], chosen, rejected)


# --------------------------------------------------------------------------- detection and loading


def detect_format(rec: dict | list[dict], columns: Columns) -> str:
    """The format of a file from its first row or rows: names and values (see `autorule.layouts.detect`).

    Args:
        rec: the first row, or the first rows; columns: the column options given.

    Raises:
        NotPreferenceData: no format fits; the message names the closest and the flags that read it.

    Example:
        >>> detect_format({"history": "Q?", "human_ref_A": "x y", "human_ref_B": "z w", "labels": 0}, Columns())
        'shp'
    """
    from .layouts import detect  # layouts reads rows with this module's parsers

    return detect([rec] if isinstance(rec, dict) else list(rec), columns)


def _open_source(source: str | Path | Iterable[dict], split: str) -> tuple[Iterator[tuple[int, Any]], str, str]:
    """(rows, unit, shown name) of a source; unreadable sources fail here, before any work."""
    if not isinstance(source, (str, Path)):
        return _iter_given_rows(source), "row", "<rows>"
    path, shown = Path(source), str(source)
    if path.exists():
        if path.is_file() and path.stat().st_size == 0:
            raise DataError(shown, "file is empty")
        rows, unit = iter_rows(path)
        return rows, unit, shown
    if "/" in shown and not shown.startswith((".", "/")) and not Path(shown).suffix:
        return _iter_hub_dataset(shown, split), "row", shown
    raise DataError(shown, "no such file or directory")


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
        from .layouts import PEEK_ROWS, reader  # the layouts read rows with this module's parsers

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
