"""Turning trainers' prompt/completion shapes into chat messages."""

from __future__ import annotations

from typing import Any

from ..data import Message


def to_messages(prompt: Any) -> list[Message]:
    """A prompt as TRL, verl or OpenRLHF pass it: text, or a list of chat messages."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [Message(role="user", content=prompt)] if prompt else []
    return [Message(role=m["role"], content=m["content"]) for m in prompt if m.get("role") in ("system", "user", "assistant")]


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or TRL's conversational [{"role": "assistant", ...}]."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def conversation(prompt: Any, completion: Any) -> list[Message]:
    return [*to_messages(prompt), Message(role="assistant", content=completion_text(completion))]
