"""`autorule score`: rewards and verdicts for responses or both sides of preference pairs (over `autorule.api.score`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autorule import jsonsafe
from autorule.cli import options
from autorule.cli.options import add_completion_options, add_data_options, add_plan_options, add_reward_options, build_scorer, err, load_data, report_skips
from autorule.errors import AllFailed


def cmd_score(args: argparse.Namespace) -> int:
    """`autorule score`: the plan, then `autorule.api.score`'s rows (to --out or stdout) and its summary."""
    from autorule.api import Responses, score
    from autorule.llm.base import describe_llm_stats, describe_mode
    from autorule.plan import plan_checks

    scorer = build_scorer(args)
    # re-iterable, read lazily: responses with their prompts, or preference pairs read as data inspect reads them
    items = Responses(args.data if _holds_responses(args) else load_data(args))
    if options.show_plan(lambda probe: plan_checks("verify", scorer.verifier, (c for _, _, c in items), price_per_mtok=args.price_per_mtok, probe=probe), args):
        return 0
    if items.pairs is not None:
        report_skips(items.pairs)
    # the rows go to --out, else to stdout unless it holds the --json summary
    result = score(scorer.rules, items, scorer=scorer, out=args.out or (None if args.json else sys.stdout), keep_rows=False, progress=True)
    summary, errors = result.summary, result.verdicts.errors
    if args.json:
        print(jsonsafe.dumps(summary))
    else:
        mean = "-" if summary["mean_rule_reward"] is None else f"{summary['mean_rule_reward']:.3f}"
        err.print(f"scored {summary['responses'] - summary['failed']} of {summary['responses']} responses against {len(scorer.rules)} rules; mean rule reward {mean}"
                  + (f"; written to {result.out}" if result.out else ""), soft_wrap=True)
        if errors:
            first = next(iter(errors.values()))
            err.print(f"[yellow]{len(errors)} responses failed[/yellow] (rows with an \"error\"), e.g.: {first}", soft_wrap=True)
        if summary["unparsed_checks"]:
            err.print(f"[yellow]{summary['unparsed_checks']} checks had no readable Yes/No[/yellow]; they are left out of the rule reward", soft_wrap=True)
        if summary["reasoning_chars_stripped"] or summary["empty_responses"]:
            err.print(f"judged the answers only: {summary['reasoning_chars_stripped']} characters of reasoning cut from "
                      f"{summary['responses_with_reasoning_cut']} responses (--judge-reasoning keeps them); {summary['empty_responses']} "
                      f"responses had nothing to judge (rule reward {scorer.empty_rule_reward}, not sent to the verifier)", soft_wrap=True)
        if summary.get("pairs"):
            err.print(f"chosen side has the higher rule reward in {summary['chosen_preferred']:.1%} of {summary['pairs']} pairs ({summary['ties']:.1%} ties)")
        if summary["vetoed"]:
            by = ", ".join(f"{rid} {n}" for rid, n in summary["vetoed_by"].items())
            err.print(f"[yellow]{summary['vetoed']} responses vetoed[/yellow] by essential rules (their reward capped at the floor): {by}", soft_wrap=True)
        err.print(f"verifier: {describe_llm_stats(summary['llm_stats'])}", soft_wrap=True)
        err.print(f"verifier mode: {describe_mode(summary['verifier_mode'])}", soft_wrap=True, highlight=False)
    if result.all_failed:
        raise AllFailed(summary["responses"], summary["failure_reasons"])
    return 0


def _holds_responses(args: argparse.Namespace) -> bool:
    """Whether --data holds responses (rows with a 'response') and no data option says it holds preference pairs."""
    from autorule.data import first_record

    named = (args.answer_a_column, args.answer_b_column, args.label_column, args.label_meaning)
    pair_options = args.format != "auto" or any(v is not None for v in named) or (args.chosen_column, args.rejected_column) != ("chosen", "rejected")
    path = Path(args.data)
    first = first_record(path) if path.is_file() else None
    return first is not None and "response" in first and not pair_options


def add_parsers(sub) -> None:
    """Add `score` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['score']
    """
    sc = sub.add_parser("score", help="score responses (or both sides of preference pairs) against a rule set")
    add_reward_options(sc)
    sc.add_argument("--data", required=True, metavar="FILE", help="JSONL with 'prompt' and 'response', or preference data (any layout `autorule data inspect` reads)")
    add_data_options(sc)  # the same options as data inspect / extract / validate: every layout scores both sides
    sc.add_argument("--out", default=None, metavar="FILE", help="write per-response verdicts and rewards as JSONL here (default: stdout)")
    sc.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    add_completion_options(sc)
    add_plan_options(sc)
    sc.set_defaults(func=cmd_score)

