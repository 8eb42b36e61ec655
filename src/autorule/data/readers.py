"""Rows of files (JSONL, JSON, CSV/TSV, Parquet, gzipped or not), dataset directories, Hub datasets and
rows given in Python, each with its row or line number; unreadable input is a `DataError`."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


from autorule.data.pairs import BadRow, DataError, PreferencePair




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


def _iter_given_rows(rows: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    for i, rec in enumerate(rows, 1):
        yield i, rec if isinstance(rec, (dict, PreferencePair)) else BadRow("not a mapping", f"row {i} is {type(rec).__name__}, expected a dict")



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


