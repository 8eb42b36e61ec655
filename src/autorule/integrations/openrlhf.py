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
from autorule.integrations.templates import ReadQuery, TemplateReader
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


# the policy's chat template, read back (templates.py): OpenRLHF applies it to the prompt, and its
# query is the decoded prompt + response with special tokens kept
_READER = TemplateReader()


def _prompt_messages(prompt: str) -> list[Message]:
    """The turns of a chat-templated prompt, or the prompt as one user turn when no template is recognised."""
    return _READER.read(prompt, prompt).messages[:-1]


def _strip_end(response: str) -> str:
    """A response without its end-of-turn marker and whatever follows it."""
    return _READER.read(response, None).messages[-1].content


def split_query(query: str, prompt: str | None) -> list[Message]:
    r"""OpenRLHF's query is prompt + response as one text; the prompt is its known prefix.

    A chat template around the prompt is read back into turns and end-of-turn tokens
    after the response are dropped, so the verifier sees the conversation, not markup
    (`TemplateReader`: ChatML/Qwen, Llama 3, Gemma, Mistral, Phi-3, DeepSeek-R1).

    Args:
        query: the prompt and the response, as OpenRLHF decodes them.
        prompt: the prompt OpenRLHF sent beside the query (None: the query alone; in a
            known template its last assistant turn is the response).

    Example:
        >>> prompt = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n"
        >>> [(m.role, m.content) for m in split_query(prompt + "Hi!<|im_end|>", prompt)]
        [('user', 'Say hi.'), ('assistant', 'Hi!')]
    """
    return _READER.read(query, prompt).messages


def load_policy_tokenizer(tokenizer: Any) -> Any:
    """The policy's tokenizer: a tokenizer object as is, or loaded from a path or hub name.

    Args:
        tokenizer: a tokenizer, or a path or name `transformers.AutoTokenizer` loads.

    Raises:
        ValueError: it cannot be loaded (the path and the reason named).

    Example:
        >>> load_policy_tokenizer("/no/such/tokenizer")
        Traceback (most recent call last):
        ...
        ValueError: cannot load the policy tokenizer '/no/such/tokenizer': ...
    """
    if not isinstance(tokenizer, (str, bytes)) and not hasattr(tokenizer, "__fspath__"):
        return tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the policy tokenizer {str(tokenizer)!r}: {e}") from e


def _note_unknown(read: list[ReadQuery], state: dict) -> None:
    """Count queries in no known chat template; the first one is logged as a warning."""
    unknown = sum(r.template is None for r in read)
    if unknown and not state["unknown_template"]:
        log.warning("a query is in no chat template autorule reads back (ChatML, Llama 3, Gemma, Mistral, Phi-3, DeepSeek); "
                    "such queries are scored as text and counted in extra_logs['unknown_template'] (pass the policy's "
                    "tokenizer, --policy-tokenizer, to remove its special tokens)")
    state["unknown_template"] += unknown


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
    policy_tokenizer: Any = None,
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
        policy_tokenizer: the policy's tokenizer, or its path or name (optional): its
            special tokens are removed from what the verifier sees and its chat template
            is checked against the ones autorule reads back (`TemplateReader`).

    Per sample, `extra_logs` also holds ``unknown_template`` (1: no known chat template
    in the query; scored as text, a warning logged once), ``text_after_end_chars``
    (text after the response's end-of-turn marker, cut), ``reasoning_chars_stripped``
    and ``empty_response`` (see `RewardScorer`).

    Example:
        >>> from autorule import RuleSet, RewardScorer
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> from fastapi.testclient import TestClient
        >>> app = create_app(RewardScorer(RuleSet.from_texts(["The response should be short."]), FakeLLM(p_yes=0.75)))
        >>> with TestClient(app) as client:
        ...     client.post("/get_reward", json={"query": ["Q A"], "prompts": ["Q "]}).json()["rewards"]
        [0.75]
    """
    check_reward_kind(reward)
    reader = TemplateReader(load_policy_tokenizer(policy_tokenizer)) if policy_tokenizer is not None else _READER
    state: dict[str, Any] = {"queue": None, "workers": [], "batches": 0, "samples": 0, "unparsed_checks": 0, "refused": 0, "unknown_template": 0,
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
            "unknown_template": state["unknown_template"],
            "refusal_reasons": dict(state["refusal_reasons"].most_common(5)),
            "llm_stats": dict(scorer.verifier.llm.stats),
        }

    async def get_reward(body: RewardRequest) -> dict:
        if body.prompts is not None and len(body.prompts) != len(body.query):
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} items but 'query' has {len(body.query)}")
        if not body.query:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        prompts = body.prompts or [None] * len(body.query)
        read = [reader.read(q, p) for q, p in zip(body.query, prompts)]
        _note_unknown(read, state)
        job = _Job([r.messages for r in read], asyncio.get_running_loop().create_future())
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
            "reasoning_chars_stripped": [float(n) for n in scores.reasoning_chars[start:end]],
            "empty_response": [float(e) for e in scores.empty[start:end]],
            "unknown_template": [float(r.template is None) for r in read],
            "text_after_end_chars": [float(r.chars_after_end) for r in read],
        }
        if scores.rm is not None:
            extra["rm_reward"] = [float(x) for x in scores.rm[start:end]]
        return {"rewards": total, "scores": total, "extra_logs": extra}

    app.post("/")(get_reward)
    app.post("/get_reward")(get_reward)
    return app
