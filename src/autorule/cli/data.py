"""`autorule data inspect`: what a preference file holds, as autorule reads it."""

from __future__ import annotations

import argparse

from autorule import jsonsafe
from autorule.cli.options import add_data_options, load_data, out, short, whole


def cmd_data_inspect(args: argparse.Namespace) -> int:
    """`autorule data inspect PATH`: what was read and skipped, and a sample of pairs (or one JSON object)."""
    from rich.markup import escape

    result = load_data(args)
    sample = []
    for pair in result:  # one pass; only the sample is kept
        if len(sample) < args.sample:
            sample.append(pair)
    summary = result.summary()
    if result.examples:
        summary["skipped_examples"] = [{"row": r, "reason": why} for r, why in result.examples]
    if args.json:
        summary["sample"] = [p.model_dump() for p in sample]
        print(jsonsafe.dumps(summary, ensure_ascii=False))
        return 0
    out.print(f"[bold]{result.path}[/bold]")
    out.print(f"format: [cyan]{summary['format']}[/cyan]   rows read: {result.rows}   pairs: [green]{summary['pairs']}[/green]")
    if result.skipped:
        out.print("skipped:")
        for reason, n in result.skipped.most_common():
            out.print(f"  {n:>6}  {reason}")
        for row, why in result.examples:
            out.print(f"          e.g. row {row}: {why}", style="dim")
    else:
        out.print("skipped: none")
    for note, n in summary.get("notes", {}).items():
        out.print(f"note: {n:>6}  {note}", style="dim")
    for p in sample:
        out.rule(f"pair {p.id} (row {p.row})")
        # the whole conversation: every shared turn, then each side's own turns before its final reply
        for m in p.prompt:
            out.print(f"[bold]{m.role}:[/bold] {escape(short(m.content))}", highlight=False)
        for side, history, reply, colour in (("chosen", p.chosen_history, p.chosen, "green"), ("rejected", p.rejected_history, p.rejected, "red")):
            for m in history:
                out.print(f"[{colour}]{side} side[/{colour}] [bold]{m.role}:[/bold] {escape(short(m.content))}", highlight=False)
            out.print(f"[{colour}]{side}:[/{colour}] {escape(short(reply))}", highlight=False)
    return 0


def add_parsers(sub) -> None:
    """Add the `data` command group (`data inspect`) to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['data']
    """
    data = sub.add_parser("data", help="preference data").add_subparsers(dest="data_command", required=True)
    inspect = data.add_parser("inspect", help="load a preference file and show what was read and skipped")
    inspect.add_argument("data", metavar="PATH", help="file (.jsonl/.json/.csv/.parquet, optionally .gz), dataset directory or Hugging Face dataset name")
    add_data_options(inspect)
    inspect.add_argument("--sample", type=whole(0), default=2, help="pairs to show")
    inspect.add_argument("--json", action="store_true", help="print one JSON object (last line of stdout)")
    inspect.set_defaults(func=cmd_data_inspect)

