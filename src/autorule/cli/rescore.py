"""`autorule rescore`: saved rollouts scored again, old and new rewards side by side (over `autorule.rescore`)."""

from __future__ import annotations

import argparse
import sys

from autorule import jsonsafe
from autorule.cli.options import add_completion_options, add_reward_options, build_scorer, err, whole
from autorule.errors import AllFailed


def cmd_rescore(args: argparse.Namespace) -> int:
    """`autorule rescore`: `autorule.rescore`'s rows (to --out or stdout) and its summary on stderr (or --json)."""
    from autorule.llm.base import describe_llm_stats
    from autorule.rescoring import RolloutReader, rescore

    RolloutReader(args.rollouts, args.format, old_reward=args.old_reward)  # a path or layout it cannot read is named before the verifier loads
    scorer = build_scorer(args)
    result = rescore(args.rollouts, scorer.rules, scorer=scorer, format=args.format, out=args.out or (None if args.json else sys.stdout),
                     keep_rows=False, old_reward=args.old_reward, on_bad_row=args.on_bad_row, limit=args.limit, progress=True)
    s = result.summary
    if args.json:
        print(jsonsafe.dumps(s))
    else:
        for line in describe(s):
            err.print(line, soft_wrap=True, highlight=False)
        err.print(f"verifier: {describe_llm_stats(s['llm_stats'])}", soft_wrap=True, highlight=False)
        if args.out:
            err.print(f"written to {result.out}", soft_wrap=True, highlight=False)
    if result.all_failed:
        reasons = s.get("failure_reasons") or s["skipped"] or {"no rollouts": 0}
        raise AllFailed(s["rows"], reasons)
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def describe(s: dict) -> list[str]:
    """The summary of `autorule.rescore` as lines for a person: rows, skips, failures, means, rho, components.

    Args:
        s: `RescoreResult.summary`.

    Example:
        >>> s = {"format": "verl", "files": 2, "rows": 5, "rollouts": 4, "skipped": {"no 'output' text": 1},
        ...      "skipped_first_at": {"no 'output' text": "1.jsonl, line 3"}, "failed": 0, "without_old_reward": 0, "paired": 4,
        ...      "mean_old": 0.5, "mean_new": 0.25, "spearman": 0.6, "spearman_within_groups": None, "groups_compared": 0,
        ...      "old_reward_from": "score", "old_components": {"acc": 1.0}, "new_components": {"rule_reward": 0.25},
        ...      "grouped": True, "groups_split": 0, "unparsed_checks": 0, "reasoning_chars_stripped": 0, "empty_responses": 0}
        >>> print("\\n".join(describe(s)))
        read 5 rows of 2 verl files; rescored 4
        skipped 1: 1 no 'output' text (first at 1.jsonl, line 3)
        mean reward: old 0.500 (score), new 0.250, over 4 rollouts with both
        Spearman's rho, old vs new: 0.600; within GRPO groups: - (no group varies on both sides)
        old components: acc 1.000
        new components: rule_reward 0.250
    """
    lines = [f"read {s['rows']} rows of {s['files']} {s['format']} file{'s' if s['files'] != 1 else ''}; rescored {s['rollouts']}"]
    if s["skipped"]:
        what = ", ".join(f"{n} {reason} (first at {s['skipped_first_at'][reason]})" for reason, n in s["skipped"].items())
        lines.append(f"skipped {sum(s['skipped'].values())}: {what}")
    if s["failed"]:
        first = next(iter(s["failure_reasons"]))
        lines.append(f"{s['failed']} rollouts failed (rows with an \"error\", no new reward), e.g.: {first}")
    if s["without_old_reward"]:
        lines.append(f"{s['without_old_reward']} rollouts had no old reward (left out of the comparison)")
    lines.append(f"mean reward: old {_num(s['mean_old'])} ({s['old_reward_from']}), new {_num(s['mean_new'])}, over {s['paired']} rollouts with both")
    rho = _num(s["spearman"]) if s["spearman"] is not None else f"- ({s['spearman_note']})"
    within = (f"{s['spearman_within_groups']:.3f} (mean over {s['groups_compared']} groups)" if s["spearman_within_groups"] is not None
              else "- (no group varies on both sides)")
    lines.append(f"Spearman's rho, old vs new: {rho}; within GRPO groups: {within}")
    if s["old_components"]:
        lines.append("old components: " + ", ".join(f"{k} {_num(v)}" for k, v in s["old_components"].items()))
    lines.append("new components: " + ", ".join(f"{k} {_num(v)}" for k, v in s["new_components"].items()))
    if s.get("vetoed"):
        lines.append(f"{s['vetoed']} rollouts failed an essential rule (new total capped)")
    if not s["grouped"]:
        lines.append("note: this scorer takes no GRPO groups; rollouts were scored one by one")
    if s["groups_split"]:
        lines.append(f"note: {s['groups_split']} groups were scored in more than one chunk (their rows are not together in the file)")
    if s["unparsed_checks"]:
        lines.append(f"{s['unparsed_checks']} checks had no readable Yes/No; they are left out of the rule reward")
    if s["reasoning_chars_stripped"] or s["empty_responses"]:
        lines.append(f"judged the answers only: {s['reasoning_chars_stripped']} characters of reasoning cut; {s['empty_responses']} completions had nothing to judge")
    return lines


def add_parsers(sub) -> None:
    """Add `rescore` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> args = sub.choices["rescore"].parse_args(["runs/grpo", "--rules", "rules.yaml"])
        >>> args.rollouts, args.format, args.on_bad_row
        ('runs/grpo', 'auto', 'error')
    """
    from autorule.rescoring.formats import ROLLOUT_FORMATS

    p = sub.add_parser("rescore", help="score saved rollouts (TRL, verl, autorule JSONL) again; old and new rewards side by side")
    p.add_argument("rollouts", metavar="ROLLOUTS",
                   help="TRL's output_dir (completions/*.parquet) or one such file, verl's rollout_data_dir or a {step}.jsonl, or autorule's JSONL")
    add_reward_options(p)
    add_completion_options(p)
    p.add_argument("--format", default="auto", choices=["auto", *ROLLOUT_FORMATS], help="rollout layout (default: detect)")
    p.add_argument("--old-reward", default=None, metavar="KEY",
                   help="column or key holding the old reward (default: TRL the sum of the reward columns, verl 'score', autorule 'reward')")
    p.add_argument("--on-bad-row", default="error", choices=["error", "skip"], help="stop at the first bad row (default) or skip and count bad rows")
    p.add_argument("--limit", type=whole(1), default=None, help="rescore at most this many rollouts")
    p.add_argument("--out", default=None, metavar="FILE", help="write old and new rewards per rollout as JSONL here (default: stdout)")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    p.set_defaults(func=cmd_rescore)
