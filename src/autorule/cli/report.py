"""`autorule report`: a self-contained report.html for a run directory (over `autorule.reporting`)."""

from __future__ import annotations

import argparse

from autorule.cli.options import err


def cmd_report(args: argparse.Namespace) -> int:
    """`autorule report RUN_DIR`: report.html (`autorule.reporting`)."""
    from autorule.reporting import build_report

    path = build_report(args.run_dir, args.out, compare=args.compare)  # a ReportError is bad input (exit 2)
    err.print(f"report written to {path}", soft_wrap=True)
    return 0


def add_parsers(sub) -> None:
    """Add `report` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['report']
    """
    rp = sub.add_parser("report", help="write a self-contained report.html for a run directory")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="a quickstart, extract or train output directory")
    rp.add_argument("--out", default=None, metavar="FILE", help="default: RUN_DIR/report.html")
    rp.add_argument("--compare", default=None, metavar="RULES", help="another rules file: the report shows the two rule sets matched (as `autorule rules diff`)")
    rp.set_defaults(func=cmd_report)

