"""The reward server under load: `autorule serve` as its own process, many concurrent
clients on 127.0.0.1, every answer checked against the reward its request should get.

The verifier behind the server is the mock OpenAI-compatible server, answering each check
with the P(Yes) written into the response being judged ("value=0.123456"), so every
request's expected rule reward is known and unique: a reward delivered to the wrong
request is caught. Latency is measured per request at the client. A developer benchmark
(see BENCHMARKS.md):

    python benchmarks/server_load.py --clients 64 --requests 50 --json
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from autorule.examples import sample_rules
from autorule.cli.bench import emit
from autorule.cli.options import Parser, number, whole
from autorule.testing.mock_server import mock_server_process


def expected_value(client: int, request: int, requests: int, clients: int) -> float:
    return round(0.01 + 0.98 * (client * requests + request) / max(clients * requests - 1, 1), 6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_reward_server(rules_path: Path, verifier_url: str, token: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`autorule serve` in its own process; returns it and its URL once /health answers."""
    port = _free_port()
    cmd = [sys.executable, "-c", "import sys; from autorule.cli import main; sys.exit(main())", "serve", "--rules", str(rules_path), "--verifier", f"openai:mock@{verifier_url}",
           "--no-cache", "--port", str(port), "--token", token, "--concurrency", "64", *extra]
    with log.open("w") as stderr:  # the child keeps its own copy of the handle
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"autorule serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"autorule serve did not answer /health in 180 s: {log.read_text()[-2000:]}")


async def _clients(url: str, token: str, clients: int, requests: int) -> list[dict]:
    results: list[dict] = []
    headers = {"authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:

        async def client(c: int) -> None:
            for r in range(requests):
                value = expected_value(c, r, requests, clients)
                prompt = f"Question from client {c}, request {r}. "
                body = {"query": [prompt + f"Answer for client {c}, request {r}: value={value:.6f}."], "prompts": [prompt]}
                start = time.perf_counter()
                try:
                    resp = await http.post("/", json=body)
                    status, payload = resp.status_code, resp.json()
                except (httpx.HTTPError, ValueError) as e:
                    status, payload = None, {"error": f"{type(e).__name__}: {e}"}
                seconds = time.perf_counter() - start
                got = payload.get("extra_logs", {}).get("rule_reward", [None])[0] if status == 200 else None
                results.append({"status": status, "seconds": seconds, "expected": value, "got": got,
                                **({"error": payload.get("error") or payload.get("detail")} if status != 200 else {})})

        await asyncio.gather(*(client(c) for c in range(clients)))
    return results


def run_server_load(clients: int = 64, requests: int = 50, rules: int = 2, verifier_latency: float = 0.0, max_batch: int = 64,
                    workers: int | None = None) -> dict:
    token = "bench-token"
    with tempfile.TemporaryDirectory(prefix="autorule-bench-serve-") as tmp, mock_server_process("value", verifier_latency) as verifier_url:
        rules_path = Path(tmp) / "rules.yaml"
        sample_rules(rules).save(rules_path)
        proc, url = start_reward_server(rules_path, verifier_url, token, Path(tmp) / "serve.log", "--max-batch", str(max_batch),
                                        *(["--workers", str(workers)] if workers else []))
        try:
            start = time.perf_counter()
            results = asyncio.run(_clients(url, token, clients, requests))
            wall = time.perf_counter() - start
            health = httpx.get(url + "/health", timeout=10).json()
        finally:
            proc.terminate()
            proc.wait(30)
    latencies = np.array([r["seconds"] for r in results if r["status"] == 200]) * 1000
    answered = sum(r["status"] == 200 for r in results)
    mismatched = sum(r["status"] == 200 and (r["got"] is None or abs(r["got"] - r["expected"]) > 1e-4) for r in results)
    return {
        "clients": clients, "requests_per_client": requests, "rules": rules, "verifier_latency_s": verifier_latency, "max_batch": max_batch, "workers": workers,
        "sent": len(results), "answered": answered, "errors": len(results) - answered, "mismatched": mismatched,
        "statuses": sorted({str(r["status"]) for r in results}),
        "p50_ms": float(np.percentile(latencies, 50)) if answered else None,
        "p99_ms": float(np.percentile(latencies, 99)) if answered else None,
        "max_ms": float(latencies.max()) if answered else None,
        "requests_per_s": answered / wall, "client_errors": sorted({str(r["error"]) for r in results if "error" in r})[:5],
        "server_batches": health["batches"], "mean_batch": health["samples"] / max(health["batches"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python benchmarks/server_load.py",
               description="the reward server under load: concurrent clients, latency percentiles, rewards checked")
    p.add_argument("--clients", type=whole(1), default=64)
    p.add_argument("--requests", type=whole(1), default=50, help="requests per client, one after another")
    p.add_argument("--rules", type=whole(1), default=2)
    p.add_argument("--verifier-latency", type=number(0), default=0.0, help="seconds each verifier check takes at the mock verifier")
    p.add_argument("--max-batch", type=whole(1), default=64)
    p.add_argument("--workers", type=whole(1), default=None, help="batches the server scores at once (default: the server's, 1)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line on stdout")
    args = p.parse_args(argv)
    report = run_server_load(args.clients, args.requests, args.rules, args.verifier_latency, args.max_batch, args.workers)
    lines = [f"{report['answered']}/{report['sent']} answered (statuses {', '.join(report['statuses'])}), {report['errors']} errors, "
             f"{report['mismatched']} rewards not matching their request"]
    if report["answered"]:
        lines.append(f"latency p50 {report['p50_ms']:.1f} ms, p99 {report['p99_ms']:.1f} ms, max {report['max_ms']:.1f} ms; "
                     f"{report['requests_per_s']:.0f} requests/s; mean batch {report['mean_batch']:.1f} samples")
    emit(report, args.json, lines)
    return 0 if report["errors"] == 0 and report["mismatched"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
