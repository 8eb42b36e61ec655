"""RuleRefresher: new rules from disagreement pairs, kept on held-out agreement; rules with no signal retired; the cap."""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorule.data import PreferencePair
from autorule.data.pairs import LoadResult
from autorule.llm import LLMError
from autorule.reward.rollouts import Rollout
from autorule.rules import Rule, RuleSet
from autorule.rules.lint import (
    NAMES_RESPONSE,
    NEAR_DUPLICATE,
    NEAR_DUPLICATE_SIMILARITY,
    PROMPT_FORMAT,
)
from autorule.train.refresh.disagreements import DisagreementPair, disagreement_pairs
from autorule.validation import RuleStats, ab_signs, both_sides, rule_stats

# lint flags that make a candidate useless to a verifier or a repeat of another candidate
DROPPED_FLAGS = (NAMES_RESPONSE, PROMPT_FORMAT, NEAR_DUPLICATE)


@dataclass
class RuleChange:
    """A rule added or retired, or a candidate dropped, and why.

    Args:
        id, text: the rule.
        reason: why (for a rule added: what it was kept on).
        stats: its held-out validation figures (`RuleStats.to_dict`), or for a retirement the
            completions that judged it and how many passed.
        sources: for a rule added, the disagreement pairs it was drawn from (`DisagreementPair.to_dict`).
        kind: the reason's countable label (e.g. "every completion passed"); "" when it is the reason itself.

    Example:
        >>> change = RuleChange("r-1", "The response should be short.", "every completion passed (8 of 8)", kind="every completion passed")
        >>> change.to_dict()["reason"], change.label
        ('every completion passed (8 of 8)', 'every completion passed')
    """

    id: str
    text: str
    reason: str
    stats: dict = field(default_factory=dict)
    sources: list[dict] = field(default_factory=list)
    kind: str = ""

    @property
    def label(self) -> str:
        """The reason's countable label (what the counts and the console line group by)."""
        return self.kind or self.reason

    def to_dict(self) -> dict:
        return {"id": self.id, "text": self.text, "reason": self.reason, "kind": self.label, "stats": self.stats, "sources": self.sources}


@dataclass
class RefreshResult:
    """What one refresh did.

    Args:
        step: the trainer's step.
        rules: the rule set after the refresh (the one to score with).
        rules_before: the ids of the rules active before it.
        pairs: the disagreement pairs extraction ran on.
        added, retired: the rules added and retired (with their reasons).
        rejected: the candidates dropped (with their reasons).
        bar: the held-out agreement a candidate had to reach (None when no candidate was validated).
        counts: every count: rollouts, pairs, candidates, rules, by reason.
        extraction: the extraction's summary (counts, LLM calls, seconds) or its error.
        seconds: the refresh's wall time (extraction and validation included).

    Example:
        >>> result = RefreshResult(5, RuleSet.from_texts(["The response should be short."]), ["r-x"])
        >>> result.changed, result.describe()
        (True, 'rule refresh at step 5: 0 added, 0 retired, 0 candidates dropped; 1 rules active')
    """

    step: int
    rules: RuleSet
    rules_before: list[str]
    pairs: list[DisagreementPair] = field(default_factory=list)
    added: list[RuleChange] = field(default_factory=list)
    retired: list[RuleChange] = field(default_factory=list)
    rejected: list[RuleChange] = field(default_factory=list)
    bar: float | None = None
    counts: dict = field(default_factory=dict)
    extraction: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether the rule set after differs from the one before."""
        return [r.id for r in self.rules.rules] != self.rules_before

    def describe(self) -> str:
        """One line for the console: what changed and why candidates were dropped."""
        why = Counter(c.label for c in self.rejected)
        dropped = f" ({'; '.join(f'{k}: {v}' for k, v in why.most_common())})" if why else ""
        retired = Counter(c.label for c in self.retired)
        gone = f" ({'; '.join(f'{k}: {v}' for k, v in retired.most_common())})" if retired else ""
        error = f"; extraction failed: {self.extraction['error']}" if self.extraction.get("error") else ""
        return (f"rule refresh at step {self.step}: {len(self.added)} added, {len(self.retired)} retired{gone}, "
                f"{len(self.rejected)} candidates dropped{dropped}; {len(self.rules)} rules active{error}")

    def to_record(self) -> dict:
        """The record written to ``refresh/step-N.json`` (strict JSON once through `jsonsafe`)."""
        return {
            "step": self.step,
            "rules_before": self.rules_before,
            "rules_after": [{"id": r.id, "text": r.text, "weight": r.weight, "essential": getattr(r, "essential", False)} for r in self.rules.rules],
            "added": [c.to_dict() for c in self.added],
            "retired": [c.to_dict() for c in self.retired],
            "rejected": [c.to_dict() for c in self.rejected],
            "bar": self.bar,
            "pairs": [p.to_dict() for p in self.pairs],
            "counts": self.counts,
            "extraction": self.extraction,
            "seconds": round(self.seconds, 3),
        }


def _agreement(stats: RuleStats | None) -> float:
    """A rule's held-out agreement for ranking: none (no discriminating pair) ranks lowest."""
    return stats.agreement if stats is not None and stats.n and not math.isnan(stats.agreement) else -math.inf


class RuleRefresher:
    """Refreshes a rule set from recent rollouts (see the module's docstring for every step and why).

    Args:
        llm: the extraction model (reasoning, candidates and merge), from `load_llm`.
        heldout: held-out preference pairs candidates are validated on (at least one).
        max_active_rules: the most rules active after a refresh.
        pairs_per_refresh: disagreement pairs (one per group) extraction runs on.
        near_duplicate: the cosine similarity from which a candidate is a near-duplicate of an active rule.
        retire_min_rollouts: completions that must have judged a rule before it can be retired.
        target_candidates: the merge's target: at most this many candidates per refresh.
        seed: the A/B order of reasoning prompts and of validation's kappa.
        embed: texts -> unit vectors, for near-duplicates (default: the embedder extraction uses).
        extract_options: other `ExtractConfig` settings (``reasoning_tokens``, ``max_input_tokens``, ...).

    Raises:
        ValueError: no held-out pairs, or a setting out of range.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.data import load_pairs
        >>> refresher = RuleRefresher(FakeLLM(), load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}]).pairs, max_active_rules=10)
        >>> rules = RuleSet.from_texts(["The response should be short."])
        >>> done = [Rollout([], "ok", "g", 1, 1.0, 1.0, None, False, {rules.rules[0].id: 0.9})] * 8
        >>> result = refresher.refresh(done, rules, step=10, verifier=None)
        >>> result.describe()  # every completion passed, but the last rule is never retired
        'rule refresh at step 10: 0 added, 0 retired, 0 candidates dropped; 1 rules active'
        >>> result.counts["retirements held back (no rule would be left)"]
        1
    """

    def __init__(self, llm, heldout: Sequence[PreferencePair], *, max_active_rules: int = 25, pairs_per_refresh: int = 8,
                 near_duplicate: float = NEAR_DUPLICATE_SIMILARITY, retire_min_rollouts: int = 8, target_candidates: int = 10, seed: int = 0,
                 embed: Callable[[list[str]], np.ndarray] | None = None, extract_options: dict | None = None):
        heldout = list(heldout)
        if not heldout:
            raise ValueError("the rule refresh needs held-out preference pairs to validate candidates on; none were given")
        for name, value in (("max_active_rules", max_active_rules), ("pairs_per_refresh", pairs_per_refresh),
                            ("retire_min_rollouts", retire_min_rollouts), ("target_candidates", target_candidates)):
            if value < 1:
                raise ValueError(f"{name}={value}: it must be at least 1")
        if not 0.0 < near_duplicate <= 1.0:
            raise ValueError(f"near_duplicate={near_duplicate}: a cosine similarity in (0, 1]")
        self.llm, self.heldout = llm, heldout
        self.max_active_rules, self.pairs_per_refresh = max_active_rules, pairs_per_refresh
        self.near_duplicate, self.retire_min_rollouts = near_duplicate, retire_min_rollouts
        self.target_candidates, self.seed = target_candidates, seed
        self._embed, self.extract_options = embed, dict(extract_options or {})
        self._stats: dict[tuple, RuleStats] = {}  # a rule's held-out figures, by verifier settings and rule id

    @property
    def embed(self) -> Callable[[list[str]], np.ndarray]:
        if self._embed is None:
            from autorule.rules.embed import load_embedder

            self._embed = load_embedder()
        return self._embed

    # ------------------------------------------------------------------ the steps

    def retire(self, active: RuleSet, rollouts: Sequence[Rollout], threshold: float) -> tuple[list[Rule], list[RuleChange], Counter]:
        """The rules kept, those retired (every judged completion passed, or every one failed), and counts.

        Args:
            active: the active rules.
            rollouts: the window's completions (their `p_satisfied` per rule id).
            threshold: P(Yes) at or above which a completion passes (the verifier's).

        Example:
            >>> rules = RuleSet(rules=[Rule(id="a", text="Be short."), Rule(id="b", text="Be kind.")])
            >>> rollouts = [Rollout([], "x", "g", 1, 0, 0, None, False, {"a": 0.9, "b": p}) for p in (0.2, 0.7)]
            >>> from autorule.data import load_pairs
            >>> refresher = RuleRefresher(None, load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}]).pairs, retire_min_rollouts=2)
            >>> kept, retired, _ = refresher.retire(rules, rollouts, 0.5)
            >>> [r.id for r in kept], [(c.id, c.reason) for c in retired]
            (['b'], [('a', 'every completion passed (2 of 2)')])
        """
        counts: Counter = Counter()
        kept, retired = [], []
        for rule in active.rules:
            verdicts = [r.p_satisfied[rule.id] for r in rollouts if rule.id in r.p_satisfied and not math.isnan(r.p_satisfied[rule.id])]
            passed = sum(p >= threshold for p in verdicts)
            no_signal = len(verdicts) >= self.retire_min_rollouts and passed in (0, len(verdicts))
            if no_signal and getattr(rule, "essential", False):
                counts["essential rules kept with no signal"] += 1
            elif no_signal:
                how = "passed" if passed else "failed"
                retired.append(RuleChange(rule.id, rule.text, f"every completion {how} ({len(verdicts)} of {len(verdicts)})",
                                          {"judged": len(verdicts), "passed": passed}, kind=f"every completion {how}"))
                continue
            elif len(verdicts) < self.retire_min_rollouts:
                counts["rules judged by too few completions to retire"] += 1
            kept.append(rule)
        return kept, retired, counts

    def extract(self, pairs: list[PreferencePair], work_dir: Path, step: int) -> tuple[RuleSet, dict]:
        """Candidates from the disagreement pairs: autorule's extraction stages, run in `work_dir`.

        Returns the candidates (empty when extraction failed) and its summary, or ``{"error": why}``.
        A pair the extraction model refuses is counted in the summary, not fatal.
        """
        from autorule.extraction.run import ExtractConfig, run_extract

        data = LoadResult(path=f"rollouts at step {step}", format="disagreement pairs", pairs=pairs, rows=len(pairs))
        config = ExtractConfig(**{"seed": self.seed, "target_rules": self.target_candidates, "max_refused_share": 1.0, **self.extract_options})
        try:
            result = run_extract(data, self.llm, self.llm, work_dir, config, overwrite=True)
        except (ValueError, LLMError) as e:  # no candidate from any pair, or the model failed: the run goes on, recorded
            return RuleSet(), {"error": str(e), "run_dir": str(work_dir)}
        return result.rules, {**result.summary, "run_dir": str(work_dir)}

    def validate(self, rules: list[Rule], verifier) -> dict[str, RuleStats]:
        """Each rule's held-out figures (validation's `rule_stats`); a rule's figures are kept per verifier.

        Args:
            rules: the rules to validate.
            verifier: the `Verifier` whose model, style, applicability and threshold judge them.
        """
        from autorule.verifier import Verifier

        setting = (getattr(verifier.llm, "spec", None), verifier.style, verifier.applicability, verifier.threshold)
        todo = [r for r in rules if (*setting, r.id) not in self._stats]
        if todo:
            judge = Verifier(verifier.llm, RuleSet(rules=todo), style=verifier.style, applicability=verifier.applicability,
                             threshold=verifier.threshold, max_input_tokens=verifier.max_input_tokens, max_unparsed=verifier.max_unparsed)
            verdicts = judge.verify_messages(both_sides(self.heldout))
            n = len(self.heldout)
            p, applies = verdicts.p_satisfied, verdicts.p_applies
            signs = ab_signs([pair.id for pair in self.heldout], self.seed)
            stats = rule_stats([r.id for r in todo], p[:n], p[n:], signs, threshold=verdicts.threshold,
                               applies_chosen=None if applies is None else applies[:n] >= verdicts.threshold,
                               applies_rejected=None if applies is None else applies[n:] >= verdicts.threshold)
            for s in stats:
                self._stats[(*setting, s.id)] = s
        return {r.id: self._stats[(*setting, r.id)] for r in rules}

    def near_duplicates_of(self, candidates: list[Rule], active: list[Rule]) -> dict[str, tuple[str, float]]:
        """For each candidate within `near_duplicate` cosine similarity of an active rule: (that rule's id, the similarity)."""
        if not candidates or not active:
            return {}
        vectors = np.asarray(self.embed([r.text for r in active] + [r.text for r in candidates]), dtype=float)
        sims = vectors[len(active) :] @ vectors[: len(active)].T
        out = {}
        for i, cand in enumerate(candidates):
            j = int(np.argmax(sims[i]))
            if sims[i, j] >= self.near_duplicate - 1e-9:
                out[cand.id] = (active[j].id, round(float(sims[i, j]), 3))
        return out

    # ------------------------------------------------------------------ the refresh

    def refresh(self, rollouts: Sequence[Rollout], active: RuleSet, *, step: int, verifier, work_dir: str | Path | None = None) -> RefreshResult:
        """One refresh: retire, extract from disagreements, validate, cap (see the module's docstring).

        Args:
            rollouts: the completions scored since the last refresh.
            active: the active rule set.
            step: the trainer's step (recorded).
            verifier: the scorer's `Verifier` (its threshold decides pass/fail; its model validates
                candidates). Only read when there are candidates to validate.
            work_dir: where the extraction's artefacts go (None: a temporary folder, removed).

        Returns:
            A `RefreshResult`; its `rules` are the set to score with.
        """
        start = time.perf_counter()
        counts: Counter = Counter()
        threshold = verifier.threshold if verifier is not None else 0.5
        kept, retired, c = self.retire(active, rollouts, threshold)
        counts.update(c)
        pairs, c = disagreement_pairs(rollouts, self.pairs_per_refresh)
        counts.update(c)
        result = RefreshResult(step, active, [r.id for r in active.rules], pairs=pairs, retired=retired)
        candidates: list[Rule] = []
        if pairs:
            if work_dir is None:
                with tempfile.TemporaryDirectory(prefix="autorule-refresh-") as tmp:
                    found, result.extraction = self.extract([p.to_pair() for p in pairs], Path(tmp), step)
            else:
                found, result.extraction = self.extract([p.to_pair() for p in pairs], Path(work_dir), step)
            counts["candidates extracted"] = len(found.rules)
            candidates = self._screen(found.rules, active.rules, result)
        new = self._admit(candidates, kept, verifier, result) if candidates else []
        pool = self._cap(kept, new, verifier, result)
        if not pool:  # a refresh never leaves nothing to score with
            pool = list(active.rules)
            counts["retirements held back (no rule would be left)"] += len(result.retired)
            result.retired = []
        result.rules = active.model_copy(update={"rules": pool})
        counts["rules added"] = len(result.added)
        counts["rules retired"] = len(result.retired)
        counts.update(f"rules retired: {c.label}" for c in result.retired)
        counts["candidates dropped"] = len(result.rejected)
        counts.update(f"candidates dropped: {c.label}" for c in result.rejected)
        counts["rules active"] = len(pool)
        result.seconds = time.perf_counter() - start
        result.counts = {k: v for k, v in counts.items() if v or k in ("rollouts", "pairs chosen", "rules added", "rules retired")}
        return result

    def _screen(self, found: list[Rule], active: list[Rule], result: RefreshResult) -> list[Rule]:
        """Candidates without the lint flags that disqualify them, not active already nor near-duplicates of an active rule."""
        out = []
        for rule in found:
            flag = next((f for f in rule.lint if f.code in DROPPED_FLAGS), None)
            if flag is not None:
                result.rejected.append(RuleChange(rule.id, rule.text, f"lint {flag.code}: {flag.reason}", kind=f"lint {flag.code}"))
            elif rule.id in {r.id for r in active}:
                result.rejected.append(RuleChange(rule.id, rule.text, "already active"))
            else:
                out.append(rule)
        close = self.near_duplicates_of(out, active)
        for rule in [r for r in out if r.id in close]:
            other, sim = close[rule.id]
            result.rejected.append(RuleChange(rule.id, rule.text, f"near-duplicate of an active rule ({other}, similarity {sim:.2f})",
                                               kind="near-duplicate of an active rule"))
        return [r for r in out if r.id not in close]

    def _admit(self, candidates: list[Rule], kept: list[Rule], verifier, result: RefreshResult) -> list[Rule]:
        """The candidates whose held-out agreement reaches the weakest kept rule's, as new rules with their figures and sources."""
        stats = self.validate(kept + candidates, verifier)
        defined = [stats[r.id].agreement for r in kept if stats[r.id].n and not math.isnan(stats[r.id].agreement)]
        result.bar = min(defined) if defined else 0.5
        weakest = "the weakest active rule's" if defined else "chance: no active rule has a held-out agreement"
        by_pair = {p.to_pair().id: p.to_dict() for p in result.pairs}
        admitted = []
        for rule in candidates:
            s = stats[rule.id]
            figures = s.to_dict()
            if not s.n:
                result.rejected.append(RuleChange(rule.id, rule.text, "no held-out pair tells its sides apart", figures))
            elif s.agreement < result.bar - 1e-12:
                result.rejected.append(RuleChange(rule.id, rule.text, f"held-out agreement {s.agreement:.3f} below {result.bar:.3f}, {weakest}", figures,
                                                  kind="held-out agreement below the bar"))
            else:
                sources = [by_pair[pid] for pid in dict.fromkeys(c.pair_id for c in rule.candidates) if pid in by_pair]
                new = rule.model_copy(update={"stats": {**rule.stats, "validation": {**figures, "pairs": len(self.heldout)},
                                                                       "refresh": {"step": result.step}}})
                admitted.append(new)
                result.added.append(RuleChange(rule.id, rule.text, f"held-out agreement {s.agreement:.3f} >= {result.bar:.3f}, {weakest}",
                                               figures, sources))
        return admitted

    def _cap(self, kept: list[Rule], new: list[Rule], verifier, result: RefreshResult) -> list[Rule]:
        """At most `max_active_rules`: the lowest held-out agreement goes first (essential rules stay)."""
        pool = kept + new
        if len(pool) <= self.max_active_rules:
            return pool
        stats = self.validate(kept, verifier) if kept else {}
        stats.update({r.id: self._stats_of(r, verifier) for r in new})
        is_new = {r.id for r in new}
        ranked = sorted(range(len(pool)), key=lambda i: (not getattr(pool[i], "essential", False), -_agreement(stats.get(pool[i].id)),
                                                         pool[i].id in is_new, i))
        keep = set(ranked[: max(self.max_active_rules, sum(getattr(r, "essential", False) for r in pool))])
        for i, rule in enumerate(pool):
            if i in keep:
                continue
            figures = stats[rule.id].to_dict() if stats.get(rule.id) else {}
            why = f"over max_active_rules ({self.max_active_rules}): held-out agreement {_describe(stats.get(rule.id))}, the lowest"
            if rule.id in is_new:
                result.added = [c for c in result.added if c.id != rule.id]
                result.rejected.append(RuleChange(rule.id, rule.text, why, figures, kind="over max_active_rules"))
            else:
                result.retired.append(RuleChange(rule.id, rule.text, why, figures, kind="over max_active_rules"))
        return [pool[i] for i in sorted(keep)]

    def _stats_of(self, rule: Rule, verifier) -> RuleStats:
        return self.validate([rule], verifier)[rule.id]


def _describe(stats: RuleStats | None) -> str:
    return "none" if stats is None or not stats.n or math.isnan(stats.agreement) else f"{stats.agreement:.3f}"
