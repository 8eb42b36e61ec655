"""`autorule rules reword`: reword low-agreement rules from their held-out errors (over `autorule.rewording.reword_rules`)."""

from __future__ import annotations

import argparse

from autorule import jsonsafe
from autorule.cli.options import add_data_options, llm_options, load_data, model_spec, number, open_cache, whole


def cmd_reword(args: argparse.Namespace) -> int:
    """`autorule rules reword`: the rewordings kept are written back to the rules file (or --out), each rule's rounds in its history."""
    from autorule.llm import load_llm
    from autorule.rewording import reword_rules
    from autorule.rules import RuleSet

    rules = RuleSet.load(args.rules)
    pairs = list(load_data(args, lazy=False).pairs)
    cache = open_cache(args)
    verifier = load_llm(args.verifier, cache=cache, **llm_options(args, args.verifier))
    rewriter = verifier if not args.model or args.model == args.verifier else load_llm(args.model, cache=cache, **llm_options(args, args.model))
    result = reword_rules(rules, pairs, rewriter, verifier, below=args.below, rounds=args.rounds, examples=args.examples, seed=args.seed,
                          threshold=args.threshold, data=str(args.data))
    out = args.out or args.rules
    result.rules.save(out)
    summary = {"rules_file": str(out), "reworded": result.reworded, "outcomes": result.counts(), "rounds": result.rounds,
               "rewording_calls": result.llm_calls, "checks": result.checks}
    if args.json:
        print(jsonsafe.dumps(summary))
    else:
        for rule in result.rules.rules:
            for h in rule.history:
                print(f"round {h.round}: {h.agreement} -> {h.reworded_agreement} ({h.kept} kept)\n  was: {h.text}\n  reworded: {h.reworded}")
        print(f"{len(result.reworded)} of {len(rules)} rules reworded in {result.rounds} rounds; stopped: "
              + (", ".join(f"{k} {v}" for k, v in summary["outcomes"].items()) or "nothing") + f"; written to {out}")
    return 0


def add_parser(rules) -> None:
    """Add `reword` to the `autorule rules` group.

    Args:
        rules: the `rules` command's subparsers (`autorule.cli.rules.add_parsers`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> group = Parser(prog="autorule rules").add_subparsers(dest="rules_command")
        >>> add_parser(group)
        >>> group.choices["reword"].parse_args(["rules.yaml", "--data", "held.jsonl"]).below
        0.6
    """
    from autorule.cli.options import add_cache_options, add_server_options

    rw = rules.add_parser("reword", help="reword rules whose held-out agreement is low, from the pairs they got wrong; keep whichever text agrees better")
    rw.add_argument("rules", metavar="RULES", help="rules file (validated or not)")
    rw.add_argument("--data", required=True, metavar="PATH", help="held-out preference data (not the pairs the rules came from)")
    add_data_options(rw)
    rw.add_argument("--verifier", type=model_spec, default="embedded", help="the judge (default: %(default)s)")
    rw.add_argument("--model", type=model_spec, default=None, help="the model that rewords (default: --verifier)")
    rw.add_argument("--below", type=number(0, 1), default=0.6, help="reword rules whose agreement is below this (default: %(default)s)")
    rw.add_argument("--rounds", type=whole(1), default=3, help="at most this many rewordings per rule (default: %(default)s)")
    rw.add_argument("--examples", type=whole(1), default=4, help="held-out pairs the rule got wrong shown per rewording (default: %(default)s)")
    rw.add_argument("--threshold", type=number(0, 1), default=0.5, help="P(Yes) at or above which a verdict counts as satisfied")
    rw.add_argument("--seed", type=int, default=0, help="seed of the A/B order the examples are shown in")
    rw.add_argument("--out", default=None, metavar="FILE", help="where the rules go (default: back into RULES)")
    rw.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_server_options(rw, "verifier")
    add_cache_options(rw)
    rw.set_defaults(func=cmd_reword)
