"""How fast a backend is here: measured, so that plans can say how long a run will take.

Local models are timed once per machine and model (a few seconds) and the figures kept
in ~/.cache/autorule/speed/. Servers are probed with three tiny requests each time a
plan is made (servers change; the probes cost well under a second on a GPU server).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from autorule.llm.base import LLM, ChatRequest

SPEED_DIR = Path(os.environ.get("AUTORULE_SPEED_DIR", Path.home() / ".cache" / "autorule" / "speed"))
# the batch sizes whose decode step is timed; others are interpolated
TIMED_BATCHES = (1, 8)


@dataclass
class Speed:
    """A backend's measured speed.

    Args:
        prefill_tokens_per_s: prompt tokens read per second.
        decode_step_s: seconds per generated token, for one request and for a batch of 8
            (a batch decodes its requests together).
        check_s: seconds per yes/no question once its conversation has been read.
        check_s_per_token: what each token of the conversation adds to a question's time
            (locally every question attends to, and copies, the conversation's KV cache).
        request_s: fixed seconds per request (a server's round trip; 0 locally).
        parallel: requests served at once (a server's concurrency; 1 locally, where
            batching is in `decode_step_s`).
        throughput_s: seconds per request when `parallel` run at once (a server; this
            includes the client's own work, which bounds fast servers).
        source: how the figures were obtained.

    Example:
        >>> s = Speed(prefill_tokens_per_s=300.0, decode_step_s={1: 0.05, 8: 0.1}, check_s=0.02)
        >>> round(s.step(4), 4), round(s.generation_seconds(8, 800, 10, batch_size=8), 2)
        (0.0714, 3.67)
    """

    prefill_tokens_per_s: float
    decode_step_s: dict[int, float]
    check_s: float
    check_s_per_token: float = 0.0
    request_s: float = 0.0
    parallel: int = 1
    throughput_s: float = 0.0
    source: str = ""

    def step(self, batch: int) -> float:
        """Seconds per decode step for a batch of this size (linear between the timed sizes)."""
        lo, hi = min(self.decode_step_s), max(self.decode_step_s)
        b = min(max(batch, lo), hi)
        if hi == lo:
            return self.decode_step_s[lo]
        return self.decode_step_s[lo] + (self.decode_step_s[hi] - self.decode_step_s[lo]) * (b - lo) / (hi - lo)

    def generation_seconds(self, calls: int, prompt_tokens: int, max_new: int, *, batch_size: int = 1) -> float:
        """Seconds for `calls` generations of up to `max_new` tokens each (an upper bound:
        a batch runs until its longest answer ends)."""
        if calls <= 0:
            return 0.0
        if self.parallel > 1:  # a server: requests overlap up to its concurrency, as fast as the client can send them
            per_call = self.request_s + prompt_tokens / calls / self.prefill_tokens_per_s + max_new * self.step(1)
            return max(-(-calls // self.parallel) * per_call, calls * self.throughput_s)
        batches = -(-calls // batch_size)
        last = calls - (batches - 1) * batch_size
        decode = (batches - 1) * max_new * self.step(batch_size) + max_new * self.step(last)
        return prompt_tokens / self.prefill_tokens_per_s + decode + calls * self.request_s

    def checks_seconds(self, conversations: int, prefix_tokens: int, checks: int) -> float:
        """Seconds for `checks` yes/no questions over `conversations` sharing `prefix_tokens` in all."""
        if conversations <= 0:
            return 0.0
        if self.parallel > 1:  # one request per question; the server reads each conversation once (prefix cache)
            waves = -(-checks // self.parallel) * (self.request_s + self.check_s) + prefix_tokens / self.prefill_tokens_per_s / self.parallel
            return max(waves, checks * self.throughput_s)
        per_check = self.check_s + self.check_s_per_token * prefix_tokens / conversations
        return prefix_tokens / self.prefill_tokens_per_s + checks * per_check


def measure(llm: LLM) -> Speed:
    """The backend's speed: local models from the figures kept for this machine (timed the
    first time), servers from three probe requests."""
    inner = llm.backend
    if hasattr(inner, "info"):  # an OpenAI-compatible server
        return _measure_server(inner)
    key = hashlib.sha256(json.dumps([inner.identity, platform.node(), os.cpu_count(), platform.machine()], sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = SPEED_DIR / f"{key}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        data["decode_step_s"] = {int(k): v for k, v in data["decode_step_s"].items()}
        return Speed(**data)
    busy = os.getloadavg()[0] > 0.75 * (os.cpu_count() or 1)
    speed = _measure_local(inner)
    if busy:  # timings on a busy machine would mislead every later plan: use them once, keep none
        speed.source += "; the machine was busy, so these timings are not kept"
        return speed
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(speed)))
    return speed


def _measure_local(llm) -> Speed:
    """Time a prompt read, decode steps at batch 1 and 8, and yes/no checks on the real model."""
    torch = llm.torch
    prompt = llm.render([{"role": "user", "content": "Describe the weather in a few words. " * 20}])
    ids = llm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(llm.device)
    n_prompt = ids.input_ids.shape[1]

    def timed(batch: int, new: int) -> float:
        """The best of two runs: a busy machine only ever makes a run slower."""
        enc = {k: v.repeat(batch, 1) for k, v in ids.items()}
        best = math.inf
        for _ in range(2):
            start = time.perf_counter()
            with torch.inference_mode():
                llm.model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=llm.tokenizer.pad_token_id)
            best = min(best, time.perf_counter() - start)
        return best

    timed(1, 2)  # warm-up
    first = timed(1, 1)
    steps = {b: max((timed(b, 17) - timed(b, 1)) / 16, 1e-4) for b in TIMED_BATCHES}
    prefill = n_prompt / max(first - steps[1], 1e-4)
    # a question's time grows with the conversation before it: timed after a short and a long one
    # questions as long as a verifier's (a rule of ~25 words and the answer cue)
    questions = [f"\n\nRule {i}: The assistant's response should state its assumptions clearly and explain each step of its reasoning "
                 "in plain words that a newcomer can follow.\nDoes the final response follow this rule? Answer Yes or No." for i in range(8)]
    per_check = {}
    for repeat in (5, 40):
        prefix = "Describe the weather in a few words. " * repeat
        tokens = llm.count_tokens(prefix)
        best = math.inf
        for _ in range(2):
            start = time.perf_counter()
            llm.score_yes_no(prefix, questions)
            best = min(best, time.perf_counter() - start)
        per_check[tokens] = max((best - tokens / prefill) / len(questions), 1e-4)
    (short, t_short), (long, t_long) = sorted(per_check.items())
    slope = max((t_long - t_short) / (long - short), 0.0)
    return Speed(prefill, steps, max(t_short - slope * short, 1e-4), slope, source=f"measured on this machine ({platform.node()}, {os.cpu_count()} CPUs)")


def _measure_server(llm) -> Speed:
    """Probes: one warm-up, a burst of concurrent 1-token requests (throughput, client overhead
    included), a 1-token answer to a short and to a long prompt, and a 16-token answer."""
    def ask(texts: list[str], max_tokens: int) -> tuple[float, int]:
        start = time.perf_counter()
        replies = llm.generate([ChatRequest([{"role": "user", "content": t}], max_tokens=max_tokens, temperature=0.0, seed=0) for t in texts])
        return time.perf_counter() - start, replies[-1].usage.completion_tokens

    ask(["Say OK."], 1)  # connection set-up and the server's own warm-up are not what a run pays per call
    parallel = max(1, min(llm.concurrency, llm.info.slots or llm.concurrency))
    burst = min(parallel, 16)
    wall, _ = ask([f"Say OK {i}." for i in range(burst)], 1)
    short, _ = ask(["Say OK."], 1)
    long_text = "Describe the weather in a few words. " * 60
    long, _ = ask([long_text], 1)
    many, generated = ask(["Count from one to twenty in words, one per line."], 16)
    prefill = max(llm.count_tokens(long_text) - 4, 1) / max(long - short, 1e-4)
    # a server that wrote only a few tokens says little about its decode speed
    step = max((many - short) / (generated - 1), 0.0) if generated >= 8 else 0.0
    return Speed(prefill, {1: step}, check_s=0.0, request_s=short, parallel=parallel, throughput_s=wall / burst,
                 source=f"probe requests to {llm.spec}: {short * 1000:.0f} ms for one, {wall / burst * 1000:.1f} ms each in a burst of {burst}")
