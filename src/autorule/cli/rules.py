"""`autorule rules lint|show|diff|export|import` and `autorule calibrate`: thin commands over
`autorule.rules.lint`, `autorule.rules.show`, `autorule.rules.diff`, `autorule.rules.export` and `autorule.verifier.calibration`.

Results go to stdout as plain text (or JSON with --json); errors and progress to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autorule import jsonsafe
from autorule.cli.options import add_cache_options, add_server_options, llm_options, model_spec, number, open_cache, whole
from autorule.errors import EXIT_FAILED, EXIT_OK
from autorule.rules.export import FORMATS


def _verifier_llm(args: argparse.Namespace, spec: str):
    from autorule.llm import load_llm

    return load_llm(spec, cache=open_cache(args), **llm_options(args, spec))


def cmd_lint(args: argparse.Namespace) -> int:
    from autorule.rules.lint import lint_rules
    from autorule.rules import RuleSet

    rules = RuleSet.load(args.rules)
    llm = _verifier_llm(args, args.model) if args.llm_lint else None
    report = lint_rules(rules, embed=None if args.embeddings else False, llm=llm)
    if args.write or args.apply_checks:  # --apply-checks alone adds the checks to the file as it was, without flags
        out = report.rules if args.write else rules
        (report.with_checks(out) if args.apply_checks else out).save(args.rules)
    checks = {"already": report.code_checked, "proposed": len(report.proposals), "applied": len(report.proposals) if args.apply_checks else 0}
    if args.json:
        print(jsonsafe.dumps({"rules": len(rules), "flagged": len(report.flagged), "counts": report.counts,
                              "flags": [{"id": r.id, "text": r.text, "lint": [f.model_dump() for f in r.lint]} for r in report.flagged],
                              "code_checks": checks,
                              "proposed_checks": [{"id": rid, "check": c.model_dump(), "says": c.describe()} for rid, c in report.proposals.items()]}))
    else:
        for r in report.flagged:
            print(f"{r.id}  {r.text}")
            for f in r.lint:
                print(f"  {f.code}: {f.reason}")
        texts = {r.id: r.text for r in report.rules.rules}
        for rid, check in report.proposals.items():
            print(f"{rid}  {texts[rid]}\n  code check: {check.describe()}")
        counts = ", ".join(f"{k} {v}" for k, v in report.counts.items()) or "nothing"
        print(f"{len(rules)} rules, {len(report.flagged)} flagged: {counts}" + (f"; flags written to {args.rules}" if args.write else ""))
        if checks["already"] or checks["proposed"]:
            print(f"decided by code: {checks['already']} rules already, {checks['proposed']} proposed"
                  + (f" and written to {args.rules}" if args.apply_checks and checks["proposed"] else " (--apply-checks writes them)" if checks["proposed"] else ""))
    return EXIT_FAILED if args.strict and report.flagged else EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from autorule.rules import RuleSet
    from autorule.rules.show import find_pairs, pairs_file_for, rule_detail, rule_sources, rules_listing

    rules = RuleSet.load(args.rules)
    if args.id is None:
        print(rules_listing(rules))
        return 0
    wanted = [r for r in rules.rules if r.id == args.id or r.id.startswith(args.id)]
    if len(wanted) != 1:
        known = ", ".join(r.id for r in rules.rules[:10])
        raise ValueError(f"{args.rules}: {'no rule' if not wanted else 'more than one rule'} with id {args.id!r} (ids: {known}{' ...' if len(rules) > 10 else ''})")
    rule = wanted[0]
    source = Path(args.data) if args.data else pairs_file_for(args.rules)
    note = None
    if source is None:
        note = f"no {Path(args.rules).parent / '000_pairs.jsonl'} beside the rules: pass --data PAIRS to show the pairs' texts"
        pairs = {}
    else:
        pairs = find_pairs(source, {c.pair_id for c in rule.candidates})
    print(rule_detail(rule, rule_sources(rule, pairs, args.pairs), args.width, note))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from autorule.rules.diff import diff_rules
    from autorule.verifier.agreement import add_agreement
    from autorule.rules import RuleSet
    from autorule.validation import both_sides

    a, b = RuleSet.load(args.a), RuleSet.load(args.b)
    diff = diff_rules(a, b, shared=args.shared, similar=args.similar)
    if args.data:
        from autorule.data import load_pairs

        pairs = load_pairs(args.data, on_bad_row="skip", limit=args.limit).pairs
        add_agreement(diff, both_sides(pairs), _verifier_llm(args, args.verifier))
    if args.json:
        print(jsonsafe.dumps({"a": args.a, "b": args.b, **diff.to_dict()}))
    else:
        print(f"A: {args.a} ({len(a)} rules)\nB: {args.b} ({len(b)} rules)")
        print(diff.render())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autorule.rules.export import export_rules
    from autorule.rules import RuleSet

    text = export_rules(RuleSet.load(args.rules), args.as_, source=args.rules)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from autorule.rules.export import import_rules
    from autorule.rules import RulesFileError

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError) as e:
        raise RulesFileError(f"{args.file}: cannot read it: {e}") from None
    rules = import_rules(text, args.file)
    rules.meta = {"imported_from": args.file}
    rules.save(args.out)
    print(f"{len(rules)} rules from {args.file} -> {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from autorule.verifier.calibration import by_family, judge, load_gold, render

    checks = load_gold(args.gold)
    p_yes = judge(checks, _verifier_llm(args, args.verifier), max_input_tokens=args.max_input_tokens, progress=not args.json)
    overall, families = by_family(checks, p_yes, args.threshold)
    labellers = {c.family: c.labeller for c in checks if c.family and c.labeller}
    if args.json:
        print(jsonsafe.dumps({"gold": args.gold, "verifier": args.verifier, "checks": len(checks), "overall": overall.to_dict(),
                              "families": {k: v.to_dict() for k, v in families.items()}, "labellers": labellers}))
    else:
        print(f"{len(checks)} labelled checks from {args.gold}; verifier {args.verifier}")
        print(render(overall, families, labellers))
    return 0


def add_parsers(sub) -> None:
    """Add the `rules` command group and `calibrate` to the `autorule` parser.

    Args:
        sub: the top parser's subparsers (`autorule.cli.app.build_parser`).

    Example:
        >>> from autorule.cli.options import Parser
        >>> sub = Parser(prog="autorule").add_subparsers(dest="command")
        >>> add_parsers(sub)
        >>> sorted(sub.choices)
        ['calibrate', 'rules']
    """
    rules = sub.add_parser("rules", help="lint, inspect, compare, export and import rule sets").add_subparsers(dest="rules_command", required=True)

    li = rules.add_parser("lint", help="flag fragments, rules naming Assistant A/B, compound, vague, near-duplicate and prompt-format rules; "
                                       "propose code checks for rules a program decides")
    li.add_argument("rules", metavar="RULES", help="rules file")
    li.add_argument("--write", action="store_true", help="save the flags into the rules file (the report shows them)")
    li.add_argument("--apply-checks", action="store_true",
                    help="write the proposed code checks (rules a program decides, e.g. word bounds) into the rules file")
    li.add_argument("--strict", action="store_true", help="exit 1 when any rule is flagged (for CI)")
    li.add_argument("--no-embeddings", dest="embeddings", action="store_false", help="skip the near-duplicate check (it loads the sentence embedder)")
    li.add_argument("--llm-lint", action="store_true", help="also ask --model whether each rule is objectively checkable")
    li.add_argument("--model", type=model_spec, default="embedded", help="model for --llm-lint (default: %(default)s)")
    li.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_server_options(li, "model")
    add_cache_options(li)
    li.set_defaults(func=cmd_lint)

    sh = rules.add_parser("show", help="list the rules, or one rule with its statistics and the preference pairs it came from")
    sh.add_argument("rules", metavar="RULES", help="rules file")
    sh.add_argument("--id", default=None, help="the rule to show (an id or its unique start); without it, every rule on one line")
    sh.add_argument("--data", default=None, metavar="PAIRS", help="the pairs the rules came from (default: 000_pairs.jsonl beside the rules)")
    sh.add_argument("--pairs", type=whole(0), default=3, help="source pairs to show (default: %(default)s)")
    sh.add_argument("--width", type=whole(40), default=240, help="characters per shown text (default: %(default)s)")
    sh.set_defaults(func=cmd_show)

    di = rules.add_parser("diff", help="match two rule sets by embedding: shared, similar and unique rules; with --data, how often matched rules agree")
    di.add_argument("a", metavar="A", help="first rules file")
    di.add_argument("b", metavar="B", help="second rules file")
    di.add_argument("--shared", type=number(0, 1), default=0.9, help="similarity from which two rules are the same (default: %(default)s)")
    di.add_argument("--similar", type=number(0, 1), default=0.7, help="similarity from which two rules are similar (default: %(default)s)")
    di.add_argument("--data", default=None, metavar="PAIRS", help="preference pairs whose both sides the matched rules judge (behavioural agreement)")
    di.add_argument("--limit", type=whole(1), default=50, help="pairs read from --data (default: %(default)s)")
    di.add_argument("--verifier", type=model_spec, default="embedded", help="verifier for --data (default: %(default)s)")
    di.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_server_options(di, "verifier")
    add_cache_options(di)
    di.set_defaults(func=cmd_diff)

    ex = rules.add_parser("export", help="write rules as markdown, a constitution, a pairwise judge prompt, or JSON")
    ex.add_argument("rules", metavar="RULES", help="rules file")
    ex.add_argument("--as", dest="as_", required=True, choices=FORMATS, help="output format")
    ex.add_argument("-o", "--out", default=None, help="output file (default: stdout)")
    ex.set_defaults(func=cmd_export)

    im = rules.add_parser("import", help="a rules file from a plain list (one rule per line) or a markdown list")
    im.add_argument("file", metavar="FILE", help="text or markdown file")
    im.add_argument("-o", "--out", required=True, help="rules file to write (YAML)")
    im.set_defaults(func=cmd_import)

    from autorule.cli import reword  # `rules reword`: its own module (autorule.rewording)

    reword.add_parser(rules)

    ca = sub.add_parser("calibrate", help="a verifier's accuracy, AUC and calibration on your labelled (response, rule, yes/no) checks; suggests a threshold")
    ca.add_argument("--gold", required=True, metavar="FILE", help="JSON lines: response, rule, label (yes/no), optional prompt and family")
    ca.add_argument("--verifier", type=model_spec, default="embedded", help="verifier model spec (default: %(default)s)")
    ca.add_argument("--threshold", type=number(0, 1), default=0.5, help="P(Yes) cut for accuracy (default: %(default)s)")
    ca.add_argument("--max-input-tokens", type=whole(64), default=None, metavar="N", help="prompt tokens one verifier request may hold")
    ca.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_server_options(ca, "verifier")
    add_cache_options(ca)
    ca.set_defaults(func=cmd_calibrate)
