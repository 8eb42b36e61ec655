"""`autorule generate`: model answers in the formats AlpacaEval and FastChat's MT-Bench read,
so users can run those benchmarks with their own judge."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path
from typing import Literal

from autorule import jsonsafe
from autorule.data import DataError, iter_rows
from autorule.llm import LLM, ChatRequest


def _rows(path: str, limit: int | None = None) -> list[tuple[int, dict, str]]:
    rows, unit = iter_rows(Path(path))
    return [(row, rec, unit) for row, rec in itertools.islice(rows, limit)]


def alpaca_eval_outputs(llm: LLM, prompts_path: str, generator: str, max_new_tokens: int, temperature: float, limit: int | None = None) -> list[dict]:
    """[{instruction, output, generator, dataset}] for AlpacaEval's `--model_outputs` (the first `limit` prompts)."""
    items = []
    for row, rec, unit in _rows(prompts_path, limit):
        instruction = rec.get("instruction") if isinstance(rec, dict) else None
        if not instruction and isinstance(rec, dict) and rec.get("turns"):
            instruction = rec["turns"][0]
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError(prompts_path, "expected an 'instruction' (or MT-Bench 'turns')", row, unit)
        items.append(rec | {"instruction": instruction})
    requests = [ChatRequest([{"role": "user", "content": r["instruction"]}], max_tokens=max_new_tokens, temperature=temperature) for r in items]
    replies = llm.generate(requests, desc="alpaca_eval outputs")
    return [{"instruction": r["instruction"], "output": c.text, "generator": generator, **({"dataset": r["dataset"]} if "dataset" in r else {})} for r, c in zip(items, replies)]


def mt_bench_answers(llm: LLM, questions_path: str, model_id: str, max_new_tokens: int, temperature: float, limit: int | None = None) -> list[dict]:
    """FastChat `model_answer/<model_id>.jsonl` records: both turns, the second after the first answer (the first `limit` questions)."""
    questions = []
    for row, rec, unit in _rows(questions_path, limit):
        if not isinstance(rec, dict) or "question_id" not in rec or not isinstance(rec.get("turns"), list) or not rec["turns"]:
            raise DataError(questions_path, "expected MT-Bench questions with 'question_id' and 'turns'", row, unit)
        questions.append(rec)
    histories = [[] for _ in questions]
    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q["turns"]) for q in questions)):
        todo = [i for i, q in enumerate(questions) if turn < len(q["turns"])]
        for i in todo:
            histories[i].append({"role": "user", "content": questions[i]["turns"][turn]})
        replies = llm.generate([ChatRequest(list(histories[i]), max_tokens=max_new_tokens, temperature=temperature) for i in todo], desc=f"mt_bench turn {turn + 1}")
        for i, c in zip(todo, replies):
            histories[i].append({"role": "assistant", "content": c.text})
            answers[i].append(c.text)
    now = time.time()
    return [
        {"question_id": q["question_id"], "answer_id": uuid.uuid5(uuid.NAMESPACE_URL, f"{model_id}/{q['question_id']}").hex, "model_id": model_id,
         "choices": [{"index": 0, "turns": a}], "tstamp": now}
        for q, a in zip(questions, answers)
    ]


def write_outputs(records: list[dict], out: str, fmt: Literal["alpaca_eval", "mt_bench"]) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "alpaca_eval":
        path.write_text(jsonsafe.dumps(records, indent=2, ensure_ascii=False))
    else:
        path.write_text("".join(jsonsafe.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path
