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
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

FORMATS = ("pairs", "hh-rlhf", "alpacaeval", "mt-bench-human", "ab")
# the "ab" format: a prompt, two answers and a label naming the better one
AB_PROMPTS = ("question", "prompt", "instruction", "input")
AB_ANSWERS = (("answer_a", "answer_b"), ("response_a", "response_b"), ("output_a", "output_b"), ("completion_a", "completion_b"))
AB_LABELS = ("label", "winner", "preference", "choice")
# label values: which answer won (ties, and labels like "both bad", are skipped and counted)
AB_FIRST = {"a", "1", "model_a", "answer_a", "response_a"}
AB_SECOND = {"b", "2", "model_b", "answer_b", "response_b"}
AB_TIES = {"tie", "tie (bothbad)", "both_bad", "both bad", "neither", "equal", "0", "draw"}
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
    """A row that cannot become a pair; `reason` is a short, countable label."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
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
    """Column names for the generic `pairs` format (overridable from the CLI)."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"


@dataclass
class LoadResult:
    """Pairs read from one source, with what was skipped and why.

    Iterating over it (or `len`, indexing) gives its `pairs`.

    Args:
        path: the source; format: the format read; pairs: the pairs; rows: rows read;
            skipped: skipped rows by reason; examples: (row, reason) of the first bad rows.

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

    def __iter__(self) -> Iterator[PreferencePair]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index):
        return self.pairs[index]

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "pairs": len(self.pairs),
            "skipped": dict(self.skipped),
        }


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


def parse_pairs_row(rec: dict, columns: Columns) -> dict:
    """TRL preference formats: explicit prompt, or implicit (prompt inside chosen/rejected)."""
    chosen_v, rejected_v = _require(rec, columns.chosen), _require(rec, columns.rejected)
    prompt = _as_messages(_require(rec, columns.prompt), "prompt") if columns.prompt in rec else []
    if isinstance(chosen_v, str) and isinstance(rejected_v, str):
        if not prompt:
            raise BadRow(f"missing column '{columns.prompt}'", "text replies need a prompt column")
        return _finish(prompt, [Message(role="assistant", content=chosen_v)], [Message(role="assistant", content=rejected_v)])
    return _finish(prompt, _reply_turns(chosen_v, columns.chosen), _reply_turns(rejected_v, columns.rejected))


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


def ab_columns(keys) -> tuple[str, str, str, str] | None:
    """(prompt, answer A, answer B, label) columns of an A/B-plus-label row, or None."""
    prompt = next((k for k in AB_PROMPTS if k in keys), None)
    answers = next((pair for pair in AB_ANSWERS if set(pair) <= set(keys)), None)
    label = next((k for k in AB_LABELS if k in keys), None)
    if prompt and answers and label:
        return prompt, answers[0], answers[1], label
    return None


def parse_ab_row(rec: dict, columns: Columns) -> dict:
    """A prompt, two answers and a label: A/B, 1/2 or model_a/model_b (case ignored); ties skipped.

    Example:
        >>> parse_ab_row({"question": "Q?", "answer_a": "yes", "answer_b": "no", "label": "B"}, Columns())["chosen"]
        'no'
    """
    found = ab_columns(rec)
    if found is None:
        raise BadRow("not an A/B row", f"expected one of {AB_PROMPTS}, an answer_a/answer_b pair and one of {AB_LABELS}")
    prompt_key, a_key, b_key, label_key = found
    label = str(rec[label_key]).strip().lower()
    if label in AB_TIES:
        raise SkipRow("tie")
    if label not in AB_FIRST | AB_SECOND:
        raise BadRow(f"bad '{label_key}'", f"{rec[label_key]!r} is not A/B, 1/2 or model_a/model_b (ties: tie, both_bad)")
    chosen, rejected = (rec[a_key], rec[b_key]) if label in AB_FIRST else (rec[b_key], rec[a_key])
    prompt = _as_messages(rec[prompt_key], prompt_key)
    return _finish(prompt, _reply_turns(chosen, a_key), _reply_turns(rejected, b_key))


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


def detect_format(rec: dict, columns: Columns) -> str:
    keys = set(rec)
    if {"instruction", "output_1", "output_2", "preference"} <= keys:
        return "alpacaeval"
    if {"conversation_a", "conversation_b", "winner"} <= keys:
        return "mt-bench-human"
    if {"question_id", "turns"} <= keys and columns.chosen not in keys:
        raise NotPreferenceData(
            "this looks like MT-Bench questions (question_id, turns): prompts without preference judgements. "
            "Use it as a prompt file (e.g. for `autorule generate`), not as preference data."
        )
    if {columns.chosen, columns.rejected} <= keys:
        if columns.prompt not in keys and isinstance(rec[columns.chosen], str) and rec[columns.chosen].startswith("\n\nHuman:"):
            return "hh-rlhf"
        return "pairs"
    if ab_columns(keys):
        return "ab"
    raise NotPreferenceData(_undetected(keys, columns))


def _undetected(keys: set, columns: Columns) -> str:
    """Why no format fits, the closest one, and flags that would read the file where they can."""
    shown = sorted(keys)
    responses = [k for k in ("response", "completion", "output", "answer") if k in keys]
    prompts = [k for k in (columns.prompt, *AB_PROMPTS) if k in keys]
    if responses and prompts:
        return (f"the columns {shown} hold one response per prompt ('{prompts[0]}', '{responses[0]}'), not a preference pair. "
                "Extraction and validation need two responses and which one won; to score single responses against rules, "
                f"use `autorule score --rules RULES --data FILE`")
    text_columns = [k for k in shown if k not in (columns.prompt, columns.chosen, columns.rejected)]
    hints = []
    if prompts:
        others = [k for k in text_columns if k not in prompts]
        worse = [k for k in others if any(w in k.lower() for w in ("rejected", "worse", "dispreferred", "bad", "los"))]
        better = [k for k in others if k not in worse and any(w in k.lower() for w in ("chosen", "better", "preferred", "good", "win"))]
        prompt_flag = f"--format pairs --prompt-column {prompts[0]}"
        if better and worse:
            hints.append(f"read it with {prompt_flag} --chosen-column {better[0]} --rejected-column {worse[0]}")
        elif len(others) >= 2:
            hints.append(f"if '{others[0]}' is always the better response: {prompt_flag} --chosen-column {others[0]} --rejected-column {others[1]}")
    if prompts and any(k in keys for k in AB_LABELS):
        hints.append("two answers and a label read with --format ab once the answers are named answer_a/answer_b (or response_a/response_b)")
    closest = "pairs ('prompt', 'chosen', 'rejected')"
    if any(k in keys for k in AB_LABELS):
        closest = "ab (a prompt, 'answer_a', 'answer_b' and a 'label' of A/B, 1/2 or model_a/model_b)"
    elif {"instruction"} & keys:
        closest = "alpacaeval ('instruction', 'output_1', 'output_2', 'preference')"
    return (f"cannot tell the format from the columns {shown}; the closest is {closest}"
            + ("; " + "; ".join(hints) if hints else "; use --format and the column options (--prompt-column, --chosen-column, --rejected-column)"))


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
        {'path': '<rows>', 'format': 'pairs', 'rows': 4, 'pairs': 3, 'skipped': {'chosen identical to rejected': 1}}
    """

    def __init__(self, source, format: str = "auto", *, columns: Columns | None = None, on_bad_row: Literal["error", "skip"] = "error",
                 tie_threshold: float = 0.1, limit: int | None = None, split: str = "train"):
        if format != "auto" and format not in FORMATS:
            raise DataError(str(source), f"unknown format '{format}' (choose from auto, {', '.join(FORMATS)})")
        if not isinstance(source, (str, Path)) and not isinstance(source, list):
            source = list(source)  # rows given once (a generator) must survive a second pass
        self.source, self.format, self.columns = source, format, columns or Columns()
        self.on_bad_row, self.tie_threshold, self.limit, self.split = on_bad_row, tie_threshold, limit, split
        _, _, self.path = _open_source(source, split)  # a missing or empty file fails now
        self._reset()

    def _reset(self) -> None:
        self.rows, self.pairs_read = 0, 0
        self.skipped: Counter = Counter()
        self.examples: list[tuple[int, str]] = []

    def __iter__(self) -> Iterator[PreferencePair]:
        self._reset()
        rows, unit, shown = _open_source(self.source, self.split)
        parsers: dict[str, Callable[[dict, Columns], dict]] = {
            "pairs": parse_pairs_row,
            "hh-rlhf": parse_hh_row,
            "alpacaeval": make_alpacaeval_parser(self.tie_threshold),
            "mt-bench-human": parse_mt_bench_human_row,
            "ab": parse_ab_row,
        }
        fmt = self.format
        parse = parsers.get(fmt)
        for row, rec in rows:
            self.rows += 1
            try:
                if isinstance(rec, BadRow):
                    raise rec
                if isinstance(rec, PreferencePair):  # already a pair (rows given in Python)
                    self.format = fmt = "pairs"
                    pair = rec
                else:
                    if parse is None:
                        try:
                            self.format = fmt = detect_format(rec, self.columns)
                        except NotPreferenceData as e:
                            raise DataError(shown, str(e), row, unit) from None
                        parse = parsers[fmt]
                    pair = PreferencePair(**parse(rec, self.columns), source=shown, row=row)
            except SkipRow as e:
                self.skipped[e.reason] += 1
                continue
            except BadRow as e:
                if self.on_bad_row == "error":
                    raise DataError(shown, f"{e} (use --on-bad-row skip to skip such rows)", row, unit) from None
                self.skipped[e.reason] += 1
                if len(self.examples) < 5:
                    self.examples.append((row, str(e)))
                continue
            self.pairs_read += 1
            yield pair
            if self.limit is not None and self.pairs_read >= self.limit:
                break
        if self.rows == 0:
            raise DataError(shown, "no rows found")

    def chunks(self, size: int) -> Iterator[list[PreferencePair]]:
        """The pairs in lists of at most `size`, in file order."""
        return chunked(self, size)

    def summary(self) -> dict[str, Any]:
        """What the last full pass read, as `LoadResult.summary` gives it."""
        return {"path": self.path, "format": self.format if self.format != "auto" else "unknown", "rows": self.rows,
                "pairs": self.pairs_read, "skipped": dict(self.skipped)}


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
    return LoadResult(path=stream.path, format=summary["format"], pairs=pairs, rows=stream.rows, skipped=stream.skipped, examples=stream.examples)
