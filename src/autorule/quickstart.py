"""`autorule quickstart`: the pipeline's existing stages on the sample data, offline."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from .cache import Cache
from .data import load_pairs
from .llm import ChatRequest, load_llm

# the sample data lives in the repository's examples/ (the README's setup installs the checkout in place)
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "pairs.jsonl"
console = Console(stderr=True)


def run_quickstart(out: Path, cache: Cache | None) -> int:
    start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = load_pairs(SAMPLE_DATA)
    console.print(f"[bold]1. data[/bold]: {len(data.pairs)} preference pairs from {data.path} ({data.format})")

    console.print("[bold]2. model[/bold]: loading the embedded model (SmolLM2-135M-Instruct, CPU)")
    llm = load_llm("embedded", cache=cache)

    pairs = data.pairs[:2]
    requests = [
        ChatRequest(
            [{"role": "user", "content": f"Question: {p.prompt[-1].content}\n\nAnswer: {p.chosen}\n\nWhy is this a good answer? Explain briefly."}],
            max_tokens=64,
        )
        for p in pairs
    ]
    replies = llm.generate(requests, desc="explaining")
    rules = ["The response answers the question directly.", "The response refuses to help."]
    verdicts = []
    for p in pairs:
        for side in ("chosen", "rejected"):
            text = p.chosen if side == "chosen" else p.rejected
            prefix = f"Question: {p.prompt[-1].content}\nResponse: {text}\n\nRule: "
            probs = llm.score_yes_no(prefix, [f"{r}\nDoes the response follow the rule? Answer Yes or No." for r in rules])
            verdicts.append({"pair": p.id, "side": side, "p_yes": dict(zip(rules, probs))})
    result = {
        "data": data.summary(),
        "explanations": [{"pair": p.id, "text": c.text, "usage": c.usage.__dict__} for p, c in zip(pairs, replies)],
        "verdicts": verdicts,
        "seconds": round(time.time() - start, 1),
    }
    path = out / "quickstart.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    console.print(f"[bold]3. generate + yes/no scoring[/bold]: {len(replies)} explanations, {len(verdicts) * len(rules)} rule checks")
    console.print(f"done in {result['seconds']} s; results in {path}")
    return 0
