"""Prompts fitted into a model's context: long texts are cut in their middle, instructions never.

Shared by the verifier (a conversation under its instructions and rule) and extraction
(two conversations under the reasoning instructions; a justification under the rule
prompt). The beginning and the end of every text survive: a user's request, a reply's
conclusion, the first and last lines of a code block.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from autorule.data import Message

OMITTED = "\n[... {n} characters omitted ...]\n"
# tokens the chat template adds around the user message (role tags, a default system prompt)
CHAT_TEMPLATE_RESERVE = 64
# a model's context in tokens when neither the server nor the user says
DEFAULT_CONTEXT = 8192
# a text is never cut below this many characters (plus the marker)
MIN_KEEP = 64


def _cut(text: str, keep: int) -> tuple[str, int]:
    """`text` cut to about `keep` characters, marker included; (result, characters omitted)."""
    if len(text) <= keep:
        return text, 0
    marker = OMITTED.format(n=len(text) - keep)
    head = max(0, (keep - len(marker)) // 2)
    tail = max(0, keep - len(marker) - head)
    omitted = len(text) - head - tail
    return text[:head] + OMITTED.format(n=omitted) + (text[-tail:] if tail else ""), omitted


def truncate_middle(text: str, keep: int) -> str:
    """`text` cut to about `keep` characters: its head and tail, and a marker saying how much went.

    Args:
        text: any text.
        keep: about how many characters to keep, the marker included.

    Example:
        >>> truncate_middle("BEGIN " + "x" * 200 + " END", 70)
        'BEGIN xxxxxxxxxxxx\\n[... 174 characters omitted ...]\\nxxxxxxxxxxxxxx END'
    """
    return _cut(text, keep)[0]


def fit_texts(texts: list[str], max_chars: int) -> tuple[list[str], list[int]]:
    """Cut the longest texts from their middle until together they hold at most `max_chars`.

    A text is cut again from its original, so it carries one marker with the exact count.
    No text is cut below `MIN_KEEP` characters: when that is not enough the result is
    longer than `max_chars` (the caller checks).

    Args:
        texts: the texts that may be cut (turns, replies, a justification).
        max_chars: their largest total length.

    Returns:
        (the texts, characters omitted from each).

    Example:
        >>> cut, omitted = fit_texts(["short question", "A" * 300 + "Z" * 300], 200)
        >>> omitted, cut[0], cut[1][:3], cut[1][-3:]
        ([0, 490], 'short question', 'AAA', 'ZZZ')
    """
    out, omitted = list(texts), [0] * len(texts)
    while sum(len(c) for c in out) > max_chars:
        excess = sum(len(c) for c in out) - max_chars
        i = max(range(len(out)), key=lambda j: len(out[j]))
        keep = max(len(out[i]) - excess - len(OMITTED) - 8, MIN_KEEP)
        if keep >= len(out[i]) - len(OMITTED):  # nothing left worth cutting
            break
        out[i], omitted[i] = _cut(texts[i], keep)
    return out, omitted


def fit_messages(messages: list[Message], max_chars: int) -> list[Message]:
    """Shorten the longest turns from their middle until the whole fits `max_chars`.

    Beginnings and ends of every turn survive (the user's request, the response's
    conclusion); whatever is around the turns (instructions, rule, answer cue) is the
    caller's and never touched.

    Args:
        messages: the conversation.
        max_chars: the most characters its turns may hold together.

    Example:
        >>> turns = fit_messages([Message(role="user", content="Hi"), Message(role="assistant", content="a" * 500)], 150)
        >>> [len(m.content) for m in turns]
        [2, 106]
    """
    cut, _ = fit_texts([m.content for m in messages], max_chars)
    return [Message(role=m.role, content=c) for m, c in zip(messages, cut)]


@dataclass
class Fitted:
    """A prompt fitted to a token budget.

    Args:
        text: the rendered prompt.
        omitted: characters cut out of the texts it holds (0: nothing was cut).
        tokens: its tokens where they were counted (None: short enough not to count).
        fits: False when even cut to the minimum it is over the budget.
    """

    text: str
    omitted: int = 0
    tokens: int | None = None
    fits: bool = True


def fit_prompt(render: Callable[[list[str]], str], texts: list[str], budget: int, count_tokens: Callable[[str], int]) -> Fitted:
    """`render(texts)`, with the texts cut in their middle until it holds at most `budget` tokens.

    Only the texts are cut; what `render` puts around them (instructions) stays whole.

    Args:
        render: builds the prompt from the texts.
        texts: what may be cut (conversation turns, a justification).
        budget: the most tokens the prompt may hold.
        count_tokens: the model's token count of a text.

    Example:
        >>> render = lambda ts: "Judge this reply:\\n" + ts[0]
        >>> fitted = fit_prompt(render, ["start " + "filler " * 400 + "end"], 100, lambda s: len(s) // 4)
        >>> fitted.text.startswith("Judge this reply:\\nstart"), fitted.text.endswith("end"), fitted.fits, fitted.tokens <= 100
        (True, True, True, True)
    """
    text = render(texts)
    if len(text) <= budget:  # a token is at least a character: it fits, no need to count
        return Fitted(text)
    max_chars = sum(len(t) for t in texts)
    omitted = 0
    for _ in range(8):
        tokens = count_tokens(text)
        if tokens <= budget:
            return Fitted(text, omitted, tokens)
        max_chars = int(max_chars * budget / tokens * 0.95)
        cut, each = fit_texts(texts, max_chars)
        text, omitted = render(cut), sum(each)
    tokens = count_tokens(text)
    return Fitted(text, omitted, tokens, tokens <= budget)


# how servers word "your request is longer than my context" (vLLM / OpenAI, SGLang, llama-server, TGI)
_CONTEXT_LIMIT = [
    re.compile(r"maximum context length is (\d+) tokens", re.IGNORECASE),
    re.compile(r"model's context length \((\d+) tokens?\)", re.IGNORECASE),
    re.compile(r"available context size \((\d+) tokens?\)", re.IGNORECASE),
    re.compile(r"max_new_tokens` must be <= (\d+)", re.IGNORECASE),
]


def context_limit(message: str) -> int | None:
    """The context size a server's refusal names ("maximum context length is N tokens"), or None.

    Args:
        message: the error text (status and body) of a refused request.

    Example:
        >>> context_limit("400 - {'message': \\"This model's maximum context length is 2000 tokens. However, you requested 12730 tokens\\"}")
        2000
        >>> context_limit("The input (12730 tokens) is longer than the model's context length (4096 tokens).")
        4096
        >>> context_limit("Logprobs is not enabled for this model") is None
        True
    """
    for pattern in _CONTEXT_LIMIT:
        m = pattern.search(message)
        if m:
            return int(m.group(1))
    return None


log = logging.getLogger("autorule.fitting")


class Context:
    """A model's context in tokens, for fitting prompts (extraction's and the verifier's).

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
