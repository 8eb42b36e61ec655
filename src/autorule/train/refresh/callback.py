"""The trainer callback (RuleRefreshCallback, a transformers TrainerCallback made on first use) and `autorule train --refresh-every`'s wiring."""

from __future__ import annotations

import tempfile  # noqa: F401 - the doctests make their run folders with it
import functools
from collections.abc import Callable
from pathlib import Path

from autorule.data import PreferencePair
from autorule.errors import AutoruleError
from autorule.rules import RuleSet
from autorule.train.refresh.records import RECORDS, read_records, write_record
from autorule.train.refresh.refresher import RefreshResult, RuleRefresher


class RefreshError(AutoruleError):
    """The rule refresh cannot run as set up (e.g. training on several processes)."""



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

    cls = type("RuleRefreshCallback", (RuleRefreshHook, TrainerCallback), {"__doc__": RuleRefreshHook.__doc__, "__module__": "autorule.train.refresh"})
    cls.__qualname__ = "RuleRefreshCallback"
    return cls


def __getattr__(name: str):
    if name == "RuleRefreshCallback":  # a transformers TrainerCallback: transformers is imported only when it is asked for
        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")




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
