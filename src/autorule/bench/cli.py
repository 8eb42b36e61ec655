"""`autorule bench ...`: each benchmark prints a readable summary, or with --json one JSON
object as the last line of stdout (what BENCHMARKS.md records)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from .. import jsonsafe
from ..settings import number, whole

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _sample_convs(data_path: str | None, n: int) -> list:
    from ..data import load_pairs
    from ..quickstart import SAMPLE_DATA

    data = load_pairs(data_path or SAMPLE_DATA, on_bad_row="skip")
    convs = [p.conversation("chosen") for p in data.pairs[:n]]
    if len(convs) < n:
        err.print(f"[yellow]note:[/yellow] only {len(convs)} conversations in {data.path}")
    return convs


def _emit(report: dict, as_json: bool, lines: list[str]) -> int:
    if as_json:
        print(jsonsafe.dumps(report))
    else:
        for line in lines:
            out.print(line)
    return 0


def cmd_verifier(args: argparse.Namespace) -> int:
    from ..llm import load_llm
    from ..llm.local import LocalLLM
    from ..quickstart import SAMPLE_DATA
    from .verifier import run_benchmark

    llm = load_llm(args.model)
    if not isinstance(llm, LocalLLM):  # it reads the model's parameters and counts its tokens
        err.print("[red]error:[/red] the verifier benchmark measures a local model (embedded, hf:, gguf:); for servers use `autorule bench verifier-server`")
        return 2
    modes = tuple(args.modes.split(","))
    unknown = sorted(set(modes) - {"autorule", "packed", "reference"})
    if unknown:
        err.print(f"[red]error:[/red] --modes: unknown {', '.join(unknown)} (choose from autorule, packed, reference)")
        return 2
    report = run_benchmark(llm, _sample_convs(args.data, args.conversations), args.rules, modes)
    report["data"] = str(args.data or SAMPLE_DATA)
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
    return _emit(report, args.json, lines)


def cmd_verifier_server(args: argparse.Namespace) -> int:
    from ..llm import load_llm
    from .verifier import run_server_benchmark

    llm = load_llm(args.model, concurrency=args.concurrency, timeout=args.timeout, max_retries=2)
    report = run_server_benchmark(llm, _sample_convs(args.data, args.conversations), args.rules)
    lines = [f"{mode:>16}: {report['checks_per_s'][mode]:8.2f} checks/s" for mode in report["checks_per_s"]]
    lines.append(f"speedup: {report['speedup']:.1f}x")
    return _emit(report, args.json, lines)


def cmd_extraction(args: argparse.Namespace) -> int:
    from ..quickstart import SAMPLE_DATA
    from .extraction import run_extraction_benchmark

    report = run_extraction_benchmark(args.data or str(SAMPLE_DATA), args.pairs, args.latency, args.concurrency)
    runs = report["runs"]
    lines = [f"{name:>10}: {r['seconds']:6.2f} s, {r['requests']} requests, {r['rules']} rules" for name, r in runs.items()]
    lines += [f"concurrency {report['concurrency']} vs 1: {report['speedup']:.2f}x (ideal {report['ideal_speedup']}x, efficiency {report['efficiency']:.0%}); "
              f"at most {report['max_requests_in_flight']} requests in flight",
              f"warm-cache rerun: {report['warm_vs_concurrent']:.3f}x the cold run's time, {report['warm_requests']} requests; same rules in all runs: {report['same_rules']}"]
    return _emit(report, args.json, lines)


def cmd_grpo(args: argparse.Namespace) -> int:
    from ..quickstart import SAMPLE_DATA
    from .grpo_steps import run_grpo_benchmark

    report = run_grpo_benchmark(args.data or str(SAMPLE_DATA), args.steps, args.rules, args.batch, args.completion_tokens, args.rm)
    lines = []
    for mode, r in report["modes"].items():
        m = r["mean"]
        lines.append(f"{mode:>10}: step {m['step_s']:6.2f} s = generation {m['generation_s']:5.2f} + reward {m['reward_s']:5.2f} "
                     f"(rules {m['reward_rules_s']:5.2f}, rm {m['reward_rm_s']:5.2f}) + update {m['update_s']:5.2f}; "
                     f"{r['verifier_checks_computed']} checks computed, {r['verdict_cache_hits']} cache hits")
    lines.append(f"rules' share of a step without cache: {report['rules_share_of_step']:.0%}; warm cache makes rule scoring {report['warm_cache_rules_speedup']:.0f}x faster")
    return _emit(report, args.json, lines)


def cmd_server(args: argparse.Namespace) -> int:
    from .server_load import run_server_load

    report = run_server_load(args.clients, args.requests, args.rules, args.verifier_latency, args.max_batch, args.workers)
    lines = [f"{report['answered']}/{report['sent']} answered (statuses {', '.join(report['statuses'])}), {report['errors']} errors, "
             f"{report['mismatched']} rewards not matching their request"]
    if report["answered"]:
        lines.append(f"latency p50 {report['p50_ms']:.1f} ms, p99 {report['p99_ms']:.1f} ms, max {report['max_ms']:.1f} ms; "
                     f"{report['requests_per_s']:.0f} requests/s; mean batch {report['mean_batch']:.1f} samples")
    _emit(report, args.json, lines)
    return 0 if report["errors"] == 0 and report["mismatched"] == 0 else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from ..quickstart import SAMPLE_DATA
    from .plan_accuracy import run_plan_benchmark

    report = run_plan_benchmark(str(SAMPLE_DATA), args.hh, args.pairs)
    lines = [f"{r['run']:>34} {r['command']:>8}: planned {r['planned_s']:7.1f} s, measured {r['measured_s']:7.1f} s, ratio {r['planned_over_measured']:.2f}"
             for r in report["rows"]]
    lines.append(f"every plan within 2x of its run: {report['within_2x']}")
    return _emit(report, args.json, lines)


def cmd_merge_scale(args: argparse.Namespace) -> int:
    from .merge_scale import run_merge_scale

    report = run_merge_scale([int(x) for x in args.sizes.split(",")])
    lines = [f"{r['candidates']:>8} candidates: {r['seconds']:7.2f} s, peak RSS {r['peak_rss_mb']} MB ({r['clusters']} clusters)" for r in report["rows"]]
    if "time_exponent" in report:
        lines.append(f"growth between the two largest: time ~ n^{report['time_exponent']}, memory ~ n^{report['memory_exponent']}")
    return _emit(report, args.json, lines)


def cmd_scale(args: argparse.Namespace) -> int:
    from .scale import run_scale

    report = run_scale(args.pairs, args.candidates, args.validate_pairs)
    lines = []
    for stage, result in report["stages"].items():
        lines.append(f"{stage} (target: {report['targets'][stage]})")
        for r in result["rows"]:
            parts = [f"{r['size']:>8,}: {r['seconds']:8.1f} s, peak RSS {r['peak_rss_mb']:,} MB (before the work {r['rss_before_mb']:,} MB)"]
            if "stages" in r:
                parts.append(", ".join(f"{k} {v['seconds']} s / {v['peak_rss_mb']} MB" for k, v in r["stages"].items()))
            lines.append("; ".join(parts))
        if result["time_exponent"] is not None:
            lines.append(f"  growth: time ~ n^{result['time_exponent']}, added memory ~ n^{result['memory_exponent']}")
    return _emit(report, args.json, lines)


def _sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, each a whole number >= 1 (empty: none)."""
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 1000,10000") from None
    if any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be at least 1")
    return sizes


def cmd_injection(args: argparse.Namespace) -> int:
    from ..llm import load_llm
    from .injection import ATTACKS_FILE, load_attacks, run_injection_benchmark
    from .verifier import bench_rules

    attacks = load_attacks()
    if args.attacks:  # checked before the model loads
        wanted = args.attacks.split(",")
        unknown = sorted(set(wanted) - {a.id for a in attacks})
        if unknown:
            err.print(f"[red]error:[/red] unknown attack ids {unknown}; see {ATTACKS_FILE}")
            return 2
        attacks = [a for a in attacks if a.id in wanted]
    options = {"concurrency": args.concurrency} if args.model.startswith("openai:") else {}
    llm = load_llm(args.model, **options)
    report = run_injection_benchmark(llm, bench_rules(args.rules), _sample_convs(args.data, args.conversations), attacks, threshold=args.threshold)
    lines = [f"{a['id']:>28} ({a['kind']}): flips to Yes {a['flip_to_yes_rate'] if a['flip_to_yes_rate'] is None else format(a['flip_to_yes_rate'], '.0%')}, "
             f"mean change in P(Yes) {a['mean_delta_p_yes']:+.3f}" for a in report["per_attack"]]
    lines.append(f"clean: {report['clean_yes_rate']:.0%} of {report['checks_per_attack']} checks Yes (mean P(Yes) {report['clean_mean_p_yes']:.3f}); "
                 f"mean flip-to-Yes rate over attacks: {report['mean_flip_to_yes_rate']}")
    return _emit(report, args.json, lines)


def cmd_verifier_accuracy(args: argparse.Namespace) -> int:
    from ..calibration import by_family, judge, render
    from ..llm import load_llm
    from .verifier_accuracy import build_gold

    for path, flag in ((args.hh, "--hh"), (args.alpaca, "--alpaca")):
        if not Path(path).is_file():
            err.print(f"[red]error:[/red] {path}: no such file; pass {flag} PATH (the shared data, e.g. ../shared/data/)")
            return 2
    gold = build_gold(args.hh, args.alpaca, n=args.replies, seed=args.seed)
    if args.gold_out:
        Path(args.gold_out).write_text("".join(jsonsafe.dumps(c.to_dict()) + "\n" for c in gold), encoding="utf-8")
    options = {"concurrency": args.concurrency} if args.verifier.startswith("openai:") else {}
    start = time.perf_counter()
    p_yes = judge(gold, load_llm(args.verifier, **options), progress=not args.json)
    seconds = time.perf_counter() - start
    overall, families = by_family(gold, p_yes, args.threshold)
    labellers = {c.family: c.labeller for c in gold}
    report = {"verifier": args.verifier, "checks": len(gold), "replies": len({c.conversation_key for c in gold}),
              "families": len(families), "seconds": round(seconds, 1), "overall": overall.to_dict(),
              "per_family": {k: v.to_dict() for k, v in families.items()}, "labellers": labellers}
    lines = [f"{report['checks']} checks ({report['replies']} replies x {len(families)} rules) judged by {args.verifier} in {seconds:.0f} s",
             *render(overall, families, labellers).splitlines()]
    return _emit(report, args.json, lines)


def add_bench_parsers(sub) -> None:
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

    bs = bench.add_parser("verifier-server", help="verifier throughput against an OpenAI-compatible server (llama.cpp, vLLM, ...): both modes")
    bs.add_argument("--model", required=True, help="openai:MODEL@BASE_URL")
    bs.add_argument("--rules", type=whole(1), default=20)
    bs.add_argument("--conversations", type=whole(1), default=16)
    bs.add_argument("--concurrency", type=whole(1), default=8, help="requests in flight (both modes)")
    bs.add_argument("--timeout", type=number(0, above=True), default=300.0)
    common(bs)
    bs.set_defaults(func=cmd_verifier_server)

    be = bench.add_parser("extraction", help="extraction throughput against a server with a fixed latency: concurrency C vs 1, warm-cache rerun")
    be.add_argument("--pairs", type=whole(1), default=32)
    be.add_argument("--latency", type=number(0), default=0.2, help="seconds each request takes at the mock server")
    be.add_argument("--concurrency", type=whole(1), default=8)
    common(be, "preference data (default: examples/pairs.jsonl)")
    be.set_defaults(func=cmd_extraction)

    bg = bench.add_parser("grpo", help="GRPO step breakdown on CPU, embedded model: generation, reward (rules, RM), update; with and without the verdict cache")
    bg.add_argument("--steps", type=whole(1), default=3)
    bg.add_argument("--rules", type=whole(1), default=4)
    bg.add_argument("--batch", type=whole(1), default=4, help="completions per step (= generations per prompt)")
    bg.add_argument("--completion-tokens", type=whole(1), default=32)
    bg.add_argument("--rm", default=None, help="reward model directory (default: one trained for a step from the embedded model)")
    common(bg, "prompts / preference data (default: examples/pairs.jsonl)")
    bg.set_defaults(func=cmd_grpo)

    bl = bench.add_parser("server", help="the reward server under load: concurrent clients, latency percentiles, rewards checked")
    bl.add_argument("--clients", type=whole(1), default=64)
    bl.add_argument("--requests", type=whole(1), default=50, help="requests per client, one after another")
    bl.add_argument("--rules", type=whole(1), default=2)
    bl.add_argument("--verifier-latency", type=number(0), default=0.0, help="seconds each verifier check takes at the mock verifier")
    bl.add_argument("--max-batch", type=whole(1), default=64)
    bl.add_argument("--workers", type=whole(1), default=None, help="batches the server scores at once (default: the server's, 1)")
    bl.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    bl.set_defaults(func=cmd_server)

    bp = bench.add_parser("plan", help="the plan's time against the measured time: quickstart stages (embedded) and hh-rlhf via the mock server")
    bp.add_argument("--hh", required=True, metavar="PATH", help="hh-rlhf preference data (e.g. ../shared/data/hh-rlhf-harmless-dev.jsonl.gz)")
    bp.add_argument("--pairs", type=whole(1), default=50, help="hh-rlhf pairs to extract from (and as many to validate on)")
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(func=cmd_plan)

    bm = bench.add_parser("merge-scale", help="the merge stage's clustering at growing candidate pools: time and peak memory")
    bm.add_argument("--sizes", default="2000,10000,100000,300000", help="candidate pool sizes, comma-separated")
    bm.add_argument("--json", action="store_true")
    bm.set_defaults(func=cmd_merge_scale)

    bs = bench.add_parser("scale", help="autorule's own time and memory as pairs and candidate pools grow (mock server, zero latency)")
    bs.add_argument("--pairs", type=_sizes, default=[1000, 10000, 100000], help="pair counts through extraction stages 000-020 (default: 1000,10000,100000)")
    bs.add_argument("--candidates", type=_sizes, default=[10000, 100000, 300000], help="candidate pools for the merge (default: 10000,100000,300000)")
    bs.add_argument("--validate-pairs", type=_sizes, default=[1000, 10000], help="pair counts for validate with 20 rules (default: 1000,10000)")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=cmd_scale)

    ba = bench.add_parser("verifier-accuracy", help="the verifier's accuracy, AUC and calibration on rules whose truth a program decides (IFEval checkers)")
    ba.add_argument("--verifier", default="embedded", help="verifier spec: embedded, hf:, gguf: or openai:MODEL@BASE_URL (default: %(default)s)")
    ba.add_argument("--hh", default="../shared/data/hh-rlhf-harmless-dev.jsonl.gz", metavar="PATH", help="hh-rlhf replies (default: %(default)s)")
    ba.add_argument("--alpaca", default="../shared/data/alpacaeval-gpt4turbo-annotations-dev.jsonl.gz", metavar="PATH",
                    help="AlpacaEval replies (default: %(default)s)")
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
