"""`autorule extract`: the three stages, each writing a numbered artefact in the run directory.

Resuming: each stage appends finished records to `NNN_name.partial` as they arrive and
renames it when the stage completes; a rerun reads what is there and only asks for the
rest (and every LLM call goes through the cache as well). A killed run therefore loses at
most the calls in flight.

Streaming: pairs go through stages 010 and 020 in chunks of `CHUNK` (read back from
000_pairs.jsonl), and the stage files are indexed by byte offset, not held; memory stays
flat in the number of pairs until the merge, which holds only the candidate rules.
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

from tqdm.auto import tqdm

from autorule import jsonsafe
from autorule.data import LoadResult, PairStream, PreferencePair
from autorule.errors import InputError
from autorule.llm import LLM
from autorule.rules.lint import FRAGMENT, LintReport, lint_rules
from autorule.llm.base import describe_llm_stats
from autorule.rules import RuleSet
from autorule.extraction import merge as merge_stage
from autorule.extraction import reason as reason_stage
from autorule.extraction import candidates as rules_stage
from autorule.extraction import label_filter as filter_stage
from autorule.extraction.context import Context, check_fits, resolve_context
from autorule.extraction.refusals import RefusalLedger, describe_refusals, generate_each

log = logging.getLogger("autorule.extract")  # quiet in library use; the CLI shows INFO


class RunDirError(InputError):
    """The run directory holds a different run."""


@dataclass
class ExtractConfig:
    seed: int = 0
    extract_from: Literal["reasoning", "explanation", "both"] = "reasoning"
    target_rules: int = 25
    max_cluster: int = 10
    near_duplicate: float = merge_stage.NEAR_DUPLICATE
    reasoning_tokens: int = reason_stage.REASONING_TOKENS
    rules_tokens: int = 512
    merge_tokens: int = 512
    # the model's context in tokens, prompt and answer together (None: what the server or
    # model reports, else 8192); long turns are cut in their middle to fit
    max_input_tokens: int | None = None
    # the largest share of pairs the server may refuse before the run stops
    max_refused_share: float = 0.05
    # stage 025: each candidate verified on its own pair; kept when P(chosen) - P(rejected) > the margin
    label_filter: bool = True
    label_filter_margin: float = filter_stage.MARGIN


# how the run copes with its server, not what it computes: a resumed run may change them
# (the label filter's verdicts are stored and its decisions made when they are read: turning it
# on or off, or another margin, redoes nothing before it)
NOT_FINGERPRINTED = ("max_input_tokens", "max_refused_share", "label_filter", "label_filter_margin")
LABEL_FILTER_FILE = "025_label_filter.jsonl"
STAGE_010, STAGE_020 = "010 reasoning", "020 rule extraction"


@dataclass
class ExtractResult:
    run_dir: Path
    rules: RuleSet
    summary: dict = field(default_factory=dict)


# pairs per chunk through stages 010 and 020: enough to keep a server's slots busy, few
# enough that a chunk's records are nothing to hold
CHUNK = 1024


class StageFile:
    """Append-only JSONL of finished records, keyed by pair id; final once renamed.

    Records are found again by byte offset (`index`), so a stage of 100k pairs is never
    held in memory.
    """

    def __init__(self, run_dir: Path, name: str):
        self.final = run_dir / name
        self.partial = run_dir / (name + ".partial")
        self._writer = None

    @property
    def complete(self) -> bool:
        return self.final.is_file()

    @property
    def path(self) -> Path:
        return self.final if self.final.is_file() else self.partial

    def index(self) -> dict[str, int]:
        """pair id -> byte offset of its record. A line a killed run was writing is cut off
        (its record is redone), so appends start on a fresh line."""
        offsets: dict[str, int] = {}
        path = self.path
        if not path.is_file():
            return offsets
        good_end = 0
        with path.open("rb") as f:
            while line := f.readline():
                offset = f.tell() - len(line)
                if not line.endswith(b"\n"):
                    break
                good_end = f.tell()
                try:
                    offsets[json.loads(line)["pair_id"]] = offset
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a damaged line: that record is redone
        if path == self.partial and good_end != path.stat().st_size:
            with path.open("r+b") as f:
                f.truncate(good_end)
        return offsets

    def read(self, offset: int) -> dict:
        with self.path.open("rb") as f:
            f.seek(offset)
            return json.loads(f.readline())

    def records(self):
        """Every record of the final file, in order."""
        with self.final.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)

    def append(self, record: dict) -> int:
        """Write one record (flushed at once); its byte offset."""
        if self._writer is None:
            self._writer = self.partial.open("ab")
        offset = self._writer.tell()
        self._writer.write((jsonsafe.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
        self._writer.flush()
        return offset

    def finish(self, ids, offsets: dict[str, int], skip=frozenset()) -> None:
        """The final file: the partial's records in the order of `ids` (data order);
        `skip`: pairs without a record (refused by the server)."""
        self.close()
        tmp = self.final.with_suffix(".tmp")
        self.partial.touch()  # every pair refused: an empty stage
        with self.partial.open("rb") as src, tmp.open("wb") as dst:
            for pid in ids:
                if pid in skip:
                    continue
                src.seek(offsets[pid])
                dst.write(src.readline())
        tmp.replace(self.final)
        self.partial.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def reopen(self) -> None:
        """A final file back to partial, so records can be added (refused pairs sent again)."""
        if self.final.is_file():
            self.final.replace(self.partial)


def _read_pairs(path: Path):
    with path.open(encoding="utf-8") as f:
        for line in f:
            yield PreferencePair.model_validate_json(line)


def _pair_ids(path: Path):
    for pair in _read_pairs(path):
        yield pair.id


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


def run_extract(data: LoadResult | PairStream, llm: LLM, merge_llm: LLM, run_dir: Path, config: ExtractConfig, *, overwrite: bool = False,
                progress: bool = False, chunk: int = CHUNK, retry_refused: bool = False) -> ExtractResult:
    """The three stages into `run_dir` (resumable); `progress` shows a bar per stage.

    `data` may be a `PairStream` (`stream_pairs`): the pairs are then read once, written to
    000_pairs.jsonl, and go through stages 010 and 020 `chunk` at a time.

    Prompts are fitted to the model's context (`ExtractConfig.max_input_tokens`, else what
    the server reports, else 8192), long turns cut in their middle. A pair the server still
    refuses is recorded in 020_refused.jsonl and run.json and the run goes on; past
    `max_refused_share` of the pairs it stops (`TooManyRefused`). A resumed run does not
    send recorded refusals again unless `retry_refused`.
    """
    start = time.time()
    if isinstance(data, LoadResult) and not data.pairs:
        raise ValueError(f"{data.path}: no preference pairs to extract rules from")
    run_dir.mkdir(parents=True, exist_ok=True)
    # one pass over the data: 000_pairs.jsonl and the data's fingerprint, nothing held
    incoming = run_dir / "000_pairs.jsonl.tmp"
    ids = hashlib.sha256()
    n, distinct = 0, set()
    with incoming.open("w", encoding="utf-8") as f:
        for p in data:
            f.write(p.model_dump_json() + "\n")
            ids.update((("\n" if n else "") + p.id).encode())
            distinct.add(p.id)
            n += 1
    if not n:
        incoming.unlink()
        raise ValueError(f"{data.path}: no preference pairs to extract rules from")
    fingerprint = {
        "data": ids.hexdigest()[:16],
        "model": llm.spec,
        "merge_model": merge_llm.spec,
        **{k: v for k, v in asdict(config).items() if k not in NOT_FINGERPRINTED},
        "templates": [reason_stage.TEMPLATE_VERSION, rules_stage.TEMPLATE_VERSION, merge_stage.TEMPLATE_VERSION],
    }
    if overwrite:
        for p in run_dir.glob("[0-9][0-9][0-9]_*"):
            if p != incoming:
                p.unlink()
        (run_dir / "rules.yaml").unlink(missing_ok=True)
    else:
        try:
            _check_run_dir(run_dir, fingerprint)
        except RunDirError:
            incoming.unlink()
            raise
    incoming.replace(run_dir / "000_pairs.jsonl")
    # every earlier attempt's statistics are kept: retries of a failed run do not vanish on resume
    attempts = [] if overwrite else _previous_attempts(run_dir)
    context = resolve_context(llm, config.max_input_tokens)
    merge_context = context if merge_llm is llm else resolve_context(merge_llm, config.max_input_tokens)
    ledger = RefusalLedger(run_dir, len(distinct), config.max_refused_share)
    retried = 0
    if retry_refused and len(ledger):
        retried = ledger.clear()
        for name in ("010_reasoning.jsonl", "020_candidates.jsonl", LABEL_FILTER_FILE):
            StageFile(run_dir, name).reopen()
        log.info("sending the %d refused pairs again (--retry-refused)", retried)
    meta = {"status": "running", "fingerprint": fingerprint, "config": asdict(config), "data": data.summary(), "started": start, "attempts": attempts,
            "context": context.to_dict(), **({"retried_refused": retried} if retried else {})}
    (run_dir / "run.json").write_text(jsonsafe.dumps(meta, indent=2))

    failures: Counter = Counter()
    stages = {"000_pairs": _stage_mark(start)}  # wall time and the process's peak memory at each stage's end
    try:
        ledger.check()  # refusals a resumed run recorded already past the share: no request can undo them
        _stages_010_020(run_dir, n, len(distinct), llm, config, progress, chunk, context, ledger)
        counts = _count_stages(run_dir, failures)
        stages["010_020_reasoning_and_rules"] = _stage_mark(start, stages)
        if config.label_filter:
            _stage_label_filter(run_dir, llm, progress, chunk)
            stages["025_label_filter"] = _stage_mark(start, stages)
        rules, merge_log, lint, filtered = _stage_merge(run_dir, merge_llm, config, progress, merge_context)
        stages["030_merge"] = _stage_mark(start, stages)
    except BaseException as e:
        status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
        meta.update(context=context.to_dict(), refused=ledger.summary())
        _record_attempt(meta, attempts, status, _stats(llm, merge_llm), start, error=str(e))
        (run_dir / "run.json").write_text(jsonsafe.dumps(meta, indent=2))
        raise

    tokens = {
        "010_reasoning": counts.pop("010_tokens"),
        "020_candidates": counts.pop("020_tokens"),
        "030_merge": {"prompt": merge_log.prompt_tokens, "completion": merge_log.completion_tokens},
    }
    summary = {
        "pairs": n,
        **counts,
        "label_filter": filtered,
        "duplicates_dropped": merge_log.duplicates_dropped,
        "near_duplicates_merged": merge_log.near_duplicates_merged,
        "rules": len(rules),
        "lint": lint,
        "failures": dict(failures),
        "refused": ledger.summary(),
        "context": context.to_dict(),
        "merge_failures": merge_log.merge_failures,
        "merge_clusters_split": merge_log.clusters_split,
        "merge_refused": merge_log.merge_refused,
        "tokens": tokens,
        "seconds": round(time.time() - start, 1),
        "stages": stages,
    }
    _record_attempt(meta, attempts, "complete", _stats(llm, merge_llm), start)
    summary["llm_stats"] = meta["llm_stats"]
    meta.update(counts=summary, merge_rounds=merge_log.rounds, context=context.to_dict(), refused=summary["refused"])
    (run_dir / "run.json").write_text(jsonsafe.dumps(meta, indent=2))
    return ExtractResult(run_dir, rules, summary)


def _stage_mark(start: float, before: dict | None = None) -> dict:
    """A stage's seconds (since the previous mark) and the process's peak RSS so far, in MB."""
    import resource

    elapsed = time.time() - start - sum(s["seconds"] for s in (before or {}).values())
    return {"seconds": round(elapsed, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


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


def _stages_010_020(run_dir: Path, n: int, distinct: int, llm: LLM, config: ExtractConfig, progress: bool, chunk: int, context: Context,
                    ledger: RefusalLedger) -> None:
    """Reasoning, then rule extraction, a chunk of pairs at a time; finished records are
    appended as they arrive and found again by offset, so nothing grows with the data."""
    reasoning, candidates = StageFile(run_dir, "010_reasoning.jsonl"), StageFile(run_dir, "020_candidates.jsonl")
    if candidates.complete:
        return
    pairs_file = run_dir / "000_pairs.jsonl"
    r_index, c_index = reasoning.index(), candidates.index()
    for name, index in (("010 reasoning", r_index), ("020 rule extraction", c_index)):
        log.info("%s: %d pairs%s", name, n, f" ({len(index)} already done)" if index else "")
    bars = [tqdm(total=n, initial=len(index), desc=desc, disable=not progress, unit="pair", position=pos)
            for pos, (desc, index) in enumerate((("010 reasoning", r_index), ("020 rules", c_index)))]
    warned = [False]

    def refused(stage: str) -> set[str]:
        return {pid for pid, r in ledger.records.items() if r.stage == stage}

    def reasoning_done() -> None:  # stage 010 is final as soon as every pair has its record (or was refused)
        if not reasoning.complete and len(r_index) + ledger.count(STAGE_010) == distinct:
            reasoning.finish(_pair_ids(pairs_file), r_index, skip=refused(STAGE_010))
            # the final file is in data order: records read back later are found at their new offsets
            r_index.clear()
            r_index.update(reasoning.index())

    try:
        batch: list[PreferencePair] = []
        for pair in _read_pairs(pairs_file):
            if pair.id not in c_index and pair.id not in ledger:  # recorded refusals are not sent again
                batch.append(pair)
            if len(batch) == chunk:
                _chunk(batch, reasoning, candidates, r_index, c_index, llm, config, warned, bars, reasoning_done, context, ledger)
                batch = []
        if batch:
            _chunk(batch, reasoning, candidates, r_index, c_index, llm, config, warned, bars, reasoning_done, context, ledger)
    finally:
        for bar in bars:
            bar.close()
        reasoning.close()
        candidates.close()
    reasoning_done()
    candidates.finish(_pair_ids(pairs_file), c_index, skip=set(ledger.records))


def _chunk(pairs: list[PreferencePair], reasoning: StageFile, candidates: StageFile, r_index: dict, c_index: dict, llm: LLM,
           config: ExtractConfig, warned: list[bool], bars, reasoning_done, context: Context, ledger: RefusalLedger) -> None:
    records: dict[str, dict] = {}
    todo = [p for p in pairs if p.id not in r_index]
    built: dict[int, tuple] = {}  # item -> (A/B label, fitted prompt) of the request last sent

    def build(i: int):
        request, label, fitted = reason_stage.reasoning_request(todo[i], config.seed, config.reasoning_tokens, context)
        check_fits(fitted, context, config.reasoning_tokens)
        built[i] = (label, fitted)
        return request

    def record(i: int, completion) -> None:
        label, fitted = built[i]
        rec = reason_stage.to_reasoning(todo[i], label, completion, fitted.omitted).model_dump()
        records[rec["pair_id"]] = rec
        r_index[rec["pair_id"]] = reasoning.append(rec)
        bars[0].update(1)

    def refused(i: int, reason: str) -> None:
        bars[0].update(1)
        ledger.add(todo[i], STAGE_010, reason)

    generate_each(llm, len(todo), build, record, refused, context.learn)
    reasoning_done()
    kept = [p for p in pairs if p.id not in ledger]
    for p in kept:  # pairs a previous attempt reasoned about: read back
        if p.id not in records:
            records[p.id] = reasoning.read(r_index[p.id])
    bars[1].update(len(pairs) - len(kept))
    _stage_candidates(kept, records, llm, candidates, c_index, config, warned, bars[1], context, ledger)


def _count_stages(run_dir: Path, failures: Counter) -> dict:
    """The summary's counts, read back from the final stage files (one pass each)."""
    counts: dict = {"reasoning_without_trace": 0, "candidates": 0, "items_dropped": Counter(), "pairs_with_candidates": 0,
                    "010_tokens": {"prompt": 0, "completion": 0}, "020_tokens": {"prompt": 0, "completion": 0},
                    # prompts cut in their middle to fit the context: pairs, and characters left out
                    "truncated": {"010_reasoning": {"pairs": 0, "characters_omitted": 0}, "020_candidates": {"pairs": 0, "characters_omitted": 0}}}

    def cut(key: str, rec: dict) -> None:
        counts["truncated"][key]["pairs"] += bool(rec.get("omitted_chars"))
        counts["truncated"][key]["characters_omitted"] += rec.get("omitted_chars", 0)

    for rec in StageFile(run_dir, "010_reasoning.jsonl").records():
        cut("010_reasoning", rec)
        counts["reasoning_without_trace"] += not rec["reasoning"]
        counts["010_tokens"]["prompt"] += rec.get("prompt_tokens", 0)
        counts["010_tokens"]["completion"] += rec.get("completion_tokens", 0)
    for rec in StageFile(run_dir, "020_candidates.jsonl").records():
        cut("020_candidates", rec)
        counts["candidates"] += len(rec["rules"])
        counts["pairs_with_candidates"] += bool(rec["rules"])
        counts["items_dropped"].update(rec.get("dropped") or {})
        counts["020_tokens"]["prompt"] += rec.get("prompt_tokens", 0)
        counts["020_tokens"]["completion"] += rec.get("completion_tokens", 0)
        if rec.get("failure"):
            failures[rec["failure"]] += 1
    counts["items_dropped"] = dict(counts["items_dropped"])
    return counts


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


def _stage_candidates(pairs: list[PreferencePair], reasonings: dict[str, dict], llm: LLM, stage: StageFile, index: dict[str, int],
                      config: ExtractConfig, warned: list[bool], bar, context: Context, ledger: RefusalLedger) -> None:
    def keep(rec: dict) -> None:
        index[rec["pair_id"]] = stage.append(rec)
        bar.update(1)

    todo = []
    for p in pairs:
        text, source = _justification(reasonings[p.id], config.extract_from, warned)
        if not text.strip():
            keep(rules_stage.Candidates(pair_id=p.id, source=source, rules=[], excerpt="", failure="empty reasoning output").model_dump())
        else:
            todo.append((p, text, source))
    pending: list[tuple[rules_stage.Candidates, str]] = []
    omitted: dict[int, int] = {}  # item -> characters cut from its justification

    def build(i: int):
        request, fitted = rules_stage.rules_request(todo[i][1], config.rules_tokens, config.seed, context)
        check_fits(fitted, context, config.rules_tokens)
        omitted[i] = fitted.omitted
        return request

    def record(i: int, reply) -> None:
        pair, text, source = todo[i]
        parsed = rules_stage.parse_rules(reply.text)
        rec = rules_stage.Candidates(
            pair_id=pair.id, source=source, rules=parsed.rules, excerpt=text[:300], dropped=dict(parsed.dropped),
            prompt_tokens=reply.usage.prompt_tokens, completion_tokens=reply.usage.completion_tokens, omitted_chars=omitted[i],
        )
        if rec.rules or parsed.found_list:
            # a list whose items were all dropped has its reasons; a repair prompt cannot help it
            rec.failure = parsed.failure
            keep(rec.model_dump())
        else:
            pending.append((rec, reply.text))

    def refused(pair: PreferencePair, reason: str) -> None:
        bar.update(1)
        ledger.add(pair, STAGE_020, reason)

    generate_each(llm, len(todo), build, record, lambda i, why: refused(todo[i][0], why), context.learn)
    # one repair attempt for answers that held no list at all
    by_id = {p.id: p for p in pairs}

    def build_repair(i: int):
        request, fitted = rules_stage.repair_request(pending[i][1] or "(empty answer)", config.rules_tokens, config.seed, context)
        check_fits(fitted, context, config.rules_tokens)
        pending[i][0].omitted_chars += fitted.omitted
        return request

    def repaired(i: int, reply) -> None:
        rec, prev = pending[i]
        parsed = rules_stage.parse_rules(reply.text)
        rec.rules, rec.dropped = parsed.rules, dict(parsed.dropped)
        rec.repaired = True
        rec.prompt_tokens += reply.usage.prompt_tokens
        rec.completion_tokens += reply.usage.completion_tokens
        if not rec.rules:
            rec.failure = parsed.failure or ("empty model output" if not prev.strip() and not reply.text.strip() else "unparseable rule list after repair")
        keep(rec.model_dump())

    generate_each(llm, len(pending), build_repair, repaired, lambda i, why: refused(by_id[pending[i][0].pair_id], f"repair prompt: {why}"), context.learn)


def _stage_label_filter(run_dir: Path, llm: LLM, progress: bool, chunk: int) -> None:
    """Stage 025: every pair's candidates verified on its chosen and rejected reply, `chunk` pairs
    at a time; records appended as they arrive (a rerun asks only for pairs without one)."""
    stage, candidates = StageFile(run_dir, LABEL_FILTER_FILE), StageFile(run_dir, "020_candidates.jsonl")
    if stage.complete:
        return
    index = stage.index()
    total = sum(1 for _ in candidates.records())
    log.info("025 label filter: candidates of %d pairs verified on their own pair%s", total, f" ({len(index)} already done)" if index else "")
    pairs = _read_pairs(run_dir / "000_pairs.jsonl")
    batch: list[tuple[PreferencePair, list[str]]] = []

    def flush() -> None:
        for rec in filter_stage.verify_candidates([p for p, _ in batch], [texts for _, texts in batch], llm):
            index[rec["pair_id"]] = stage.append(rec)
        bar.update(len(batch))
        batch.clear()

    with tqdm(total=total, initial=len(index), desc="025 label filter", disable=not progress, unit="pair") as bar:
        try:
            for rec in candidates.records():  # data order, a subset of 000_pairs.jsonl: the pairs are read alongside
                pair = next(p for p in pairs if p.id == rec["pair_id"])
                if pair.id in index or any(p.id == pair.id for p, _ in batch):
                    continue
                batch.append((pair, rec["rules"]))
                if len(batch) == chunk:
                    flush()
            if batch:
                flush()
        finally:
            stage.close()
    stage.finish((rec["pair_id"] for rec in candidates.records()), index)


def _candidate_units(run_dir: Path, config: ExtractConfig) -> tuple[list, dict]:
    """The candidates that go to the merge (those the label filter keeps, when it is on), and its counts."""
    records = StageFile(run_dir, "020_candidates.jsonl").records()
    if not config.label_filter:
        return [u for rec in records for u in merge_stage.candidate_refs(rec["pair_id"], rec["rules"], rec["excerpt"])], {"on": False}
    counts = filter_stage.FilterCounts(config.label_filter_margin)
    units = []
    for rec, checked in zip(records, StageFile(run_dir, LABEL_FILTER_FILE).records(), strict=True):
        if rec["pair_id"] != checked["pair_id"]:
            raise RunDirError(f"{run_dir / LABEL_FILTER_FILE} does not match 020_candidates.jsonl (pair {checked['pair_id']} "
                              f"where {rec['pair_id']} was expected); delete it to verify the candidates again")
        units.extend(merge_stage.candidate_refs(rec["pair_id"], counts.add(checked), rec["excerpt"]))
    return units, counts.to_dict()


def _stage_merge(run_dir: Path, llm: LLM, config: ExtractConfig, progress: bool, context: Context | None = None):
    # data order (the final file's): merging sees the same input on a resumed run
    units, filtered = _candidate_units(run_dir, config)
    if filtered["on"]:
        log.info("025 label filter: %s", filter_stage.describe(filtered))
    if not units:
        if filtered["on"] and filtered["checked"]:
            raise ValueError(f"the label filter dropped every candidate rule ({filter_stage.describe(filtered)}); "
                             "see 025_label_filter.jsonl, or rerun with --no-label-filter")
        raise ValueError("no candidate rules were extracted from any pair (see 020_candidates.jsonl for the failures)")
    log.info("030 merge: %d candidates -> at most %d rules", len(units), config.target_rules)
    embed = merge_stage.cached_embedder(run_dir / "030_embeddings.sqlite")
    rules, merge_log = merge_stage.merge_rules(
        units, llm, embed, target=config.target_rules, max_cluster=config.max_cluster, max_tokens=config.merge_tokens, seed=config.seed,
        near_duplicate=config.near_duplicate, progress=progress, context=context,
    )
    ruleset = RuleSet(meta={"run_dir": str(run_dir), "model": llm.spec, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, rules=rules)
    ruleset.save(run_dir / "030_rules.yaml")
    # lint: fragments go (no verifier can judge them); every other flag stays on its rule, for a person
    report = lint_rules(ruleset, embed=embed)
    ruleset, fragments = report.without(FRAGMENT)
    ruleset = report.with_checks(ruleset)  # rules a program decides get their code check (rules.yaml shows it; a person may remove it)
    code_checks = sum(r.check is not None for r in ruleset.rules)
    lint = {"fragments_dropped": [r.text for r in fragments], "flags": LintReport(ruleset).counts, "code_checks": code_checks}  # flags on the rules kept
    if fragments:
        log.info("lint: dropped %d fragment(s): %s", len(fragments), "; ".join(repr(r.text) for r in fragments))
    if code_checks:
        log.info("code checks: %d rule(s) decided by a program, not the verifier LLM", code_checks)
    ruleset.save(run_dir / "rules.yaml")
    return ruleset, merge_log, lint, filtered


def print_summary(run_dir: Path, s: dict, console: Console) -> None:
    """The run summary as a table (the CLI prints it at the end of `extract`)."""
    table = Table(title=f"extraction finished: {run_dir}", show_header=False)
    table.add_row("pairs used", str(s["pairs"]))
    table.add_row("reasoning without a trace", str(s["reasoning_without_trace"]))
    table.add_row("candidate rules", f"{s['candidates']} from {s['pairs_with_candidates']} pairs ({s['duplicates_dropped']} duplicates dropped)")
    if "label_filter" in s:
        table.add_row("label filter (025)", filter_stage.describe(s["label_filter"]))
    table.add_row("final rules", str(s["rules"]))
    lint = s.get("lint") or {}
    if lint:
        flags = ", ".join(f"{k}: {v}" for k, v in lint["flags"].items()) or "none"
        fragments = (s.get("items_dropped") or {}).get(rules_stage.FRAGMENT, 0)
        table.add_row("lint", f"flagged {flags}; fragments dropped: {fragments} candidates, {len(lint['fragments_dropped'])} final rules "
                              "(`autorule rules show` lists the flags)")
        if lint.get("code_checks"):
            table.add_row("code checks", f"{lint['code_checks']} rules decided by a program (`autorule rules lint` lists them)")
    table.add_row("failures", ", ".join(f"{k}: {v}" for k, v in s["failures"].items()) or "none")
    if s.get("context"):
        ctx = s["context"]
        learned = f"; learned from refusals: {', '.join(map(str, ctx['learned']))}" if ctx.get("learned") else ""
        table.add_row("context", f"{ctx['tokens']} tokens ({ctx['source']}{learned})")
    cut = s.get("truncated") or {}
    if cut:
        table.add_row("cut to fit the context", "; ".join(f"{k}: {v['pairs']} pairs, {v['characters_omitted']:,} characters omitted" for k, v in cut.items())
                      + f"; merge clusters split: {s.get('merge_clusters_split', 0)}")
    if "refused" in s:
        table.add_row("refused by the server", describe_refusals(s["refused"]) + (f"; merges refused: {len(s['merge_refused'])}" if s.get("merge_refused") else ""))
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
