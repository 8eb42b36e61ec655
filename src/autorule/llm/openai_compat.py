"""Any OpenAI-compatible chat server: vLLM, SGLang, llama.cpp, hosted APIs.

Async with bounded concurrency; every request is retried with exponential backoff and
jitter on 429 (honouring Retry-After), 5xx, timeouts, dropped connections and
malformed replies. An overloaded server ("context size has been exceeded" from
llama-server's shared KV pool, 503 busy) is not retried blindly: concurrency is halved
and grows back one request at a time (AIMD). A refused connection is not a transient
fault: it is reported at once. Yes/no scoring reads one token's logprobs
(`max_tokens=1`, `top_logprobs`), and falls back to parsing a short answer when a server
gives none; an answer with no readable Yes/No is NaN, never a pass.

A server that refuses the `logprobs` parameter (`refusals.logprobs_refusal`) is met once:
the first yes/no request goes alone, and on a refusal the backend asks without logprobs
for the rest of its life (the refused check is asked again, not lost), warns once and
counts it (`stats["logprobs_refused"]`); a stated `top_logprobs` maximum lowers the
number asked for instead. A verdict a reasoning parser filed under `reasoning_content`
(`content: null`) is read from there (`base.parse_verdict`).

What the server says about itself (`serverinfo.probe`: the model it serves, its context
per slot, its slot count) keys the cache, sizes the verifier's truncation and sets the
default concurrency.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx
import openai
from tqdm.auto import tqdm

from autorule.llm.base import UNPARSED, LLM, ChatRequest, Completion, LLMError, OnItem, OnResult, RequestRefused, Usage, parse_verdict, split_reasoning, yes_probability
from autorule.llm.refusals import LogprobsRefusal, body_message, body_text, is_key_problem, logprobs_refusal
from autorule.llm.serverinfo import ServerInfo, probe
from autorule.llm.specs import OPENAI_EXAMPLE, ModelSpec, SpecError, parse_spec

T = TypeVar("T")
log = logging.getLogger(__name__)


class MalformedReply(Exception):
    """The server answered 200 but not with a usable completion."""


class LogprobsRefused(LLMError):
    """The server refused the logprobs a yes/no request asked for (caught inside the backend)."""

    def __init__(self, refusal: LogprobsRefusal):
        super().__init__(refusal.message)
        self.refusal = refusal


# used when the server does not report its slots (vLLM, SGLang, hosted APIs schedule many at once)
DEFAULT_CONCURRENCY = 16
# a CPU server queues requests behind its slots: a request may wait minutes before it starts
DEFAULT_TIMEOUT = 600.0
# overload replies in a row at concurrency 1 before giving up: the request itself is too big
OVERLOAD_GIVE_UP = 3


def is_overload(e: Exception) -> bool:
    """The server is too busy for this request now (fewer at once would pass), not broken."""
    if not isinstance(e, openai.APIStatusError):
        return False
    if e.status_code == 503:
        return True
    text = str(e).lower()
    # llama-server: the slots share one KV pool, and concurrent long requests exhaust it
    return e.status_code == 500 and ("context size has been exceeded" in text or "kv cache" in text or "no free slot" in text)


class AdaptiveLimit:
    """How many requests may be in flight: halved on overload, +1 per `limit` successes (AIMD).

    Overloads reported by requests that started before the last decrease are ignored, so
    one burst of failures halves the limit once, not once per failed request.
    """

    def __init__(self, ceiling: int):
        self.ceiling = self.limit = max(1, ceiling)
        self.active = 0
        self.epoch = 0
        self._credit = 0.0
        self._cond: asyncio.Condition | None = None

    async def acquire(self) -> tuple[int, int]:
        """Wait for a free place; returns (epoch, limit) at the time it was granted."""
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            await self._cond.wait_for(lambda: self.active < self.limit)
            self.active += 1
            return self.epoch, self.limit

    async def release(self) -> None:
        async with self._cond:  # type: ignore[union-attr]
            self.active -= 1
            self._cond.notify_all()  # type: ignore[union-attr]

    def success(self) -> None:
        if self.limit < self.ceiling:
            self._credit += 1 / self.limit
            if self._credit >= 1:
                self._credit = 0.0
                self.limit += 1

    def overload(self, epoch: int) -> None:
        if epoch == self.epoch:
            self.limit = max(1, self.limit // 2)
            self.epoch += 1
            self._credit = 0.0


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


class OpenAICompatLLM(LLM):
    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        max_retries: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        top_logprobs: int = 20,
        extra_body: dict | None = None,
        max_input_tokens: int | None = None,
    ):
        """
        Args:
            model: the model name sent with every request.
            base_url: the server's OpenAI-compatible root, e.g. ``http://127.0.0.1:8080/v1``.
            api_key: bearer key (default: ``$OPENAI_API_KEY``).
            concurrency: most requests in flight; None: the server's slot count where it
                reports one (llama-server), else 16. Lowered on overload, regained slowly.
            timeout: seconds per request, including time queued in the server (default 600).
            max_retries: retries of a transient fault (429, 5xx, timeout, dropped connection).
            extra_body: JSON fields sent with every request, e.g.
                ``{"chat_template_kwargs": {"enable_thinking": False}}`` for Qwen3 on vLLM.
            max_input_tokens: the prompt budget of one request; None: the server's context
                per slot where it reports one, else 8192.

        Example:
            >>> llm = OpenAICompatLLM("local", "http://127.0.0.1:9/v1", concurrency=4, extra_body={"top_k": 1})
            >>> llm.spec, llm.extra_body
            ('openai:local@http://127.0.0.1:9/v1', {'top_k': 1})
        """
        super().__init__()
        self.model, self.base_url = model, base_url
        self.spec = f"openai:{model}@{base_url}"
        # no key: the placeholder local servers (vLLM, SGLang, llama-server) accept; a 401 then says none was given
        self.key_given = bool(api_key or os.environ.get("OPENAI_API_KEY"))
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._concurrency = concurrency
        self.timeout = timeout or DEFAULT_TIMEOUT
        self._max_input_tokens = max_input_tokens
        self._info: ServerInfo | None = None
        self._limit: AdaptiveLimit | None = None
        self.max_retries = max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.top_logprobs = top_logprobs
        # None until the first yes/no request says whether the server takes `logprobs`
        self.logprobs_accepted: bool | None = None
        self._probe_lock: asyncio.Lock | None = None
        self.extra_body = extra_body or {}
        self._loop = _LoopThread()
        self._http: openai.AsyncOpenAI | None = None

    @classmethod
    def from_spec(cls, spec: str | ModelSpec, **kwargs) -> OpenAICompatLLM:
        """The backend for an ``openai:MODEL@BASE_URL`` spec; `kwargs` as for the constructor.

        Raises:
            SpecError: `spec` is not of that form.
        """
        parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        if parsed.kind != "openai":
            raise SpecError(f"not a server spec: {parsed.text!r}; write openai:MODEL@BASE_URL, e.g. {OPENAI_EXAMPLE}")
        return cls(parsed.model, parsed.base_url, **kwargs)

    @property
    def info(self) -> ServerInfo:
        """What the server reports about itself, asked once (a few quick GETs)."""
        if self._info is None:
            self._info = probe(self.base_url, self.api_key, self.model)
        return self._info

    @property
    def identity(self) -> dict:
        # what the server says it serves, not the name we send: llama-server ignores the
        # name, so two servers behind one name must not share cached answers. Replicas
        # that report the same model share entries; a server that reports nothing is
        # keyed by its address.
        served = self.info.served
        return {"backend": "openai", "served": served} if served else {"backend": "openai", "model": self.model, "base_url": self.base_url}

    @property
    def concurrency(self) -> int:
        if self._concurrency is not None:
            return self._concurrency
        return self.info.slots or DEFAULT_CONCURRENCY

    @property
    def max_context(self) -> int | None:
        """Prompt tokens one request may hold: the flag, else the server's context per slot."""
        return self._max_input_tokens or self.info.context

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the server's own tokenizer where it has one (llama-server, vLLM)."""
        n = self.info.count_tokens(text) if self.info.can_tokenize else None
        return n if n is not None else super().count_tokens(text)

    def _limiter(self) -> AdaptiveLimit:
        if self._limit is None:
            self._limit = AdaptiveLimit(self.concurrency)
        return self._limit

    def _client(self) -> openai.AsyncOpenAI:
        """The backend's one client, made on its loop the first time it is needed."""
        if self._http is None:
            # our own retry loop (counted, covers malformed replies); the client's is off
            self._http = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key,
                max_retries=0,
                timeout=self.timeout,
                http_client=httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=self.concurrency * 2 + 4)),
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
        limit = self._limiter()
        attempt = 0  # transient faults so far; overloads are paced by the limit instead
        overloaded_at_one = 0
        while True:
            epoch, granted = await limit.acquire()
            self.stats["requests"] += 1
            try:
                response = await client.chat.completions.create(**params)
                if not getattr(response, "choices", None):
                    raise MalformedReply("reply has no choices")
                if response.choices[0].message is None:
                    raise MalformedReply("reply has no message")
                limit.success()
                return response
            except Exception as e:  # classified below; unknown errors propagate
                if "logprobs" in params and isinstance(e, openai.APIStatusError):
                    refusal = logprobs_refusal(e.status_code, f"{body_text(e.body)} {e.message}", params.get("top_logprobs"))
                    if refusal is not None:
                        raise LogprobsRefused(refusal) from e
                if is_overload(e):
                    self.stats["overload"] += 1
                    limit.overload(epoch)
                    self.stats["concurrency_min"] = min(self.stats.get("concurrency_min", granted), limit.limit)
                    overloaded_at_one = overloaded_at_one + 1 if granted == 1 else 0
                    if overloaded_at_one >= OVERLOAD_GIVE_UP:
                        raise LLMError(
                            f"{self.base_url} is overloaded even with one request at a time ({_status(e)}): one request needs more "
                            "than the server has. Start the server with more context per slot (llama-server: a larger -c, or fewer "
                            "slots with -np), or ask for fewer tokens per request; --concurrency sets how many run at once"
                        ) from e
                    await asyncio.sleep(random.uniform(0.05, 0.5) * self.backoff_base)
                    continue
                kind = self._fault_kind(e)
                if kind is None:
                    raise self._refusal(e) from e
                if kind == "connection" and _refused(e):
                    raise LLMError(f"cannot connect to {self.base_url}: connection refused. Is the server running, and at that address and port?") from e
                self.stats[f"fault_{kind}"] += 1
                if attempt == self.max_retries:
                    hint = f" (each request may take up to --timeout {self.timeout:g} s; a CPU server may need longer, or a lower --concurrency)" if kind == "timeout" else ""
                    raise LLMError(f"{self.base_url}: gave up after {attempt + 1} attempts; last fault: {kind}: {e}{hint}") from e
                self.stats["retries"] += 1
                await asyncio.sleep(self._delay(attempt, e))
                attempt += 1
            finally:
                await limit.release()

    def _refusal(self, e: Exception) -> Exception:
        """The error for a fault retrying cannot fix."""
        if isinstance(e, openai.APIStatusError):
            message = body_message(e.body) or e.message
            if is_key_problem(e.status_code, message):
                if not self.key_given:
                    return LLMError(f"{self.base_url} wants an API key ({e.status_code}) and none was given: pass --api-key or set OPENAI_API_KEY")
                return LLMError(f"{self.base_url} refused the API key ({e.status_code}: {message}): check --api-key or OPENAI_API_KEY")
            if e.status_code in (401, 403):  # the body names another cause: the server's words, not a guess about the key
                return LLMError(f"{self.base_url} refused the request ({e.status_code}): {message}")
            return RequestRefused(f"{self.base_url} refused the request ({e.status_code}): {message}")
        return e

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
            bar = tqdm(total=len(requests), desc=desc, disable=desc is None, unit="req")

            async def one(i: int, r: ChatRequest) -> Completion:
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

    async def _logprobs_call(self, client: openai.AsyncOpenAI, messages: list[dict], extra: dict) -> Any | None:
        """The one-token request with logprobs; None when the server does not take logprobs.

        Until the server has answered one such request, they go one at a time (the rest
        wait), so a server that refuses logprobs is met once, not once per request in flight.
        """
        if self.logprobs_accepted is None:
            async with self._probe_lock:  # type: ignore[union-attr]
                if self.logprobs_accepted is None:
                    response = await self._ask_logprobs(client, messages, extra)
                    if self.logprobs_accepted is None:
                        self.logprobs_accepted = True
                    return response
        return await self._ask_logprobs(client, messages, extra) if self.logprobs_accepted else None

    async def _ask_logprobs(self, client: openai.AsyncOpenAI, messages: list[dict], extra: dict) -> Any | None:
        while True:
            params = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": self.top_logprobs, **extra}
            try:
                return await self._call(client, params)
            except LogprobsRefused as e:
                limit = e.refusal.limit  # below what this request asked for: ask again with that many
                if limit is not None:
                    if limit < self.top_logprobs:  # not yet lowered by another request
                        log.warning("%s accepts at most %d top_logprobs (%s); asking for %d", self.base_url, limit, _first_line(e.refusal.message), limit)
                        self.stats["top_logprobs_lowered"] += 1
                        self.top_logprobs = limit
                    continue
                if self.logprobs_accepted is not False:
                    self.logprobs_accepted = False
                    self.stats["logprobs_refused"] += 1
                    log.warning("%s refused logprobs (%s): for the rest of this run each yes/no verdict is read from a short "
                                "generated answer (Yes: 1.0, No: 0.0), not a probability", self.base_url, _first_line(e.refusal.message))
                return None

    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]], on_item: OnItem | None, errors: dict[int, str] | None) -> list[list[float]]:
        async def main() -> list[list[float]]:
            client = self._client()
            extra = {"extra_body": self.extra_body} if self.extra_body else {}
            if self._probe_lock is None:
                self._probe_lock = asyncio.Lock()

            async def one(prefix: str, q: str) -> float:
                messages = [{"role": "user", "content": prefix + q}]
                response = await self._logprobs_call(client, messages, extra) if self.logprobs_accepted is not False else None
                p = self._yes_from_logprobs(response) if response is not None else None
                if p is None:
                    if response is not None and _thinks_first(response) and (_logprob_tokens(response) or response.choices[0].message.content):
                        # a reasoning model opens with <think>: a short answer would be thinking too (with no logprobs
                        # and no answer text, a reasoning parser may have filed the verdict apart: the short answer reads it)
                        self.stats["yes_no_thinking"] += 1
                        self.stats["yes_no_unparsed"] += 1
                        return UNPARSED
                    # no logprobs (refused, absent, or no Yes/No among them): read a short generated answer
                    self.stats["yes_no_fallback"] += 1
                    reply = await self._call(client, {"model": self.model, "messages": messages, "max_tokens": 8, "temperature": 0.0, **extra})
                    choice = reply.choices[0]
                    content, reasoning = choice.message.content, _reasoning_of(choice.message)
                    p = parse_verdict(content, reasoning, cut=choice.finish_reason == "length")
                    if p is not None and not (content or "").strip():
                        self.stats["yes_no_from_reasoning"] += 1
                    if p is None and _shows_reasoning(reply):
                        self.stats["yes_no_thinking"] += 1
                    elif p is None:  # text with no Yes/No and no reasoning: quoted in the error, never called thinking
                        self.note_unparsed_reply(content)
                if p is None:
                    self.stats["yes_no_unparsed"] += 1
                    return UNPARSED
                return p

            async def item(i: int, prefix: str, questions: list[str]) -> list[float]:
                try:
                    probs = await _gather_or_cancel([one(prefix, q) for q in questions])
                except RequestRefused as e:
                    if errors is None:
                        raise
                    errors[i] = str(e)
                    self.stats["refused"] += 1
                    probs = [UNPARSED] * len(questions)
                if on_item:
                    on_item(i)
                return probs

            return await _gather_or_cancel([item(i, prefix, qs) for i, (prefix, qs) in enumerate(items)])

        self.stats["yes_no_checks"] += sum(len(qs) for _, qs in items)
        return self._loop.run(main())

    @staticmethod
    def _yes_from_logprobs(response: Any) -> float | None:
        content = _logprob_tokens(response)
        if not content:
            return None
        first = content[0]
        pairs = [(t.token, t.logprob) for t in (first.top_logprobs or []) if t.logprob is not None]
        if not pairs and first.logprob is not None:
            pairs = [(first.token, first.logprob)]
        return yes_probability(pairs)

    def close(self) -> None:
        if self._http is not None:
            self._loop.run(self._http.close())
            self._http = None


def _logprob_tokens(response: Any) -> list:
    """The reply's per-token logprobs; empty when the server sent none."""
    logprobs = getattr(response.choices[0], "logprobs", None)
    return (getattr(logprobs, "content", None) if logprobs else None) or []


def _reasoning_of(message: Any) -> str | None:
    """What a reasoning parser filed apart: ``reasoning_content`` (vLLM, SGLang) or ``reasoning``."""
    extra = message.model_extra or {}
    value = extra.get("reasoning_content") or extra.get("reasoning")
    return value if isinstance(value, str) else None


def _thinks_first(response: Any) -> bool:
    """The first token opens a reasoning block (`<think>`), so no verdict comes in one token."""
    choice = response.choices[0]
    content = _logprob_tokens(response)
    first = content[0].token if content else (choice.message.content or "")
    return first.strip().startswith(("<think", "<|think", "<reasoning")) or bool(_reasoning_of(choice.message))


def _shows_reasoning(response: Any) -> bool:
    """The reply shows reasoning: it opens with one, holds a reasoning marker (<think>, </think>, ...) or
    came with reasoning_content. Only then is a missing verdict put down to thinking."""
    from autorule.data.reasoning import has_reasoning

    return _thinks_first(response) or has_reasoning(response.choices[0].message.content or "")


def _first_line(text: str, n: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= n else line[: n - 1] + "…"


def _status(e: Exception) -> str:
    return f"{e.status_code} {getattr(e, 'message', '')}".strip() if isinstance(e, openai.APIStatusError) else str(e)


def _refused(e: Exception) -> bool:
    """A connection refused outright (nothing listens there), as opposed to one dropped."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or "connection refused" in str(cause).lower() or "connect call failed" in str(cause).lower():
            return True
        cause = cause.__cause__ or cause.__context__
    return False
