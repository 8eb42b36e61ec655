"""The Python API: the whole pipeline from a notebook, with plain inputs.

Every function is quiet unless asked (`progress=True`); autorule's messages go to the
"autorule" logger.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from autorule.data import LoadResult, PreferencePair, load_pairs, to_conversation
from autorule.llm import LLM, load_llm
from autorule.data.reasoning import answer_only
from autorule.rules import RuleSet
from autorule.validation import Validation
from autorule.verifier import Verdicts

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
            their middle), ``max_refused_share`` (default 0.05).

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
        >>> rules = extract([{"prompt": "Hi, I am Ann.", "chosen": "Hello Ann!", "rejected": "Hello."}], llm, cache=False)
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
    return Verifier(verifier_llm, _rules(rules), **verifier_options).verify(conversations, desc="verifying" if progress else None)


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
) -> Validation:
    """Test rules against held-out preferences: agreement, coverage, accuracy, learned weights.

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

    Returns:
        `Validation`: ``report`` (what `autorule validate` writes to validation.json:
        per-rule ``rules``, ``accuracy``, ``learned_weights``...), ``weights`` and ``selected``.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> pairs = [{"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]
        >>> result = validate(["The assistant's response should be polite."], pairs, FakeLLM(p_yes=0.5), folds=2)
        >>> result.report["pairs"], result.report["rule_set"]["ties"]
        (1, 1)
    """
    from autorule.reward import RewardModel, RewardScorer
    from autorule.validation import run_validation

    rules_path = None if isinstance(rules, (RuleSet, list, tuple)) else Path(rules)
    ruleset = _rules(rules)
    scorer = RewardScorer(ruleset, _llm(verifier, cache, llm_options), preset)
    model = RewardModel(rm) if rm else None
    return run_validation(ruleset, rules_path, _pairs(pairs).pairs, scorer, rm=model, seed=seed, folds=folds, select=select,
                          warn=log.warning, progress=progress)


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


__all__ = ["extract", "verify", "validate", "report", "PreferencePair"]
