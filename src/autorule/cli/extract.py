"""`autorule extract`: learn rules from preference data (over `autorule.extraction.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from autorule import jsonsafe
from autorule.cli import options
from autorule.extraction.reason import REASONING_TOKENS
from autorule.cli.options import (add_cache_options, add_data_options, add_model_options, add_plan_options, err, llm_options, load_data,
                                  model_spec, number, open_cache, report_skips, whole)


def cmd_extract(args: argparse.Namespace) -> int:
    """`autorule extract`: the plan, then reasoning -> candidate rules -> merged rules in the run directory."""
    from autorule.extraction.run import ExtractConfig, print_summary, run_extract
    from autorule.llm import load_llm

    data = load_data(args)
    cache = open_cache(args)
    llm = load_llm(args.model, cache=cache, **llm_options(args))
    merge_llm = llm if not args.merge_model or args.merge_model == args.model else load_llm(args.merge_model, cache=cache, **llm_options(args, args.merge_model))
    out_dir = Path(args.out or f"runs/extract-{Path(args.data).name.split('.')[0]}")
    config = ExtractConfig(
        seed=args.seed,
        extract_from=args.extract_from,
        target_rules=args.target_rules,
        max_cluster=args.max_cluster,
        reasoning_tokens=args.reasoning_tokens,
        rules_tokens=args.rules_tokens,
        merge_tokens=args.merge_tokens,
        max_input_tokens=args.max_input_tokens,
        max_refused_share=args.max_refused_share,
        label_filter=args.label_filter,
        label_filter_margin=args.label_filter_margin,
    )
    from autorule.plan import plan_extract

    stop = options.show_plan(lambda probe: plan_extract(data, llm, merge_llm, config, price_per_mtok=args.price_per_mtok, probe=probe), args)
    report_skips(data)  # counted by the plan's pass over the data
    if stop:
        return 0
    result = run_extract(data, llm, merge_llm, out_dir, config, overwrite=args.overwrite, progress=True, retry_refused=args.retry_refused)
    print_summary(result.run_dir, result.summary, err)
    if args.json:
        print(jsonsafe.dumps({"run_dir": str(result.run_dir), "rules_file": str(result.run_dir / "rules.yaml"), **result.summary}))
    return 0


def add_parsers(sub) -> None:
    """Add `extract` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['extract']
    """
    ex = sub.add_parser("extract", help="learn rules from preference data: reasoning -> candidate rules -> merged rule set")
    ex.add_argument("--data", required=True, metavar="PATH", help="preference data (any format `autorule data inspect` reads)")
    add_data_options(ex)
    add_model_options(ex)
    add_cache_options(ex)
    ex.add_argument("--merge-model", type=model_spec, default=None, help="model spec for merging (default: --model)")
    ex.add_argument("--out", default=None, metavar="RUN_DIR", help="run directory (default: runs/extract-<data name>); rerun to resume")
    ex.add_argument("--seed", type=int, default=0, help="seed for the A/B order and sampling")
    ex.add_argument("--extract-from", default="reasoning", choices=["reasoning", "explanation", "both"], help="text rules are drawn from (paper: reasoning)")
    ex.add_argument("--target-rules", type=whole(1), default=25, help="merge until at most this many rules remain")
    ex.add_argument("--max-cluster", type=whole(2), default=10, help="most rules in one merge prompt")
    ex.add_argument("--reasoning-tokens", type=whole(1), default=REASONING_TOKENS, help="max new tokens for each reasoning call")
    ex.add_argument("--rules-tokens", type=whole(1), default=512, help="max new tokens for each rule-extraction call")
    ex.add_argument("--merge-tokens", type=whole(1), default=512, help="max new tokens for each merge call")
    ex.add_argument("--max-input-tokens", type=whole(64), default=None, metavar="N",
                    help="tokens one request may use, prompt and answer together; longer pairs and reasoning are cut in the middle, "
                         "the instructions never (default: the context the server or model reports, else 8192)")
    ex.add_argument("--max-refused-share", type=number(0, 1), default=0.05, metavar="SHARE",
                    help="stop, naming them, once the server has refused more than this share of the pairs (default: %(default)s); "
                         "fewer are recorded in run.json and the run goes on")
    ex.add_argument("--no-label-filter", dest="label_filter", action="store_false",
                    help="merge every candidate rule; by default each candidate is first verified on the pair it came from (with --model) "
                         "and dropped unless the chosen reply satisfies it more than the rejected one (2 yes/no checks per candidate; "
                         "counted in run.json and the summary)")
    ex.add_argument("--label-filter-margin", type=number(0, 1), default=0.0, metavar="D",
                    help="keep a candidate only when P(satisfied | chosen) - P(satisfied | rejected) > D (default: %(default)s; a tie is dropped)")
    ex.add_argument("--retry-refused", action="store_true", help="send the pairs an earlier run recorded as refused again (a resumed run skips them)")
    ex.add_argument("--overwrite", action="store_true", help="discard an earlier, different run in RUN_DIR")
    ex.add_argument("--json", action="store_true", help="print a JSON summary as the last line of stdout")
    add_plan_options(ex)
    ex.set_defaults(func=cmd_extract)

