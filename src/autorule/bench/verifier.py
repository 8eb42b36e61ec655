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

import os
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


def server_counters(base_urls: list[str]) -> list[dict] | None:
    """llama-server's prompt counters (``/metrics``, served with ``--metrics``), one dict per replica; None elsewhere."""
    import httpx

    from autorule.llm.serverinfo import root_of

    out = []
    for url in base_urls:
        try:
            r = httpx.get(root_of(url) + "/metrics", timeout=10)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        counters: dict[str, float] = {}
        for line in r.text.splitlines():
            name, _, value = line.partition(" ")
            if name in _COUNTERS:
                counters[_COUNTERS[name]] = float(value)
        if set(counters) != set(_COUNTERS.values()):
            return None
        out.append(counters)
    return out


def _counter_delta(before: dict, after: dict) -> dict:
    delta = {name: after[name] - before[name] for name in after}
    sent = delta["prompt_tokens_evaluated"] + delta["prompt_tokens_cached"]
    delta["prompt_tokens_sent"] = sent
    delta["cache_hit_rate"] = delta["prompt_tokens_cached"] / sent if sent else None
    return delta


def erase_slots(base_urls: list[str]) -> bool:
    """Empty every llama-server slot's KV (``POST /slots/ID?action=erase``), so no mode starts with another's
    conversation in a slot; False where the server has no such endpoint."""
    import httpx

    from autorule.llm.serverinfo import root_of

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


def server_floor_tokens(llm, rules: RuleSet, convs: list[list[Message]]) -> tuple[int, str]:
    """What a server must evaluate at the least for autorule's layout, and how it was counted.

    Where the server is llama-server (it renders its chat template for the client and
    tokenizes): every rule's prompt rendered as the batched mode sends it and tokenized by
    the server, in the order sent, each less the tokens it shares with the one before (what
    a one-slot prefix cache keeps: the template's head across conversations, the conversation
    across its rules). Elsewhere:
    each conversation's prefix once plus every rule's question once per conversation, by
    the server's token counts (which counts the questions' common head once per rule).
    """
    import httpx

    from autorule.llm.chat_template import from_llama_server
    from autorule.llm.serverinfo import root_of

    verifier = Verifier(llm, rules)
    info = llm.info
    template = from_llama_server(root_of(llm.base_urls[0]), {}) if info.tokenize_url and info.tokenize_style == "llama" else None
    if template is not None:
        total = 0
        previous: list[int] = []
        with httpx.Client(timeout=60) as client:
            for conv in convs:
                prefix = verifier.prefix(conv)
                for q in verifier.questions:
                    tokens = client.post(info.tokenize_url, json={"content": template.render(prefix + q), "add_special": True}).json()["tokens"]
                    shared = next((i for i, (a, b) in enumerate(zip(tokens, previous)) if a != b), min(len(tokens), len(previous)))
                    total += len(tokens) - shared
                    previous = tokens
        return total, "rendered prompts, tokenized by the server, less each one's common prefix with the one before"
    counted = sum(llm.count_tokens(verifier.prefix(c)) for c in convs) + sum(llm.count_tokens(q) for q in verifier.questions) * len(convs)
    return counted, "each conversation's prefix once plus every rule's question per conversation"


def _long_text(prefixes: list[str], chars: int = 6000) -> str:
    """A long prompt for the prefill rate (about 1,500 tokens): the conversations' prefixes, end to end."""
    text = ""
    while len(text) < chars:
        text += "\n\n".join(prefixes) + "\n\n"
    return text[:chars]


def run_server_benchmark(make_llm, convs: list[list[Message]], k: int, modes: tuple[str, ...] = SERVER_MODES, max_new_tokens: int = 16) -> dict:
    """The yes/no modes and the reference method against one OpenAI-compatible server (or replicas), same conversations.

    Each mode runs on a fresh backend, `make_llm(mode)` (no cache); the mode is decided (probed)
    and the `Verifier` made (it counts each rule's tokens) before the clock starts, their time
    reported apart (``setup_seconds``): the clock times `Verifier.verify` alone.

    - batched: one ``/v1/completions`` request per conversation, every rule's prompt in it;
    - chat: one 1-token chat request with logprobs per check, the shared prefix first;
    - reference: one generation per check, rule first, ``[[Yes]]`` parsed.

    Where the server is llama-server with ``--metrics``, each mode also reports the prompt tokens
    the server evaluated and took from its cache (its own counters), and the share of the prefill
    floor reached: the floor is the server's rate on a long prompt (about 1,500 tokens, measured
    here with no cache, the best of three) times the tokens autorule's layout must evaluate
    (`server_floor_tokens`). Between modes every llama-server slot is erased (`erase_slots`).
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
            report["floor_tokens"], report["floor_counted_as"] = server_floor_tokens(llm, rules, convs)
            rate = prefill_rate(urls[0], _long_text([Verifier(llm, rules).prefix(c) for c in convs]))
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
        start = time.perf_counter()
        verifier = Verifier(llm, rules) if mode != "reference" else None  # counts each rule's tokens (K tokenize calls)
        report.setdefault("setup_seconds", {})[mode] = time.perf_counter() - start
        erase_slots(urls)
        before = server_counters(urls)
        start = time.perf_counter()
        if verifier is None:
            requests = [reference_request(conv, rule, max_new_tokens) for conv in convs for rule in rules.rules]
            completions = llm.generate(requests)
            report["reference_unparsed"] = sum(parse_yes_no(c.text) is None for c in completions)
        else:
            verifier.verify(convs)
        seconds = time.perf_counter() - start
        after = server_counters(urls)
        report.setdefault("load_average", {})[mode] = round(os.getloadavg()[0], 2)  # the machine's 1-minute load as the mode ended
        report["seconds"][mode] = seconds
        report["checks_per_s"][mode] = checks / seconds
        report.setdefault("yes_no_fallbacks", 0)
        report["yes_no_fallbacks"] += llm.stats.get("yes_no_fallback", 0)
        report["requests"] = {**report.get("requests", {}), mode: llm.stats.get("requests", 0)}
        if before is not None and after is not None:
            each = [_counter_delta(b, a) for b, a in zip(before, after)]
            delta = _counter_delta({n: sum(d[n] for d in before) for n in _COUNTERS.values()}, {n: sum(d[n] for d in after) for n in _COUNTERS.values()})
            if len(each) > 1:
                delta["per_replica"] = each
            if "floor_tokens" in report:
                delta["evaluated_vs_floor"] = delta["prompt_tokens_evaluated"] / report["floor_tokens"]
            if floor_s:
                delta["floor_share"] = floor_s / seconds
            if delta["prompt_seconds"]:
                delta["prompt_tokens_per_s"] = delta["prompt_tokens_evaluated"] / delta["prompt_seconds"]
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
