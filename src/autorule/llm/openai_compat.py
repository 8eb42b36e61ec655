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

Yes/no checks go one of two ways, chosen once per backend (`yes_no_modes`) and recorded
(`yes_no_mode`): **batched**, one ``/v1/completions`` request per conversation carrying
every rule's prompt, rendered with the chat template on the client (vLLM, SGLang,
llama-server), through a light httpx client with orjson; or **chat**, one chat request per
check, for servers that offer no template or no completions. Both share the retries,
overload handling, refusals and fallbacks below.

A spec may name several replicas of one model (``openai:MODEL@URL1,URL2``): requests are
routed by affinity (`replicas.ReplicaSet`), each replica has its own concurrency limit,
and a replica that stops answering is left out for a while (``stats["replica_down"]``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import openai
import orjson
from tqdm.auto import tqdm

from autorule.llm.base import (
    LLM,
    UNPARSED,
    ChatRequest,
    Completion,
    LLMError,
    OnItem,
    OnResult,
    RequestRefused,
    Usage,
    parse_verdict,
    split_reasoning,
    yes_probability,
)
from autorule.llm.refusals import (
    LogprobsRefusal,
    body_message,
    body_text,
    is_key_problem,
    logprobs_refusal,
)
from autorule.llm.replicas import DEFAULT_COOLDOWN, Replica, ReplicaSet
from autorule.llm.serverinfo import ServerInfo, probe
from autorule.llm.specs import OPENAI_EXAMPLE, ModelSpec, SpecError, parse_spec
from autorule.llm.yes_no_modes import (
    YesNoMode,
    choice_thinks_first,
    choice_yes_pairs,
    detect_mode,
    merged_replies,
    score_yes_probability,
)

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
# prompts in one batched request: conversations with few rules share one, up to this many prompts
CHUNK_PROMPTS = 64


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
        base_url: str | list[str],
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
        yes_no_mode: str = "auto",
        chat_template: str | None = None,
        replica_cooldown: float = DEFAULT_COOLDOWN,
        batch_prompts: int = CHUNK_PROMPTS,
    ):
        """
        Args:
            model: the model name sent with every request.
            base_url: the server's OpenAI-compatible root, e.g. ``http://127.0.0.1:8080/v1``;
                a list (or comma-separated) names replicas of one model, routed by affinity.
            api_key: bearer key (default: ``$OPENAI_API_KEY``).
            concurrency: most requests in flight per replica; None: the server's slot count
                where it reports one (llama-server), else 16. Lowered on overload, regained slowly.
            timeout: seconds per request, including time queued in the server (default 600).
            max_retries: retries of a transient fault (429, 5xx, timeout, dropped connection).
            extra_body: JSON fields sent with every request, e.g.
                ``{"chat_template_kwargs": {"enable_thinking": False}}`` for Qwen3 on vLLM.
            max_input_tokens: the prompt budget of one request; None: the server's context
                per slot where it reports one, else 8192.
            yes_no_mode: "auto" (batched where the server allows it, else chat), "batched"
                (an error where it cannot run) or "chat" (one chat request per check).
            chat_template: a tokenizer (hub id or directory) whose chat template renders
                batched prompts, for servers that do not render it for the client.
            replica_cooldown: seconds a replica that stopped answering is left out.
            batch_prompts: most prompts in one batched request: conversations with fewer checks
                share a request (1: one request per conversation).

        Example:
            >>> llm = OpenAICompatLLM("local", "http://127.0.0.1:9/v1", concurrency=4, extra_body={"top_k": 1})
            >>> llm.spec, llm.extra_body
            ('openai:local@http://127.0.0.1:9/v1', {'top_k': 1})
            >>> OpenAICompatLLM("local", "http://a:8000/v1,http://b:8000/v1").base_urls
            ['http://a:8000/v1', 'http://b:8000/v1']
        """
        super().__init__()
        urls = [u.strip() for u in (base_url.split(",") if isinstance(base_url, str) else base_url) if u.strip()]
        if yes_no_mode not in ("auto", "batched", "chat"):
            raise ValueError(f"yes_no_mode must be auto, batched or chat, not {yes_no_mode!r}")
        self.model, self.base_urls = model, urls
        self.base_url = ",".join(urls)  # what messages name: every replica
        self.spec = f"openai:{model}@{self.base_url}"
        # no key: the placeholder local servers (vLLM, SGLang, llama-server) accept; a 401 then says none was given
        self.key_given = bool(api_key or os.environ.get("OPENAI_API_KEY"))
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
        self._concurrency = concurrency
        self.timeout = timeout or DEFAULT_TIMEOUT
        self._max_input_tokens = max_input_tokens
        self._info: ServerInfo | None = None
        self.info_url = urls[0]  # the replica that answered the probe
        self.replicas = ReplicaSet(urls, cooldown=replica_cooldown)
        self.max_retries = max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.top_logprobs = top_logprobs
        # None until the first yes/no request says whether the server takes `logprobs`
        self.logprobs_accepted: bool | None = None
        self._probe_lock: asyncio.Lock | None = None
        self.extra_body = extra_body or {}
        self.requested_mode, self.chat_template = yes_no_mode, chat_template
        self.batch_prompts = max(1, batch_prompts)
        self._mode: YesNoMode | None = None
        self._loop = _LoopThread()
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_spec(cls, spec: str | ModelSpec, **kwargs) -> OpenAICompatLLM:
        """The backend for an ``openai:MODEL@BASE_URL`` spec (``@URL1,URL2`` for replicas); `kwargs` as for the constructor.

        Raises:
            SpecError: `spec` is not of that form.
        """
        parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
        if parsed.kind != "openai":
            raise SpecError(f"not a server spec: {parsed.text!r}; write openai:MODEL@BASE_URL, e.g. {OPENAI_EXAMPLE}")
        return cls(parsed.model, parsed.base_url, **kwargs)

    @property
    def info(self) -> ServerInfo:
        """What the server reports about itself, asked once (a few quick GETs; the first replica that answers)."""
        if self._info is None:
            for url in self.base_urls:
                self._info, self.info_url = probe(url, self.api_key, self.model), url
                if self._info.served:
                    break
        return self._info  # type: ignore[return-value]

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
        """Requests in flight per replica (the setting, else the server's slots, else 16)."""
        if self._concurrency is not None:
            return self._concurrency
        return self.info.slots or DEFAULT_CONCURRENCY

    @property
    def max_context(self) -> int | None:
        """Prompt tokens one request may hold: the flag, else the server's context per slot."""
        return self._max_input_tokens or self.info.context

    @property
    def yes_no_mode(self) -> YesNoMode:
        """How yes/no checks are sent, decided once (the server is asked; see `yes_no_modes.detect_mode`)."""
        if self._mode is None:
            self._mode = detect_mode(self)
            log.info("%s: yes/no checks: %s", self.base_url, self._mode.describe())
        return self._mode

    @property
    def yes_no_record(self) -> dict:
        """The yes/no mode for run records; ``{"mode": "not yet decided", ...}`` before the first check."""
        return self._mode.to_dict() if self._mode else {"mode": "not yet decided", "reason": "no yes/no check sent yet", "template": None}

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the server's own tokenizer where it has one (llama-server, vLLM)."""
        n = self.info.count_tokens(text) if self.info.can_tokenize else None
        return n if n is not None else super().count_tokens(text)

    def _limiter(self, replica: Replica) -> AdaptiveLimit:
        if replica.limit is None:
            replica.limit = AdaptiveLimit(self.concurrency)
        return replica.limit

    def _client(self, replica: Replica) -> openai.AsyncOpenAI:
        """The replica's chat client (the openai SDK), made on the backend's loop the first time it is needed."""
        client = replica.clients.get("chat")
        if client is None:
            # our own retry loop (counted, covers malformed replies); the client's is off
            client = replica.clients["chat"] = openai.AsyncOpenAI(
                base_url=replica.url, api_key=self.api_key, max_retries=0, timeout=self.timeout, http_client=self._light())
        return client

    def _light(self) -> httpx.AsyncClient:
        """The one keep-alive HTTP client of the backend (the batched path uses it directly)."""
        if self._http is None:
            connections = self.concurrency * len(self.replicas) * 2 + 4
            self._http = httpx.AsyncClient(timeout=self.timeout, limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections))
        return self._http

    async def _post(self, replica: Replica, path: str, body: dict) -> dict:
        """POST JSON to a replica and parse the reply; faults raised as the openai SDK's errors,
        so that one classification (retry, overload, refusal) serves both paths."""
        url = replica.url.rstrip("/") + path
        try:
            r = await self._light().post(url, content=orjson.dumps(body), headers=self._headers)
        except httpx.TimeoutException as e:
            raise openai.APITimeoutError(request=_request_of(e, url)) from e
        except httpx.TransportError as e:
            raise openai.APIConnectionError(message=f"{type(e).__name__}: {e}", request=_request_of(e, url)) from e
        if r.status_code >= 400:
            try:
                error_body: Any = orjson.loads(r.content)
            except orjson.JSONDecodeError:
                error_body = r.text
            detail = error_body.get("error", error_body) if isinstance(error_body, dict) else error_body
            raise openai.APIStatusError(f"Error code: {r.status_code} - {error_body}", response=r, body=detail)
        reply = merged_replies(orjson.loads(r.content))
        if not isinstance(reply, dict):
            raise MalformedReply("reply is not a JSON object")
        return reply

    async def _rows(self, replica: Replica, path: str, body: dict, field: str, n: int) -> list:
        """The reply's `field` list (``choices``, ``scores``), one row per prompt sent; a reply with another count is malformed (retried)."""
        rows = (await self._post(replica, path, body)).get(field)
        if not isinstance(rows, list) or len(rows) != n:
            raise MalformedReply(f"{path} reply has {len(rows) if isinstance(rows, list) else 'no'} {field} for {n} prompts")
        return rows

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

    async def _call(self, send: Callable[[Replica], Awaitable[T]], key: str | None = None, top_logprobs: int | None = None) -> T:
        """`send(replica)` with retries, overload pacing and fail-over; `key` routes it (affinity),
        `top_logprobs` is what it asked for when it asks for logprobs (their refusal is raised as `LogprobsRefused`)."""
        attempt = 0  # transient faults so far; overloads are paced by the limit instead
        overloaded_at_one = 0
        while True:
            replica = self.replicas.pick(key)
            limit = self._limiter(replica)
            replica.assigned += 1
            try:
                epoch, granted = await limit.acquire()
            except BaseException:  # cancelled while waiting for a place
                replica.assigned -= 1
                raise
            self.stats["requests"] += 1
            replica.requests += 1
            # the place is held through a retry's backoff (released in `finally`), so a server in trouble gets fewer requests
            try:
                result = await send(replica)
                limit.success()
                return result
            except Exception as e:  # classified below; unknown errors propagate
                if top_logprobs is not None and isinstance(e, openai.APIStatusError):
                    refusal = logprobs_refusal(e.status_code, f"{body_text(e.body)} {e.message}", top_logprobs)
                    if refusal is not None:
                        raise LogprobsRefused(refusal) from e
                if is_overload(e):
                    self.stats["overload"] += 1
                    limit.overload(epoch)
                    self.stats["concurrency_min"] = min(self.stats.get("concurrency_min", granted), limit.limit)
                    overloaded_at_one = overloaded_at_one + 1 if granted == 1 else 0
                    if overloaded_at_one >= OVERLOAD_GIVE_UP:
                        raise LLMError(
                            f"{replica.url} is overloaded even with one request at a time ({_status(e)}): one request needs more "
                            "than the server has. Start the server with more context per slot (llama-server: a larger -c, or fewer "
                            "slots with -np), or ask for fewer tokens per request; --concurrency sets how many run at once"
                        ) from e
                    await asyncio.sleep(random.uniform(0.05, 0.5) * self.backoff_base)
                    continue
                kind = self._fault_kind(e)
                if kind is None:
                    raise self._refusal(e) from e
                if kind in ("connection", "timeout") and len(self.replicas) > 1:
                    # a replica that stops answering is left out for a while; its requests go to the others
                    downs = replica.downs
                    another = self.replicas.mark_down(replica, f"{kind}: {_first_line(str(e), 120)}")
                    self.stats["replica_down"] += replica.downs - downs
                    if another:
                        self.stats[f"fault_{kind}"] += 1
                        self.stats["rerouted"] += 1
                        continue
                if kind == "connection" and _refused(e):
                    where = "any of " + self.base_url if len(self.replicas) > 1 else replica.url
                    raise LLMError(f"cannot connect to {where}: connection refused. Is the server running, and at that address and port?") from e
                self.stats[f"fault_{kind}"] += 1
                if attempt == self.max_retries:
                    hint = f" (each request may take up to --timeout {self.timeout:g} s; a CPU server may need longer, or a lower --concurrency)" if kind == "timeout" else ""
                    raise LLMError(f"{replica.url}: gave up after {attempt + 1} attempts; last fault: {kind}: {e}{hint}") from e
                self.stats["retries"] += 1
                await asyncio.sleep(self._delay(attempt, e))
                attempt += 1
            finally:
                await limit.release()
                replica.assigned -= 1

    def _refusal(self, e: Exception) -> Exception:
        """The error for a fault retrying cannot fix."""
        if isinstance(e, openai.APIStatusError):
            url = getattr(getattr(e, "request", None), "url", None)
            where = self.base_url if len(self.replicas) == 1 or url is None else _replica_of(str(url), self.base_urls)
            message = body_message(e.body) or e.message
            if is_key_problem(e.status_code, message):
                if not self.key_given:
                    return LLMError(f"{where} wants an API key ({e.status_code}) and none was given: pass --api-key or set OPENAI_API_KEY")
                return LLMError(f"{where} refused the API key ({e.status_code}: {message}): check --api-key or OPENAI_API_KEY")
            if e.status_code in (401, 403):  # the body names another cause: the server's words, not a guess about the key
                return LLMError(f"{where} refused the request ({e.status_code}): {message}")
            return RequestRefused(f"{where} refused the request ({e.status_code}): {message}")
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

    def _chat(self, params: dict) -> Callable[[Replica], Awaitable[Any]]:
        """One chat request through the openai SDK, to whichever replica `_call` picks."""

        async def send(replica: Replica) -> Any:
            response = await self._client(replica).chat.completions.create(**params)
            if not getattr(response, "choices", None):
                raise MalformedReply("reply has no choices")
            if response.choices[0].message is None:
                raise MalformedReply("reply has no message")
            return response

        return send

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
            bar = tqdm(total=len(requests), desc=desc, disable=desc is None, unit="req")

            async def one(i: int, r: ChatRequest) -> Completion:
                c = self._completion(await self._call(self._chat(self._params(r))))
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

    async def _logprobs_call(self, send: Callable[[int], Callable[[Replica], Awaitable[T]]], key: str | None) -> T | None:
        """A one-token request with logprobs (`send(top_logprobs)` makes it); None when the server
        does not take logprobs.

        Until the server has answered one such request, they go one at a time (the rest
        wait), so a server that refuses logprobs is met once, not once per request in flight.
        """
        if self.logprobs_accepted is None:
            async with self._probe_lock:  # type: ignore[union-attr]
                if self.logprobs_accepted is None:
                    response = await self._ask_logprobs(send, key)
                    if self.logprobs_accepted is None:
                        self.logprobs_accepted = True
                    return response
        return await self._ask_logprobs(send, key) if self.logprobs_accepted else None

    async def _ask_logprobs(self, send: Callable[[int], Callable[[Replica], Awaitable[T]]], key: str | None) -> T | None:
        while True:
            try:
                return await self._call(send(self.top_logprobs), key, top_logprobs=self.top_logprobs)
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

    async def _short_answer(self, messages: list[dict], key: str | None, extra: dict) -> float:
        """A verdict read from a short generated answer (no logprobs, or none with Yes/No); NaN when none is readable."""
        self.stats["yes_no_fallback"] += 1
        reply = await self._call(self._chat({"model": self.model, "messages": messages, "max_tokens": 8, "temperature": 0.0, **extra}), key)
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

    async def _chat_check(self, prefix: str, q: str, key: str | None, extra: dict) -> float:
        """One check as one chat request (the chat mode, and the batched mode's fallback)."""
        messages = [{"role": "user", "content": prefix + q}]

        def send(top: int) -> Callable[[Replica], Awaitable[Any]]:
            return self._chat({"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": top, **extra})

        response = await self._logprobs_call(send, key) if self.logprobs_accepted is not False else None
        p = self._yes_from_logprobs(response) if response is not None else None
        if p is not None:
            return p
        if response is not None and _thinks_first(response) and (_logprob_tokens(response) or response.choices[0].message.content):
            # a reasoning model opens with <think>: a short answer would be thinking too (with no logprobs
            # and no answer text, a reasoning parser may have filed the verdict apart: the short answer reads it)
            self.stats["yes_no_thinking"] += 1
            self.stats["yes_no_unparsed"] += 1
            return UNPARSED
        # no logprobs (refused, absent, or no Yes/No among them): read a short generated answer
        return await self._short_answer(messages, key, extra)

    async def _batched_checks(self, mode: YesNoMode, group: list[tuple[str, list[str]]], key: str | None, extra: dict) -> list[list[float]]:
        """Every question of one or more conversations in one ``/v1/completions`` request (the batched mode)."""
        prompts = [mode.template.render(prefix + q) for prefix, qs in group for q in qs]  # type: ignore[union-attr]

        def send(top: int) -> Callable[[Replica], Awaitable[list]]:
            body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0, "logprobs": top, **self.extra_body}
            if mode.logprob_token_ids:  # vLLM: the Yes/No ids are returned whatever their rank
                body["logprob_token_ids"] = mode.logprob_token_ids

            async def post(replica: Replica) -> list:
                # llama-server spreads a request's prompts over its slots, and each slot would read the conversation
                # again: the request is pinned to one free slot, where each prompt finds the one before it cached
                slot = replica.take_slot(mode.slots) if mode.slots else None
                try:
                    return await self._rows(replica, "/completions", body if slot is None else {**body, "id_slot": slot}, "choices", len(prompts))
                finally:
                    replica.free_slot(slot)

            return post

        rows = await self._logprobs_call(send, key) if self.logprobs_accepted is not False else None
        out: list[list[float]] = []
        # choices carry their prompt's index (vLLM and SGLang may answer out of order)
        choices = iter(sorted(rows, key=lambda c: c.get("index", 0) if isinstance(c, dict) else 0)) if rows is not None else None
        for prefix, questions in group:
            probs = []
            for q in questions:
                if choices is None:  # logprobs refused: every check reads a short answer
                    probs.append(await self._short_answer([{"role": "user", "content": prefix + q}], key, extra))
                    continue
                choice = next(choices)
                pairs = choice_yes_pairs(choice) if isinstance(choice, dict) else None
                p = yes_probability(pairs) if pairs else None
                if p is None and pairs is not None and choice_thinks_first(choice):
                    self.stats["yes_no_thinking"] += 1
                    self.stats["yes_no_unparsed"] += 1
                    p = UNPARSED
                elif p is None:
                    p = await self._short_answer([{"role": "user", "content": prefix + q}], key, extra)
                probs.append(p)
            out.append(probs)
        return out

    def _chunks(self, items: list[tuple[str, list[str]]], keys: list[str]) -> list[list[int]]:
        """Items grouped into batched requests: by their replica (affinity kept), in order, up to `batch_prompts`
        prompts a request (an item with more goes alone): conversations with few rules share a request."""
        homes: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            homes.setdefault(id(self.replicas.order(key)[0]) if len(self.replicas) > 1 else 0, []).append(i)
        chunks: list[list[int]] = []
        for members in homes.values():
            current, prompts = [], 0
            for i in members:
                k = len(items[i][1])
                if current and prompts + k > self.batch_prompts:
                    chunks.append(current)
                    current, prompts = [], 0
                current.append(i)
                prompts += k
            if current:
                chunks.append(current)
        return chunks

    async def _scored_checks(self, mode: YesNoMode, prefix: str, questions: list[str], key: str | None, extra: dict) -> list[float]:
        """Every question of one conversation in one SGLang ``/v1/score`` request (the score mode): the conversation
        is the query, each question an item, Yes and No the labels; a row with too little on Yes and No reads a short answer."""
        template = mode.template
        trims = template.trims  # type: ignore[union-attr]
        body = {"model": self.model, "query": template.head + (prefix.lstrip() if trims else prefix),  # type: ignore[union-attr]
                "items": [(q.rstrip() if trims else q) + template.tail for q in questions], "label_token_ids": list(mode.label_ids),  # type: ignore[union-attr, arg-type]
                "apply_softmax": False}

        rows = await self._call(lambda replica: self._rows(replica, "/score", body, "scores", len(questions)), key)
        out = []
        for q, row in zip(questions, rows):
            p = score_yes_probability(row)
            out.append(p if p is not None else await self._short_answer([{"role": "user", "content": prefix + q}], key, extra))
        return out

    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]], on_item: OnItem | None, errors: dict[int, str] | None,
                            keys: list[str] | None = None) -> list[list[float]]:
        mode = self.yes_no_mode  # decided here, in the caller's thread: it asks the server (sync) once

        async def main() -> list[list[float]]:
            extra = {"extra_body": self.extra_body} if self.extra_body else {}
            if self._probe_lock is None:
                self._probe_lock = asyncio.Lock()

            affinity = keys or [prefix for prefix, _ in items]

            def refused(i: int, e: RequestRefused) -> list[float]:
                if errors is None:
                    raise e
                errors[i] = str(e)
                self.stats["refused"] += 1
                return [UNPARSED] * len(items[i][1])

            async def item(i: int, prefix: str, questions: list[str]) -> list[float]:
                try:
                    if mode.score:
                        probs = await self._scored_checks(mode, prefix, questions, affinity[i], extra)
                    else:
                        probs = await _gather_or_cancel([self._chat_check(prefix, q, affinity[i], extra) for q in questions])
                except RequestRefused as e:
                    probs = refused(i, e)
                if on_item:
                    on_item(i)
                return probs

            if not mode.batched:
                return await _gather_or_cancel([item(i, prefix, qs) for i, (prefix, qs) in enumerate(items)])

            out: list[list[float]] = [[] for _ in items]

            async def chunk(members: list[int]) -> None:
                try:
                    rows = await self._batched_checks(mode, [items[i] for i in members], affinity[members[0]], extra)
                except RequestRefused as e:
                    if len(members) > 1:  # one conversation may be at fault (too long, say): each asked alone
                        self.stats["batches_split"] += 1
                        await _gather_or_cancel([chunk([i]) for i in members])
                        return
                    rows = [refused(members[0], e)]
                for i, probs in zip(members, rows):
                    out[i] = probs
                    if on_item:
                        on_item(i)

            await _gather_or_cancel([chunk(c) for c in self._chunks(items, affinity)])
            return out

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
            self._loop.run(self._http.aclose())
            self._http = None
            for replica in self.replicas:
                replica.clients.clear()


def _request_of(e: httpx.HTTPError, url: str) -> httpx.Request:
    try:
        return e.request
    except RuntimeError:  # raised outside a request
        return httpx.Request("POST", url)


def _replica_of(url: str, base_urls: list[str]) -> str:
    return next((b for b in base_urls if url.startswith(b.rstrip("/"))), url)


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
