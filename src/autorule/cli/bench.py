"""`autorule bench ...`: each benchmark prints a readable summary, or with --json one JSON
object as the last line of stdout (what BENCHMARKS.md records)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from autorule import jsonsafe
from autorule.cli.options import number, whole
from autorule.errors import InputError

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _sample_convs(data_path: str | None, n: int) -> list:
    from autorule.data import load_pairs
    from autorule.examples import SAMPLE_PAIRS

    data = load_pairs(data_path or SAMPLE_PAIRS, on_bad_row="skip")
    convs = [p.conversation("chosen") for p in data.pairs[:n]]
    if len(convs) < n:
        err.print(f"[yellow]note:[/yellow] only {len(convs)} conversations in {data.path}")
    return convs


def emit(report: dict, as_json: bool, lines: list[str]) -> int:
    """A benchmark's result on stdout: one JSON line (what BENCHMARKS.md records), or the readable lines.

    The developer benchmarks in the repository's `benchmarks/` print through this too.

    Args:
        report: the figures, JSON-serialisable.
        as_json: print `report` as one JSON line instead of `lines`.
        lines: the readable summary, one string a line.

    Returns:
        0, the command's exit status.

    Raises:
        TypeError: `report` holds something JSON cannot write (only with `as_json`).

    Example:
        >>> emit({"speedup": 2.5}, True, ["speedup: 2.5x"])
        {"speedup": 2.5}
        0
    """
    if as_json:
        print(jsonsafe.dumps(report))
    else:
        for line in lines:
            out.print(line)
    return 0


def cmd_verifier(args: argparse.Namespace) -> int:
    from autorule.llm import load_llm
    from autorule.llm.local import LocalLLM
    from autorule.examples import SAMPLE_PAIRS
    from autorule.bench.verifier import run_benchmark

    llm = load_llm(args.model)
    if not isinstance(llm, LocalLLM):  # it reads the model's parameters and counts its tokens
        raise InputError("the verifier benchmark measures a local model (embedded, hf:, gguf:); for servers use `autorule bench verifier-server`")
    modes = tuple(args.modes.split(","))
    unknown = sorted(set(modes) - {"autorule", "packed", "reference"})
    if unknown:
        raise InputError(f"--modes: unknown {', '.join(unknown)} (choose from autorule, packed, reference)")
    report = run_benchmark(llm, _sample_convs(args.data, args.conversations), args.rules, modes)
    report["data"] = str(args.data or SAMPLE_PAIRS)
    lines = [f"{mode:>16}: {report['checks_per_s'][mode]:8.2f} checks/s  {report['tokens_per_check'][mode]:8.1f} tokens/check  "
             f"{report['achieved_flops'][mode] / 1e9:7.2f} GFLOP/s ({report['achieved_flops'][mode] / report['matmul_peak_flops']:.1%} of matmul peak)"
             for mode in modes]
    lines.append(f"floor: {report['floor_tokens_per_check']:.1f} tokens/check; matmul peak {report['matmul_peak_flops'] / 1e9:.1f} GFLOP/s")
    if "speedup" in report:
        lines.append(f"speedup: {report['speedup']:.1f}x")
    if "packing_speedup" in report:
        lines.append(f"packed passes vs the default: {report['packing_speedup']:.2f}x")
    if "tokens_vs_floor" in report:
        lines.append(f"autorule tokens vs floor: {report['tokens_vs_floor']:.2f}x")
    return emit(report, args.json, lines)


def cmd_verifier_server(args: argparse.Namespace) -> int:
    from autorule.llm import load_llm
    from autorule.bench.verifier import SERVER_MODES, run_server_benchmark

    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = sorted(set(modes) - set(SERVER_MODES))
    if unknown or not modes:
        raise InputError(f"--modes: unknown {', '.join(unknown) or '(none given)'} (choose from {', '.join(SERVER_MODES)})")

    def make_llm(mode: str):  # a fresh backend per mode, no cache
        return load_llm(args.model, yes_no_mode="chat" if mode == "reference" else mode, concurrency=args.concurrency,
                        timeout=args.timeout, max_retries=2)

    report = run_server_benchmark(make_llm, _sample_convs(args.data, args.conversations), args.rules, modes)
    report["data"] = args.data or "examples/pairs.jsonl"
    report["concurrency"] = args.concurrency
    lines = []
    for mode in modes:
        if mode in report["unavailable"]:
            lines.append(f"{mode:>10}: not run: {report['unavailable'][mode]}")
            continue
        line = f"{mode:>10}: {report['checks_per_s'][mode]:8.2f} checks/s ({report['seconds'][mode]:.1f} s)"
        server = report["server"].get(mode)
        if server:
            line += (f"; server evaluated {server['prompt_tokens_evaluated']:,.0f} prompt tokens, {server['prompt_tokens_cached']:,.0f} from its cache"
                     + (f"; {server['floor_share']:.0%} of the prefill floor" if "floor_share" in server else ""))
        lines.append(line)
        if mode in report["mode_lines"]:
            lines.append(f"{'':>12}{report['mode_lines'][mode]}")
    for key in ("batched_vs_chat", "batched_vs_reference", "chat_vs_reference"):
        if key in report:
            lines.append(f"{key.replace('_vs_', ' / ')}: {report[key]:.2f}x")
    if "floor_seconds" in report:
        lines.append(f"prefill floor: {report['floor_tokens']:,} tokens at {report['prefill_rate_long']:.0f} tokens/s (long prompts, no cache) = {report['floor_seconds']:.1f} s")
    return emit(report, args.json, lines)


def cmd_injection(args: argparse.Namespace) -> int:
    from autorule.llm import load_llm, parse_spec
    from autorule.verifier.injection import ATTACKS_FILE, load_attacks, run_injection_benchmark
    from autorule.examples import sample_rules

    attacks = load_attacks()
    if args.attacks:  # checked before the model loads
        wanted = args.attacks.split(",")
        unknown = sorted(set(wanted) - {a.id for a in attacks})
        if unknown:
            raise InputError(f"unknown attack ids {unknown}; see {ATTACKS_FILE}")
        attacks = [a for a in attacks if a.id in wanted]
    llm = load_llm(args.model, **parse_spec(args.model).options(concurrency=args.concurrency))
    report = run_injection_benchmark(llm, sample_rules(args.rules), _sample_convs(args.data, args.conversations), attacks, threshold=args.threshold)
    lines = [f"{a['id']:>28} ({a['kind']}): flips to Yes {a['flip_to_yes_rate'] if a['flip_to_yes_rate'] is None else format(a['flip_to_yes_rate'], '.0%')}, "
             f"mean change in P(Yes) {a['mean_delta_p_yes']:+.3f}" for a in report["per_attack"]]
    lines.append(f"clean: {report['clean_yes_rate']:.0%} of {report['checks_per_attack']} checks Yes (mean P(Yes) {report['clean_mean_p_yes']:.3f}); "
                 f"mean flip-to-Yes rate over attacks: {report['mean_flip_to_yes_rate']}")
    return emit(report, args.json, lines)


def cmd_verifier_accuracy(args: argparse.Namespace) -> int:
    from autorule.verifier.calibration import by_family, judge, render
    from autorule.llm import load_llm, parse_spec
    from autorule.bench.verifier_accuracy import build_gold

    for path, flag in ((args.hh, "--hh"), (args.alpaca, "--alpaca")):
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file; pass {flag} PATH")
    gold = build_gold(args.hh, args.alpaca, n=args.replies, seed=args.seed)  # MissingExtraError: main() shows it, escaped
    if args.gold_out:
        Path(args.gold_out).write_text("".join(jsonsafe.dumps(c.to_dict()) + "\n" for c in gold), encoding="utf-8")
    start = time.perf_counter()
    p_yes = judge(gold, load_llm(args.verifier, **parse_spec(args.verifier).options(concurrency=args.concurrency)), progress=not args.json)
    seconds = time.perf_counter() - start
    overall, families = by_family(gold, p_yes, args.threshold)
    labellers = {c.family: c.labeller for c in gold}
    report = {"verifier": args.verifier, "checks": len(gold), "replies": len({c.conversation_key for c in gold}),
              "families": len(families), "seconds": round(seconds, 1), "overall": overall.to_dict(),
              "per_family": {k: v.to_dict() for k, v in families.items()}, "labellers": labellers}
    lines = [f"{report['checks']} checks ({report['replies']} replies x {len(families)} rules) judged by {args.verifier} in {seconds:.0f} s",
             *render(overall, families, labellers).splitlines()]
    return emit(report, args.json, lines)


def add_parsers(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (see BENCHMARKS.md)").add_subparsers(dest="bench_command", required=True)

    def common(p, data_help: str = "preference data whose chosen conversations are used (default: examples/pairs.jsonl)"):
        p.add_argument("--data", default=None, help=data_help)
        p.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")

    bv = bench.add_parser("verifier", help="verifier throughput: autorule's layout vs the reference code's, same local model, one run")
    bv.add_argument("--model", default="embedded", help="local model spec (default: %(default)s)")
    bv.add_argument("--rules", type=whole(1), default=20, help="rules per conversation (K)")
    bv.add_argument("--conversations", type=whole(1), default=16, help="conversations (N)")
    bv.add_argument("--modes", default="autorule,packed,reference", help="comma-separated: autorule, packed, reference")
    common(bv)
    bv.set_defaults(func=cmd_verifier)

    bs = bench.add_parser("verifier-server", help="verifier throughput against an OpenAI-compatible server (llama.cpp, vLLM, ...): batched, chat and the reference method")
    bs.add_argument("--model", required=True, help="openai:MODEL@BASE_URL")
    bs.add_argument("--rules", type=whole(1), default=20)
    bs.add_argument("--conversations", type=whole(1), default=16)
    bs.add_argument("--concurrency", type=whole(1), default=8, help="requests in flight per replica (every mode)")
    bs.add_argument("--modes", default="batched,chat,reference",
                    help="comma-separated, each on a fresh backend: batched (/v1/completions requests, every rule of a conversation in one), "
                         "chat (one chat request per check), reference (the reference code's method) (default: %(default)s)")
    bs.add_argument("--timeout", type=number(0, above=True), default=300.0)
    common(bs)
    bs.set_defaults(func=cmd_verifier_server)

    ba = bench.add_parser("verifier-accuracy", help="the verifier's accuracy, AUC and calibration on rules whose truth a program decides (IFEval checkers)")
    ba.add_argument("--verifier", default="embedded", help="verifier spec: embedded, hf:, gguf: or openai:MODEL@BASE_URL (default: %(default)s)")
    # no default: the replies come from data a user brings (the repository's own runs use ../shared/data)
    ba.add_argument("--hh", required=True, metavar="PATH", help="hh-rlhf replies, e.g. hh-rlhf-harmless-dev.jsonl.gz")
    ba.add_argument("--alpaca", required=True, metavar="PATH", help="AlpacaEval replies, e.g. alpacaeval-gpt4turbo-annotations-dev.jsonl.gz")
    ba.add_argument("--replies", type=whole(1), default=48, help="natural replies sampled (rewritten ones come on top; default: %(default)s)")
    ba.add_argument("--seed", type=whole(0), default=0)
    ba.add_argument("--threshold", type=number(0, 1), default=0.5)
    ba.add_argument("--concurrency", type=whole(1), default=8, help="requests in flight, for servers")
    ba.add_argument("--gold-out", default=None, metavar="FILE", help="also write the labelled checks (the format `autorule calibrate --gold` reads)")
    ba.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    ba.set_defaults(func=cmd_verifier_accuracy)

    bi = bench.add_parser("injection", help="how often prompt-injection attacks flip the verifier's verdicts")
    bi.add_argument("--model", default="embedded", help="verifier spec: embedded, hf:, gguf: or openai:MODEL@BASE_URL (default: %(default)s)")
    bi.add_argument("--rules", type=whole(1), default=4)
    bi.add_argument("--conversations", type=whole(1), default=4)
    bi.add_argument("--threshold", type=number(0, 1), default=0.5)
    bi.add_argument("--concurrency", type=whole(1), default=16, help="requests in flight, for servers")
    bi.add_argument("--attacks", default=None, help="comma-separated attack ids from injections.yaml (default: all)")
    common(bi)
    bi.set_defaults(func=cmd_injection)
