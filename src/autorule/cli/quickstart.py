"""`autorule quickstart`: the pipeline on the sample data with the embedded model (over `autorule.quickstart`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from autorule.cli.options import add_cache_options, open_cache


def cmd_quickstart(args: argparse.Namespace) -> int:
    """`autorule quickstart`: `autorule.quickstart.run_quickstart` into --out."""
    from autorule.quickstart import run_quickstart

    return run_quickstart(Path(args.out), cache=open_cache(args))


def add_parsers(sub) -> None:
    """Add `quickstart` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['quickstart']
    """
    qs = sub.add_parser("quickstart", help="run what exists of the pipeline on the sample data with the embedded model")
    qs.add_argument("--out", default="runs/quickstart", help="run directory (default: %(default)s)")
    add_cache_options(qs)
    qs.set_defaults(func=cmd_quickstart)

