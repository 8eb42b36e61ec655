"""Chat messages as trainers and APIs send them, read into plain-text turns: the one normaliser.

Data loading, `to_conversation` (score, verify, the Python API) and the TRL, verl and
OpenRLHF adapters all read message content here, so every entry point accepts the same
shapes and refuses the same malformed ones with the same words:

- ``content: null`` (an assistant turn that only calls tools) is empty text;
- a list of content parts (OpenAI, vision-language prompts) is its text parts joined by
  newlines; a media part becomes a short placeholder (``[image]``, ``[audio]``, ...);
- an assistant turn's ``tool_calls`` (and the older ``function_call``) become one line each,
  ``[tool call] name(arguments)``, after its text;
- roles: ``developer`` (OpenAI) is read as ``system``; ``function`` (OpenAI's older tool
  role) and ``ipython`` (Llama 3's) as ``tool``; ``model`` (Gemma) as ``assistant``.
  ``tool`` turns are kept as context.

Anything else raises `MessageError`, a ValueError that names the message and what is wrong.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from autorule.display import clip
from autorule.errors import InputError

Role = Literal["system", "user", "assistant", "tool"]
ROLES = ("system", "user", "assistant", "tool")
# other names APIs and chat templates use for the same roles
ROLE_ALIASES = {"developer": "system", "function": "tool", "ipython": "tool", "model": "assistant"}
# content-part types that hold text, and the key the text is under
TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
# media parts: the verifier reads text, so each becomes a placeholder that says what was there
MEDIA_PARTS = {
    "image": "[image]", "image_url": "[image]", "input_image": "[image]",
    "audio": "[audio]", "input_audio": "[audio]",
    "video": "[video]", "video_url": "[video]",
    "file": "[file]", "input_file": "[file]",
}
TOOL_CALL = "[tool call] {name}({arguments})"


class Message(BaseModel):
    """One chat turn, as plain text.

    Args:
        role: "system", "user", "assistant" or "tool" (a tool's result, kept as context).
        content: the turn's text.

    Example:
        >>> Message(role="user", content="Hi").model_dump()
        {'role': 'user', 'content': 'Hi'}
    """

    role: Role
    content: str


class MessageError(InputError, ValueError):
    """A chat message autorule cannot read; the text names the message and what is wrong.

    Args:
        detail: what is wrong, starting with which message (``message 2: ...``).

    Example:
        >>> normalise_messages([{"role": "user"}])
        Traceback (most recent call last):
        ...
        autorule.data.messages.MessageError: message 0: no 'content' (and no 'tool_calls')
    """


def _short(value: Any) -> str:
    """`value`'s repr, cut to 60 characters: errors quote what they could not read."""
    return clip(repr(value), 60, ellipsis="...")


def content_text(content: Any) -> str:
    """A message's ``content`` as text: null is empty, content parts are joined.

    Args:
        content: None, a string, a list of content parts (``{"type": "text", "text": ...}``,
            ``{"type": "image_url", ...}``, plain strings), or one such part.

    Raises:
        MessageError: a part that is neither a string nor a part dict, or a text part
            whose text is not a string.

    Example:
        >>> content_text([{"type": "image_url", "image_url": {"url": "x.png"}}, {"type": "text", "text": "What is this?"}])
        '[image]\\nWhat is this?'
        >>> content_text(None)
        ''
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):  # one part on its own
        content = [content]
    if not isinstance(content, (list, tuple)):
        raise MessageError(f"'content' is {type(content).__name__} {_short(content)}: expected text, null or a list of content parts")
    texts = []
    for i, part in enumerate(content):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise MessageError(f"content part {i} is {type(part).__name__} {_short(part)}: expected a {{'type': ...}} part or text")
        kind = part.get("type")
        if kind is not None and not isinstance(kind, str):
            raise MessageError(f"content part {i} has 'type' {_short(kind)}: expected a name such as 'text' or 'image_url'")
        key = TEXT_PARTS.get(kind, None if kind in MEDIA_PARTS else "text")
        if key is not None and key in part:
            if not isinstance(part[key], str):
                raise MessageError(f"content part {i} ({kind or 'text'}): '{key}' is {type(part[key]).__name__}, expected text")
            texts.append(part[key])
        elif kind in MEDIA_PARTS:
            texts.append(MEDIA_PARTS[kind])
        elif isinstance(kind, str) and kind:
            texts.append(f"[{kind}]")  # a part type we do not read: say that it was there
        else:
            raise MessageError(f"content part {i} has neither a 'type' nor a 'text': {_short(part)}")
    return "\n".join(texts)


def _tool_call_line(call: Any, i: int) -> str:
    if not isinstance(call, dict):
        raise MessageError(f"tool call {i} is {type(call).__name__} {_short(call)}: expected a dict")
    function = call.get("function", call)  # OpenAI nests name and arguments under "function"
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise MessageError(f"tool call {i} has no function name: {_short(call)}")
    arguments = function.get("arguments", "")
    if arguments is None:
        arguments = ""
    if not isinstance(arguments, str):  # chat templates take a dict; the API sends a JSON string
        arguments = json.dumps(arguments, ensure_ascii=False)
    return TOOL_CALL.format(name=name, arguments=arguments)


def tool_call_lines(tool_calls: Any) -> list[str]:
    """One short line per tool call: ``[tool call] name(arguments)``.

    Args:
        tool_calls: an assistant turn's ``tool_calls`` (OpenAI: ``[{"function": {"name",
            "arguments"}}]``; chat templates also accept ``{"name", "arguments"}`` with
            the arguments as a dict), or one ``function_call`` dict.

    Raises:
        MessageError: not a list of calls, or a call without a function name.

    Example:
        >>> tool_call_lines([{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}])
        ['[tool call] get_weather({"city": "Paris"})']
    """
    if tool_calls is None:
        return []
    if isinstance(tool_calls, dict):
        tool_calls = [tool_calls]
    if not isinstance(tool_calls, (list, tuple)):
        raise MessageError(f"'tool_calls' is {type(tool_calls).__name__} {_short(tool_calls)}: expected a list of calls")
    return [_tool_call_line(call, i) for i, call in enumerate(tool_calls)]


def normalise_message(message: Any, index: int = 0) -> Message:
    """One chat message, in any shape trainers and APIs send, as a plain-text `Message`.

    Args:
        message: a `Message`, or a dict with ``role`` and ``content`` (null, text or
            content parts) and optionally ``tool_calls`` / ``function_call``; other keys
            (``name``, ``tool_call_id``, ...) are ignored.
        index: the message's position, for the error text.

    Raises:
        MessageError: not a dict, a role that is missing or unknown, no ``content``
            (and no tool calls), or content that `content_text` refuses.

    Example:
        >>> normalise_message({"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "now", "arguments": "{}"}}]})
        Message(role='assistant', content='[tool call] now({})')
        >>> normalise_message({"role": "developer", "content": [{"type": "text", "text": "Be brief."}]})
        Message(role='system', content='Be brief.')
    """
    if isinstance(message, Message):
        return message
    if not isinstance(message, dict):
        raise MessageError(f"message {index} is {type(message).__name__} {_short(message)}: expected a {{'role', 'content'}} dict")
    role = message.get("role")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise MessageError(f"message {index} has role {_short(message.get('role'))}: expected one of {', '.join(ROLES)} "
                           f"(or {', '.join(ROLE_ALIASES)})")
    calls = message.get("tool_calls") or message.get("function_call")
    if "content" not in message and not calls:
        raise MessageError(f"message {index}: no 'content' (and no 'tool_calls')")
    try:
        parts = [content_text(message.get("content")), *tool_call_lines(calls)]
    except MessageError as e:
        raise MessageError(f"message {index}: {e}") from None
    return Message(role=role, content="\n".join(p for p in parts if p))


def normalise_messages(value: Any) -> list[Message]:
    """A list of chat messages (any shape `normalise_message` reads) as plain-text `Message` objects.

    Args:
        value: a list or tuple of messages (a numpy array of them, as verl keeps, too),
            or one message dict.

    Raises:
        MessageError: not a list of messages, or a message `normalise_message` refuses.

    Example:
        >>> [(m.role, m.content) for m in normalise_messages([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "42"}])]
        [('user', 'Hi'), ('tool', '42')]
    """
    if isinstance(value, (dict, Message)):
        value = [value]
    elif hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise MessageError(f"expected a list of chat messages, got {type(value).__name__} {_short(value)}")
    return [normalise_message(m, i) for i, m in enumerate(value)]


def alternating_turns(messages: list[Message]) -> list[dict[str, str]]:
    """The conversation as strictly alternating user/assistant dicts, for chat templates that refuse more.

    Some chat templates raise on a ``tool`` or ``system`` role, or on two user turns in a
    row (Gemma, Mistral, Llama 2). Such turns are folded into the user side, labelled
    (``[system]``, ``[tool result]``), and turns of the same side are joined.

    Args:
        messages: the conversation.

    Example:
        >>> alternating_turns([Message(role="system", content="Be brief."), Message(role="user", content="Weather?"),
        ...                    Message(role="assistant", content="[tool call] w({})"), Message(role="tool", content="rain"),
        ...                    Message(role="assistant", content="Rain.")])
        [{'role': 'user', 'content': '[system]\\nBe brief.\\n\\nWeather?'}, {'role': 'assistant', 'content': '[tool call] w({})'}, {'role': 'user', 'content': '[tool result]\\nrain'}, {'role': 'assistant', 'content': 'Rain.'}]
    """
    labels = {"system": "[system]\n", "tool": "[tool result]\n"}
    out: list[dict[str, str]] = []
    for m in messages:
        role = "assistant" if m.role == "assistant" else "user"
        text = labels.get(m.role, "") + m.content
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})
    return out


def to_conversation(value: Any) -> list[Message]:
    """A conversation from the shapes users have: Messages, OpenAI-style dicts, or a bare reply.

    Message content is read by `autorule.data.messages.normalise_message`: null content is
    empty, content parts are joined (media parts become ``[image]``-style placeholders),
    tool calls become ``[tool call] name(arguments)`` lines and ``tool`` turns are kept.

    Args:
        value: a string (one assistant reply with no prompt), a `Message`, one message
            dict, or a list of `Message` or ``{"role": ..., "content": ...}`` dicts.

    Raises:
        MessageError: (a ValueError) a message it cannot read, named by position.

    Example:
        >>> to_conversation("Hello!")
        [Message(role='assistant', content='Hello!')]
        >>> [m.role for m in to_conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}])]
        ['user', 'assistant']
        >>> to_conversation([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}])[0].content
        '[image]\\nWhat is it?'
    """
    if isinstance(value, str):
        return [Message(role="assistant", content=value)]
    return normalise_messages(value)
