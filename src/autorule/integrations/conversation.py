"""Turning trainers' prompt/completion shapes into chat messages.

Message content goes through `autorule.data.messages` (the one normaliser): null content,
content parts, tool calls and tool turns read the same here as in data files.
"""

from __future__ import annotations

from typing import Any

from autorule.data.messages import Message, MessageError, normalise_messages


def to_messages(prompt: Any) -> list[Message]:
    """A prompt as TRL, verl or OpenRLHF pass it: text, or a list of chat messages.

    Args:
        prompt: None (no prompt), text (one user turn), or chat messages in any shape
            `autorule.data.messages.normalise_message` reads (tool turns are kept).

    Raises:
        MessageError: a message it cannot read.

    Example:
        >>> [(m.role, m.content) for m in to_messages([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}])]
        [('user', '[image]\\nDescribe it.')]
    """
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [Message(role="user", content=prompt)] if prompt else []
    return normalise_messages(prompt)


def completion_turns(completion: Any) -> list[Message]:
    """A completion's turns, ending with the response to judge.

    A text completion is one assistant turn. A conversational one (TRL: a list of
    messages, possibly assistant tool calls and tool results before the final answer)
    keeps its turns; when it does not end with an assistant turn (a tool loop stopped
    before the policy answered), an empty assistant turn is the response: there is no answer.

    Args:
        completion: text, or chat messages.

    Raises:
        MessageError: a message it cannot read, or a completion that is neither.

    Example:
        >>> [(m.role, m.content) for m in completion_turns([{"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "content": "1"}])]
        [('assistant', '[tool call] f({})'), ('tool', '1'), ('assistant', '')]
    """
    if isinstance(completion, str):
        return [Message(role="assistant", content=completion)]
    if completion is None:
        raise MessageError("the completion is None: expected text or a list of chat messages")
    turns = normalise_messages(completion)
    if not turns or turns[-1].role != "assistant":
        turns.append(Message(role="assistant", content=""))
    return turns


def completion_text(completion: Any) -> str:
    """A completion's final response as text: a string, or TRL's conversational [{"role": "assistant", ...}].

    Args:
        completion: as for `completion_turns`.

    Example:
        >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]}])
        'Hi!'
    """
    return completion_turns(completion)[-1].content


def conversation(prompt: Any, completion: Any) -> list[Message]:
    """The conversation a reward judges: the prompt's turns, then the completion's.

    Args:
        prompt: as for `to_messages`; completion: as for `completion_turns`.

    Raises:
        MessageError: a message it cannot read.

    Example:
        >>> [(m.role, m.content) for m in conversation("Say hi.", [{"role": "assistant", "content": "Hi!"}])]
        [('user', 'Say hi.'), ('assistant', 'Hi!')]
    """
    return [*to_messages(prompt), *completion_turns(completion)]
