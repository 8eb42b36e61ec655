"""Saved rollouts read back, one at a time: TRL's logged completions, verl's generation dumps, autorule's JSONL.

The layouts, as the installed libraries write them:

- **trl** (TRL 1.16, ``GRPOTrainer.log`` with ``log_completions=True``, trl/trainer/grpo_trainer.py
  around line 3341): one Parquet file per logging step, ``OUTPUT_DIR/completions/completions_{step:05d}.parquet``,
  written whatever ``report_to`` is (the wandb/trackio tables are copies of it). Columns: ``step``,
  ``prompt``, ``completion`` (text, or chat messages for conversational data), one float column per
  reward function (named after it; NaN where it gave None), the columns of ``log_extra``, and
  ``advantage``. TRL keeps only the last generation batch (``self._logs``, deques of
  ``generation_batch_size``), so when no generation happened between two logs (``num_iterations`` > 1)
  the next file repeats the batch: such a file is skipped and counted. The old reward is the sum of the
  reward columns (TRL's weights are not in the log: a weighted run needs ``old_reward=COLUMN``).
- **verl** (verl 0.9, ``RayPPOTrainer._write_generations`` in verl/trainer/ppo/ray_trainer.py, called
  when ``trainer.rollout_data_dir`` is set): one JSONL file per step, ``ROLLOUT_DATA_DIR/{step}.jsonl``,
  each line ``input`` (the prompt decoded from its tokens, chat template text included),
  ``output`` (the response), ``gts``, ``score`` (the sequence's reward), ``step``, then each
  reward_extra_info key (e.g. autorule's ``rule_reward``) and ``request_id`` or ``uid`` where present.
  The ``input`` text is judged as one user turn (the template's markers are not parsed back).
- **autorule**: JSONL, one object per completion: ``completion`` (or ``response``; text or chat
  messages), optional ``prompt`` (text or chat messages), ``group``, ``step``, ``reward`` (the
  old reward), ``rule_reward`` and ``rm``. `autorule rescore --out` writes this shape (its
  ``reward`` the new one), so a rescored file can be rescored again; `autorule score`'s input
  (``prompt`` + ``response``) reads too, its output rows (no text) do not.

Completions of one prompt in one step form a group (GRPO's), unless a row names its ``group``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autorule.data import BadRow, DataError, Message, iter_rows
from autorule.data.messages import MessageError
from autorule.integrations.conversation import conversation

ROLLOUT_FORMATS = ("trl", "verl", "autorule")
# columns of TRL's table that are not reward functions
TRL_FIXED = {"step", "prompt", "completion", "advantage", "image"}
# keys of verl's dump that are not reward_extra_info
VERL_FIXED = {"input", "output", "gts", "score", "step", "request_id", "uid"}
# numbers an autorule row may carry besides its reward
AUTORULE_PARTS = ("rule_reward", "rm")
PEEK_ROWS = 20  # rows read to tell verl's layout from autorule's
REPEATED_LOG = "repeated TRL log (the same generation batch logged again)"


@dataclass(frozen=True)
class SavedRollout:
    """One saved completion and what its run recorded.

    Args:
        where: the file and line (or row) it came from, e.g. ``"3.jsonl, line 2"``.
        prompt: the prompt as saved (text, chat messages, or None).
        completion: the completion as saved (text or chat messages).
        conversation: prompt and completion as messages, ending with the response to judge.
        group: its GRPO group: the row's ``group``, else ``"prompt:"`` + a hash of its prompt.
        step: the trainer's step (None where the file has none).
        old_reward: the reward the run gave it (None where none was saved).
        old_parts: the parts the run logged beside it (TRL: each reward function's column; verl:
            numeric reward_extra_info; autorule: ``rule_reward``, ``rm``), NaN where missing.

    Example:
        >>> r = SavedRollout("a.jsonl, line 1", "Hi", "Hello", [Message(role="user", content="Hi")], "g", 2, 0.5)
        >>> r.step, r.old_reward, r.old_parts
        (2, 0.5, {})
    """

    where: str
    prompt: Any
    completion: Any
    conversation: list[Message]
    group: str
    step: int | None
    old_reward: float | None
    old_parts: dict[str, float] = field(default_factory=dict)


class RolloutReader:
    """Saved rollouts, read lazily (one pass per iteration, one file at a time: memory stays flat).

    Args:
        path: a file (``.parquet`` for TRL, ``.jsonl``/``.jsonl.gz`` for verl and autorule) or a
            folder: TRL's ``output_dir`` (its ``completions/`` folder is read), the completions
            folder itself, or verl's ``rollout_data_dir`` (files read in step order).
        format: "auto" (told from the file names and the first row), "trl", "verl" or "autorule".
        old_reward: the column (TRL), key (verl) or field (autorule) holding the old reward,
            instead of the default (TRL: the sum of the reward columns; verl: ``score``;
            autorule: ``reward``).
        on_bad_row: "error" (stop at the first bad row with a `DataError` naming the file and
            line) or "skip" (skip it and count it by reason).
        limit: stop after this many rollouts.

    After a pass: ``rows`` (rows seen), ``rollouts`` (yielded), ``skipped`` (reason -> count),
    ``examples`` (reason -> where its first one is), ``files``, ``old_reward_from`` (what the old
    reward is, in words).

    Raises:
        DataError: (an `InputError`, exit 2) no such path, a folder with no rollout files, an
            unknown format, a file of another layout, a missing ``old_reward`` column, a bad row.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "3.jsonl"
        >>> _ = path.write_text('{"input": "Q", "output": "A", "gts": null, "score": 1.0, "step": 3, "acc": 1}\\n')
        >>> reader = RolloutReader(path)
        >>> [(r.completion, r.step, r.old_reward, r.old_parts) for r in reader], reader.format, reader.rows
        ([('A', 3, 1.0, {'acc': 1.0})], 'verl', 1)
    """

    def __init__(self, path: str | Path, format: str = "auto", *, old_reward: str | None = None, on_bad_row: str = "error", limit: int | None = None):
        self.path = Path(path)
        if format != "auto" and format not in ROLLOUT_FORMATS:
            raise DataError(str(path), f"unknown rollout format '{format}' (choose from auto, {', '.join(ROLLOUT_FORMATS)})")
        if on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row={on_bad_row!r}: choose 'error' or 'skip'")
        self.old_reward, self.on_bad_row, self.limit = old_reward, on_bad_row, limit
        self.files = _files(self.path, format)
        self.format = format if format != "auto" else _detect(self.files)
        self.old_reward_from = old_reward or {"trl": "the sum of the reward columns", "verl": "score", "autorule": "reward"}[self.format]
        self._reset()

    def _reset(self) -> None:
        self.rows = self.rollouts = 0
        self.skipped: Counter = Counter()
        self.examples: dict[str, str] = {}
        self.reward_columns: list[str] = []  # TRL: the columns summed into the old reward, as met

    def __iter__(self) -> Iterator[SavedRollout]:
        self._reset()
        previous = None
        for path in self.files:
            if self.format == "trl":
                columns = _trl_columns(path)
                if self.old_reward and self.old_reward not in columns:
                    raise DataError(str(path), f"no numeric column '{self.old_reward}' for the old reward (reward columns: {', '.join(columns) or 'none'})")
                digest = _trl_digest(path)
                if digest == previous:  # TRL wrote its last generation batch again
                    n = _parquet_rows(path)
                    self.rows += n
                    self.skipped[REPEATED_LOG] += n
                    self.examples.setdefault(REPEATED_LOG, str(path))
                    continue
                previous = digest
                self.reward_columns += [c for c in columns if c not in self.reward_columns]
            rows, unit = iter_rows(path)
            for line, rec in rows:
                if self.limit is not None and self.rollouts >= self.limit:
                    return
                self.rows += 1
                where = f"{path}, {unit} {line}"
                try:
                    if isinstance(rec, BadRow):
                        raise rec
                    rollout = self._parse(rec, where, columns if self.format == "trl" else None)
                except BadRow as e:
                    if self.on_bad_row == "error":
                        raise DataError(str(path), f"{e} (on_bad_row='skip', --on-bad-row skip, skips and counts such rows)", line, unit) from None
                    self.skipped[e.reason] += 1
                    self.examples.setdefault(e.reason, where)
                    continue
                self.rollouts += 1
                yield rollout

    def _parse(self, rec: dict, where: str, reward_columns: list[str] | None) -> SavedRollout:
        """One row as a `SavedRollout`, or `BadRow` with a countable reason."""
        if self.format == "trl":
            prompt, completion, step = rec.get("prompt"), rec.get("completion"), rec.get("step")
            parts = {c: _number(rec.get(c), c) for c in reward_columns or ()}
            if self.old_reward:
                old = _number(rec.get(self.old_reward), self.old_reward)
            else:
                found = [v for v in parts.values() if not math.isnan(v)]
                old = math.fsum(found) if found else math.nan  # TRL's nansum; all missing: no reward
            group = None
        elif self.format == "verl":
            if not isinstance(rec.get("output"), str):
                raise BadRow("no 'output' text", f"keys {sorted(rec)}; verl's dump has input, output, score, step")
            prompt, completion, step, group = rec.get("input"), rec["output"], rec.get("step"), None
            parts = {k: float(v) for k, v in rec.items() if k not in VERL_FIXED and _is_number(v)}
            old = _number(rec.get(self.old_reward or "score"), self.old_reward or "score")
        else:
            completion = rec.get("completion", rec.get("response"))
            if completion is None:
                hint = ("; this looks like a row `autorule score --out` writes, which holds no text: rescore the file score read"
                        if "verdicts" in rec or ("error" in rec and "id" in rec) else "")
                raise BadRow("no completion", f"expected a 'completion' (text or chat messages); keys {sorted(rec)}{hint}")
            prompt, step, group = rec.get("prompt"), rec.get("step"), rec.get("group")
            parts = {k: _number(rec[k], k) for k in AUTORULE_PARTS if rec.get(k) is not None}
            old = _number(rec.get(self.old_reward or "reward"), self.old_reward or "reward")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step)):
            raise BadRow("step not a whole number", repr(step))
        try:
            messages = conversation(prompt, completion)
        except MessageError as e:
            raise BadRow("unreadable messages", str(e)) from None
        return SavedRollout(where, prompt, completion, messages, str(group) if group is not None else prompt_group(prompt),
                            None if step is None else int(step), None if math.isnan(old) else old, parts)

    def summary(self) -> dict:
        """What the last pass read: format, files, rows, rollouts, skipped and where the first of each was, the old reward.

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.jsonl"
            >>> _ = path.write_text('{"completion": "A", "reward": 1}\\n{"prompt": "Q"}\\n')
            >>> reader = RolloutReader(path, on_bad_row="skip")
            >>> _ = list(reader)
            >>> s = reader.summary(); s["rows"], s["rollouts"], s["skipped"], s["old_reward_from"]
            (2, 1, {'no completion': 1}, 'reward')
        """
        return {"format": self.format, "files": len(self.files), "rows": self.rows, "rollouts": self.rollouts,
                "skipped": dict(self.skipped.most_common()), "skipped_first_at": dict(self.examples),
                "old_reward_from": self.old_reward_from + (f" ({', '.join(self.reward_columns)})" if self.reward_columns and not self.old_reward else "")}


def prompt_group(prompt: Any) -> str:
    """The group of a completion whose row names none: its prompt (completions of one prompt share it).

    Example:
        >>> prompt_group("Hi") == prompt_group("Hi"), prompt_group("Hi") == prompt_group([{"role": "user", "content": "Hi"}])
        (True, False)
    """
    text = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
    return "prompt:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, name: str) -> float:
    """A saved reward as a float: NaN where it is missing (None, NaN), `BadRow` where it is not a number."""
    if value is None:
        return math.nan
    if not _is_number(value):
        raise BadRow(f"'{name}' not a number", repr(value)[:80])
    return float(value)


def _step_key(path: Path) -> tuple:
    """Files in step order: ``completions_00012.parquet``, ``12.jsonl`` by their number, then by name."""
    numbers = re.findall(r"\d+", path.name)
    return (int(numbers[-1]) if numbers else -1, path.name)


def _files(path: Path, format: str) -> list[Path]:
    """The rollout files at `path`: the file itself, or a folder's files in step order."""
    if not path.exists():
        raise DataError(str(path), "no such file or folder")
    if path.is_file():
        return [path]
    folder = path / "completions" if (path / "completions").is_dir() and format in ("auto", "trl") else path
    parquet = sorted(folder.glob("*.parquet"), key=_step_key)
    jsonl = sorted([*folder.glob("*.jsonl"), *folder.glob("*.jsonl.gz")], key=_step_key)
    files = parquet if format == "trl" or (format == "auto" and parquet) else jsonl
    if not files:
        raise DataError(str(path), "no rollout files in this folder (expected TRL's completions/*.parquet, or .jsonl files: verl's {step}.jsonl or autorule's)")
    return files


def _detect(files: list[Path]) -> str:
    """The format of the first file: TRL from Parquet, verl or autorule from the keys of its first rows that tell."""
    first = files[0]
    if first.name.lower().endswith(".parquet"):
        return "trl"
    rows, unit = iter_rows(first)
    seen = None
    for line, rec in itertools.islice(rows, PEEK_ROWS):
        if isinstance(rec, BadRow):
            continue
        if "output" in rec and "input" in rec:
            return "verl"
        if "completion" in rec or "response" in rec:
            return "autorule"
        seen = seen or (line, sorted(rec))
    if seen is None:
        raise DataError(str(first), "no rollouts found")
    raise DataError(str(first), f"cannot tell the rollout format from the keys {seen[1]}: verl's dump has 'input' and 'output', "
                                "autorule's rows a 'completion' (set the format to say which)", seen[0], unit)


def _parquet_schema(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except Exception as e:  # pyarrow raises many types for damaged files
        raise DataError(str(path), f"cannot read Parquet file: {e}") from e


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _trl_columns(path: Path) -> list[str]:
    """A TRL completions file's reward columns: the numeric ones besides step and advantage."""
    import pyarrow.types as pt

    schema = _parquet_schema(path)
    names = set(schema.names)
    if not {"prompt", "completion"} <= names:
        raise DataError(str(path), f"not a TRL completions log: no 'prompt' and 'completion' columns (columns {sorted(names)})")
    return [f.name for f in schema if f.name not in TRL_FIXED and not f.name.startswith("__")
            and (pt.is_floating(f.type) or pt.is_integer(f.type))]


def _trl_digest(path: Path) -> str:
    """A hash of a TRL file's prompts and completions (one generation batch: read whole, then let go)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["prompt", "completion"])
    except Exception as e:
        raise DataError(str(path), f"cannot read Parquet file: {e}") from e
    text = json.dumps([table.column("prompt").to_pylist(), table.column("completion").to_pylist()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
