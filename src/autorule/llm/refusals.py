"""What a server's error body says: a refused `logprobs` parameter, a logprobs limit, a key problem.

Servers word these differently (hosted APIs, vLLM, SGLang, gateways that validate the
body with pydantic), so the rules look at what the message is about and what it says of
it, not at one server's exact text:

- **logprobs refused**: a 400, 403 or 422 whose body mentions ``logprobs`` or
  ``top_logprobs`` and says it is not supported / allowed / enabled / permitted (or
  unsupported, disabled, forbidden, an unknown or extra field, must be false). The
  caller asks again without logprobs and reads short generated answers instead.
- **logprobs limit**: the body mentions logprobs and a maximum ("max allowed: 5",
  "<= 5", "between 0 and 5"): the caller asks again with that many ``top_logprobs``.
- **key problem**: a 401 or 403 is about the API key only when its body says so, or
  says nothing else (empty, "Forbidden", "Unauthorized"); otherwise the server's own
  reason is reported, e.g. a 403 that refuses logprobs is not a bad key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# statuses a server refuses a request parameter with
_PARAMETER_STATUSES = (400, 403, 422)

_REFUSED = re.compile(
    r"not (?:supported|allowed|enabled|permitted|available|implemented)|unsupported|(?:does|do|is) ?n[o']t (?:support|allow)|"
    r"disabled|forbidden|must be (?:false|null|disabled|unset|omitted)|extra (?:inputs?|fields?) (?:are |is )?not permitted|"
    r"unknown (?:parameter|field|argument)|unrecognized (?:parameter|field|argument|request argument)|cannot request|can't request"
)
_LIMIT = re.compile(r"(?:max(?:imum)?(?: allowed| value)?|at most|<=|less than or equal to|between 0 and|up to)\D{0,20}?(\d+)")
_KEY = re.compile(
    r"api[\s_-]?key|\bkey\b|token|auth|credential|unauthori[sz]ed|bearer|forbidden|access denied|permission denied|not authenticated|"
    r"^error code: 40[13]$"
)


@dataclass
class LogprobsRefusal:
    """A server's refusal of the logprobs a request asked for.

    Args:
        message: the server's own words.
        limit: the most ``top_logprobs`` the server accepts, when it names one (the
            request may be sent again with that many); None: no logprobs at all.
    """

    message: str
    limit: int | None = None


def body_text(body: Any) -> str:
    """An error body as one line of text (JSON for dicts and lists).

    Args:
        body: the parsed body (dict, list, str or None).

    Example:
        >>> body_text({"message": "Logprobs is not enabled"}), body_text(None)
        ('{"message": "Logprobs is not enabled"}', '')
    """
    if body is None:
        return ""
    return body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)


def body_message(body: Any) -> str:
    """The human-readable message of an error body: ``error.message`` or ``message`` where
    there is one (a nested object is written as JSON), else the whole body as text.

    Args:
        body: the parsed body, or its ``error`` object (the openai client keeps that one).

    Example:
        >>> body_message({"error": {"message": "You are not allowed to request logprobs from this model", "type": "invalid_request_error"}})
        'You are not allowed to request logprobs from this model'
        >>> body_message({"object": "error", "message": {"detail": [{"loc": ["body", "top_logprobs"]}]}})
        '{"detail": [{"loc": ["body", "top_logprobs"]}]}'
    """
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, (dict, str)) and inner:
            return body_message(inner)
        message = body.get("message", body.get("detail"))
        if message is not None:
            return message if isinstance(message, str) else json.dumps(message, ensure_ascii=False)
    return body_text(body)


def logprobs_refusal(status: int, text: str, requested: int | None = None) -> LogprobsRefusal | None:
    """The refusal of logprobs an error (status and body text) states; None when it is about something else.

    Args:
        status: the HTTP status.
        text: the error body (or the server's message) as text.
        requested: the ``top_logprobs`` the request asked for; a stated maximum below it
            is a limit, not a refusal.

    Example:
        >>> logprobs_refusal(400, '{"error": {"code": 400, "message": "Logprobs is not enabled for this model", "status": "INVALID_ARGUMENT"}}')
        LogprobsRefusal(message='{"error": {"code": 400, "message": "Logprobs is not enabled for this model", "status": "INVALID_ARGUMENT"}}', limit=None)
        >>> logprobs_refusal(400, "Requested sample logprobs of 20, which is greater than max allowed: 5", 20).limit
        5
        >>> logprobs_refusal(400, "This model's maximum context length is 2000 tokens") is None
        True
    """
    lowered = text.lower()
    if status not in _PARAMETER_STATUSES or "logprob" not in lowered:
        return None
    limit = _LIMIT.search(lowered)
    if limit and requested is not None and int(limit.group(1)) < requested:
        n = int(limit.group(1))
        return LogprobsRefusal(text, n if n >= 1 else None)
    if _REFUSED.search(lowered):
        return LogprobsRefusal(text)
    return None


def is_key_problem(status: int, message: str) -> bool:
    """A 401/403 is about the API key when its message says so or names no other cause.

    Args:
        status: the HTTP status.
        message: the server's message (`body_message`).

    Example:
        >>> is_key_problem(401, "Incorrect API key provided"), is_key_problem(403, "Forbidden"), is_key_problem(403, "")
        (True, True, True)
        >>> is_key_problem(403, "You are not allowed to request logprobs from this model")
        False
        >>> is_key_problem(400, "invalid api key")
        False
    """
    if status not in (401, 403):
        return False
    text = message.strip().lower()
    return not text or bool(_KEY.search(text))
