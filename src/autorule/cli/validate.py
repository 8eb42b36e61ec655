"""`autorule validate`: rules tested on held-out preference pairs (over `autorule.validation`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from autorule.cli import options
from autorule.cli.options import add_data_options, add_plan_options, add_reward_options, build_scorer, err, load_data, number, out, report_skips, short, whole
from autorule.display import percent
from autorule.errors import AllFailed


def cmd_validate(args: argparse.Namespace) -> int:
    """`autorule validate`: the plan, then `run_validation` and `Validation.save`; the report's table (or JSON)."""
    from autorule.validation import run_validation

    rules_path = Path(args.rules)
    data = load_data(args)
    scorer = build_scorer(args)
    rules = scorer.rules
    stop = options.show_plan(lambda probe: _plan(scorer, data, args, probe), args)
    report_skips(data)  # counted by the plan's pass over the data
    if stop:
        return 0
    validation = run_validation(
        rules, rules_path, data, scorer, rm=scorer.rm, seed=args.seed, folds=args.folds, select=args.select,
        redundancy=args.redundancy, warn=lambda m: err.print(f"[yellow]warning:[/yellow] {m}"), baseline=not args.no_baseline, seeds=args.seeds,
    )
    # nothing judged (every response refused): only the report is written, and it says why
    validation.save(rules, rules_path, data=str(args.data), out=args.out, fit_weights=args.fit_weights, weights_out=args.weights_out, select_out=args.select_out)
    report = validation.report
    if validation.all_refused:
        if args.json:
            print(validation.to_json())
        raise AllFailed(report["refused_responses"], report["refusal_reasons"])
    if args.fit_weights and validation.weights is None:
        err.print("[yellow]warning:[/yellow] no rule has a positive learned weight; weights left as they were")
    off = [r for r in rules.rules if r.id in set(report.get("rules_switched_off", []))]
    if off:  # a non-positive coefficient: the rule votes against the preferences, or not at all
        err.print(f"[yellow]{len(off)} of {len(rules.rules)} rules get weight 0 (switched off: they did not favour the chosen replies):[/yellow]", highlight=False)
        for r in off:
            err.print(f"  {r.id}  {short(r.text, 90)}", highlight=False)
    if args.json:
        print(validation.to_json())
    else:
        _print_validation(report)
    return 0


def _plan(scorer, data, args: argparse.Namespace, probe: bool):
    """The plan: every rule check of both sides of each pair, and (unless --no-baseline) the
    no-rules judge's one check per pair per seed; one speed measurement for both."""
    from autorule.plan import Plan, check_stage, is_embedded, speed_for, tokens_from, _speed_note
    from autorule.validation import both_sides
    from autorule.validation_baselines import NoRulesJudge, plan_stage

    verifier = scorer.verifier
    speed = speed_for(verifier.llm, probe)
    sides = (conv for pair in data for conv in both_sides([pair]))  # streamed: the plan holds a sample only
    stages = [check_stage("verify both sides", verifier, speed, sides)]
    if not args.no_baseline:
        stages.append(plan_stage(NoRulesJudge(verifier.llm, verifier.context), speed, iter(data), args.seeds))
    return Plan(verifier.llm.spec, stages, tokens_from(verifier.llm), _speed_note(speed), args.price_per_mtok, embedded=is_embedded(verifier.llm))


def print_icai(report: dict, console) -> None:
    """The ICAI protocol's table: the rule set beside the no-rules judge and flipped labels (mean ± s.d. over seeds).

    Args:
        report: a validation report (`Validation.report`) with ``icai``; console: a rich Console.
    """
    import statistics

    from rich.table import Table

    from autorule.validation_baselines import format_figure, mean_sd

    icai = report["icai"]
    summary, per_seed = icai["summary"], icai["per_seed"]
    seeds = ", ".join(map(str, icai["seeds"]))
    table = Table(title=f"ICAI protocol on {report['pairs']} pairs (seed{'s' if len(icai['seeds']) > 1 else ''} {seeds})")
    for col in ("judge", "accuracy", "without ties", "ties", "flipped labels"):
        table.add_column(col)

    def ties(key: str) -> str:
        values = [(r[key] or {}).get("ties") for r in per_seed]
        return str(values[0]) if len(set(values)) == 1 else f"{statistics.fmean(values):g} (mean)"

    rs = mean_sd([r["rule_set"]["accuracy_without_ties"] if r["rule_set"]["accuracy_without_ties"] is not None else float("nan") for r in per_seed])
    table.add_row("rule set", format_figure(summary["rule_set"]), format_figure(rs), ties("rule_set"), format_figure(summary["rule_set_flipped"]))
    if icai["no_rules_judge"]:
        table.add_row("no-rules judge", format_figure(summary["no_rules"]), format_figure(summary["no_rules_without_ties"]), ties("no_rules"),
                      format_figure(summary["no_rules_flipped"]))
    table.add_row("learned weights (CV)", format_figure(summary["learned_weights_cv"]), "-", "-", "-")
    console.print(table)
    if icai["no_rules_judge"]:
        unread = sum(r["no_rules"]["unread"] for r in per_seed)
        refused = sum(r["no_rules"]["refused"] for r in per_seed)
        if unread:
            console.print(f"[yellow]no-rules judge: {unread} checks gave no verdict ({refused} refused by the server): counted as no pick[/yellow]")


def _print_validation(report: dict) -> None:
    from rich.table import Table

    def pct(x):
        return percent(x, 1)

    table = Table(title=f"rule validation on {report['pairs']} pairs ({report['verifier']})")
    for col in ("rule", "agreement [95% CI]", "n", "coverage", "kappa", "perf", "weight"):
        table.add_column(col)
    for r in report["rules"]:
        agreement = f"{pct(r['agreement'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        kappa = "-" if r["kappa"] is None else f"{r['kappa']:.2f}"
        perf = "-" if r.get("perf") is None else f"{r['perf']:+.2f}"
        table.add_row(short(r["text"], 70), agreement, str(r["n"]), pct(r["coverage"]), kappa, perf, f"{r['learned_weight']:.2f}")
    out.print(table)
    out.print("perf: ICAI's (agreement - 0.5) x coverage x 2, from -1 (always against the label) to +1", highlight=False)
    if "icai" in report:
        print_icai(report, out)
    acc = report["rule_set"]
    out.print(f"rule-set accuracy: {pct(acc['accuracy'])} ({acc['correct']} right, {acc['wrong']} wrong, {acc['ties']} ties); "
              f"without ties {pct(acc['accuracy_without_ties'])}")
    out.print(f"learned weights: {report['learned_weights']['folds']}-fold CV accuracy {pct(report['learned_weights']['cv_accuracy'])}")
    from autorule.llm.base import describe_llm_stats, describe_mode

    if report.get("unparsed_checks") or report.get("refused_responses"):
        out.print(f"[yellow]{report['unparsed_checks']} checks had no readable Yes/No (left out of each rule's statistics); "
                  f"{report['refused_responses']} responses were refused by the verifier's server[/yellow]")
        for reason, n in (report.get("refusal_reasons") or {}).items():
            out.print(f"  refused {n} x {reason}", highlight=False, soft_wrap=True)
    out.print(f"verifier: {describe_llm_stats(report.get('llm_stats', {}))}")
    if report.get("verifier_mode"):
        out.print(f"verifier mode: {describe_mode(report['verifier_mode'])}", soft_wrap=True, highlight=False)
    if "reward_model" in report:
        out.print(f"reward model: {pct(report['reward_model']['accuracy'])}; RM + rules: {pct(report['reward_model_plus_rules']['accuracy'])}")
    for pair in report["redundant_pairs"][:10]:
        out.print(f"redundant: {pair['a']} ~ {pair['b']} (r = {pair['correlation']})")
    if "selection" in report:
        out.print(f"selected: {', '.join(report['selection']['rules'])} (CV accuracy {pct(report['selection']['cv_accuracy'][-1])})")
    for name, path in report["outputs"].items():
        out.print(f"{name}: {path}")


def add_parsers(sub) -> None:
    """Add `validate` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['validate']
    """
    va = sub.add_parser("validate", help="test rules against held-out preference pairs: agreement, coverage, kappa, accuracy, weights")
    add_reward_options(va)
    va.add_argument("--data", required=True, metavar="PATH", help="held-out preference data")
    add_data_options(va)
    va.add_argument("--seed", type=int, default=0, help="seed for the A/B order used by kappa, the weight fit and the no-rules judge")
    va.add_argument("--seeds", type=whole(1), default=1, metavar="N",
                    help="repeat the seeded parts (A/B order, CV folds, the no-rules judge) for seeds SEED..SEED+N-1 and report mean ± s.d.")
    va.add_argument("--no-baseline", action="store_true",
                    help="skip the no-rules judge (the verifier asked which reply is better: one check per pair per seed); per-rule stats only")
    va.add_argument("--folds", type=whole(2), default=5, help="cross-validation folds")
    va.add_argument("--select", type=whole(1), default=None, metavar="K", help="greedily pick the K rules with the best CV accuracy and write them out")
    va.add_argument("--select-out", default=None, metavar="FILE", help="where --select writes (default: RULES.topK.yaml)")
    va.add_argument("--fit-weights", action="store_true", help="write the learned weights into a new rules file")
    va.add_argument("--weights-out", default=None, metavar="FILE", help="where --fit-weights writes (default: RULES.weighted.yaml)")
    va.add_argument("--redundancy", type=number(0, 1), default=0.8, help="report rule pairs whose verdicts correlate at least this much")
    va.add_argument("--out", default=None, metavar="FILE", help="JSON report (default: validation.json beside the rules)")
    va.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    add_plan_options(va)
    va.set_defaults(func=cmd_validate)

