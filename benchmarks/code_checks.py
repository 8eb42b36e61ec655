"""Rules a program decides (issue 28): how well the recogniser maps rule texts to checks, and
whether code-checked rules give the gold set's labels.

1. Mapping: benchmarks/data/code_check_phrasings.jsonl, rules written by hand in three variants:
   "canonical" (the plain "The response should ..." form of each kind), "paraphrase" (other
   subjects, modals, imperatives, number words, negations) and "negative" (rules no program
   decides, near misses included). A mapping is correct when checker, parameters and negation
   all equal the expected ones. Precision: correct / mapped; recall: correct / rules a program
   decides.
2. Gold set: the checks of `autorule bench verifier-accuracy` (same files, seed and size);
   every check whose rule the recogniser maps is decided by the mapped check and compared
   with the gold label.

    .venv/bin/python benchmarks/code_checks.py [--hh FILE --alpaca FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from autorule.rules.checks.recognise import recognise

HERE = Path(__file__).parent
SHARED = Path("/work/shared/data")


def mapping_scores(rows: list[dict]) -> dict:
    """Precision and recall of `recognise` on labelled phrasings, overall and per variant, with every miss."""
    out, misses = {}, []
    for variant in ("canonical", "paraphrase", "negative", "all"):
        subset = [r for r in rows if variant == "all" or r["variant"] == variant]
        mapped = correct = positives = 0
        for r in subset:
            got = recognise(r["rule"])
            got_d = None if got is None else {"checker": got.checker, "params": got.params, "negate": got.negate}
            positives += r["expected"] is not None
            mapped += got_d is not None
            ok = got_d is not None and got_d == r["expected"]
            correct += ok
            if variant != "all" and got_d != r["expected"]:
                misses.append({"variant": variant, "rule": r["rule"], "expected": r["expected"], "got": got_d})
        out[variant] = {"rules": len(subset), "checkable": positives, "mapped": mapped, "correct": correct,
                        "precision": correct / mapped if mapped else None, "recall": correct / positives if positives else None}
    return {"by_variant": out, "misses": misses}


def gold_agreement(hh: Path, alpaca: Path, n: int = 48, seed: int = 0) -> dict:
    """Per family of the gold set: checks covered by a code check, and how many give the gold label."""
    from autorule.bench.verifier_accuracy import build_gold

    per: dict[str, Counter] = {}
    compiled = {}
    for check in build_gold(hh, alpaca, n=n, seed=seed):
        c = per.setdefault(check.family, Counter())
        c["checks"] += 1
        if check.rule not in compiled:
            mapped = recognise(check.rule)
            compiled[check.rule] = (mapped, None if mapped is None else mapped.compile())
        mapped, run = compiled[check.rule]
        if run is None:
            continue
        c["covered"] += 1
        c["agree"] += run(check.response) == check.label
        c["mapped_to"] = mapped.describe()
    return {fam: dict(c) for fam, c in per.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrasings", default=str(HERE / "data" / "code_check_phrasings.jsonl"))
    ap.add_argument("--hh", default=str(SHARED / "hh-rlhf-harmless-dev.jsonl.gz"))
    ap.add_argument("--alpaca", default=str(SHARED / "alpacaeval-gpt4turbo-annotations-dev.jsonl.gz"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in Path(args.phrasings).read_text().splitlines() if line.strip()]
    scores = mapping_scores(rows)
    gold = gold_agreement(Path(args.hh), Path(args.alpaca))
    if args.json:
        print(json.dumps({"mapping": scores, "gold": gold}))
        return 0
    print(f"{'variant':<11} {'rules':>5} {'checkable':>9} {'mapped':>6} {'correct':>7} {'precision':>9} {'recall':>6}")
    for variant, s in scores["by_variant"].items():
        p = "-" if s["precision"] is None else f"{s['precision']:.3f}"
        r = "-" if s["recall"] is None else f"{s['recall']:.3f}"
        print(f"{variant:<11} {s['rules']:>5} {s['checkable']:>9} {s['mapped']:>6} {s['correct']:>7} {p:>9} {r:>6}")
    for m in scores["misses"]:
        print(f"  miss ({m['variant']}): {m['rule']!r}: expected {m['expected']}, got {m['got']}")
    print(f"\n{'gold family':<20} {'checks':>6} {'covered':>7} {'agree':>5}  code check")
    for fam, c in gold.items():
        print(f"{fam:<20} {c['checks']:>6} {c.get('covered', 0):>7} {c.get('agree', 0):>5}  {c.get('mapped_to', '(none: the LLM judges it)')}")
    covered, agree = sum(c.get("covered", 0) for c in gold.values()), sum(c.get("agree", 0) for c in gold.values())
    print(f"{'all':<20} {sum(c['checks'] for c in gold.values()):>6} {covered:>7} {agree:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
