"""Stage 010: a reasoning model explains why the chosen conversation beat the rejected one."""

from __future__ import annotations

import random

from pydantic import BaseModel

from ..data import Message, PreferencePair
from ..llm import ChatRequest, Completion
from . import prompt

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


def render_conversation(messages: list[Message]) -> str:
    """Every turn, whole, with role labels; multi-turn conversations are kept entire."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"[{names[m.role]}]\n{m.content}" for m in messages)


def chosen_label(pair: PreferencePair, seed: int) -> str:
    """A/B order per pair, randomised but reproducible: depends only on the seed and pair id."""
    return "A" if random.Random(f"{seed}:{pair.id}").random() < 0.5 else "B"


def reasoning_request(pair: PreferencePair, seed: int, max_tokens: int) -> tuple[ChatRequest, str]:
    label = chosen_label(pair, seed)
    chosen, rejected = render_conversation(pair.conversation("chosen")), render_conversation(pair.conversation("rejected"))
    a, b = (chosen, rejected) if label == "A" else (rejected, chosen)
    text = TEMPLATE.substitute(winner=label, loser="B" if label == "A" else "A", conversation_a=a, conversation_b=b)
    return ChatRequest([{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION), label


def to_reasoning(pair: PreferencePair, label: str, c: Completion) -> Reasoning:
    return Reasoning(
        pair_id=pair.id,
        chosen_label=label,
        reasoning=c.reasoning,
        explanation=c.text,
        finish_reason=c.finish_reason,
        prompt_tokens=c.usage.prompt_tokens,
        completion_tokens=c.usage.completion_tokens,
    )
