"""The Python API: the whole pipeline from a notebook, with plain inputs.

Every function is quiet unless asked (`progress=True`); autorule's messages go to the
"autorule" logger.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from autorule.data import LoadResult, PreferencePair, load_pairs, to_conversation
from autorule.llm import LLM, load_llm
from autorule.data.reasoning import answer_only
from autorule.rules import RuleSet
from autorule.validation import Validation
from autorule.verifier import Verdicts

if TYPE_CHECKING:
    from autorule.reward import RewardScorer

log = logging.getLogger("autorule")


def _llm(model: str | LLM, cache: bool | str | Path, llm_options: dict | None) -> LLM:
    """An LLM object as given, or loaded from its spec behind the verdict cache."""
    return load_llm(model, cache=cache, **(llm_options or {})) if isinstance(model, str) else model


def _rules(rules: RuleSet | str | Path | list[str]) -> RuleSet:
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, (list, tuple)):
        return RuleSet.from_texts(list(rules))
    return RuleSet.load(rules)


def _pairs(pairs: Any) -> LoadResult:
    if isinstance(pairs, LoadResult):
        return pairs
    return load_pairs(pairs)


def extract(
    pairs: Any,
    model: str | LLM = "embedded",
    out: str | Path | None = None,
    *,
    merge_model: str | LLM | None = None,
    cache: bool | str | Path = True,
    llm_options: dict | None = None,
    overwrite: bool = False,
    progress: bool = False,
    retry_refused: bool = False,
    **config: Any,
) -> RuleSet:
    """Learn rules from preference pairs: reason, extract, merge (the paper's stages 1-3).

    Args:
        pairs: a `LoadResult`, a list of `PreferencePair` or dict rows, or a data file path.
        model: the reasoning/extraction model: a spec ("embedded", "openai:MODEL@URL",
            "hf:PATH", "gguf:FILE") or an LLM object.
        out: a run directory to write the numbered stage files into; a rerun resumes it.
            None runs in a temporary directory and keeps only the rules.
        merge_model: the model for the merge stage (default: `model`).
        cache: cache LLM calls (True: the default cache file; a path; False: none).
        llm_options: options for `load_llm` (``api_key``, ``concurrency``, ``extra_body``...).
        overwrite: start `out` afresh instead of resuming it.
        progress: show a progress bar per stage.
        retry_refused: send again the pairs an earlier run in `out` recorded as refused
            (a resumed run skips them).
        **config: `ExtractConfig` fields: ``seed``, ``extract_from``, ``target_rules``,
            ``max_cluster``, ``near_duplicate``, ``reasoning_tokens``, ``rules_tokens``,
            ``merge_tokens``, ``max_input_tokens`` (the model's context, prompt and answer
            together; default: what the server reports, else 8192: longer pairs are cut in
            their middle), ``max_refused_share`` (default 0.05), ``label_filter`` (default True:
            each candidate is verified on its own pair with `model` and dropped unless the
            chosen reply satisfies it more than the rejected one) and ``label_filter_margin``
            (how much more; default 0.0, a tie is dropped).

    Raises:
        TooManyRefused: the server refused more than ``max_refused_share`` of the pairs
            (each one is named; fewer are recorded in ``out``'s run.json and the run goes on).
        ValueError: no pairs, or no rules could be extracted from any pair.

    Returns:
        The merged `RuleSet`, each rule with its provenance (source pairs, candidates).

    Example:
        >>> import json
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> llm = FakeLLM(reply=json.dumps(["The assistant's response should greet the user by name."]))
        >>> # FakeLLM's P(Yes) is the same for both replies: the label filter would drop every candidate
        >>> rules = extract([{"prompt": "Hi, I am Ann.", "chosen": "Hello Ann!", "rejected": "Hello."}], llm, cache=False, label_filter=False)
        >>> rules.texts
        ["The assistant's response should greet the user by name."]
    """
    from autorule.extraction.run import ExtractConfig, run_extract

    data = _pairs(pairs)
    llm = _llm(model, cache, llm_options)
    merge_llm = llm if merge_model is None else _llm(merge_model, cache, llm_options)
    settings = ExtractConfig(**config)
    if out is not None:
        return run_extract(data, llm, merge_llm, Path(out), settings, overwrite=overwrite, progress=progress, retry_refused=retry_refused).rules
    with tempfile.TemporaryDirectory(prefix="autorule-extract-") as tmp:
        rules = run_extract(data, llm, merge_llm, Path(tmp), settings, progress=progress).rules
    rules.meta.pop("run_dir", None)  # the temporary directory is gone
    return rules


def verify(
    rules: RuleSet | str | Path | list[str],
    conversations: list,
    verifier: str | LLM = "embedded",
    *,
    cache: bool | str | Path = True,
    llm_options: dict | None = None,
    progress: bool = False,
    judge_reasoning: bool = False,
    **verifier_options: Any,
) -> Verdicts:
    """Judge each conversation's last reply against every rule.

    A reply's reasoning (``<think>...</think>``, or only ``</think>`` when the chat
    template opened the block; see `autorule.data.reasoning`) is cut first, so the rules judge
    the answer the user reads; the characters cut are logged (logger ``autorule``).

    Args:
        rules: a RuleSet, a rules file, or a list of rule texts.
        conversations: each a list of OpenAI-style ``{"role", "content"}`` dicts or
            `Message` objects ending with the reply to judge, or a bare reply string.
        verifier: a model spec or an LLM object.
        cache: cache verdicts (True: the default cache file; a path; False: none).
        llm_options: options for `load_llm`.
        progress: show a progress bar.
        judge_reasoning: judge the reasoning too (nothing is cut).
        **verifier_options: `Verifier` options (``style``, ``applicability``,
            ``threshold``, ``max_input_tokens``, ``max_unparsed``).

    Returns:
        `Verdicts`: ``p_satisfied`` (responses x rules), ``to_rows()``, ``to_pandas()``.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> verdicts = verify(["The assistant's response should be short."], [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]], FakeLLM(p_yes=0.9))
        >>> verdicts.to_rows()[0]["satisfied"]
        True
    """
    from autorule.verifier import Verifier

    verifier_llm = _llm(verifier, cache, llm_options)
    conversations = [to_conversation(c) for c in conversations]
    if not judge_reasoning and conversations:
        conversations, cut = (list(x) for x in zip(*(answer_only(c) for c in conversations)))
        if sum(cut):
            log.info("judged the answers only: %d characters of reasoning cut from %d replies (judge_reasoning=True keeps them)",
                     sum(cut), sum(1 for n in cut if n))
    return Verifier(verifier_llm, _rules(rules), **verifier_options).verify_messages(conversations, desc="verifying" if progress else None)


def validate(
    rules: RuleSet | str | Path | list[str],
    pairs: Any,
    verifier: str | LLM = "embedded",
    *,
    preset: str = "default",
    rm: str | None = None,
    cache: bool | str | Path = True,
    llm_options: dict | None = None,
    seed: int = 0,
    folds: int = 5,
    select: int | None = None,
    progress: bool = False,
    baseline: bool = True,
    seeds: int = 1,
) -> Validation:
    """Test rules against held-out preferences: agreement, coverage, accuracy, learned weights,
    and the ICAI protocol (``report["icai"]``: the rule set beside a no-rules judge and flipped labels).

    Args:
        rules: a RuleSet, a rules file (its run's pairs are then known and flagged if
            reused), or a list of rule texts.
        pairs: held-out pairs (as for `extract`).
        verifier: a model spec or an LLM object.
        preset: the reward preset the rule-set accuracy is computed with.
        rm: a reward model's path, to compare RM, rules and RM + rules.
        cache, llm_options: as for `verify`.
        seed: A/B order seed (each rule's agreement is reported in a randomised order).
        folds: cross-validation folds for the learned weights.
        select: also pick this many rules greedily by cross-validated accuracy.
        progress: show a progress bar.
        baseline: also ask the verifier, with no rules, which reply of each pair is better
            (ICAI's no-rules judge: one check per pair per seed); False: per-rule statistics only.
        seeds: repeat the seeded parts (A/B order, CV folds) for seeds ``seed .. seed + seeds - 1``:
            ``report["icai"]["summary"]`` holds each figure's mean ± s.d.

    Returns:
        `Validation`: ``report`` (what `autorule validate` writes to validation.json:
        per-rule ``rules``, ``accuracy``, ``learned_weights``...), ``weights`` and ``selected``.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> pairs = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]
        >>> result = validate(["The assistant's response should be polite."], pairs, FakeLLM(p_yes=0.5), folds=2)
        >>> result.report["pairs"], result.report["rule_set"]["ties"]
        (1, 1)
        >>> result.report["icai"]["summary"]["no_rules"]["mean"]  # P(A) = 0.5: the no-rules judge ties too
        0.0

    Raises:
        ValueError: no pairs, or fewer than one seed.
    """
    from autorule.reward import RewardModel, build_scorer
    from autorule.validation import run_validation

    rules_path = None if isinstance(rules, (RuleSet, list, tuple)) else Path(rules)
    ruleset = _rules(rules)
    scorer = build_scorer(ruleset, verifier, preset, cache=cache, llm_options=llm_options)
    model = RewardModel(rm) if rm else None
    return run_validation(ruleset, rules_path, _pairs(pairs).pairs, scorer, rm=model, seed=seed, folds=folds, select=select,
                          warn=log.warning, progress=progress, baseline=baseline, seeds=seeds)


# responses scored (and written) at a time by `score`; even, so a pair's two sides share a chunk
SCORE_CHUNK = 1024


class Responses:
    """(id, side, conversation) of every response to score, read lazily on each pass: both
    sides of each preference pair (side "chosen" / "rejected"), or responses with their
    prompts (side None).

    Args:
        data: a file or dataset name: JSONL with ``response`` (text or chat messages) and
            optionally ``prompt`` and ``id`` (ids default to the row number), or preference
            data in any format `load_pairs` reads. Or in memory: such rows as dicts,
            `PreferencePair` objects, a `LoadResult` / `PairStream`, or conversations
            (each a list of messages ending with the response, or a bare response string;
            ids are their positions).
        format: the preference data's format (default: detect).
        on_bad_row: "error" stops at the first bad pair; "skip" counts it in ``pairs.skipped``.
        limit: at most this many pairs.

    Raises:
        DataError: (while iterating) a row without a readable ``response`` or ``prompt``,
            a file with no responses, or bad preference data.

    Example:
        >>> [(i, side, [m.content for m in conv]) for i, side, conv in Responses([{"prompt": "Hi", "response": "Hello!"}])]
        [('1', None, ['Hi', 'Hello!'])]
        >>> [(i, side) for i, side, _ in Responses([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])]
        [('a3dda59deb4b6c4c', 'chosen'), ('a3dda59deb4b6c4c', 'rejected')]
    """

    def __init__(self, data: Any, format: str = "auto", *, on_bad_row: str = "error", limit: int | None = None):
        from autorule.data import PairStream, first_record, stream_pairs

        self.path: Path | None = None
        self.records: list | None = None  # rows with a 'response', in memory
        self.conversations: list | None = None
        self.pairs: Any = None  # the pairs (both sides scored); their `skipped` counts after a pass
        self.count: int | None = None  # known after the first pass
        if isinstance(data, (str, Path)):
            self.path = Path(data)
            first = first_record(self.path) if self.path.is_file() else None
            if first is not None and "response" in first:
                return
            self.pairs = stream_pairs(self.path, format, on_bad_row=on_bad_row, limit=limit)
        elif isinstance(data, (LoadResult, PairStream)):
            self.pairs = data
        else:
            data = list(data)
            first = data[0] if data else None
            if isinstance(first, PreferencePair):
                self.pairs = data
            elif isinstance(first, dict) and "response" in first:
                self.records = data
            elif isinstance(first, dict):
                self.pairs = stream_pairs(data, format, on_bad_row=on_bad_row, limit=limit)
            else:
                self.conversations = data

    def __iter__(self):
        n = 0
        for n, item in enumerate(self._items(), 1):
            yield item
        self.count = n

    def _items(self):
        from autorule.data import DataError, iter_rows
        from autorule.data.messages import MessageError
        from autorule.integrations.conversation import conversation, to_messages

        if self.pairs is not None:
            for p in self.pairs:
                yield p.id, "chosen", p.conversation("chosen")
                yield p.id, "rejected", p.conversation("rejected")
            return
        if self.conversations is not None:
            for i, conv in enumerate(self.conversations):
                yield str(i), None, to_conversation(conv)
            return
        source = str(self.path) if self.path is not None else "<rows>"
        rows, unit = iter_rows(self.path) if self.path is not None else (enumerate(self.records, 1), "row")
        found = False
        for row, rec in rows:
            if not isinstance(rec, dict) or not isinstance(rec.get("response"), (str, list)):
                raise DataError(source, "expected a 'response' (text or chat messages) and optionally a 'prompt' (text or chat messages)", row, unit)
            try:
                to_messages(rec.get("prompt"))
            except MessageError as e:
                raise DataError(source, f"bad 'prompt': {e}", row, unit) from None
            try:
                conv = conversation(rec.get("prompt"), rec["response"])
            except MessageError as e:
                raise DataError(source, f"bad 'response': {e}", row, unit) from None
            found = True
            yield str(rec.get("id", row)), None, conv
        if not found:
            raise DataError(source, "no responses found")


@dataclass
class ScoreResult:
    """What `score` did: one row per response (kept, or written to ``out``) and the summary.

    Args:
        summary: ``responses``, ``failed``, ``unparsed_checks``, ``mean_reward``,
            ``mean_rule_reward``, ``pass_rates``, ``llm_stats``, ``failure_reasons`` (when
            any failed), ``judge_reasoning``, ``reasoning_chars_stripped``,
            ``responses_with_reasoning_cut``, ``empty_responses``; for preference pairs
            also ``pairs``, ``chosen_preferred`` and ``ties`` (shares of the pairs judged on both sides).
        verdicts: every response's verdicts, in order.
        rows: per response ``id``, ``side`` (pairs), ``reward``, ``rule_reward``, ``rm``,
            ``verdicts`` (rule id -> P(satisfied), None where unread), ... or ``error``;
            None when they were written to ``out`` or not kept.
        out: the file the rows were written to (None: kept in ``rows`` or a stream).

    Example:
        >>> ScoreResult({"responses": 2, "failed": 2}, None).all_failed
        True
    """

    summary: dict
    verdicts: Verdicts | None
    rows: list[dict] | None = None
    out: Path | None = None

    @property
    def all_failed(self) -> bool:
        """Every response failed (refused by the verifier's server): no reward was computed."""
        return bool(self.summary["failed"]) and self.summary["failed"] == self.summary["responses"]


def score(
    rules: RuleSet | str | Path | list[str],
    data: Any,
    verifier: str | LLM = "embedded",
    *,
    out: str | Path | TextIO | None = None,
    keep_rows: bool = True,
    preset: str = "default",
    rm: str | None = None,
    judge_reasoning: bool = False,
    empty_rule_reward: float = 0.0,
    format: str = "auto",
    on_bad_row: str = "error",
    limit: int | None = None,
    cache: bool | str | Path = True,
    llm_options: dict | None = None,
    scorer: RewardScorer | None = None,
    progress: bool = False,
    **verifier_options: Any,
) -> ScoreResult:
    """Score responses (or both sides of preference pairs) against a rule set: rewards, verdicts, a summary.

    Responses are read lazily and scored `SCORE_CHUNK` at a time; each chunk's rows are
    written at once, so a file of any length fits in memory when ``out`` is given. A response
    the verifier's server refuses gets a row with its ``error`` and no reward; the run goes on.

    Args:
        rules: a RuleSet, a rules file, or a list of rule texts.
        data: what `Responses` reads: a JSONL of ``prompt`` + ``response``, preference data
            (both sides of each pair are scored), or such rows, pairs or conversations in memory.
        verifier: a model spec or an LLM object.
        out: where the rows go as JSON lines: a file path (its folder is made), or an open
            text stream; None keeps them in `ScoreResult.rows`.
        keep_rows: with ``out=None``, False keeps no rows (only the summary).
        preset: the reward preset ("default", "ternary", "paper").
        rm: a reward model's path (its score goes into each ``reward`` and row's ``rm``).
        judge_reasoning: judge a response's reasoning too; by default it is cut first and counted.
        empty_rule_reward: the rule reward of a response with nothing to judge (not sent to the verifier).
        format, on_bad_row, limit: how preference data is read (as for `load_pairs`).
        cache, llm_options: as for `verify`.
        scorer: a `RewardScorer` to use instead of the one built from ``rules``, ``verifier``,
            ``preset``, ``rm``, ``judge_reasoning``, ``empty_rule_reward`` and the verifier options.
        progress: show a progress bar (on stderr).
        **verifier_options: `Verifier` options (``threshold``, ``max_input_tokens``, ``max_unparsed``).

    Returns:
        `ScoreResult`: ``summary``, ``verdicts``, and ``rows`` (or the ``out`` file).

    Raises:
        DataError: unreadable data: a row without a ``response``, bad pairs, no responses.
        UnparsedVerdicts: more than ``max_unparsed`` of the checks got no readable Yes/No.
        LLMError: the verifier failed for good (a server that stays down).

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> result = score(["The assistant's response should greet the user."],
        ...                [{"prompt": "Hi", "chosen": "Hello there!", "rejected": "What?"}], FakeLLM(p_yes=0.8), cache=False)
        >>> result.summary["responses"], result.summary["pairs"], result.summary["mean_rule_reward"]
        (2, 1, 0.8)
        >>> result.rows[0]["side"], result.rows[0]["rule_reward"]
        ('chosen', 0.8)
    """
    import sys
    from collections import Counter

    import numpy as np
    from tqdm.auto import tqdm

    from autorule import jsonsafe
    from autorule.data import chunked
    from autorule.reward import build_scorer

    if scorer is None:
        scorer = build_scorer(_rules(rules), verifier, preset, rm=rm, cache=cache, llm_options=llm_options,
                              judge_reasoning=judge_reasoning, empty_rule_reward=empty_rule_reward, **verifier_options)
    items = data if isinstance(data, Responses) else Responses(data, format, on_bad_row=on_bad_row, limit=limit)
    out_path = Path(out) if isinstance(out, (str, Path)) else None
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    sink = out_path.open("w", encoding="utf-8") if out_path else out
    rows: list[dict] | None = [] if out is None and keep_rows else None
    # only each response's verdicts and rewards are kept, for the summary
    parts: list[Verdicts] = []
    totals, rule_rewards, sides = [], [], []
    chars, empty, vetoed = [], [], []  # per chunk: reasoning characters cut, empty responses, vetoes
    vetoers: Counter = Counter()  # essential rule id -> responses it vetoed
    try:
        with tqdm(total=items.count, desc="verifying", unit="resp", file=sys.stderr, disable=not progress) as bar:
            for chunk in chunked(items, SCORE_CHUNK):
                scores = scorer.score([c for _, _, c in chunk], on_item=lambda: bar.update(1))
                parts.append(scores.verdicts)
                totals.append(scores.total)
                rule_rewards.append(scores.rule)
                chars.append(scores.reasoning_chars)
                empty.append(scores.empty)
                vetoed.append(scores.vetoed)
                vetoers.update(rid for ids in scores.vetoed_by or [] for rid in ids)
                sides.extend(side for _, side, _ in chunk)
                chunk_rows = _score_rows(chunk, scores, scorer.samples(scores))
                if sink is not None:
                    sink.write("".join(jsonsafe.dumps(row, ensure_ascii=False) + "\n" for row in chunk_rows))
                elif rows is not None:
                    rows.extend(chunk_rows)
    finally:
        if out_path and sink is not None:
            sink.close()
    verdicts = Verdicts.concat(parts)
    total, rule = np.concatenate(totals), np.concatenate(rule_rewards)
    ok = [i for i in range(len(total)) if i not in verdicts.errors]
    cut = np.concatenate(chars) if chars else np.zeros(0, dtype=int)
    blank = np.concatenate(empty) if empty else np.zeros(0, dtype=bool)
    summary = {
        "responses": len(total),
        "failed": len(verdicts.errors),
        "unparsed_checks": verdicts.unparsed,
        "mean_reward": float(np.mean(total[ok])) if ok else None,
        "mean_rule_reward": float(np.mean(rule[ok])) if ok else None,
        "pass_rates": verdicts.pass_rates(),
        "llm_stats": dict(scorer.verifier.llm.stats),
        "verifier_mode": scorer.verifier.llm.yes_no_record,
        **({"failure_reasons": dict(Counter(verdicts.errors.values()).most_common(5))} if verdicts.errors else {}),
        "judge_reasoning": scorer.judge_reasoning,
        "reasoning_chars_stripped": int(cut.sum()),
        "responses_with_reasoning_cut": int((cut > 0).sum()),
        "empty_responses": int(blank.sum()),
        "vetoed": int(sum(v.sum() for v in vetoed)),
        "vetoed_by": dict(vetoers.most_common()),
    }
    if "chosen" in sides:
        chosen = rule[[i for i, s in enumerate(sides) if s == "chosen"]]
        rejected = rule[[i for i, s in enumerate(sides) if s == "rejected"]]
        both = ~np.isnan(chosen) & ~np.isnan(rejected)
        summary["pairs"] = int(both.sum())
        summary["chosen_preferred"] = float((chosen[both] > rejected[both]).mean()) if both.any() else None
        summary["ties"] = float((chosen[both] == rejected[both]).mean()) if both.any() else None
    return ScoreResult(summary, verdicts, rows, out_path)


def _score_rows(chunk: list, scores, samples: list) -> list[dict]:
    """One output row per response: its `SampleReward` and verdicts, or its error."""
    ids = scores.verdicts.rule_ids
    rows = []
    for i, ((item_id, side, _), sample) in enumerate(zip(chunk, samples)):
        head = {"id": item_id, **({"side": side} if side else {})}
        if sample.refused:  # refused by the verifier's server: a failed row with its reason
            rows.append({**head, "error": sample.error})
            continue
        rows.append({
            **head,
            "reward": sample.score,
            "rule_reward": sample.rule_reward,
            **({"rm": sample.rm_reward} if sample.rm_reward is not None else {}),
            # null: no readable verdict; left out of the rule reward
            "verdicts": {rid: None if p != p else round(float(p), 6) for rid, p in zip(ids, scores.verdicts.p_satisfied[i])},
            **({"applies": {rid: None if p != p else round(float(p), 6) for rid, p in zip(ids, scores.verdicts.p_applies[i])}} if scores.verdicts.p_applies is not None else {}),
            **({"unparsed": sample.unparsed_checks} if sample.unparsed_checks else {}),
            **({"reasoning_chars_stripped": sample.reasoning_chars_stripped} if sample.reasoning_chars_stripped else {}),
            **({"empty": True} if sample.empty_response else {}),
            **({"vetoed": True, "vetoed_by": scores.vetoed_by[i]} if sample.vetoed else {}),
            **({"dropped_rules": sample.dropped_rules} if sample.dropped_rules else {}),
        })
    return rows


def report(run_dir: str | Path, out: str | Path | None = None, compare: str | Path | None = None) -> Path:
    """Write the HTML report of a run directory (extract, validate, train or quickstart).

    Args:
        run_dir: the run directory.
        out: the HTML file to write (default: RUN_DIR/report.html).
        compare: another rules file, shown matched against the run's rules (`autorule.rules.diff`).

    Returns:
        The report's path.

    Example:
        >>> report("/no/such/run")
        Traceback (most recent call last):
        ...
        autorule.reporting.build.ReportError: /no/such/run: no such run directory
    """
    from autorule.reporting import build_report

    return build_report(run_dir, out, compare)


__all__ = ["extract", "verify", "validate", "score", "Responses", "ScoreResult", "report", "PreferencePair"]
