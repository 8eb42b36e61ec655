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
from autorule.llm.base import ChatRequest, parse_yes_no
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


def run_server_benchmark(llm, convs: list[list[Message]], k: int, max_new_tokens: int = 16) -> dict:
    """Both modes against an OpenAI-compatible server, the same concurrency for each.

    autorule: one 1-token request with logprobs per check, the shared prefix first (servers
    with a prefix cache, as llama.cpp, vLLM and SGLang have, read it once); reference: one
    generation per check, rule first, `[[Yes]]` parsed.
    """
    rules = sample_rules(k)
    checks = len(convs) * k
    start = time.perf_counter()
    Verifier(llm, rules).verify(convs)
    autorule_s = time.perf_counter() - start
    requests = [reference_request(conv, rule, max_new_tokens) for conv in convs for rule in rules.rules]
    start = time.perf_counter()
    completions = llm.generate(requests)
    reference_s = time.perf_counter() - start
    return {
        "model": llm.spec, "conversations": len(convs), "rules": k, "checks": checks,
        "checks_per_s": {"autorule": checks / autorule_s, "reference": checks / reference_s},
        "seconds": {"autorule": autorule_s, "reference": reference_s},
        "speedup": reference_s / autorule_s,
        "reference_unparsed": sum(parse_yes_no(c.text) is None for c in completions),
        "yes_no_fallbacks": llm.stats.get("yes_no_fallback", 0),
    }
