"""Any OpenAI-compatible chat server: vLLM, SGLang, llama.cpp, hosted APIs.

Async with bounded concurrency; every request is retried with exponential backoff and
jitter on 429 (honouring Retry-After), 5xx, timeouts, dropped connections and
malformed replies. Yes/no scoring reads one token's logprobs (`max_tokens=1`,
`top_logprobs`), and falls back to parsing a short answer when a server gives none.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
import openai
from tqdm.auto import tqdm

from .base import LLM, ChatRequest, Completion, LLMError, OnResult, Usage, parse_yes_no, split_reasoning, yes_probability

T = TypeVar("T")


class MalformedReply(Exception):
    """The server answered 200 but not with a usable completion."""


class _LoopThread:
    """An event loop on a daemon thread, one per backend, so that its HTTP client and
    keep-alive connections outlive a call (a fresh loop per call would pay the client's
    setup and new connections every time: every RL step, every reward-server batch).
    Callable from any thread, including threads that run an event loop of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="autorule-openai").start()

    def run(self, coro: Awaitable[T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:  # e.g. Ctrl-C in the caller: stop the requests too
            future.cancel()
            raise


async def _gather_or_cancel(coros: list[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure the rest are cancelled and awaited."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def parse_spec(spec: str) -> tuple[str, str]:
    """'openai:MODEL@BASE_URL' -> (model, base_url)."""
    body = spec.removeprefix("openai:")
    model, sep, base_url = body.rpartition("@")
    if not sep or not model or not base_url.startswith(("http://", "https://")):
        raise LLMError(f"bad model spec {spec!r}: expected openai:MODEL@BASE_URL, e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
    return model, base_url


class OpenAICompatLLM(LLM):
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        top_logprobs: int = 20,
        extra_body: dict | None = None,
    ):
        super().__init__()
        self.model, self.base_url = model, base_url
        self.spec = f"openai:{model}@{base_url}"
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.top_logprobs = top_logprobs
        self.extra_body = extra_body or {}
        self._loop = _LoopThread()
        self._http: openai.AsyncOpenAI | None = None

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> OpenAICompatLLM:
        model, base_url = parse_spec(spec)
        return cls(model, base_url, **kwargs)

    @property
    def identity(self) -> dict:
        # the server address is not part of the identity: the same model elsewhere answers the same
        return {"backend": "openai", "model": self.model}

    def _client(self) -> openai.AsyncOpenAI:
        """The backend's one client, made on its loop the first time it is needed."""
        if self._http is None:
            # our own retry loop (counted, covers malformed replies); the client's is off
            self._http = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                max_retries=0,
                timeout=self.timeout,
                http_client=httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=self.concurrency * 2)),
            )
        return self._http

    # ------------------------------------------------------------------ retries

    def _delay(self, attempt: int, error: Exception) -> float:
        retry_after = None
        response = getattr(error, "response", None)
        if response is not None:
            try:
                retry_after = float(response.headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        # full jitter: spreads retries from many workers
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    @staticmethod
    def _fault_kind(e: Exception) -> str | None:
        """A short label for a retryable fault; None when retrying cannot help."""
        if isinstance(e, openai.APITimeoutError):
            return "timeout"
        if isinstance(e, openai.APIConnectionError):
            return "connection"
        if isinstance(e, openai.APIStatusError):
            if e.status_code == 429:
                return "429"
            if e.status_code >= 500 or e.status_code in (408, 409):
                return str(e.status_code)
            return None
        if isinstance(e, (MalformedReply, json.JSONDecodeError, openai.APIResponseValidationError)):
            return "malformed"
        return None

    async def _call(self, client: openai.AsyncOpenAI, params: dict) -> Any:
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            try:
                response = await client.chat.completions.create(**params)
                if not getattr(response, "choices", None):
                    raise MalformedReply("reply has no choices")
                if response.choices[0].message is None:
                    raise MalformedReply("reply has no message")
                return response
            except Exception as e:  # classified below; unknown errors propagate
                kind = self._fault_kind(e)
                if kind is None:
                    if isinstance(e, openai.APIStatusError):
                        raise LLMError(f"{self.base_url} refused the request ({e.status_code}): {e.message}") from e
                    raise
                self.stats[f"fault_{kind}"] += 1
                if attempt == self.max_retries:
                    raise LLMError(f"{self.base_url}: gave up after {attempt + 1} attempts; last fault: {kind}: {e}") from e
                self.stats["retries"] += 1
                await asyncio.sleep(self._delay(attempt, e))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ generation

    def _params(self, r: ChatRequest) -> dict:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": r.messages,
            "max_tokens": r.max_tokens,
            "temperature": r.temperature,
            "top_p": r.top_p,
        }
        if r.seed is not None:
            params["seed"] = r.seed
        if self.extra_body:
            params["extra_body"] = self.extra_body
        return params

    @staticmethod
    def _completion(response: Any) -> Completion:
        choice = response.choices[0]
        message = choice.message
        text = message.content or ""
        extra = message.model_extra or {}
        # vLLM/SGLang: reasoning_content; some servers: reasoning; others: <think> in the text
        reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        think, answer = split_reasoning(text)
        if reasoning is None:
            reasoning = think
        usage = response.usage
        return Completion(
            text=answer,
            reasoning=reasoning or None,
            finish_reason=choice.finish_reason or "stop",
            usage=Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
        )

    def _generate(self, requests: list[ChatRequest], desc: str | None, on_result: OnResult | None) -> list[Completion]:
        async def main() -> list[Completion]:
            client = self._client()
            sem = asyncio.Semaphore(self.concurrency)
            bar = tqdm(total=len(requests), desc=desc, disable=desc is None, unit="req")

            async def one(i: int, r: ChatRequest) -> Completion:
                async with sem:
                    c = self._completion(await self._call(client, self._params(r)))
                if c.finish_reason == "length":
                    self.stats["truncated"] += 1  # cut at max_tokens: a retry would cut it the same way
                if on_result:
                    on_result(i, c)
                bar.update(1)
                return c

            try:
                return await _gather_or_cancel([one(i, r) for i, r in enumerate(requests)])
            finally:
                bar.close()

        return self._loop.run(main())

    # ------------------------------------------------------------------ yes/no scoring

    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]]) -> list[list[float]]:
        flat = [(prefix, q) for prefix, questions in items for q in questions]

        async def main() -> list[float]:
            client = self._client()
            sem = asyncio.Semaphore(self.concurrency)

            async def one(prefix: str, q: str) -> float:
                messages = [{"role": "user", "content": prefix + q}]
                async with sem:
                    response = await self._call(
                        client,
                        {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs, **({"extra_body": self.extra_body} if self.extra_body else {})},
                    )
                    p = self._yes_from_logprobs(response)
                    if p is None:
                        # no logprobs (or no Yes/No among them): read a short generated answer
                        self.stats["yes_no_fallback"] += 1
                        reply = await self._call(client, {"model": self.model, "messages": messages, "max_tokens": 8, "temperature": 0.0})
                        p = parse_yes_no(reply.choices[0].message.content or "")
                if p is None:
                    self.stats["yes_no_unparsed"] += 1
                    return 0.5
                return p

            return await _gather_or_cancel([one(prefix, q) for prefix, q in flat])

        self.stats["yes_no_checks"] += len(flat)
        probs = iter(self._loop.run(main()))
        return [[next(probs) for _ in questions] for _, questions in items]

    @staticmethod
    def _yes_from_logprobs(response: Any) -> float | None:
        logprobs = getattr(response.choices[0], "logprobs", None)
        content = getattr(logprobs, "content", None) if logprobs else None
        if not content:
            return None
        first = content[0]
        pairs = [(t.token, t.logprob) for t in (first.top_logprobs or [])] or [(first.token, first.logprob)]
        return yes_probability(pairs)

    def close(self) -> None:
        if self._http is not None:
            self._loop.run(self._http.close())
            self._http = None
