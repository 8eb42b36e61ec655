"""The token budget of extraction's prompts: the model's context, where the number came
from, and what a server's refusal taught about it.

A request holds its prompt and its answer: the prompt may use the context less the
request's `max_tokens` and the chat template's reserve. Long texts in a prompt are cut in
their middle to fit (`autorule.llm.fitting`), the instructions never.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autorule.llm.fitting import CHAT_TEMPLATE_RESERVE, DEFAULT_CONTEXT, Fitted, context_limit, fit_prompt
from autorule.llm import LLM

log = logging.getLogger("autorule.extract")


class Context:
    """A model's context in tokens, for fitting extraction prompts.

    Args:
        tokens: the context (prompt and answer together).
        source: where the number came from: "--max-input-tokens", "server", "model",
            "default" (nobody said), or "server error" (learned from a refusal).
        count_tokens: the model's token count of a text.

    Example:
        >>> ctx = Context(2000, "server", lambda s: len(s) // 4)
        >>> ctx.budget(1024)
        912
        >>> ctx.fit(lambda ts: "Explain:\\n" + ts[0], ["x" * 10_000], 1024).fits
        True
        >>> ctx.learn("This model's maximum context length is 1500 tokens."), ctx.tokens, ctx.source
        (True, 1500, 'server error')
    """

    def __init__(self, tokens: int, source: str, count_tokens: Callable[[str], int]):
        self.tokens, self.source, self.count_tokens = tokens, source, count_tokens
        self.learned: list[int] = []  # each smaller context a refusal named, in order

    def budget(self, max_tokens: int) -> int:
        """Prompt tokens a request with this `max_tokens` may hold."""
        return self.tokens - max_tokens - CHAT_TEMPLATE_RESERVE

    def fit(self, render: Callable[[list[str]], str], texts: list[str], max_tokens: int) -> Fitted:
        """`render(texts)` with the texts cut in their middle until prompt + answer fit."""
        return fit_prompt(render, texts, self.budget(max_tokens), self.count_tokens)

    def learn(self, message: str) -> bool:
        """Take a smaller context from a refusal that names one; True when it did (refit and retry)."""
        n = context_limit(message)
        if n is None or n >= self.tokens:
            return False
        log.warning("the server's context is %d tokens (from its refusal; %d assumed, from %s): prompts are fitted to it from now on", n, self.tokens, self.source)
        self.tokens, self.source = n, "server error"
        self.learned.append(n)
        return True

    def to_dict(self) -> dict:
        """What run.json records: the context used, its source, what was learned."""
        return {"tokens": self.tokens, "source": self.source, **({"learned": self.learned} if self.learned else {})}


def resolve_context(llm: LLM, max_input_tokens: int | None = None) -> Context:
    """The context extraction fits its prompts to: the flag, else what the server or model
    reports, else `DEFAULT_CONTEXT`.

    Args:
        llm: the model (behind the cache or not).
        max_input_tokens: the user's number (``--max-input-tokens``), when given.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> ctx = resolve_context(FakeLLM())
        >>> ctx.tokens, ctx.source
        (8192, 'default')
        >>> resolve_context(FakeLLM(), 4096).to_dict()
        {'tokens': 4096, 'source': '--max-input-tokens'}
    """
    if max_input_tokens:
        return Context(max_input_tokens, "--max-input-tokens", llm.count_tokens)
    backend = llm.backend
    reported = getattr(backend, "max_context", None)
    if reported:
        return Context(int(reported), "server" if hasattr(backend, "info") else "model", llm.count_tokens)
    return Context(DEFAULT_CONTEXT, "default", llm.count_tokens)


class DoesNotFit(Exception):
    """A prompt over its budget even with every text cut to the minimum: not sent."""


def check_fits(fitted: Fitted, context: Context, max_tokens: int) -> None:
    """Raise `DoesNotFit` (a reason a person can act on) when the prompt is still too long.

    Args:
        fitted: the fitted prompt.
        context: the context it was fitted to.
        max_tokens: the request's answer tokens.

    Example:
        >>> from autorule.llm.fitting import Fitted
        >>> check_fits(Fitted("x", tokens=900, fits=False), Context(1000, "server", len), 512)
        Traceback (most recent call last):
        ...
        autorule.extraction.context.DoesNotFit: the prompt needs 900 tokens even cut to the minimum; a context of 1000 tokens leaves it 424 (512 for the answer): raise --max-input-tokens or lower the answer's tokens
    """
    if not fitted.fits:
        raise DoesNotFit(
            f"the prompt needs {fitted.tokens} tokens even cut to the minimum; a context of {context.tokens} tokens leaves it "
            f"{context.budget(max_tokens)} ({max_tokens} for the answer): raise --max-input-tokens or lower the answer's tokens"
        )
