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
from collections import Counter
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from autorule.data import Message
from autorule.integrations.batching import RequestBatcher
from autorule.integrations.templates import ReadQuery, TemplateReader
from autorule.reward import (
    RewardScorer,
    SampleReward,
    check_reward_kind,
    sample_components,
)
from autorule.reward.components import settings

log = logging.getLogger(__name__)


class RewardRequest(BaseModel):
    query: list[str] = Field(..., max_length=4096)
    prompts: list[str] | None = None
    labels: list[Any] | None = None


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

    Per sample, `extra_logs` holds the reward's parts under `autorule.reward.components`'
    names, the same TRL and verl log (``total_reward``, ``rule_reward``, ``rm_reward``,
    ``vetoed``, ``dropped_rules``, the weights, ``reasoning_chars_stripped``,
    ``empty_response``, ...), and ``unknown_template`` (1: no known chat template in the
    query; scored as text, a warning logged once) and ``text_after_end_chars`` (text after
    the response's end-of-turn marker, cut).

    GRPO groups: OpenRLHF sends no group or step, so completions of one prompt are a
    group (rule dropout's subset depends on the prompt, not the step); a request usually
    holds one sample, so normalise-then-sum (which needs a whole group) is refused.

    Raises:
        ValueError: an unknown `reward`, or a scorer whose preset aggregates with
            ``normalize_then_sum``.

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
    if scorer.preset.aggregation == "normalize_then_sum":
        raise ValueError("aggregation='normalize_then_sum' needs every completion of a GRPO group in one call, and OpenRLHF sends its "
                         "reward service samples one request at a time; use aggregation='sum' (OpenRLHF's GRPO advantage normalises "
                         "the summed reward per group)")
    reader = TemplateReader(load_policy_tokenizer(policy_tokenizer)) if policy_tokenizer is not None else _READER
    state: dict[str, Any] = {"unparsed_checks": 0, "refused": 0, "unknown_template": 0, "refusal_reasons": Counter()}

    def score_batch(conversations: list[list[Message]]) -> list[SampleReward]:
        scores = scorer.score(conversations)
        if scores.errors:  # they get reward 0: say so, with the reason, never a silent 0
            log.warning("%d of %d samples failed and get reward 0 with refused=1 in extra_logs; first reason: %s",
                        len(scores.errors), len(conversations), next(iter(scores.errors.values())))
        return scorer.samples(scores, reward)

    batcher: RequestBatcher[list[Message], SampleReward] = RequestBatcher(score_batch, max_wait_ms=max_wait_ms, max_batch=max_batch,
                                                                            max_queue=max_queue, workers=workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()

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
        return {
            "status": "ok",
            "rules": len(scorer.rules),
            "verifier": scorer.verifier.llm.spec,
            "preset": scorer.preset.name,
            "reward": reward,
            "workers": workers,
            "queued": batcher.queued,
            "batches": batcher.batches,
            "samples": batcher.samples,
            "unparsed_checks": state["unparsed_checks"],
            "refused": state["refused"],
            "unknown_template": state["unknown_template"],
            "refusal_reasons": dict(state["refusal_reasons"].most_common(5)),
            "llm_stats": dict(scorer.verifier.llm.stats),
            "verifier_mode": scorer.verifier.llm.yes_no_record,
        }

    async def get_reward(body: RewardRequest) -> dict:
        if body.prompts is not None and len(body.prompts) != len(body.query):
            raise HTTPException(422, f"'prompts' has {len(body.prompts)} items but 'query' has {len(body.query)}")
        if not body.query:
            return {"rewards": [], "scores": [], "extra_logs": {}}
        prompts = body.prompts or [None] * len(body.query)
        read = [reader.read(q, p) for q, p in zip(body.query, prompts)]
        _note_unknown(read, state)
        try:
            samples = await batcher.submit([r.messages for r in read])
        except asyncio.QueueFull:
            raise HTTPException(503, "reward server is at capacity; retry later", headers={"Retry-After": "1"}) from None
        except Exception as e:
            raise HTTPException(503, f"scoring failed: {type(e).__name__}: {e}") from None
        state["unparsed_checks"] += sum(s.unparsed_checks for s in samples)
        state["refused"] += sum(s.refused for s in samples)
        state["refusal_reasons"].update(s.error for s in samples if s.error is not None)
        return openrlhf_response(samples, read, scorer)

    app.post("/")(get_reward)
    app.post("/get_reward")(get_reward)
    return app


def openrlhf_response(samples: list[SampleReward], read: list[ReadQuery], scorer: RewardScorer | None = None) -> dict:
    """One request's rewards as OpenRLHF takes them: `rewards` and `scores` numbers, the rest in `extra_logs`.

    A response the verifier's server refused has no reward; OpenRLHF needs a number: 0,
    flagged in ``extra_logs["refused"]``. The parts are under `autorule.reward.components`' names.

    Args:
        samples: the request's `SampleReward`s, in order.
        read: its queries as read back (`TemplateReader`), in the same order.
        scorer: the scorer that made them (its weights and rule count are logged; None: left out).

    Example:
        >>> from autorule.reward import SampleReward
        >>> openrlhf_response([SampleReward(0.75, 0.75)], [_READER.read("Q A", "Q ")])["extra_logs"]["refused"]
        [0.0]
    """
    total = [float(np.nan_to_num(s.score)) for s in samples]
    scorer_settings = settings(scorer) if scorer is not None else None
    rows = [sample_components(s, scorer_settings, [r.id for r in scorer.rules.rules] if scorer is not None else None) for s in samples]
    if scorer is not None and scorer.rm is not None:
        for row in rows:
            row.setdefault("rm_reward", 0.0)
    extra: dict[str, list[float]] = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    extra["unknown_template"] = [float(r.template is None) for r in read]
    extra["text_after_end_chars"] = [float(r.chars_after_end) for r in read]
    return {"rewards": total, "scores": total, "extra_logs": extra}
