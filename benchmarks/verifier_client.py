"""The verifier client's ceiling: batched vs chat yes/no checks against the mock server at zero latency.
A developer benchmark (see BENCHMARKS.md):

    python benchmarks/verifier_client.py --conversations 64 --rules 4,20 --json

The mock OpenAI-compatible server runs in its own process (`mock_server_process("value", 0.0,
completions=STYLE)`), answering at once, so what is measured is autorule's client: prompts,
the chat template, JSON, HTTP, reading logprobs, the verifier around them (and the mock's own
parsing and replying, on the same cores). Both modes run on fresh backends in one run, through
`autorule bench verifier-server`'s code (`run_server_benchmark`), on the same conversations.

`--profile` also runs each batched size once more under cProfile, in the caller's thread and
in the backend's event-loop thread (where the requests are made), and reports the functions
with the most time of their own.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

from autorule.cli.bench import emit
from autorule.cli.options import Parser

GOALS = {4: {"batched_vs_chat": 10.0}, 20: {"batched_vs_chat": 20.0, "batched_checks_per_s": 3000.0}}  # issue 26


def conversations(n: int) -> list:
    """`n` chosen conversations: hh-rlhf's dev pairs from the shared data, else the sample pairs repeated (numbered, so none repeat)."""
    from autorule.data import Message, load_pairs
    from autorule.examples import SAMPLE_PAIRS

    hh = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-dev.jsonl.gz"
    pairs = load_pairs(hh if hh.is_file() else SAMPLE_PAIRS, on_bad_row="skip").pairs
    out = []
    for i in range(n):
        conv = pairs[i % len(pairs)].conversation("chosen")
        if i >= len(pairs):
            conv = [*conv[:-1], Message(role=conv[-1].role, content=f"{conv[-1].content} ({i})")]
        out.append(conv)
    return out


def _top(stats: pstats.Stats, n: int) -> list[dict]:
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": calls, "own_s": round(own, 4), "cumulative_s": round(cumulative, 4)})
    return sorted(rows, key=lambda r: -r["own_s"])[:n]


def profile_batched(url: str, convs: list, k: int, concurrency: int, top: int = 25) -> dict:
    """One batched run under cProfile: the caller's thread and the backend's loop thread, profiled apart."""
    from autorule.examples import sample_rules
    from autorule.llm import load_llm
    from autorule.verifier import Verifier

    llm = load_llm(f"openai:mock@{url}", yes_no_mode="batched", concurrency=concurrency)
    llm.yes_no_mode  # probed before the profile
    rules = sample_rules(k)
    caller, loop = cProfile.Profile(), cProfile.Profile()

    async def switch(on: bool) -> None:  # runs in the loop thread: a profiler hooks the thread it is enabled in
        loop.enable() if on else loop.disable()

    llm._loop.run(switch(True))
    caller.enable()
    start = time.perf_counter()
    Verifier(llm, rules).verify(convs)
    seconds = time.perf_counter() - start
    caller.disable()
    llm._loop.run(switch(False))
    llm.close()
    out = {"rules": k, "seconds": seconds, "checks_per_s": len(convs) * k / seconds}
    for name, prof in (("caller_thread", caller), ("loop_thread", loop)):
        stats = pstats.Stats(prof, stream=io.StringIO())
        out[name] = {"total_own_s": round(sum(v[2] for v in stats.stats.values()), 3), "top": _top(stats, top)}  # type: ignore[attr-defined]
    return out


def run(n: int, ks: list[int], style: str, concurrency: int, profile: bool) -> dict:
    from autorule.bench.verifier import run_server_benchmark
    from autorule.llm import load_llm
    from autorule.testing.mock_server import mock_server_process

    convs = conversations(n)
    report: dict = {"conversations": n, "completions": style, "concurrency": concurrency, "goals": GOALS, "runs": {}, "profiles": {}}
    with mock_server_process("value", 0.0, completions=style) as url:
        for k in ks:
            def make_llm(mode: str):
                return load_llm(f"openai:mock@{url}", yes_no_mode=mode, concurrency=concurrency)

            r = run_server_benchmark(make_llm, convs, k, modes=("batched", "chat"))
            report["runs"][str(k)] = {key: r[key] for key in ("checks", "checks_per_s", "seconds", "mode_lines", "unavailable", "requests", "batched_vs_chat") if key in r}
            report["runs"][str(k)]["checks_per_s"].pop("autorule", None)
            report["runs"][str(k)]["seconds"].pop("autorule", None)
        if profile:
            for k in ks:
                report["profiles"][str(k)] = profile_batched(url, convs, k, concurrency)
    return report


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/verifier_client.py", description="the verifier client's ceiling: batched vs chat against the mock server at zero latency")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--rules", default="4,20", help="comma-separated K values (default: %(default)s)")
    p.add_argument("--completions", choices=("vllm", "llama"), default="vllm", help="the mock's completions shape (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (default: %(default)s)")
    p.add_argument("--profile", action="store_true", help="also profile one batched run per K (cProfile, both threads)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    ks = [int(k) for k in args.rules.split(",") if k.strip()]
    report = run(args.conversations, ks, args.completions, args.concurrency, args.profile)
    lines = []
    for k, r in report["runs"].items():
        cps = r["checks_per_s"]
        lines.append(f"K = {k}: " + ", ".join(f"{m} {v:,.0f} checks/s" for m, v in cps.items())
                     + (f"; batched / chat {r['batched_vs_chat']:.1f}x" if "batched_vs_chat" in r else ""))
        for m, line in r["mode_lines"].items():
            lines.append(f"    {m}: {line}")
    for k, prof in report["profiles"].items():
        lines.append(f"profile, batched, K = {k}: {prof['checks_per_s']:,.0f} checks/s under the profiler")
        for thread in ("caller_thread", "loop_thread"):
            lines.append(f"  {thread} ({prof[thread]['total_own_s']} s own time in all):")
            lines += [f"    {row['own_s']:8.3f} s own  {row['cumulative_s']:8.3f} s cum  {row['calls']:>8} calls  {row['function']}" for row in prof[thread]["top"][:12]]
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
