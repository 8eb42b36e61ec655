"""The token budget of extraction's prompts: the model's context, where the number came
from, and what a server's refusal taught about it.

A request holds its prompt and its answer: the prompt may use the context less the
request's `max_tokens` and the chat template's reserve. Long texts in a prompt are cut in
their middle to fit (`autorule.llm.fitting`), the instructions never.
"""

from __future__ import annotations

from autorule.llm.fitting import DEFAULT_CONTEXT, Context, Fitted
from autorule.llm import LLM



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
