"""The `autorule` command: the top parser, dispatch, and errors mapped to exit statuses.

Each command group lives in its own module (`data`, `llm`, `extract`, `score`, `rescore`, `validate`,
`train`, `report`, `bench`, `serve`, `rules`, `quickstart`), built from the option groups in
`autorule.cli.options`; this module only puts them under one parser and runs one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from autorule import __version__
from rich.markup import escape

from autorule.cli import bench, data, extract, llm, quickstart, report, rescore, rules, score, serve, train, validate
from autorule.cli.options import Parser, err
from autorule.errors import EXIT_INTERRUPTED, exit_code

# the command groups in the order --help lists them
COMMANDS = (data, llm, extract, score, rescore, validate, train, report, bench, serve, rules, quickstart)


def build_parser() -> argparse.ArgumentParser:
    """The `autorule` parser: every command group's subcommands under one parser.

    Example:
        >>> build_parser().parse_args(["data", "inspect", "pairs.jsonl"]).sample
        2
    """
    parser = Parser(prog="autorule", description="Learn readable rules from preference data and use them as an RL reward.")
    parser.add_argument("--version", action="version", version=f"autorule {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMANDS:
        group.add_parsers(sub)
    return parser


def _show_progress_messages() -> None:
    """autorule's own INFO messages (stage starts, notes) on stderr: quiet in library use, shown by the CLI."""
    from rich.logging import RichHandler

    logger = logging.getLogger("autorule")
    if not any(getattr(h, "_autorule_cli", False) for h in logger.handlers):
        handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
        handler._autorule_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run one `autorule` command; an error a person can act on is one message on stderr and its exit status.

    The statuses (`autorule.errors`): 0 done, 1 a failure (a model or server), 2 bad input
    (a file, a flag's value), 3 every response failed, 130 interrupted. Any other error is a
    bug and keeps its traceback.

    Args:
        argv: the arguments (default: the command line's).

    Example:
        >>> main(["rules", "show", "/no/such/rules.yaml"])
        2
    """
    # the user's Hugging Face settings are respected (HF_HUB_OFFLINE, HF_HOME, HF_TOKEN); the
    # embedded model and the embedder load from installed packages without the hub
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _show_progress_messages()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        err.print("interrupted; finished work is kept (rerun the same command to resume)")
        return EXIT_INTERRUPTED
    except Exception as e:
        code = exit_code(e)
        if code is None:  # not an error autorule expects: a bug, shown with its traceback
            raise
        # escaped: a message may hold brackets (autorule[bench], [image]) that are text, not markup
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
