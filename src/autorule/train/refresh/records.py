"""A refresh's record in the run folder: refresh/step-N.json and refresh/rules-step-N.yaml, read back by step."""

from __future__ import annotations

import tempfile  # noqa: F401 - the doctests make their run folders with it
import json
from pathlib import Path

from autorule import jsonsafe
from autorule.rules import RuleSet  # noqa: F401 - the doctest makes a rule set
from autorule.train.refresh.refresher import RefreshResult

RECORDS = "refresh"  # the folder of the run folder that holds the records


def write_record(result: RefreshResult, run_dir: str | Path, window: dict | None = None) -> Path:
    """``refresh/step-N.json`` (the record) and ``refresh/rules-step-N.yaml`` (the rules after) in `run_dir`.

    Args:
        result: the refresh.
        run_dir: the training run's folder.
        window: what the refresh read (e.g. ``{"from_step": 10, "rollouts": 64}``), recorded as is.

    Returns:
        The record's path.

    Raises:
        OSError: a file that cannot be written.

    Example:
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = write_record(RefreshResult(5, RuleSet.from_texts(["The response should be short."]), []), tmp)
        ...     path.name, sorted(p.name for p in path.parent.iterdir()), read_records(tmp)[0]["step"]
        ('step-5.json', ['rules-step-5.yaml', 'step-5.json'], 5)
    """
    folder = Path(run_dir) / RECORDS
    folder.mkdir(parents=True, exist_ok=True)
    rules_path = folder / f"rules-step-{result.step}.yaml"
    result.rules.save(rules_path)
    record = {**result.to_record(), "window": window or {}, "rules_file": rules_path.name}
    path = folder / f"step-{result.step}.json"
    path.write_text(jsonsafe.dumps(record, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def read_records(run_dir: str | Path) -> list[dict]:
    """Every refresh record of a run folder, by step (an empty list when there is none).

    Raises:
        ValueError: a record that is not JSON (its file named).
    """
    folder = Path(run_dir) / RECORDS
    out = []
    for path in folder.glob("step-*.json") if folder.is_dir() else []:
        try:
            out.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a refresh record ({e})") from None
    return sorted(out, key=lambda r: r["step"])
