"""Two llama-server replicas against one, on the same machine. A developer benchmark (see BENCHMARKS.md):

    python benchmarks/replicas.py --rules 20 --conversations 8 --json

Starts llama.cpp's `llama-server` (built by scripts/build_llama_server.sh; $AUTORULE_LLAMA_SERVER
names another binary) serving the embedded model's GGUF, one slot each, `--metrics`, no host
prompt cache (`--cache-ram 0`: a hit is the slot's own KV, which affinity routing is for), in
each layout named by `--layouts`:

- `one-t1`: one server on 1 thread; `one-t2`: one server on 2 threads;
- `two-t1`: two servers on 1 thread each, the spec ``openai:local@URL1,URL2`` (affinity routing).

Each layout runs the verifier (`--modes`, default batched) through `run_server_benchmark` on
a fresh backend, `--concurrency` requests in flight per replica, and reports checks/s, the
prompt tokens each server evaluated and took from its cache (their own `/metrics` counters),
the cache hit rate (cached / sent) and the share of the prefill floor (the floor uses the
first replica's rate on long prompts: for two replicas, twice that rate is the fairer floor;
`floor_share_all_replicas` says it).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

from autorule.cli.bench import emit
from autorule.cli.options import Parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/llama_server.py

LAYOUTS = {"one-t1": [1], "one-t2": [2], "two-t1": [1, 1]}


@contextmanager
def llama_server(threads: int):
    """One llama-server (one slot, metrics on, no host prompt cache) on a free port, started as the tests start it; yields its base URL."""
    from llama_server import LlamaServer  # tests/llama_server.py: the repository's one launcher (binary, port, health wait, log)

    from autorule.llm.local import embedded_gguf

    with LlamaServer(embedded_gguf(), "-np", "1", "-c", "8192", "--metrics", "--cache-ram", "0", threads=threads) as server:
        yield server.base_url


def run(layouts: list[str], k: int, n: int, data: str | None, modes: tuple[str, ...], concurrency: int) -> dict:
    from autorule.bench.verifier import run_server_benchmark
    from autorule.cli.bench import _sample_convs
    from autorule.llm import load_llm

    convs = _sample_convs(data, n)
    report: dict = {"rules": k, "conversations": n, "data": data or "examples/pairs.jsonl", "concurrency_per_replica": concurrency, "layouts": {}}
    for name in layouts:
        with ExitStack() as stack:
            urls = [stack.enter_context(llama_server(t)) for t in LAYOUTS[name]]
            spec = f"openai:local@{','.join(urls)}"

            def make_llm(mode: str, spec: str = spec):
                return load_llm(spec, yes_no_mode="chat" if mode == "reference" else mode, concurrency=concurrency, timeout=600, max_retries=2)

            r = run_server_benchmark(make_llm, convs, k, modes)
            for mode, server in r["server"].items():
                if "floor_share" in server:
                    server["floor_share_all_replicas"] = server["floor_share"] / len(urls)
            report["layouts"][name] = {"replicas": len(urls), "threads": LAYOUTS[name], **{key: r.get(key) for key in (
                "checks", "checks_per_s", "seconds", "mode_lines", "server", "prefill_rate_long", "floor_tokens", "floor_seconds", "unavailable")}}
    for mode in modes:
        cps = {name: lay["checks_per_s"].get(mode) for name, lay in report["layouts"].items()}
        for one in ("one-t1", "one-t2"):
            if cps.get("two-t1") and cps.get(one):
                report.setdefault("two_vs_one", {}).setdefault(mode, {})[one] = cps["two-t1"] / cps[one]
    return report


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/replicas.py", description="two llama-server replicas (1 thread each) against one (1 or 2 threads), same machine")
    p.add_argument("--layouts", default="one-t1,one-t2,two-t1", help="comma-separated from one-t1, one-t2, two-t1 (default: %(default)s)")
    p.add_argument("--rules", type=int, default=20)
    p.add_argument("--conversations", type=int, default=8)
    p.add_argument("--data", default=None, help="preference data whose chosen conversations are used (default: examples/pairs.jsonl)")
    p.add_argument("--modes", default="batched", help="comma-separated: batched, chat, reference (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight per replica (default: %(default)s, one slot each)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    layouts = [x for x in args.layouts.split(",") if x]
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        p.error(f"--layouts: unknown {', '.join(unknown)} (choose from {', '.join(LAYOUTS)})")
    report = run(layouts, args.rules, args.conversations, args.data, tuple(args.modes.split(",")), args.concurrency)
    lines = []
    for name, lay in report["layouts"].items():
        for mode, cps in lay["checks_per_s"].items():
            if mode == "autorule":
                continue
            s = lay["server"].get(mode, {})
            line = f"{name:>7} {mode:>9}: {cps:7.2f} checks/s"
            if s:
                line += f"; evaluated {s['prompt_tokens_evaluated']:,.0f} of {s['prompt_tokens_sent']:,.0f} prompt tokens sent (cache hits {s['cache_hit_rate']:.0%})"
                if "per_replica" in s:
                    line += " [" + ", ".join(f"{d['prompt_tokens_evaluated']:,.0f}/{d['prompt_tokens_sent']:,.0f}" for d in s["per_replica"]) + " per replica]"
                if "floor_share" in s:
                    line += f"; {s['floor_share_all_replicas']:.0%} of the floor at all replicas' rate"
            lines.append(line)
    for mode, ratios in report.get("two_vs_one", {}).items():
        lines.append(f"{mode}: two replicas vs " + ", ".join(f"{one} {v:.2f}x" for one, v in ratios.items()))
    return emit(report, args.json, lines)


if __name__ == "__main__":
    sys.exit(main())
