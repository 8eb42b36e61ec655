"""Verifier throughput: autorule's verifier against the reference code's method, same model, one run.

- `autorule`: conversation first, rule last; the shared prefix is processed once per
  conversation, and the head all prompts share (the instructions) once per batch; one
  next-token read per check (no generation); the backend's default packing (on a CPU, one
  conversation per forward pass).
- `packed`: the same, with conversations of similar length side by side in passes of up to
  1,024 x batch_size tokens (a GPU's default), to measure what packing gives on this machine.
- `reference`: the reference code's layout, rule before the conversation, one request per
  check, greedy generation (capped at 16 new tokens, generous to it), `[[Yes]]` parsed.

Reported: checks per second per mode and their ratio; tokens processed per check against
the floor (each conversation once plus every rule suffix); achieved FLOP/s (2 x parameters
x tokens) against a float32 matrix-multiply peak measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from autorule.data import Message
from autorule.llm.base import ChatRequest, LLMError, parse_yes_no
from autorule.examples import sample_rules
from autorule.rules import Rule, RuleSet, rule_id
from autorule.verifier import Verifier

# the reference code's judge prompt, rule first (paraphrased; its layout is what matters)
REFERENCE_PROMPT = (
    "[Instruction]\nPlease act as an impartial judge and evaluate whether the response of the AI assistant to the user "
    "satisfies the following rule.\nRule: {rule}\nAfter your explanation, output your final verdict strictly as "
    "\"[[Yes]]\" or \"[[No]]\".\n\n[The Start of Conversation]\n{conversation}\n[The End of Conversation]"
)

def matmul_peak_flops(n: int = 1024, repeats: int = 8) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


@dataclass
class ModeResult:
    checks: int
    seconds: float
    tokens: int

    @property
    def checks_per_s(self) -> float:
        return self.checks / self.seconds


def packed(llm):
    """The same local model, packing conversations into passes of 1,024 x batch_size tokens."""
    wide = type(llm).__new__(type(llm))
    wide.__dict__.update(llm.__dict__, pack_tokens=1024 * llm.batch_size)
    return wide


def run_autorule(llm, rules: RuleSet, convs: list[list[Message]]) -> ModeResult:
    before = dict(llm.stats)
    verifier = Verifier(llm, rules)
    start = time.perf_counter()
    verifier.verify(convs)
    seconds = time.perf_counter() - start
    # tokens computed: each prefix and question, less the head shared by every prompt of a batch (computed once)
    tokens = sum(llm.stats[k] - before.get(k, 0) for k in ("yes_no_prefix_tokens", "yes_no_suffix_tokens"))
    tokens -= llm.stats["yes_no_shared_head_tokens"] - before.get("yes_no_shared_head_tokens", 0)
    return ModeResult(len(convs) * len(rules), seconds, tokens)


def reference_request(conv: list[Message], rule: Rule, max_new_tokens: int) -> ChatRequest:
    """One check as the reference code asks it: the rule first, then the whole conversation."""
    text = "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in conv)
    return ChatRequest([{"role": "user", "content": REFERENCE_PROMPT.format(rule=rule.text, conversation=text)}], max_tokens=max_new_tokens)


def run_reference(llm, rules: RuleSet, convs: list[list[Message]], max_new_tokens: int = 16) -> tuple[ModeResult, int]:
    tokens = unparsed = 0
    start = time.perf_counter()
    for conv in convs:
        for rule in rules.rules:
            (c,) = llm.generate([reference_request(conv, rule, max_new_tokens)])  # one request per check, as the reference code sends them
            tokens += c.usage.prompt_tokens + c.usage.completion_tokens
            unparsed += parse_yes_no(c.text) is None
    return ModeResult(len(convs) * len(rules), time.perf_counter() - start, tokens), unparsed


def floor_tokens(llm, rules: RuleSet, convs: list[list[Message]]) -> int:
    """Each conversation's prompt once, plus every rule's question once per conversation
    (sharing nothing across conversations; autorule's shared head goes below it)."""
    verifier = Verifier(llm, rules)
    prefix = sum(llm.count_tokens(llm.render([{"role": "user", "content": verifier.prefix(c)}])) for c in convs)
    suffix = sum(llm.count_tokens(q) for q in verifier.questions) * len(convs)
    return prefix + suffix


def run_benchmark(llm, convs: list[list[Message]], k: int, modes: tuple[str, ...] = ("autorule", "reference")) -> dict:
    rules = sample_rules(k)
    params = sum(p.numel() for p in llm.model.parameters())
    peak = matmul_peak_flops()
    floor = floor_tokens(llm, rules, convs)
    checks = len(convs) * k
    report: dict = {"model": llm.spec, "conversations": len(convs), "rules": k, "checks": checks, "parameters": params,
                    "matmul_peak_flops": peak, "floor_tokens_per_check": floor / checks, "checks_per_s": {}, "tokens_per_check": {},
                    "achieved_flops": {}, "seconds": {}}
    for mode in modes:
        if mode == "autorule":
            result = run_autorule(llm, rules, convs)
        elif mode == "packed":
            result = run_autorule(packed(llm), rules, convs)
        else:
            result, report["reference_unparsed"] = run_reference(llm, rules, convs)
        report["checks_per_s"][mode] = result.checks_per_s
        report["tokens_per_check"][mode] = result.tokens / checks
        report["achieved_flops"][mode] = 2 * params * result.tokens / result.seconds
        report["seconds"][mode] = result.seconds
    if {"autorule", "reference"} <= set(modes):
        report["speedup"] = report["checks_per_s"]["autorule"] / report["checks_per_s"]["reference"]
    if {"autorule", "packed"} <= set(modes):
        report["packing_speedup"] = report["checks_per_s"]["packed"] / report["checks_per_s"]["autorule"]
    if "autorule" in modes:
        report["tokens_vs_floor"] = report["tokens_per_check"]["autorule"] / report["floor_tokens_per_check"]
    return report


SERVER_MODES = ("batched", "chat", "reference")
# llama-server's Prometheus counters (`--metrics`) read before and after each mode
_COUNTERS = {"llamacpp:prompt_tokens_total": "prompt_tokens_evaluated", "llamacpp:prompt_tokens_cached_total": "prompt_tokens_cached",
             "llamacpp:prompt_seconds_total": "prompt_seconds", "llamacpp:tokens_predicted_total": "tokens_predicted"}


def server_counters(base_urls: list[str]) -> dict | None:
    """llama-server's prompt counters (``/metrics``, served with ``--metrics``), summed over the replicas; None elsewhere."""
    import httpx

    from autorule.llm.yes_no_modes import root_of

    total: dict[str, float] = dict.fromkeys(_COUNTERS.values(), 0.0)
    for url in base_urls:
        try:
            r = httpx.get(root_of(url) + "/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        seen = False
        for line in r.text.splitlines():
            name, _, value = line.partition(" ")
            if name in _COUNTERS:
                total[_COUNTERS[name]] += float(value)
                seen = True
        if not seen:
            return None
    return total


def erase_slots(base_urls: list[str]) -> bool:
    """Empty every llama-server slot's KV (``POST /slots/ID?action=erase``), so no mode starts with another's
    conversation in a slot; False where the server has no such endpoint."""
    import httpx

    from autorule.llm.yes_no_modes import root_of

    try:
        for url in base_urls:
            root = root_of(url)
            slots = httpx.get(root + "/slots", timeout=10)
            if slots.status_code != 200:
                return False
            for slot in slots.json():
                httpx.post(f"{root}/slots/{slot['id']}?action=erase", timeout=30)
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return True


def prefill_rate(base_url: str, text: str, repeats: int = 3) -> float | None:
    """The server's prompt evaluation rate (tokens/s) on a long prompt, no cache (llama-server's
    ``timings.prompt_per_second``; the best of `repeats`); None where the reply carries no timings."""
    import httpx

    best = None
    for _ in range(repeats):
        try:
            r = httpx.post(base_url.rstrip("/") + "/completions", timeout=300,
                           json={"prompt": text, "max_tokens": 1, "temperature": 0.0, "cache_prompt": False})
            rate = r.json().get("timings", {}).get("prompt_per_second")
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        if not rate:
            return None
        best = max(best or 0.0, float(rate))
    return best


def server_floor_tokens(llm, rules: RuleSet, convs: list[list[Message]]) -> int:
    """What a server must evaluate at the least: each conversation's prefix once, plus every rule's
    question once per conversation (the server's own token counts; the chat template's few tokens left out)."""
    verifier = Verifier(llm, rules)
    return sum(llm.count_tokens(verifier.prefix(c)) for c in convs) + sum(llm.count_tokens(q) for q in verifier.questions) * len(convs)


def run_server_benchmark(make_llm, convs: list[list[Message]], k: int, modes: tuple[str, ...] = SERVER_MODES, max_new_tokens: int = 16) -> dict:
    """The yes/no modes and the reference method against one OpenAI-compatible server (or replicas), same conversations.

    Each mode runs on a fresh backend, `make_llm(mode)` (no cache); the mode is decided (probed)
    before the clock starts.

    - batched: one ``/v1/completions`` request per conversation, every rule's prompt in it;
    - chat: one 1-token chat request with logprobs per check, the shared prefix first;
    - reference: one generation per check, rule first, ``[[Yes]]`` parsed.

    Where the server is llama-server with ``--metrics``, each mode also reports the prompt tokens
    the server evaluated and took from its cache (its own counters), and the share of the prefill
    floor reached: the floor is the server's rate on long prompts (measured here, no cache) times
    the tokens that must be evaluated (`server_floor_tokens`).
    """
    rules = sample_rules(k)
    checks = len(convs) * k
    report: dict = {"conversations": len(convs), "rules": k, "checks": checks, "modes": list(modes), "checks_per_s": {}, "seconds": {},
                    "mode_lines": {}, "server": {}, "unavailable": {}}
    floor_s = None
    for mode in modes:
        llm = make_llm(mode)
        report.setdefault("model", llm.spec)
        urls = list(getattr(llm, "base_urls", []))
        if "floor_tokens" not in report and urls:
            report["floor_tokens"] = server_floor_tokens(llm, rules, convs)
            longest = max((Verifier(llm, rules).prefix(c) for c in convs), key=len)
            rate = prefill_rate(urls[0], longest)
            if rate:
                report["prefill_rate_long"] = rate
                floor_s = report["floor_tokens"] / rate
                report["floor_seconds"] = floor_s
        if mode != "reference":
            try:
                report["mode_lines"][mode] = llm.yes_no_mode.describe()  # probed now, outside the timing
            except LLMError as e:
                report["unavailable"][mode] = str(e)
                llm.close()
                continue
        erase_slots(urls)
        before = server_counters(urls)
        start = time.perf_counter()
        if mode == "reference":
            requests = [reference_request(conv, rule, max_new_tokens) for conv in convs for rule in rules.rules]
            completions = llm.generate(requests)
            report["reference_unparsed"] = sum(parse_yes_no(c.text) is None for c in completions)
        else:
            Verifier(llm, rules).verify(convs)
        seconds = time.perf_counter() - start
        after = server_counters(urls)
        report["seconds"][mode] = seconds
        report["checks_per_s"][mode] = checks / seconds
        report.setdefault("yes_no_fallbacks", 0)
        report["yes_no_fallbacks"] += llm.stats.get("yes_no_fallback", 0)
        report["requests"] = {**report.get("requests", {}), mode: llm.stats.get("requests", 0)}
        if before is not None and after is not None:
            delta = {name: after[name] - before[name] for name in after}
            sent = delta["prompt_tokens_evaluated"] + delta["prompt_tokens_cached"]
            delta["prompt_tokens_sent"] = sent
            delta["cache_hit_rate"] = delta["prompt_tokens_cached"] / sent if sent else None
            if "floor_tokens" in report:
                delta["evaluated_vs_floor"] = delta["prompt_tokens_evaluated"] / report["floor_tokens"]
            if floor_s:
                delta["floor_share"] = floor_s / seconds
            report["server"][mode] = delta
        llm.close()
    cps = report["checks_per_s"]
    for a, b in (("batched", "chat"), ("batched", "reference"), ("chat", "reference")):
        if a in cps and b in cps:
            report[f"{a}_vs_{b}"] = cps[a] / cps[b]
    # the old report's keys: autorule is the mode a backend would choose (batched where it ran)
    ours = "batched" if "batched" in cps else "chat" if "chat" in cps else None
    if ours:
        cps["autorule"] = cps[ours]
        report["seconds"]["autorule"] = report["seconds"][ours]
        if "reference" in cps:
            report["speedup"] = cps[ours] / cps["reference"]
    return report
