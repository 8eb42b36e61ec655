"""`autorule extract`: the three stages, each writing a numbered artefact in the run directory.

Resuming: each stage appends finished records to `NNN_name.partial` as they arrive and
renames it when the stage completes; a rerun reads what is there and only asks for the
rest (and every LLM call goes through the cache as well). A killed run therefore loses at
most the calls in flight.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import logging

from rich.console import Console
from rich.table import Table

from ..data import LoadResult, PreferencePair
from ..llm import LLM
from ..llm.base import describe_llm_stats
from ..rules import RuleSet
from . import merge as merge_stage
from . import reason as reason_stage
from . import rules as rules_stage

log = logging.getLogger("autorule.extract")  # quiet in library use; the CLI shows INFO


class RunDirError(Exception):
    """The run directory holds a different run."""


@dataclass
class ExtractConfig:
    seed: int = 0
    extract_from: Literal["reasoning", "explanation", "both"] = "reasoning"
    target_rules: int = 25
    max_cluster: int = 10
    near_duplicate: float = 0.92
    reasoning_tokens: int = 1024
    rules_tokens: int = 512
    merge_tokens: int = 512


@dataclass
class ExtractResult:
    run_dir: Path
    rules: RuleSet
    summary: dict = field(default_factory=dict)


class StageFile:
    """Append-only JSONL of finished records, keyed by pair id; final once renamed."""

    def __init__(self, run_dir: Path, name: str):
        self.final = run_dir / name
        self.partial = run_dir / (name + ".partial")

    @property
    def complete(self) -> bool:
        return self.final.is_file()

    def load(self) -> dict[str, dict]:
        path = self.final if self.final.is_file() else self.partial
        records: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line a killed run was writing: that record is redone
                records[rec["pair_id"]] = rec
        return records

    def append(self, record: dict) -> None:
        with self.partial.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def finish(self, records: list[dict]) -> None:
        tmp = self.final.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        tmp.replace(self.final)
        self.partial.unlink(missing_ok=True)


def data_fingerprint(pairs: list[PreferencePair]) -> str:
    return hashlib.sha256("\n".join(p.id for p in pairs).encode()).hexdigest()[:16]


def _check_run_dir(run_dir: Path, fingerprint: dict) -> None:
    meta = run_dir / "run.json"
    if not meta.is_file():
        return
    try:
        previous = json.loads(meta.read_text()).get("fingerprint", {})
    except json.JSONDecodeError:
        return
    diffs = [f"{k}: {previous.get(k)!r} -> {v!r}" for k, v in fingerprint.items() if previous.get(k) != v]
    if diffs:
        raise RunDirError(f"{run_dir} holds a different run ({'; '.join(diffs)}); use another --out, or --overwrite to start it afresh")


def run_extract(data: LoadResult, llm: LLM, merge_llm: LLM, run_dir: Path, config: ExtractConfig, *, overwrite: bool = False,
                progress: bool = False) -> ExtractResult:
    """The three stages into `run_dir` (resumable); `progress` shows a bar per stage."""
    start = time.time()
    pairs = data.pairs
    if not pairs:
        raise ValueError(f"{data.path}: no preference pairs to extract rules from")
    run_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = {
        "data": data_fingerprint(pairs),
        "model": llm.spec,
        "merge_model": merge_llm.spec,
        **asdict(config),
        "templates": [reason_stage.TEMPLATE_VERSION, rules_stage.TEMPLATE_VERSION, merge_stage.TEMPLATE_VERSION],
    }
    if overwrite:
        for p in run_dir.glob("[0-9][0-9][0-9]_*"):
            p.unlink()
        (run_dir / "rules.yaml").unlink(missing_ok=True)
    else:
        _check_run_dir(run_dir, fingerprint)
    # every earlier attempt's statistics are kept: retries of a failed run do not vanish on resume
    attempts = [] if overwrite else _previous_attempts(run_dir)
    meta = {"status": "running", "fingerprint": fingerprint, "config": asdict(config), "data": data.summary(), "started": start, "attempts": attempts}
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    with (run_dir / "000_pairs.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(p.model_dump_json() + "\n" for p in pairs)

    failures: Counter = Counter()
    try:
        reasonings = _stage_reasoning(pairs, llm, run_dir, config, progress)
        candidates = _stage_candidates(pairs, reasonings, llm, run_dir, config, failures, progress)
        rules, merge_log = _stage_merge(candidates, merge_llm, run_dir, config, progress)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        _record_attempt(meta, attempts, status, _stats(llm, merge_llm), start, error=str(e))
        (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
        raise

    no_trace = sum(1 for r in reasonings.values() if not r["reasoning"])
    tokens = {
        "010_reasoning": _tokens(reasonings.values()),
        "020_candidates": _tokens(candidates.values()),
        "030_merge": {"prompt": merge_log.prompt_tokens, "completion": merge_log.completion_tokens},
    }
    summary = {
        "pairs": len(pairs),
        "reasoning_without_trace": no_trace,
        "candidates": sum(len(c["rules"]) for c in candidates.values()),
        "items_dropped": dict(sum((Counter(c.get("dropped") or {}) for c in candidates.values()), Counter())),
        "pairs_with_candidates": sum(1 for c in candidates.values() if c["rules"]),
        "duplicates_dropped": merge_log.duplicates_dropped,
        "near_duplicates_merged": merge_log.near_duplicates_merged,
        "rules": len(rules),
        "failures": dict(failures),
        "merge_failures": merge_log.merge_failures,
        "tokens": tokens,
        "seconds": round(time.time() - start, 1),
    }
    _record_attempt(meta, attempts, "complete", _stats(llm, merge_llm), start)
    summary["llm_stats"] = meta["llm_stats"]
    meta.update(counts=summary, merge_rounds=merge_log.rounds)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2))
    return ExtractResult(run_dir, rules, summary)


def _previous_attempts(run_dir: Path) -> list[dict]:
    try:
        previous = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return list(previous.get("attempts") or [])


def _record_attempt(meta: dict, attempts: list[dict], status: str, stats: dict, start: float, error: str | None = None) -> None:
    """This attempt's statistics joined to the earlier ones'; `llm_stats` is their sum."""
    seconds = round(time.time() - start, 1)
    attempt = {"status": status, "started": start, "seconds": seconds, "llm_stats": stats, **({"error": error} if error else {})}
    total: dict[str, Counter] = {}
    for a in [*attempts, attempt]:
        for role, counts in a["llm_stats"].items():
            total.setdefault(role, Counter()).update({k: v for k, v in counts.items() if k != "concurrency_min"})
            if "concurrency_min" in counts:  # the lowest concurrency any attempt fell to, not a sum
                total[role]["concurrency_min"] = min(total[role].get("concurrency_min", counts["concurrency_min"]), counts["concurrency_min"])
    meta.update(status=status, seconds=seconds, attempts=[*attempts, attempt], llm_stats={role: dict(c) for role, c in total.items()})
    if error:
        meta["error"] = error
    else:
        meta.pop("error", None)


def _stats(llm: LLM, merge_llm: LLM) -> dict:
    stats = {"model": dict(llm.stats)}
    if merge_llm is not llm:
        stats["merge_model"] = dict(merge_llm.stats)
    return stats


def _tokens(records) -> dict:
    records = list(records)
    return {"prompt": sum(r.get("prompt_tokens", 0) for r in records), "completion": sum(r.get("completion_tokens", 0) for r in records)}


def _stage_reasoning(pairs: list[PreferencePair], llm: LLM, run_dir: Path, config: ExtractConfig, progress: bool) -> dict[str, dict]:
    stage = StageFile(run_dir, "010_reasoning.jsonl")
    done = stage.load()
    if not stage.complete:
        todo = [p for p in pairs if p.id not in done]
        built = [reason_stage.reasoning_request(p, config.seed, config.reasoning_tokens) for p in todo]
        if todo:
            log.info("010 reasoning: %d pairs%s", len(todo), f" ({len(done)} already done)" if done else "")

        def record(i: int, completion) -> None:
            rec = reason_stage.to_reasoning(todo[i], built[i][1], completion).model_dump()
            done[rec["pair_id"]] = rec
            stage.append(rec)

        llm.generate([req for req, _ in built], desc="010 reasoning" if progress else None, on_result=record)
        stage.finish([done[p.id] for p in pairs])
    return {p.id: done[p.id] for p in pairs}  # data order, whatever order calls finished in


def _justification(rec: dict, extract_from: str, warned: list[bool]) -> tuple[str, str]:
    trace, explanation = rec.get("reasoning") or "", rec.get("explanation") or ""
    if extract_from == "explanation":
        return explanation, "explanation"
    if extract_from == "both":
        return (trace + "\n\n" + explanation).strip(), "both"
    if not trace:
        if not warned[0]:
            log.warning("the model returned no reasoning trace; extracting rules from its explanation instead (counted in run.json)")
            warned[0] = True
        return explanation, "explanation"
    return trace, "reasoning"


def _stage_candidates(pairs, reasonings: dict[str, dict], llm: LLM, run_dir: Path, config: ExtractConfig, failures: Counter, progress: bool) -> dict[str, dict]:
    stage = StageFile(run_dir, "020_candidates.jsonl")
    done = stage.load()
    if not stage.complete:
        warned = [False]
        todo = []
        for p in pairs:
            if p.id in done:
                continue
            text, source = _justification(reasonings[p.id], config.extract_from, warned)
            if not text.strip():
                rec = rules_stage.Candidates(pair_id=p.id, source=source, rules=[], excerpt="", failure="empty reasoning output").model_dump()
                done[p.id] = rec
                stage.append(rec)
            else:
                todo.append((p.id, text, source))
        if todo:
            log.info("020 rule extraction: %d pairs", len(todo))
        pending: list[tuple[rules_stage.Candidates, str]] = []

        def record(i: int, reply) -> None:
            pid, text, source = todo[i]
            parsed = rules_stage.parse_rules(reply.text)
            rec = rules_stage.Candidates(
                pair_id=pid, source=source, rules=parsed.rules, excerpt=text[:300], dropped=dict(parsed.dropped),
                prompt_tokens=reply.usage.prompt_tokens, completion_tokens=reply.usage.completion_tokens,
            )
            if rec.rules or parsed.found_list:
                # a list whose items were all dropped has its reasons; a repair prompt cannot help it
                rec.failure = parsed.failure
                done[pid] = rec.model_dump()
                stage.append(done[pid])
            else:
                pending.append((rec, reply.text))

        llm.generate([rules_stage.rules_request(t, config.rules_tokens, config.seed) for _, t, _ in todo], desc="020 rules" if progress else None, on_result=record)
        # one repair attempt for answers that held no list at all
        repairs = llm.generate([rules_stage.repair_request(prev or "(empty answer)", config.rules_tokens, config.seed) for _, prev in pending], desc="020 repair" if progress else None)
        for (rec, prev), reply in zip(pending, repairs):
            parsed = rules_stage.parse_rules(reply.text)
            rec.rules, rec.dropped = parsed.rules, dict(parsed.dropped)
            rec.repaired = True
            rec.prompt_tokens += reply.usage.prompt_tokens
            rec.completion_tokens += reply.usage.completion_tokens
            if not rec.rules:
                rec.failure = parsed.failure or ("empty model output" if not prev.strip() and not reply.text.strip() else "unparseable rule list after repair")
            done[rec.pair_id] = rec.model_dump()
            stage.append(done[rec.pair_id])
        stage.finish([done[p.id] for p in pairs])
    ordered = {p.id: done[p.id] for p in pairs}  # data order: merging sees the same input on a resumed run
    for rec in ordered.values():
        if rec.get("failure"):
            failures[rec["failure"]] += 1
    return ordered


def _stage_merge(candidates: dict[str, dict], llm: LLM, run_dir: Path, config: ExtractConfig, progress: bool):
    units = [u for rec in candidates.values() for u in merge_stage.candidate_refs(rec["pair_id"], rec["rules"], rec["excerpt"])]
    if not units:
        raise ValueError("no candidate rules were extracted from any pair (see 020_candidates.jsonl for the failures)")
    log.info("030 merge: %d candidates -> at most %d rules", len(units), config.target_rules)
    embed = merge_stage.load_embedder()
    rules, merge_log = merge_stage.merge_rules(
        units, llm, embed, target=config.target_rules, max_cluster=config.max_cluster, max_tokens=config.merge_tokens, seed=config.seed,
        near_duplicate=config.near_duplicate, progress=progress,
    )
    ruleset = RuleSet(meta={"run_dir": str(run_dir), "model": llm.spec, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, rules=rules)
    ruleset.save(run_dir / "030_rules.yaml")
    ruleset.save(run_dir / "rules.yaml")
    return ruleset, merge_log


def print_summary(run_dir: Path, s: dict, console: Console) -> None:
    """The run summary as a table (the CLI prints it at the end of `extract`)."""
    table = Table(title=f"extraction finished: {run_dir}", show_header=False)
    table.add_row("pairs used", str(s["pairs"]))
    table.add_row("reasoning without a trace", str(s["reasoning_without_trace"]))
    table.add_row("candidate rules", f"{s['candidates']} from {s['pairs_with_candidates']} pairs ({s['duplicates_dropped']} duplicates dropped)")
    table.add_row("final rules", str(s["rules"]))
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "none")
    if s.get("items_dropped"):
        table.add_row("items dropped", ", ".join(f"{k}: {v}" for k, v in s["items_dropped"].items()))
    table.add_row("near-duplicates merged", str(s.get("near_duplicates_merged", 0)))
    table.add_row("merge fallbacks (medoid)", str(s["merge_failures"]))
    table.add_row("LLM calls (all attempts)", describe_llm_stats(s.get("llm_stats", {}).get("model", {})))
    tok = s["tokens"]
    table.add_row("tokens (prompt / completion)", " | ".join(f"{k} {v['prompt']}/{v['completion']}" for k, v in tok.items()))
    table.add_row("time", f"{s['seconds']} s")
    table.add_row("rules file", str(run_dir / "rules.yaml"))
    console.print(table)
