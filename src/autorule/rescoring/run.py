"""`rescore`: saved rollouts scored again with another rule set, verifier or preset, old and new rewards side by side."""

from __future__ import annotations

import inspect
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from autorule.rescoring.formats import RolloutReader, SavedRollout

if TYPE_CHECKING:
    from autorule.llm import LLM
    from autorule.reward import RewardScorer
    from autorule.rules import RuleSet

log = logging.getLogger("autorule")

# rollouts per scorer call; a chunk holds one step and, where the rows allow, whole groups
RESCORE_CHUNK = 512


@dataclass
class RescoreResult:
    """What `rescore` did: per rollout the old and the new reward, their rank correlation, the counts.

    Args:
        summary: ``format``, ``files``, ``rows`` (read), ``rollouts`` (rescored), ``skipped``
            (reason -> count) and ``skipped_first_at`` (reason -> file and line), ``failed``
            (refused by the verifier's server) and ``failure_reasons``, ``without_old_reward``,
            ``paired`` (rollouts with both rewards), ``mean_old`` / ``mean_new`` (over the paired
            ones), ``spearman`` (Spearman's rho over the paired ones; None with ``spearman_note``
            when it is undefined), ``spearman_within_groups`` (the mean rho inside GRPO groups,
            what decides advantages) over ``groups_compared``, ``old_reward_from``,
            ``old_components`` / ``new_components`` (name -> mean), ``pass_rates``, ``grouped``
            (the scorer was given the groups and steps), ``vetoed`` (rollouts whose new total an
            essential rule capped), ``groups_split`` (groups scored in
            more than one chunk), ``unparsed_checks``, ``reasoning_chars_stripped``,
            ``empty_responses``, ``llm_stats``, ``verifier_mode``.
        old, new: shape (rollouts,), the old and the new reward in file order; NaN where there is none.
        rows: one dict per rollout (as written to ``out``); None when written or not kept.
        out: the file the rows were written to.

    Example:
        >>> RescoreResult({"rollouts": 2, "failed": 2}, np.zeros(2), np.full(2, np.nan)).all_failed
        True
    """

    summary: dict
    old: np.ndarray
    new: np.ndarray
    rows: list[dict] | None = None
    out: Path | None = None

    @property
    def all_failed(self) -> bool:
        """No rollout got a new reward: every row was skipped or refused by the verifier's server."""
        return self.summary["rollouts"] == self.summary["failed"]


def rescore(
    path: str | Path,
    rules: RuleSet | str | Path | list[str],
    verifier: str | LLM = "embedded",
    *,
    preset: str = "default",
    rm: str | None = None,
    cache: bool | str | Path = True,
    format: str = "auto",
    out: str | Path | TextIO | None = None,
    keep_rows: bool = True,
    old_reward: str | None = None,
    on_bad_row: str = "error",
    limit: int | None = None,
    judge_reasoning: bool = False,
    empty_rule_reward: float = 0.0,
    llm_options: dict | None = None,
    scorer: RewardScorer | None = None,
    chunk_size: int = RESCORE_CHUNK,
    progress: bool = False,
    **verifier_options: Any,
) -> RescoreResult:
    """Score saved rollouts again (another rule set, verifier or preset) and compare with the rewards they got.

    The file is streamed: rollouts are scored `chunk_size` at a time (one step per chunk, whole
    GRPO groups where the rows keep them together) through the verdict cache, and each chunk's
    rows are written at once, so 100k rollouts fit in memory when ``out`` is given (only the two
    rewards and the group of each rollout are kept, for the correlations).

    Args:
        path: the rollouts: TRL's ``output_dir`` or its ``completions/*.parquet``, verl's
            ``rollout_data_dir`` or one of its ``{step}.jsonl``, or autorule's JSONL (see
            `autorule.rescoring.formats`).
        rules: a RuleSet, a rules file, or a list of rule texts.
        verifier: a model spec or an LLM object.
        preset: the reward preset ("default", "ternary", "paper").
        rm: a reward model's path.
        cache: the verdict cache (True: the default file; a path; False: none).
        format: "auto", "trl", "verl" or "autorule".
        out: where the rows go as JSON lines (a path, its folder made; or an open text stream);
            None keeps them in `RescoreResult.rows` (unless ``keep_rows=False``).
        keep_rows: with ``out=None``, False keeps no rows.
        old_reward: the column or key holding the old reward instead of the default (TRL: the
            sum of the reward columns, as TRL sums them with weights 1; verl: ``score``;
            autorule: ``reward``).
        on_bad_row: "error" (a `DataError` naming the file and line) or "skip" (counted by reason).
        limit: rescore at most this many rollouts.
        judge_reasoning, empty_rule_reward, llm_options, **verifier_options: as for `autorule.score`.
        scorer: a `RewardScorer` to use instead of one built from the settings above.
        chunk_size: rollouts per scorer call.
        progress: a progress bar on stderr.

    Returns:
        `RescoreResult`. Each row: ``source`` (file and line), ``step``, ``group``, ``prompt``,
        ``completion``, ``old_reward``, ``old_components``, then the new ``reward``,
        ``rule_reward``, ``rm``, ``verdicts`` as `autorule.score` writes them (or ``error``), and
        ``vetoed`` / ``dropped_rules`` where an essential rule capped it or rule dropout left rules out.

    Raises:
        DataError: (exit 2) no such path, a layout it cannot read, a bad row (``on_bad_row="error"``),
            no rollouts in the file.
        UnparsedVerdicts: more than ``max_unparsed`` of the checks got no readable Yes/No.
        LLMError: the verifier failed for good.

    Example:
        >>> import tempfile, pathlib
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "rollouts.jsonl"
        >>> _ = path.write_text('{"prompt": "Hi", "completion": "Hello!", "reward": 0.2}\\n{"prompt": "Hi", "completion": "Go away.", "reward": 0.9}\\n')
        >>> result = rescore(path, ["The assistant's response should be polite."], FakeLLM(p_yes=0.75), cache=False)
        >>> result.old.tolist(), result.new.tolist(), result.summary["mean_new"], result.summary["spearman"]
        ([0.2, 0.9], [0.75, 0.75], 0.75, None)
        >>> result.summary["spearman_note"]
        'the new rewards are all the same'
        >>> result.rows[0]["source"].endswith("rollouts.jsonl, line 1"), result.rows[0]["old_reward"], result.rows[0]["reward"]
        (True, 0.2, 0.75)
    """
    from tqdm.auto import tqdm

    from autorule import jsonsafe
    from autorule.api import _rules, _score_rows
    from autorule.reward import build_scorer
    from autorule.verifier import Verdicts

    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: at least 1")
    reader = RolloutReader(path, format, old_reward=old_reward, on_bad_row=on_bad_row, limit=limit)
    if scorer is None:
        scorer = build_scorer(_rules(rules), verifier, preset, rm=rm, cache=cache, llm_options=llm_options,
                              judge_reasoning=judge_reasoning, empty_rule_reward=empty_rule_reward, **verifier_options)
    grouped = takes_groups(scorer)
    if not grouped:
        log.info("this RewardScorer.score takes no groups= and step=: rollouts are scored without their GRPO groups")
    out_path = Path(out) if isinstance(out, (str, Path)) else None
    if out_path:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    sink = out_path.open("w", encoding="utf-8") if out_path else out
    rows: list[dict] | None = [] if out is None and keep_rows else None
    old, new, rule, rm_scores, groups = [], [], [], [], []
    verdict_parts: list[Verdicts] = []
    old_parts: dict[str, list[float]] = {}
    group_ids: dict[tuple, int] = {}
    chunk_of_group: dict[int, int] = {}
    split: set[int] = set()
    chars = empty = n_vetoed = 0
    try:
        with tqdm(desc="rescoring", unit="rollout", file=sys.stderr, disable=not progress) as bar:
            for n_chunk, chunk in enumerate(chunks(reader, chunk_size)):
                convs = [r.conversation for r in chunk]
                extra = {"groups": [r.group for r in chunk], "step": chunk[0].step} if grouped else {}
                scores = scorer.score(convs, on_item=lambda: bar.update(1), **extra)
                samples = scorer.samples(scores)
                verdict_parts.append(scores.verdicts)
                chars += scores.reasoning_chars_stripped
                empty += scores.empty_responses
                chunk_rows = []
                for r, row, sample in zip(chunk, _score_rows([(r.where, None, None) for r in chunk], scores, samples), samples):
                    row.pop("id")
                    vetoed, dropped = bool(getattr(sample, "vetoed", False)), int(getattr(sample, "dropped_rules", 0))
                    n_vetoed += vetoed
                    chunk_rows.append({"source": r.where, "step": r.step, "group": r.group, "prompt": r.prompt, "completion": r.completion,
                                       "old_reward": r.old_reward, **({"old_components": r.old_parts} if r.old_parts else {}), **row,
                                       **({"vetoed": True} if vetoed and not sample.refused else {}),
                                       **({"dropped_rules": dropped} if dropped and not sample.refused else {})})
                    g = group_ids.setdefault((r.step, r.group), len(group_ids))
                    if chunk_of_group.setdefault(g, n_chunk) != n_chunk:
                        split.add(g)
                    groups.append(g)
                    old.append(math.nan if r.old_reward is None else r.old_reward)
                    new.append(math.nan if sample.refused else sample.score)
                    rule.append(sample.rule_reward)
                    rm_scores.append(math.nan if sample.rm_reward is None else sample.rm_reward)
                    for name in set(old_parts) | set(r.old_parts):
                        old_parts.setdefault(name, [math.nan] * (len(old) - 1)).append(r.old_parts.get(name, math.nan))
                if sink is not None:
                    sink.write("".join(jsonsafe.dumps(row, ensure_ascii=False) + "\n" for row in chunk_rows))
                elif rows is not None:
                    rows.extend(chunk_rows)
    finally:
        if out_path and sink is not None:
            sink.close()
    if not reader.rows:
        from autorule.data import DataError

        raise DataError(str(path), "no rollouts found")
    old_a, new_a = np.array(old, dtype=float), np.array(new, dtype=float)
    verdicts = Verdicts.concat(verdict_parts) if verdict_parts else None
    failed = verdicts.errors if verdicts is not None else {}
    new_components = {"rule_reward": _mean(rule)}
    if scorer.rm is not None:
        new_components["rm"] = _mean(rm_scores)
    summary = {
        **{k: v for k, v in reader.summary().items()},
        "failed": len(failed),
        **({"failure_reasons": dict(Counter(failed.values()).most_common(5))} if failed else {}),
        "without_old_reward": int(np.isnan(old_a).sum()),
        **compare(old_a, new_a, np.array(groups, dtype=int)),
        "old_components": {name: _mean(values) for name, values in old_parts.items()},
        "new_components": new_components,
        "pass_rates": verdicts.pass_rates() if verdicts is not None else {},
        "vetoed": int(n_vetoed),
        "grouped": grouped,
        "groups_split": len(split),
        "unparsed_checks": verdicts.unparsed if verdicts is not None else 0,
        "reasoning_chars_stripped": int(chars),
        "empty_responses": int(empty),
        "llm_stats": dict(scorer.verifier.llm.stats),
        "verifier_mode": scorer.verifier.llm.yes_no_record,
    }
    return RescoreResult(summary, old_a, new_a, rows, out_path)


def takes_groups(scorer: Any) -> bool:
    """Whether ``scorer.score`` takes ``groups=`` and ``step=`` (GRPO groups: group aggregation, rule dropout).

    Example:
        >>> class Old:
        ...     def score(self, conversations, desc=None, on_item=None): ...
        >>> takes_groups(Old())
        False
    """
    params = inspect.signature(scorer.score).parameters
    return "groups" in params and "step" in params


def chunks(rollouts: Any, size: int) -> Iterator[list[SavedRollout]]:
    """Consecutive rollouts in lists for the scorer: one step per list, cut between groups.

    A list closes when the step changes, or once it holds `size` rollouts and the next one
    starts another group; it closes anyway at 4 x `size` (a group that long, or groups whose
    rows are interleaved, is then split across lists).

    Args:
        rollouts: `SavedRollout` items (any iterable); size: the list length aimed at.

    Example:
        >>> rs = [SavedRollout("", None, "c", [], g, s, None) for g, s in [("a", 1), ("a", 1), ("b", 1), ("b", 2), ("c", 2)]]
        >>> [[(r.group, r.step) for r in c] for c in chunks(rs, 1)]
        [[('a', 1), ('a', 1)], [('b', 1)], [('b', 2)], [('c', 2)]]
    """
    chunk: list[SavedRollout] = []
    for r in rollouts:
        if chunk and (r.step != chunk[-1].step or (len(chunk) >= size and r.group != chunk[-1].group) or len(chunk) >= 4 * size):
            yield chunk
            chunk = []
        chunk.append(r)
    if chunk:
        yield chunk


def compare(old: np.ndarray, new: np.ndarray, groups: np.ndarray) -> dict:
    """The old and new rewards compared where both exist: their means and Spearman's rho, overall and within groups.

    Args:
        old, new: shape (n,), rewards (NaN where none).
        groups: shape (n,), each rollout's group as an integer.

    Returns:
        ``paired``, ``mean_old``, ``mean_new``, ``spearman`` (None with a ``spearman_note`` when
        undefined: fewer than 2 pairs, or one side constant), ``spearman_within_groups`` (the mean
        rho of groups where both sides vary; None when none do) and ``groups_compared``.

    Example:
        >>> r = compare(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.2, 0.1, 0.4, 0.3]), np.array([0, 0, 1, 1]))
        >>> r["paired"], round(r["spearman"], 6), round(r["spearman_within_groups"], 6), r["groups_compared"]
        (4, 0.6, -1.0, 2)
    """
    from scipy.stats import spearmanr

    both = ~np.isnan(old) & ~np.isnan(new)
    o, n, g = old[both], new[both], groups[both]
    result: dict = {"paired": int(both.sum()), "mean_old": float(o.mean()) if len(o) else None, "mean_new": float(n.mean()) if len(n) else None}
    note = None
    if len(o) < 2:
        note = "fewer than 2 rollouts have both rewards"
    elif np.ptp(o) == 0:
        note = "the old rewards are all the same"
    elif np.ptp(n) == 0:
        note = "the new rewards are all the same"
    result["spearman"] = None if note else float(spearmanr(o, n).statistic)
    if note:
        result["spearman_note"] = note
    within = []
    order = np.argsort(g, kind="stable")
    for members in np.split(order, np.flatnonzero(np.diff(g[order])) + 1) if len(g) else []:
        if len(members) >= 2 and np.ptp(o[members]) > 0 and np.ptp(n[members]) > 0:
            within.append(float(spearmanr(o[members], n[members]).statistic))
    result["spearman_within_groups"] = float(np.mean(within)) if within else None
    result["groups_compared"] = len(within)
    return result


def _mean(values: list[float]) -> float | None:
    a = np.array(values, dtype=float)
    a = a[~np.isnan(a)]
    return float(a.mean()) if len(a) else None
