"""Stage 010: a reasoning model explains why the chosen conversation beat the rejected one."""

from __future__ import annotations

from pydantic import BaseModel

from autorule.data import Message, PreferencePair
from autorule.data.pairs import chosen_first
from autorule.llm.fitting import Fitted
from autorule.llm import ChatRequest, Completion
from autorule.extraction import prompt
from autorule.extraction.context import Context

TEMPLATE, TEMPLATE_VERSION = prompt("reasoning")


class Reasoning(BaseModel):
    """One pair's judgement: which side was shown as A, the trace and the explanation."""

    pair_id: str
    chosen_label: str  # "A" or "B": where the chosen conversation was shown
    reasoning: str | None  # the model's reasoning trace (reasoning_content or <think>)
    explanation: str  # the final answer text
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    omitted_chars: int = 0  # characters cut from the middle of long turns to fit the context


# max new tokens of one reasoning call (the run's and the command's default)
REASONING_TOKENS = 1024


def render_conversation(messages: list[Message]) -> str:
    """Every turn, whole, with role labels; multi-turn conversations are kept entire."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"[{names[m.role]}]\n{m.content}" for m in messages)


def chosen_label(pair: PreferencePair, seed: int) -> str:
    """A/B order per pair, randomised but reproducible: depends only on the seed and pair id."""
    return "A" if chosen_first(pair.id, seed) else "B"


def reasoning_request(pair: PreferencePair, seed: int, max_tokens: int, context: Context | None = None) -> tuple[ChatRequest, str, Fitted]:
    """The judgement prompt of one pair, its A/B label, and how it was fitted.

    With a `context`, the longest turns are cut in their middle until the prompt and
    `max_tokens` of answer fit it; the instructions are never cut.

    Args:
        pair: the preference pair.
        seed: the A/B order's seed.
        max_tokens: the answer's tokens.
        context: the model's context (None: the prompt is not fitted).

    Example:
        >>> from autorule.data import load_pairs
        >>> pair = load_pairs([{"prompt": "Fix my code.", "chosen": "Here: " + "x = 1\\n" * 3000 + "done.", "rejected": "No."}])[0]
        >>> request, label, fitted = reasoning_request(pair, 0, 512, Context(2048, "server", lambda s: len(s) // 3))
        >>> text = request.messages[0]["content"]
        >>> fitted.fits, fitted.tokens <= 2048 - 512 - 64, "characters omitted" in text, "Here: x = 1" in text, text.count("done.")
        (True, True, True, True, 1)
    """
    label = chosen_label(pair, seed)
    chosen, rejected = pair.conversation("chosen"), pair.conversation("rejected")
    a, b = (chosen, rejected) if label == "A" else (rejected, chosen)

    def render(texts: list[str]) -> str:
        turns = [Message(role=m.role, content=t) for m, t in zip([*a, *b], texts)]
        return TEMPLATE.substitute(winner=label, loser="B" if label == "A" else "A", conversation_a=render_conversation(turns[: len(a)]),
                                   conversation_b=render_conversation(turns[len(a) :]))

    texts = [m.content for m in [*a, *b]]
    fitted = context.fit(render, texts, max_tokens) if context is not None else Fitted(render(texts))
    request = ChatRequest([{"role": "user", "content": fitted.text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION)
    return request, label, fitted


def to_reasoning(pair: PreferencePair, label: str, c: Completion, omitted_chars: int = 0) -> Reasoning:
    return Reasoning(
        pair_id=pair.id,
        chosen_label=label,
        reasoning=c.reasoning,
        explanation=c.text,
        finish_reason=c.finish_reason,
        prompt_tokens=c.usage.prompt_tokens,
        completion_tokens=c.usage.completion_tokens,
        omitted_chars=omitted_chars,
    )
