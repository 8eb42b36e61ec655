"""Rule validation on held-out preferences: agreement, coverage, kappa, set accuracy,
learned weights, redundancy and greedy selection.

Everything here is a pure function of verdict matrices, so every statistic can be
checked by hand: `chosen` and `rejected` are (pairs x rules) arrays of P(satisfied),
thresholded where a statistic needs a yes/no verdict.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorule import jsonsafe
from autorule.data.pairs import chosen_first
from autorule.rules import RuleSet

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion; (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def ab_signs(pair_ids: list[str], seed: int) -> np.ndarray:
    """+1 where the chosen side is shown as A, -1 where as B: a seeded, per-pair coin.

    The preference label is always 'chosen', which leaves kappa and logistic regression
    nothing to tell apart; presenting each pair in a random order gives a balanced label.
    """
    return np.array([1 if chosen_first(pid, seed) else -1 for pid in pair_ids])


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two raters' labels (any hashable values)."""
    if len(a) == 0:
        return float("nan")
    labels = sorted(set(a.tolist()) | set(b.tolist()))
    po = float(np.mean(a == b))
    pe = sum(float(np.mean(a == lab)) * float(np.mean(b == lab)) for lab in labels)
    return 0.0 if pe == 1.0 else (po - pe) / (1 - pe)


@dataclass
class RuleStats:
    id: str
    agreement: float  # among discriminating pairs, the fraction where chosen satisfies the rule
    ci_low: float
    ci_high: float
    n: int  # discriminating pairs the agreement rests on
    coverage: float  # fraction of pairs where the rule discriminates
    applies: float  # fraction of responses the rule applies to (1.0 without applicability)
    kappa: float  # the rule's vote vs the preference label, A/B order randomised
    pass_rate_chosen: float
    pass_rate_rejected: float
    learned_weight: float | None = None
    relevance: float | None = None  # ICAI: share of judged pairs where the rule gives a verdict (= coverage)
    perf: float | None = None  # ICAI: (agreement - 0.5) * relevance * 2

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else (round(v, 6) if isinstance(v, float) else v)) for k, v in self.__dict__.items()}


def rule_stats(rule_ids: list[str], chosen: np.ndarray, rejected: np.ndarray, signs: np.ndarray, *, threshold: float = 0.5,
               applies_chosen: np.ndarray | None = None, applies_rejected: np.ndarray | None = None) -> list[RuleStats]:
    c, r = np.nan_to_num(chosen, nan=0.0) >= threshold, np.nan_to_num(rejected, nan=0.0) >= threshold
    # a pair where either side's check had no readable verdict says nothing about that rule
    judged = ~np.isnan(chosen) & ~np.isnan(rejected)
    out = []
    for j, rid in enumerate(rule_ids):
        n_pairs = int(judged[:, j].sum())
        disc = (c[:, j] != r[:, j]) & judged[:, j]
        n = int(disc.sum())
        wins = int((c[:, j] & ~r[:, j]).sum())
        low, high = wilson_interval(wins, n)
        # rule's vote on the A/B presentation: A if only A satisfies it, B if only B does
        label = np.where(signs[disc] > 0, "A", "B")
        vote = np.where((signs[disc] > 0) == c[disc, j], "A", "B")
        if applies_chosen is not None and applies_rejected is not None:
            applies = float(np.concatenate([applies_chosen[:, j], applies_rejected[:, j]]).mean())
        else:
            applies = 1.0
        out.append(RuleStats(
            id=rid,
            agreement=wins / n if n else float("nan"),
            ci_low=low,
            ci_high=high,
            n=n,
            coverage=n / n_pairs if n_pairs else float("nan"),
            applies=applies,
            kappa=cohen_kappa(vote, label) if n else float("nan"),
            pass_rate_chosen=float(c[judged[:, j], j].mean()) if n_pairs else float("nan"),
            pass_rate_rejected=float(r[judged[:, j], j].mean()) if n_pairs else float("nan"),
        ))
    return out


@dataclass
class PreferenceAccuracy:
    correct: int
    wrong: int
    ties: int

    @property
    def n(self) -> int:
        return self.correct + self.wrong + self.ties

    @property
    def accuracy(self) -> float:
        """Correct over all pairs: a tie is not a correct prediction."""
        return self.correct / self.n if self.n else float("nan")

    @property
    def accuracy_without_ties(self) -> float:
        decided = self.correct + self.wrong
        return self.correct / decided if decided else float("nan")

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "accuracy_without_ties": self.accuracy_without_ties, "correct": self.correct, "wrong": self.wrong, "ties": self.ties}


def preference_accuracy(score_chosen: np.ndarray, score_rejected: np.ndarray, tol: float = 1e-9) -> PreferenceAccuracy:
    diff = np.asarray(score_chosen, dtype=float) - np.asarray(score_rejected, dtype=float)
    return PreferenceAccuracy(int((diff > tol).sum()), int((diff < -tol).sum()), int((np.abs(diff) <= tol).sum()))


@dataclass
class WeightFit:
    weights: np.ndarray
    cv_accuracy: float
    folds: int


def _design(diffs: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verdict differences as seen in the randomised A/B order, and whether A won."""
    return diffs * signs[:, None], (signs > 0).astype(int)


def fit_weights(diffs: np.ndarray, signs: np.ndarray, *, folds: int = 5, c: float = 1.0, seed: int = 0) -> WeightFit:
    """L2 logistic regression on verdict differences (no intercept: a tie is 50/50),
    with k-fold cross-validated accuracy, then refit on all pairs for the weights."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y = _design(diffs, signs)
    model = LogisticRegression(C=c, fit_intercept=False, max_iter=1000)
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    cv = float("nan")
    if k >= 2:
        cv = float(cross_val_score(model, x, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed), scoring="accuracy").mean())
    if len(set(y.tolist())) < 2:
        return WeightFit(np.zeros(diffs.shape[1]), cv, k)
    model.fit(x, y)
    return WeightFit(model.coef_[0].copy(), cv, k)


def correlated_rules(rule_ids: list[str], verdicts: np.ndarray, min_abs: float = 0.8) -> list[dict]:
    """Pairs of rules whose verdicts (over all responses) correlate at least `min_abs`."""
    out = []
    std = verdicts.std(axis=0)
    for i in range(len(rule_ids)):
        for j in range(i + 1, len(rule_ids)):
            if std[i] == 0 or std[j] == 0:
                continue
            corr = float(np.corrcoef(verdicts[:, i], verdicts[:, j])[0, 1])
            if abs(corr) >= min_abs:
                out.append({"a": rule_ids[i], "b": rule_ids[j], "correlation": round(corr, 4)})
    return sorted(out, key=lambda d: -abs(d["correlation"]))


@dataclass
class Selection:
    order: list[int] = field(default_factory=list)  # column indices, in the order picked
    cv_accuracy: list[float] = field(default_factory=list)  # after each pick


def greedy_select(diffs: np.ndarray, signs: np.ndarray, k: int, *, folds: int = 5, seed: int = 0) -> Selection:
    """Forward selection: repeatedly add the rule that most raises cross-validated accuracy."""
    chosen = Selection()
    remaining = list(range(diffs.shape[1]))
    while remaining and len(chosen.order) < k:
        scored = []
        for j in remaining:
            fit = fit_weights(diffs[:, chosen.order + [j]], signs, folds=folds, seed=seed)
            score = fit.cv_accuracy if not math.isnan(fit.cv_accuracy) else 0.0
            scored.append((score, -j, j))  # ties: the earlier rule
        best = max(scored)
        chosen.order.append(best[2])
        chosen.cv_accuracy.append(best[0])
        remaining.remove(best[2])
    return chosen


# --------------------------------------------------------------------------- the command


def training_pair_ids(rules, rules_path) -> set[str]:
    """Pairs the rules were learned from: their provenance, and the extraction run's pairs."""
    import json
    from pathlib import Path

    ids = {pid for r in rules.rules for pid in r.pairs}
    run_pairs = Path(rules_path).parent / "000_pairs.jsonl" if rules_path else None
    if run_pairs is not None and run_pairs.is_file():
        for line in run_pairs.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ids.add(json.loads(line)["id"])
    return ids


def learned_rule_weights(coef: np.ndarray) -> np.ndarray | None:
    """Reward weights from logistic coefficients: negatives dropped, positive mean 1.

    A negative coefficient means the rule votes against the preference; a weighted mean
    cannot use that, so such rules get weight 0 (their coefficient stays in the stats).
    """
    positive = np.maximum(coef, 0.0)
    if not positive.any():
        return None
    return positive / positive[positive > 0].mean()


def _json_safe(value):
    """NaN (an undefined statistic) becomes None, so reports are strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@dataclass
class Validation:
    """The result of validating rules on preference pairs.

    Args:
        report: what validation.json holds (per-rule `rules`, `accuracy`, `learned_weights`, ...).
        weights: reward weights learned from the data (None: no rule had a positive one).
        selected: rule ids chosen by `select`, in order.

    Example:
        >>> from autorule import validate
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> result = validate(["The response should be polite."], [{"prompt": "Q", "chosen": "A", "rejected": "B"}], FakeLLM(p_yes=0.9), folds=2)
        >>> [r["text"] for r in result.report["rules"]]
        ['The response should be polite.']
    """

    report: dict  # what validation.json holds
    weights: np.ndarray | None  # reward weights learned from the data (None: none positive)
    selected: list[str] | None  # rule ids picked by --select, in order
    select: int | None = None  # the K --select asked for (names RULES.topK.yaml)

    @property
    def all_refused(self) -> bool:
        """Every response was refused by the verifier's server: nothing was judged."""
        return bool(self.report["refused_responses"]) and self.report["refused_responses"] == 2 * self.report["pairs"]

    def to_json(self, indent: int | None = None) -> str:
        """The report as strict JSON: undefined statistics are null, paths text.

        Args:
            indent: as for `json.dumps` (None: one line).

        Example:
            >>> Validation({"pairs": 2, "kappa": float("nan"), "data": Path("held-out.jsonl")}, None, None).to_json()
            '{"pairs": 2, "kappa": null, "data": "held-out.jsonl"}'
        """
        return jsonsafe.dumps(self.report, indent=indent, ensure_ascii=False, default=_json_default)

    def write_stats(self, rules, rules_path, data: str) -> None:
        """Each rule's statistics into its `stats.validation`, saved back to the rules file."""
        by_id = {r["id"]: r for r in self.report["rules"]}
        for rule in rules.rules:
            stats = {k: v for k, v in by_id[rule.id].items() if k not in ("id", "text")}
            rule.stats = {**rule.stats, "validation": {**stats, "pairs": self.report["pairs"], "data": data}}
        rules.save(rules_path)

    def save(self, rules, rules_path: str | Path, *, data: str, out: str | Path | None = None, fit_weights: bool = False,
             weights_out: str | Path | None = None, select_out: str | Path | None = None) -> dict[str, str]:
        """Write what `autorule validate` writes: the report, each rule's statistics into the rules file,
        and, when asked, the rules with their learned weights and the selected rules.

        When every response was refused nothing was judged: only the report is written (it says
        why) and the rules file and its statistics stay as they were. The report's ``outputs``
        name the files written; the returned ones name the report too. With ``fit_weights``, the
        rules a weight of 0 switches off (they did not favour the chosen replies) are listed in
        the report's ``rules_switched_off``; no weights are written when none is positive.

        Args:
            rules: the RuleSet validated; rules_path: its file.
            data: the held-out data's name, recorded with each rule's statistics.
            out: the report (default: validation.json beside the rules).
            fit_weights: also write the rules with their learned weights.
            weights_out: where (default: RULES.weighted.yaml).
            select_out: where the selected rules go (default: RULES.topK.yaml).

        Returns:
            The paths written, by name: ``rules_file``, ``weighted_rules_file``, ``selected_rules_file``, ``report``.

        Raises:
            OSError: a file that cannot be written.

        Example:
            >>> import tempfile
            >>> from autorule.rules import RuleSet
            >>> rules = RuleSet.from_texts(["The response should be polite."])
            >>> report = {"pairs": 1, "refused_responses": 2, "rules": []}
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     outputs = Validation(report, None, None).save(rules, Path(tmp) / "rules.yaml", data="held-out.jsonl")
            ...     sorted(outputs), sorted(p.name for p in Path(tmp).iterdir())
            (['report'], ['validation.json'])
        """
        rules_path = Path(rules_path)
        report = self.report
        out_path = Path(out or rules_path.with_name("validation.json"))
        if self.all_refused:
            report["outputs"] = {"report": str(out_path)}
            out_path.write_text(self.to_json(indent=2))
            return dict(report["outputs"])
        self.write_stats(rules, rules_path, data)
        outputs = {"rules_file": str(rules_path)}
        if fit_weights and self.weights is not None:
            weighted = copy.deepcopy(rules)
            for rule, w in zip(weighted.rules, self.weights):
                rule.weight = round(float(w), 6)
            path = Path(weights_out or rules_path.with_name(rules_path.stem + ".weighted.yaml"))
            weighted.save(path)
            outputs["weighted_rules_file"] = str(path)
            report["rules_switched_off"] = [r.id for r in weighted.rules if r.weight == 0]
        if self.selected:
            subset = RuleSet(meta={**rules.meta, "selected_from": str(rules_path)}, rules=[r for r in rules.rules if r.id in set(self.selected)])
            subset.rules.sort(key=lambda r: self.selected.index(r.id))
            path = Path(select_out or rules_path.with_name(rules_path.stem + f".top{self.select}.yaml"))
            subset.save(path)
            outputs["selected_rules_file"] = str(path)
        report["outputs"] = outputs
        out_path.write_text(self.to_json(indent=2))
        outputs["report"] = str(out_path)  # after writing: the report names the files beside it, not itself
        return dict(outputs)


def _json_default(value):
    """What strict JSON cannot hold as is: a float left (NaN) is null, anything else (a path) its text."""
    return None if isinstance(value, float) else str(value)


def both_sides(pairs) -> list:
    """Every pair's chosen conversation, then every rejected one: the order validation verifies them in."""
    return [p.conversation("chosen") for p in pairs] + [p.conversation("rejected") for p in pairs]


def _join_runs(parts):
    """One seed's no-rules verdicts over every chunk, as one `JudgeRun`."""
    from autorule.validation_baselines import JudgeRun

    refused, offset = {}, 0
    for part in parts:
        refused.update({offset + i: why for i, why in part.refused.items()})
        offset += len(part.p_chosen)
    return JudgeRun(parts[0].seed, np.concatenate([p.p_chosen for p in parts]), np.concatenate([p.a_is_chosen for p in parts]), refused)


def _rows(verdicts, start: int, stop: int):
    """Verdicts of responses start..stop-1, errors re-indexed."""
    from autorule.verifier import Verdicts

    return Verdicts(verdicts.rule_ids, verdicts.p_satisfied[start:stop], None if verdicts.p_applies is None else verdicts.p_applies[start:stop],
                    verdicts.threshold, {i - start: why for i, why in verdicts.errors.items() if start <= i < stop})


def run_validation(rules, rules_path, pairs, scorer, **options) -> Validation:
    """Verify both sides of every pair against every rule and compute the statistics.

    `pairs` may be any iterable of pairs (a `PairStream` for a big file): they are verified
    `chunk_size` at a time and only the verdicts are kept.

    Undefined statistics (a rule whose verdicts never vary, no pair where it applies) are
    NaN in the report, not numpy warnings on the terminal.

    The ICAI protocol (`autorule.validation_baselines`) goes in ``report["icai"]``: the rule set's
    accuracy beside the flipped-label control and, with ``baseline=True``, beside a no-rules judge
    (the verifier's LLM asked which reply is better: one check per pair per seed); each rule gets
    ICAI's ``relevance`` and ``perf``. ``seeds=N`` repeats everything seeded (the A/B order, the
    weight fit's folds) for seeds ``seed .. seed + N - 1`` and reports mean ± s.d.; the per-rule
    statistics and learned weights are those of ``seed``.

    Args:
        rules, rules_path: the RuleSet and its file (None: no file; its run's pairs are flagged if reused).
        pairs: any iterable of `PreferencePair`; scorer: a `RewardScorer` (its verifier and preset).
        rm: a `RewardModel` to compare with; seed: the A/B order's seed; folds: CV folds; select: pick K rules.
        redundancy: report rule pairs correlating at least this much; warn: where warnings go.
        progress: a progress bar; chunk_size: pairs verified at a time.
        baseline: also run the no-rules judge; seeds: how many seeds (at least 1).

    Raises:
        ValueError: no pairs, or fewer than one seed.
        UnparsedVerdicts: too many checks had no readable answer.
    """
    import warnings

    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run_validation(rules, rules_path, pairs, scorer, **options)


def _run_validation(rules, rules_path, pairs, scorer, *, rm=None, seed: int = 0, folds: int = 5, select: int | None = None,
                    redundancy: float = 0.8, warn=print, progress: bool = True, chunk_size: int = 1024,
                    baseline: bool = False, seeds: int = 1) -> Validation:
    from autorule.reward import compose, rule_reward

    from tqdm.auto import tqdm

    from autorule.data import chunked
    from autorule.validation_baselines import JudgeRun, NoRulesJudge, icai_perf, icai_summary, seed_list
    from autorule.verifier import Verdicts

    all_seeds = seed_list(seed, seeds)
    judge = NoRulesJudge(scorer.verifier.llm, scorer.verifier.context) if baseline else None
    judged: dict[int, list[JudgeRun]] = {s: [] for s in all_seeds}

    # pairs stream through the verifier a chunk at a time: only verdicts (pairs x rules) are kept
    training = training_pair_ids(rules, rules_path)
    pair_ids: list[str] = []
    chosen, rejected, rm_chosen, rm_rejected = [], [], [], []
    total = getattr(pairs, "pairs_read", None) or (len(pairs) if hasattr(pairs, "__len__") else None)
    with tqdm(total=2 * total if total else None, desc="verifying chosen and rejected", disable=not progress, unit="resp") as bar:
        for chunk in chunked(pairs, chunk_size):
            pair_ids.extend(p.id for p in chunk)
            convs = both_sides(chunk)
            verdicts = scorer.verifier.verify_messages(convs, on_item=lambda: bar.update(1))
            m = len(chunk)
            chosen.append(_rows(verdicts, 0, m))
            rejected.append(_rows(verdicts, m, 2 * m))
            if judge is not None:  # ICAI's no-rules baseline: one check per pair per seed
                for s in all_seeds:
                    judged[s].append(judge.judge(chunk, s))
            if rm is not None:
                rm_scores = rm.score(convs, normalise=scorer.preset.normalise_rm)
                rm_chosen.append(rm_scores[:m])
                rm_rejected.append(rm_scores[m:])
    n = len(pair_ids)
    if not n:
        raise ValueError("no pairs to validate on")
    overlap = sum(1 for pid in set(pair_ids) if pid in training)
    if overlap:
        warn(f"{overlap} of {n} validation pairs were used to extract these rules; "
             "their statistics are optimistic (validate on held-out pairs)")
    verdicts = Verdicts.concat(chosen + rejected)  # every chosen response, then every rejected one
    p_c, p_r = verdicts.p_satisfied[:n], verdicts.p_satisfied[n:]
    applies = verdicts.p_applies
    ids = verdicts.rule_ids
    signs = ab_signs(pair_ids, seed)
    per_rule = rule_stats(ids, p_c, p_r, signs, threshold=verdicts.threshold,
                          applies_chosen=None if applies is None else applies[:n] >= verdicts.threshold,
                          applies_rejected=None if applies is None else applies[n:] >= verdicts.threshold)

    rule_score = rule_reward(verdicts, None, hard=scorer.preset.hard)  # uniform weights
    report: dict = {
        "pairs": n,
        "rules_file": str(rules_path) if rules_path else None,
        "verifier": scorer.verifier.llm.spec,
        "preset": scorer.preset.name,
        "overlap_with_training_pairs": overlap,
        # checks with no readable verdict (left out of each rule's statistics), and
        # responses the verifier's server refused (their pairs count in no accuracy)
        "unparsed_checks": verdicts.unparsed,
        "refused_responses": len(verdicts.errors),
        # why, most common first (at most 5 reasons), so a run that failed says what to fix
        "refusal_reasons": dict(Counter(verdicts.errors.values()).most_common(5)),
        "llm_stats": dict(scorer.verifier.llm.stats),
        "verifier_mode": scorer.verifier.llm.yes_no_record,
        "rule_set": preference_accuracy(rule_score[:n], rule_score[n:]).to_dict(),
    }
    report["accuracy"] = report["rule_set"]["accuracy"]

    # soft verdict differences: a weak verifier's P(Yes) still carries signal that thresholding drops
    diffs = np.nan_to_num(p_c - p_r, nan=0.0)  # an unknown difference is no evidence either way
    weight_fit = fit_weights(diffs, signs, folds=folds, seed=seed)
    for s, w in zip(per_rule, weight_fit.weights):
        s.learned_weight = float(w)
    report["learned_weights"] = {"cv_accuracy": weight_fit.cv_accuracy, "folds": weight_fit.folds, "coefficients": dict(zip(ids, map(float, weight_fit.weights)))}

    if rm is not None:
        rm_scores = np.concatenate(rm_chosen + rm_rejected)
        report["reward_model"] = preference_accuracy(rm_scores[:n], rm_scores[n:]).to_dict()
        combined = compose(scorer.preset, rule_score, rm_scores)
        report["reward_model_plus_rules"] = preference_accuracy(combined[:n], combined[n:]).to_dict()

    report["redundant_pairs"] = correlated_rules(ids, np.nan_to_num(verdicts.p_satisfied, nan=0.5), redundancy)
    # the ICAI protocol: the rule set beside a no-rules judge and flipped labels, over every seed
    cv_by_seed = {seed: weight_fit.cv_accuracy}
    for s in all_seeds[1:]:
        cv_by_seed[s] = fit_weights(diffs, ab_signs(pair_ids, s), folds=folds, seed=s).cv_accuracy
    runs = [_join_runs(judged[s]) for s in all_seeds] if judge is not None else None
    report["icai"] = icai_summary(report["rule_set"], runs, cv_by_seed)
    for s in per_rule:
        s.relevance, s.perf = s.coverage, icai_perf(s.agreement, s.coverage)

    if select:
        selection = greedy_select(diffs, signs, select, folds=folds, seed=seed)
        report["selection"] = {"rules": [ids[j] for j in selection.order], "cv_accuracy": selection.cv_accuracy}
    report["rules"] = [{"text": r.text, **s.to_dict()} for r, s in zip(rules.rules, per_rule)]
    return Validation(_json_safe(report), learned_rule_weights(weight_fit.weights), report.get("selection", {}).get("rules"), select)
