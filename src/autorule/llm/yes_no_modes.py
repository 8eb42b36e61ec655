"""How a server backend sends yes/no checks, decided once per backend, and how it reads them.

- **batched**: one ``/v1/completions`` request per conversation holding every rule's
  prompt (a list), ``max_tokens=1`` and ``logprobs``; the prompts are rendered with the chat
  template on the client (`chat_template`). vLLM, SGLang and llama-server take prompt lists.
- **chat**: one chat request per check, as any OpenAI-compatible API takes it.

`detect_mode` finds a template (a tokenizer the user names, else the server's own
rendering), then sends one small probe: a two-prompt completions request, and the first
prompt again as a chat request. Batched runs only when the probe's reply is readable and
its top token and logprob match the chat request's, so a wrong template (a tokenizer of
another model, say) never changes a verdict: it falls back to chat, and says why.

Two reply shapes are read (`choice_yes_pairs`): the chat shape llama-server sends on
``/v1/completions`` (``logprobs.content[0].top_logprobs``, a list of ``{token, logprob}``)
and the legacy completions shape vLLM and SGLang send (``logprobs.top_logprobs``, one
``{token: logprob}`` dict per position, with ``tokens`` and ``token_logprobs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from autorule.llm.base import LLMError
from autorule.llm.chat_template import ChatTemplate, TemplateError, from_llama_server, from_tokenizer, from_vllm

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 60.0
# a chat request and the same prompt sent raw must agree this closely (log-probability of the top token)
MATCH_TOLERANCE = 0.1
_PROBE = ("Is the sky blue on a clear day? Answer Yes or No.", "Is fire cold? Answer Yes or No.")


@dataclass
class YesNoMode:
    """The way yes/no checks go, and why.

    Args:
        kind: "batched" or "chat".
        reason: why this mode (what the probe found).
        template: the client-side chat template (batched only).

    Example:
        >>> YesNoMode("chat", "the server renders no chat template for the client").describe()
        'one chat request per check (the server renders no chat template for the client)'
    """

    kind: str
    reason: str
    template: ChatTemplate | None = None

    @property
    def batched(self) -> bool:
        return self.kind == "batched"

    def describe(self) -> str:
        """One line for a run's summary."""
        if self.batched:
            return f"batched: one /v1/completions request per conversation, every rule in it (chat template from {self.template.source}; {self.reason})"  # type: ignore[union-attr]
        return f"one chat request per check ({self.reason})"

    def to_dict(self) -> dict:
        """What run records hold: ``{"mode", "reason", "template"}``."""
        return {"mode": self.kind, "reason": self.reason, "template": self.template.source if self.template else None}


def root_of(base_url: str) -> str:
    """The server's root from its OpenAI base URL (``http://h:8000/v1`` -> ``http://h:8000``).

    Example:
        >>> root_of("http://127.0.0.1:8000/v1/")
        'http://127.0.0.1:8000'
    """
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def choice_yes_pairs(choice: dict) -> list[tuple[str, float]] | None:
    """(token, logprob) pairs of a completions choice's first token, in either reply shape; None without logprobs.

    Example:
        >>> choice_yes_pairs({"logprobs": {"content": [{"token": "No", "logprob": -0.1, "top_logprobs": [{"token": "No", "logprob": -0.1}, {"token": "Yes", "logprob": -2.4}]}]}})
        [('No', -0.1), ('Yes', -2.4)]
        >>> choice_yes_pairs({"logprobs": {"tokens": ["Yes"], "token_logprobs": [-0.2], "top_logprobs": [{"Yes": -0.2, "No": -1.8}]}})
        [('Yes', -0.2), ('No', -1.8)]
        >>> choice_yes_pairs({"text": "Yes", "logprobs": None}) is None
        True
    """
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return None
    content = lp.get("content")
    if isinstance(content, list):  # chat shape (llama-server)
        if not content or not isinstance(content[0], dict):
            return None
        first = content[0]
        pairs = [(t.get("token", ""), t["logprob"]) for t in first.get("top_logprobs") or [] if isinstance(t, dict) and t.get("logprob") is not None]
        if not pairs and first.get("logprob") is not None:
            pairs = [(first.get("token", ""), first["logprob"])]
        return pairs or None
    top = lp.get("top_logprobs")  # legacy shape (vLLM, SGLang)
    if isinstance(top, list) and top and isinstance(top[0], dict) and top[0]:
        return [(str(t), float(v)) for t, v in top[0].items() if v is not None]
    tokens, values = lp.get("tokens"), lp.get("token_logprobs")
    if isinstance(tokens, list) and tokens and isinstance(values, list) and values and values[0] is not None:
        return [(str(tokens[0]), float(values[0]))]
    return None


def choice_thinks_first(choice: dict) -> bool:
    """The choice's token opens a reasoning block (``<think>``): no verdict comes in one token."""
    lp = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
    content, tokens = lp.get("content"), lp.get("tokens")
    first = (content[0].get("token") if isinstance(content, list) and content and isinstance(content[0], dict) else
             tokens[0] if isinstance(tokens, list) and tokens else choice.get("text")) or ""
    return str(first).strip().startswith(("<think", "<|think", "<reasoning"))


def _top(pairs: list[tuple[str, float]] | None) -> tuple[str, float] | None:
    return max(pairs, key=lambda p: p[1]) if pairs else None


def _probe(llm: Any, template: ChatTemplate) -> str | None:
    """None when batched requests work and agree with chat requests; else why not."""
    headers = {"Authorization": f"Bearer {llm.api_key}"}
    extra = dict(llm.extra_body)
    for url in llm.base_urls:  # the first replica that answers
        try:
            r = httpx.post(url.rstrip("/") + "/completions", headers=headers, timeout=PROBE_TIMEOUT,
                           json={"model": llm.model, "prompt": [template.render(q) for q in _PROBE], "max_tokens": 1, "temperature": 0.0, "logprobs": 5, **extra})
        except httpx.HTTPError:
            continue
        if r.status_code != 200:
            return f"/v1/completions with a prompt list answered {r.status_code}"
        try:
            choices = r.json().get("choices")
        except ValueError:
            return "/v1/completions answered with no JSON"
        if not isinstance(choices, list) or len(choices) != len(_PROBE):
            return f"/v1/completions answered {len(choices) if isinstance(choices, list) else 'no'} choices for {len(_PROBE)} prompts"
        choices = sorted(choices, key=lambda c: c.get("index", 0))
        raw = _top(choice_yes_pairs(choices[0]))
        if raw is None or any(choice_yes_pairs(c) is None for c in choices):
            return "/v1/completions answered without logprobs"
        try:
            c = httpx.post(url.rstrip("/") + "/chat/completions", headers=headers, timeout=PROBE_TIMEOUT,
                           json={"model": llm.model, "messages": [{"role": "user", "content": _PROBE[0]}], "max_tokens": 1, "temperature": 0.0,
                                 "logprobs": True, "top_logprobs": 5, **extra})
            chat = _top(choice_yes_pairs(c.json()["choices"][0])) if c.status_code == 200 else None
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
            chat = None
        if chat is None:
            return "the chat endpoint gave no logprobs to compare the client's rendering with"
        if chat[0] != raw[0] or abs(chat[1] - raw[1]) > MATCH_TOLERANCE:
            return (f"the chat template from {template.source} renders differently from the server's own: the chat request's "
                    f"top token is {chat[0]!r} ({chat[1]:.3f}), the rendered prompt's {raw[0]!r} ({raw[1]:.3f})")
        return None
    return "no replica answered the probe"


def detect_mode(llm: Any) -> YesNoMode:
    """The yes/no mode for a server backend (an `OpenAICompatLLM`), from its settings and one probe.

    Args:
        llm: the backend; its ``requested_mode`` ("auto", "batched", "chat") and ``chat_template`` decide what is tried.

    Raises:
        LLMError: "batched" was asked for and cannot run (the reason says why).
    """
    if llm.requested_mode == "chat":
        return YesNoMode("chat", "asked for: --yes-no-mode chat")
    headers = {"Authorization": f"Bearer {llm.api_key}"}
    template: ChatTemplate | None = None
    if llm.chat_template:
        try:
            template = from_tokenizer(llm.chat_template)
        except (TemplateError, OSError, ValueError) as e:
            raise LLMError(f"--chat-template {llm.chat_template}: {e}") from e
    else:
        info, root = llm.info, root_of(llm.base_urls[0])
        if info.tokenize_url and info.tokenize_style == "llama":
            template = from_llama_server(root, headers)
        elif info.tokenize_url and info.tokenize_style == "vllm":
            template = from_vllm(root, llm.model, headers)
    why_not = ("the server renders no chat template for the client (llama-server's /apply-template, vLLM's /tokenize); "
               "--chat-template TOKENIZER names one") if template is None else _probe(llm, template)
    if why_not is None:
        return YesNoMode("batched", "probed: the server takes prompt lists and agrees with its chat endpoint", template)
    if llm.requested_mode == "batched":
        raise LLMError(f"{llm.base_url}: --yes-no-mode batched cannot run: {why_not}")
    log.warning("%s: yes/no checks go one chat request each: %s", llm.base_url, why_not)
    return YesNoMode("chat", why_not)
