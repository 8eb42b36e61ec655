"""Online rule refresh during GRPO: new rules from the rollouts where the reward model and the
rules disagree, kept only when they agree with held-out preferences; rules with no signal left retired.

Every `every` steps (`RuleRefreshCallback`, `autorule train --refresh-every N`):

1. **Disagreements.** Among the completions of one prompt (a GRPO group) scored since the last
   refresh, the pair where the reward model and the rule reward disagree most: the RM prefers
   one, the rules the other. A pair's disagreement is the product of its two margins
   (RM margin x rule-reward margin), so rescaling either reward does not change which pairs
   are picked. One pair per group (the most disagreeing; the earlier pair on a tie), then the
   `pairs_per_refresh` groups whose pair disagrees most (the earlier group on a tie).
2. **Extraction.** autorule's own stages (reasoning 010, candidates 020, merge 030, lint) run on
   these pairs with the extraction model (`autorule.extraction.run.run_extract`), their
   artefacts written under the refresh's folder.
3. **Candidates** are dropped when the linter flags them as naming a response, restating the
   extraction prompt or near-duplicating another candidate; when they are already active or a
   near-duplicate (cosine similarity >= `near_duplicate`) of an active rule; when no held-out
   pair tells their sides apart; or when their held-out agreement (validation's own
   `rule_stats`) is below the weakest active rule's (0.5 when no active rule has one).
4. **Retirement.** An active rule that every judged completion of the window passed, or every
   one failed, gives GRPO no signal (no difference within any group): it is retired once at
   least `retire_min_rollouts` completions judged it. Essential (veto) rules are never retired.
5. **Cap.** Past `max_active_rules`, the rules with the lowest held-out agreement go (no
   agreement counts lowest; on a tie an active rule stays before a new one; essential rules
   always stay). A refresh never leaves the set empty: it would hold its retirements back.

Why the RM-preferred completion is shown as *rejected*: the reasoning model is told which side
won and explains why, and rules are drawn from that explanation. The refresh exists to find the
loopholes the reward model pays for, so the completion the RM prefers while the rules do not is
presented as the loser: the explanation then names what is wrong with it, which is what a new
rule must penalise. Whether that reading is right is not assumed: a candidate is kept only when
held-out human preferences agree with it at least as well as with the weakest active rule (where
the RM was right and the rules wrong, its candidates disagree with the held-out pairs and go).

Each refresh is recorded (`write_record`): ``refresh/step-N.json`` in the run folder (the
step, the disagreement pairs with their completions and rewards, the rules added with their
sources and validation figures, those retired and why, the candidates dropped and why, every
count) and ``refresh/rules-step-N.yaml`` (the rule set after it).
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorule import jsonsafe
from autorule.data import PreferencePair
from autorule.data.pairs import LoadResult, pair_id
from autorule.errors import AutoruleError
from autorule.llm import LLMError
from autorule.reward.rollouts import Rollout
from autorule.rules import Rule, RuleSet
from autorule.rules.lint import (
    NAMES_RESPONSE,
    NEAR_DUPLICATE,
    NEAR_DUPLICATE_SIMILARITY,
    PROMPT_FORMAT,
)
from autorule.validation import RuleStats, ab_signs, both_sides, rule_stats

RECORDS = "refresh"  # the folder of the run folder that holds the records
# lint flags that make a candidate useless to a verifier or a repeat of another candidate
DROPPED_FLAGS = (NAMES_RESPONSE, PROMPT_FORMAT, NEAR_DUPLICATE)


class RefreshError(AutoruleError):
    """The rule refresh cannot run as set up (e.g. training on several processes)."""


@dataclass(frozen=True)
class DisagreementPair:
    """Two completions of one prompt that the reward model and the rules rank the other way round.

    Args:
        group: the GRPO group (one prompt's completions at one step).
        rule_preferred: the completion with the higher rule reward (shown as *chosen*).
        rm_preferred: the completion with the higher RM score (shown as *rejected*).

    Example:
        >>> a = Rollout([], "Long flattering answer", "g", 4, 0.0, rule=0.2, rm=1.5, vetoed=False)
        >>> b = Rollout([], "Short answer", "g", 4, 0.0, rule=0.8, rm=0.5, vetoed=False)
        >>> pair = DisagreementPair("g", rule_preferred=b, rm_preferred=a)
        >>> pair.rm_margin, round(pair.rule_margin, 6), round(pair.score, 6), pair.to_pair().chosen
        (1.0, 0.6, 0.6, 'Short answer')
    """

    group: str
    rule_preferred: Rollout
    rm_preferred: Rollout

    @property
    def rm_margin(self) -> float:
        """How much higher the RM scores its preferred completion."""
        return float(self.rm_preferred.rm - self.rule_preferred.rm)

    @property
    def rule_margin(self) -> float:
        """How much higher the rule reward is for its preferred completion (a fraction of rules)."""
        return float(self.rule_preferred.rule - self.rm_preferred.rule)

    @property
    def score(self) -> float:
        """The disagreement: RM margin x rule margin (both positive)."""
        return self.rm_margin * self.rule_margin

    def to_pair(self) -> PreferencePair:
        """The preference pair extraction reads: chosen = the rules' pick, rejected = the RM's."""
        prompt = list(self.rule_preferred.prompt)
        chosen, rejected = self.rule_preferred.completion, self.rm_preferred.completion
        return PreferencePair(id=pair_id(prompt, chosen, rejected), prompt=prompt, chosen=chosen, rejected=rejected,
                              source=f"rollouts of group {self.group}")

    def to_dict(self) -> dict:
        """The pair as its record holds it: the prompt, both completions and their rewards."""
        def side(r: Rollout) -> dict:
            return {"completion": r.completion, "rm": r.rm, "rule": r.rule, "total": r.total, "step": r.step}

        return {"pair_id": self.to_pair().id, "group": self.group, "prompt": [m.model_dump() for m in self.rule_preferred.prompt],
                "chosen_rule_preferred": side(self.rule_preferred), "rejected_rm_preferred": side(self.rm_preferred),
                "rm_margin": self.rm_margin, "rule_margin": self.rule_margin, "disagreement": self.score}


def _usable(r: Rollout) -> str | None:
    """Why a rollout cannot enter a disagreement pair, or None."""
    if r.rm is None or not math.isfinite(r.rm):
        return "no reward-model score"
    if r.rule is None or not math.isfinite(r.rule):
        return "no rule reward (refused by the verifier)"
    return None


def disagreement_pairs(rollouts: Sequence[Rollout], limit: int) -> tuple[list[DisagreementPair], Counter]:
    """The most disagreeing pair of each group, the `limit` groups that disagree most first.

    Args:
        rollouts: scored completions (their `group`, `rm` and `rule` are read).
        limit: the most pairs returned.

    Returns:
        The pairs, most disagreeing first, and counts: rollouts read, those left out by reason,
        groups, groups with no disagreeing pair, pairs left out past `limit`.

    Example:
        >>> rows = [("g1", 0.9, 0.0), ("g1", 0.1, 1.0), ("g2", 0.5, 0.5), ("g2", 0.6, 0.6)]
        >>> rollouts = [Rollout([], f"c{i}", g, 1, 0.0, rule, rm, False) for i, (g, rm, rule) in enumerate(rows)]
        >>> pairs, counts = disagreement_pairs(rollouts, 4)
        >>> [(p.group, p.rm_preferred.completion, p.rule_preferred.completion) for p in pairs], counts["groups without a disagreement"]
        ([('g1', 'c0', 'c1')], 1)
    """
    counts: Counter = Counter(rollouts=len(rollouts))
    groups: dict[str, list[Rollout]] = {}
    for r in rollouts:
        why = _usable(r)
        if why:
            counts[f"rollouts left out: {why}"] += 1
        else:
            groups.setdefault(r.group, []).append(r)
    counts["groups"] = len(groups)
    best: list[tuple[float, int, DisagreementPair]] = []
    for order, (group, members) in enumerate(groups.items()):
        top: DisagreementPair | None = None
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a, b = members[i], members[j]
                if (a.rm - b.rm) * (a.rule - b.rule) >= 0:
                    continue  # both rewards rank them alike (or one calls it a tie)
                pair = DisagreementPair(group, rule_preferred=a if a.rule > b.rule else b, rm_preferred=a if a.rm > b.rm else b)
                if top is None or pair.score > top.score:
                    top = pair
        if top is None:
            counts["groups without a disagreement"] += 1
        else:
            best.append((-top.score, order, top))
    best.sort(key=lambda t: (t[0], t[1]))
    chosen = [p for _, _, p in best[:limit]]
    counts["pairs chosen"] = len(chosen)
    counts["pairs left out past the limit"] = max(0, len(best) - limit)
    return chosen, counts


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


# ---------------------------------------------------------------------- records


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


# ---------------------------------------------------------------------- the trainer callback


class RuleRefreshHook:
    """What `RuleRefreshCallback` does, without transformers: every `every` steps, refresh the
    scorer's rules from its rollouts since the last refresh, and record it in `run_dir`.

    `RuleRefreshCallback` is this class as a `transformers.TrainerCallback` (made when first
    imported, so importing this module does not load transformers): pass it to your own
    trainer's ``callbacks``. It runs on one process only (several would each refresh their
    own shard of the rollouts into different rule sets): with ``args.world_size > 1`` it raises
    `RefreshError` when training begins. A resumed run (``global_step > 0`` at the start) takes
    the rules of the last record up to that step back, and removes the records of later steps
    (those steps are trained again).

    Args:
        scorer: the `RewardScorer` the trainer's reward function uses (its `rollouts`,
            `rules`, `verifier` and `set_rules` are used).
        refresher: a `RuleRefresher`.
        every: refresh every this many optimizer steps.
        run_dir: the run folder the records go to (``refresh/``).
        echo: prints one line per refresh (default: the monitor's console).

    Example:
        >>> from types import SimpleNamespace
        >>> from autorule.reward import RewardScorer
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from autorule.data import load_pairs
        >>> scorer = RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.9))
        >>> refresher = RuleRefresher(FakeLLM(), load_pairs([{"prompt": "Q", "chosen": "A", "rejected": "B"}]).pairs)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     hook = RuleRefreshHook(scorer, refresher, every=2, run_dir=tmp, echo=print)
        ...     for step in (1, 2):
        ...         hook.on_step_end(SimpleNamespace(world_size=1), SimpleNamespace(global_step=step), None)
        ...     [r["step"] for r in read_records(tmp)]
        rule refresh at step 2: 0 added, 0 retired, 0 candidates dropped; 1 rules active
        [2]
    """

    def __init__(self, scorer, refresher: RuleRefresher, every: int, run_dir: str | Path, *, echo: Callable[[str], None] | None = None):
        if every < 1:
            raise ValueError(f"every={every}: refresh every N >= 1 steps")
        self.scorer, self.refresher, self.every, self.run_dir = scorer, refresher, every, Path(run_dir)
        if echo is None:
            from autorule.train.monitor import console

            echo = console.print
        self.echo = echo
        self.last_step = 0
        self.results: list[RefreshResult] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "world_size", 1) > 1:
            raise RefreshError(f"the rule refresh runs on one process; this run has {args.world_size} (each would refresh its own "
                               "shard of the rollouts into a different rule set): train on one process, or leave --refresh-every out")
        if state.global_step:
            self.resume(state.global_step)
        self.last_step = state.global_step

    def resume(self, step: int) -> RuleSet | None:
        """Take back the rules of the last record up to `step`; remove later records. Returns the rules restored."""
        folder = self.run_dir / RECORDS
        records = read_records(self.run_dir)
        later = [r for r in records if r["step"] > step]
        for r in later:
            (folder / f"step-{r['step']}.json").unlink(missing_ok=True)
            (folder / r.get("rules_file", f"rules-step-{r['step']}.yaml")).unlink(missing_ok=True)
        if later:
            self.echo(f"rule refresh: removed the records of steps {', '.join(str(r['step']) for r in later)} (after the checkpoint; trained again)")
        earlier = [r for r in records if r["step"] <= step]
        if not earlier:
            return None
        rules = RuleSet.load(folder / earlier[-1].get("rules_file", f"rules-step-{earlier[-1]['step']}.yaml"))
        self.scorer.set_rules(rules, step=step)
        self.echo(f"rule refresh: resumed with the {len(rules)} rules of the refresh at step {earlier[-1]['step']}")
        return rules

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step and state.global_step % self.every == 0 and state.global_step != self.last_step:
            self.refresh(state.global_step)

    def refresh(self, step: int) -> RefreshResult:
        """Refresh now on the rollouts since the last refresh; swap the scorer's rules when they changed; record it."""
        window = self.scorer.rollouts.since(self.last_step)
        result = self.refresher.refresh(window, self.scorer.rules, step=step, verifier=self.scorer.verifier,
                                        work_dir=self.run_dir / RECORDS / f"step-{step}")
        if result.changed:
            self.scorer.set_rules(result.rules, step=step)
        write_record(result, self.run_dir, {"from_step": self.last_step, "to_step": step, "rollouts": len(window)})
        self.echo(result.describe())
        self.results.append(result)
        self.last_step = step
        return result


@functools.cache
def _callback_class() -> type:
    from transformers import TrainerCallback

    cls = type("RuleRefreshCallback", (RuleRefreshHook, TrainerCallback), {"__doc__": RuleRefreshHook.__doc__, "__module__": __name__})
    cls.__qualname__ = "RuleRefreshCallback"
    return cls


def __getattr__(name: str):
    if name == "RuleRefreshCallback":  # a transformers TrainerCallback: transformers is imported only when it is asked for
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------- `autorule train --refresh-every`


def load_refresh_pairs(config) -> list[PreferencePair]:
    """The held-out pairs of `autorule train --refresh-every`: --refresh-pairs, else the --prompts
    file when it holds preference pairs; the first `refresh_heldout` of them.

    Raises:
        ConfigError: refresh is on and there are no preference pairs to validate on.
        DataError: a --refresh-pairs file that cannot be read.
    """
    from autorule.data import DataError, load_pairs
    from autorule.train.config import ConfigError

    path, fmt = (config.refresh_pairs, "auto") if config.refresh_pairs else (config.prompts, config.prompts_format)
    try:
        data = load_pairs(path, fmt, on_bad_row="skip")
    except DataError as e:
        if config.refresh_pairs:
            raise
        raise ConfigError(f"--refresh-every needs held-out preference pairs to validate new rules on, and --prompts {path} holds none "
                          f"({e.reason}): give them with --refresh-pairs FILE") from None
    if not data.pairs:
        raise ConfigError(f"--refresh-every: {path} holds no preference pairs (skipped: {dict(data.skipped) or 'none'}); give them with --refresh-pairs FILE")
    return data.pairs[: config.refresh_heldout]


def refresh_callbacks(config, scorer, run_dir: str | Path) -> list:
    """The callbacks `autorule train` adds for --refresh-every: none when it is off.

    Args:
        config: the `TrainConfig`.
        scorer: the run's `RewardScorer`.
        run_dir: the run folder (the records go to ``refresh/``).

    Raises:
        ConfigError: refresh is on without preference pairs to validate on.
    """
    if config.refresh_every is None:
        return []
    heldout = load_refresh_pairs(config)
    spec = config.refresh_model or config.verifier
    if spec == config.verifier:
        llm = scorer.verifier.llm  # one model, loaded once
    else:
        from autorule.cache import DEFAULT_CACHE_PATH, Cache
        from autorule.llm import load_llm
        from autorule.llm.specs import parse_spec

        cache = None if config.no_cache else Cache(config.cache or DEFAULT_CACHE_PATH)
        llm = load_llm(spec, cache=cache, **parse_spec(spec).options())
    refresher = RuleRefresher(llm, heldout, max_active_rules=config.max_active_rules, pairs_per_refresh=config.refresh_disagreements,
                              near_duplicate=config.refresh_near_duplicate, seed=config.seed)
    callback = _callback_class()(scorer, refresher, config.refresh_every, run_dir)
    if scorer.rm is None:
        callback.echo("rule refresh without a reward model (--rm): no pair of completions where the RM and the rules disagree, "
                      "so it only retires rules with no signal")
    return [callback]
