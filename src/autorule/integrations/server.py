"""An OpenRLHF-compatible reward service (`--remote_rm_url`), batching across requests.

OpenRLHF posts `{"query": [...], "prompts": [...], "labels": [...]}` (usually one sample
per request, from many workers at once) and expects
`{"rewards": [...], "scores": [...], "extra_logs": {...}}`. Requests wait in a bounded
queue; a worker takes up to `max_batch` samples at a time (waiting at most `max_wait_ms`
for more) and scores them in one verifier pass. One worker adapts by itself (batches grow
while it is busy); `workers` > 1 scores several batches at once, which helps only when a
slow verifier server has capacity left (measured in BENCHMARKS.md). A full queue answers
503, so load never grows without limit.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from autorule.data import Message
from autorule.reward import RewardScorer, check_reward_kind

log = logging.getLogger(__name__)


class RewardRequest(BaseModel):
    query: list[str] = Field(..., max_length=4096)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


@dataclass
class _Job:
    conversations: list[list[Message]]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


# chat templates OpenRLHF's prompts come in (it applies the policy's template, and its query
# is the decoded prompt + response, special tokens kept): (turn pattern, end-of-turn markers)
_TURN_PATTERNS = [
    re.compile(r"<\|im_start\|>(system|user|assistant)\n(.*?)<\|im_end\|>", re.DOTALL),  # ChatML (Qwen, SmolLM)
    re.compile(r"<\|start_header_id\|>(system|user|assistant)<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.DOTALL),  # Llama 3
    re.compile(r"<start_of_turn>(user|model)\n(.*?)<end_of_turn>", re.DOTALL),  # Gemma
]
_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


def _prompt_messages(prompt: str) -> list[Message]:
    """The turns of a chat-templated prompt, or the prompt as one user turn when no template is recognised."""
    for pattern in _TURN_PATTERNS:
        turns = pattern.findall(prompt)
        if turns:
            return [Message(role="assistant" if role == "model" else role, content=text.strip()) for role, text in turns]
    return [Message(role="user", content=prompt)]


def _strip_end(response: str) -> str:
    response = response.rstrip()
    changed = True
    while changed:
        changed = False
        for marker in _END_MARKERS:
            if response.endswith(marker):
                response, changed = response[: -len(marker)].rstrip(), True
    return response


def split_query(query: str, prompt: str | None) -> list[Message]:
    r"""OpenRLHF's query is prompt + response as one text; the prompt is its known prefix.

    A chat template around the prompt is read back into turns and end-of-turn tokens
    after the response are dropped, so the verifier sees the conversation, not markup.

    Args:
        query: the prompt and the response, as OpenRLHF decodes them.
        prompt: the prompt OpenRLHF sent beside the query (None: the query is all response).

    Example:
        >>> prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
        >>> [(m.role, m.content) for m in split_query(prompt + "Hi!<|im_end|>", prompt)]
        [('user', 'Say hi.'), ('assistant', 'Hi!')]
    """
    if prompt and query.startswith(prompt):
        return [*_prompt_messages(prompt), Message(role="assistant", content=_strip_end(query[len(prompt) :]))]
    if prompt:
        return [*_prompt_messages(prompt), Message(role="assistant", content=_strip_end(query))]
    return [Message(role="assistant", content=_strip_end(query))]


def create_app(
    scorer: RewardScorer,
    *,
    token: str | None = None,
    max_batch: int = 64,
    max_wait_ms: float = 10.0,
    max_queue: int = 1024,
    max_body_bytes: int = 8 * 1024 * 1024,
    reward: str = "total",
    workers: int = 1,
) -> FastAPI:
    """The reward service as a FastAPI app (`autorule serve` runs it with uvicorn).

    Args:
        scorer: the RewardScorer that scores every request.
        token: when set, requests need ``Authorization: Bearer <token>``.
        max_batch: the most samples scored in one verifier pass.
        max_wait_ms: how long the first waiting request waits for others to join its batch.
        max_queue: waiting requests past which the server answers 503.
        max_body_bytes: the largest request body accepted (413 past it).
        reward: what `rewards` holds: "total" (the scorer's composed reward: rule term +
            autorule's RM when the scorer has one + length penalty, clipped per the
            preset) or "rule" (the rule term alone).
        workers: batches scored at once (1: batches grow with the load instead).

    Example:
        >>> from autorule import RuleSet, RewardScorer
        >>> from autorule.llm.fake import FakeLLM
        >>> from fastapi.testclient import TestClient
        >>> app = create_app(RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.75)))
        >>> with TestClient(app) as client:
        ...     client.post("/get_reward", json={"query": ["Q A"], "prompts": ["Q "]}).json()["rewards"]
        [0.75]
    """
    check_reward_kind(reward)
    state: dict[str, Any] = {"queue": None, "workers": [], "batches": 0, "samples": 0, "unparsed_checks": 0, "refused": 0,
                             "refusal_reasons": Counter()}

    async def worker() -> None:
        queue: asyncio.Queue = state["queue"]
        while True:
            jobs = [await queue.get()]
            deadline = time.monotonic() + max_wait_ms / 1000
            size = len(jobs[0].conversations)
            while size < max_batch:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                jobs.append(job)
                size += len(job.conversations)
            convs = [c for j in jobs for c in j.conversations]
            try:
                scores = await asyncio.to_thread(scorer.score, convs)
            except Exception as e:  # every waiting request learns of it; the worker lives on
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            state["batches"] += 1
            state["samples"] += len(convs)
            state["unparsed_checks"] += scores.verdicts.unparsed
            state["refused"] += len(scores.errors)
            if scores.errors:  # they get reward 0: say so, with the reason, never a silent 0
                state["refusal_reasons"].update(scores.errors.values())
                log.warning("%d of %d samples failed and get reward 0 with refused=1 in extra_logs; first reason: %s",
                            len(scores.errors), len(convs), next(iter(scores.errors.values())))
            start = 0
            for j in jobs:
                n = len(j.conversations)
                if not j.future.done():
                    j.future.set_result((scores, start, start + n))
                start += n

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["queue"] = asyncio.Queue(maxsize=max_queue)
        state["workers"] = [asyncio.create_task(worker()) for _ in range(workers)]
        yield
        for task in state["workers"]:
            task.cancel()

    app = FastAPI(title="autorule reward server", lifespan=lifespan)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given, f"Bearer {token}"):
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        queue = state["queue"]
        return {
            "status": "ok",
            "rules": len(scorer.rules),
            "verifier": scorer.verifier.llm.spec,
            "preset": scorer.preset.name,
            "reward": reward,
            "workers": workers,
            "queued": queue.qsize() if queue else 0,
            "batches": state["batches"],
            "samples": state["samples"],
            "unparsed_checks": state["unparsed_checks"],
            "refused": state["refused"],
            "refusal_reasons": dict(state["refusal_reasons"].most_common(5)),
            "llm_stats": dict(scorer.verifier.llm.stats),
        }

    async def get_reward(body: RewardRequest) -> dict:
        if body.prompts is not None and len(body.prompts) != len(body.query):
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} items but 'query' has {len(body.query)}")
        if not body.query:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        prompts = body.prompts or [None] * len(body.query)
        job = _Job([split_query(q, p) for q, p in zip(body.query, prompts)], asyncio.get_running_loop().create_future())
        try:
            state["queue"].put_nowait(job)
        except asyncio.QueueFull:
            raise HTTPException(503, "reward server is at capacity; retry later", headers={"Retry-After": "1"}) from None
        try:
            scores, start, end = await job.future
        except Exception as e:
            raise HTTPException(503, f"scoring failed: {type(e).__name__}: {e}") from None
        # a response the verifier's server refused has no reward; OpenRLHF needs a number: 0,
        # flagged in extra_logs["refused"]
        total = np.nan_to_num(scorer.values(scores, reward)[start:end]).tolist()
        extra = {
            "rule_reward": np.nan_to_num(scores.rule[start:end]).tolist(),
            "unparsed_checks": [float(n) for n in scores.unparsed_per_response()[start:end]],
            "refused": [float(i in scores.errors) for i in range(start, end)],
        }
        if scores.rm is not None:
            extra["rm_reward"] = [float(x) for x in scores.rm[start:end]]
        return {"rewards": total, "scores": total, "extra_logs": extra}

    app.post("/")(get_reward)
    app.post("/get_reward")(get_reward)
    return app
