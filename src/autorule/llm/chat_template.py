"""The chat template, on the client: one user message rendered to the text a model reads.

The batched yes/no path sends raw prompts to ``/v1/completions`` (one request, every rule
of a conversation), so the chat template a chat request would get from the server must be
applied here, and applied exactly as the server does. It is learned once per backend, by
rendering a sentinel message and splitting the result around it: ``head + content + tail``.
Templates that trim a message's content (``{{ content | trim }}``) are detected from a
padded sentinel, and the content is trimmed the same way.

Where the template comes from, in order: a tokenizer the user names (transformers'
``apply_chat_template``); llama-server's ``POST /apply-template``; vLLM's ``POST /tokenize``
with ``messages`` and ``POST /detokenize`` of the tokens. A server that offers neither keeps
the per-check chat path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

# no whitespace and nothing a template escapes, so it comes back verbatim
SENTINEL = "AUTORULE7c1eSENTINEL"
PADDED = f" \n{SENTINEL}\n "
TIMEOUT = 10.0


class TemplateError(ValueError):
    """A rendering that does not hold the sentinel exactly once (the template rewrites its content)."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template reduced to what one user message needs: the text before and after it.

    Args:
        head: everything before the user message's content (system prompt, role markers).
        tail: everything after it, through the generation prompt (``<|im_start|>assistant\\n``).
        source: where it came from, for the run's record (e.g. ``llama-server /apply-template``).
        trims: the template strips surrounding whitespace from the content.

    Example:
        >>> t = ChatTemplate.from_rendering("<u>" + SENTINEL + "</u><a>", "<u>" + SENTINEL.strip() + "</u><a>", "test")
        >>> t.render("  Is it short?\\n"), t.trims
        ('<u>Is it short?</u><a>', True)
    """

    head: str
    tail: str
    source: str
    trims: bool = False

    def render(self, content: str) -> str:
        """The prompt a chat request with one user message `content` would give the model."""
        return self.head + (content.strip() if self.trims else content) + self.tail

    @classmethod
    def from_rendering(cls, rendered: str, rendered_padded: str, source: str) -> ChatTemplate:
        """The template from two renderings: of `SENTINEL` and of `PADDED` (the sentinel with
        whitespace around it), each as the only user message.

        Raises:
            TemplateError: the sentinel is not in a rendering exactly once.
        """
        if rendered.count(SENTINEL) != 1:
            raise TemplateError(f"{source}: the rendered template holds the message {rendered.count(SENTINEL)} times, not once")
        head, tail = rendered.split(SENTINEL)
        if rendered_padded == head + PADDED + tail:
            return cls(head, tail, source, trims=False)
        if rendered_padded == rendered:
            return cls(head, tail, source, trims=True)
        raise TemplateError(f"{source}: the template changes a message's whitespace in a way other than trimming it")


def _message(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def from_tokenizer(name_or_path: str) -> ChatTemplate:
    """The template of a tokenizer (a hub id or a local directory), as transformers renders it.

    Args:
        name_or_path: what ``AutoTokenizer.from_pretrained`` takes.

    Raises:
        TemplateError: the tokenizer has no chat template, or it rewrites the message.
        OSError: the tokenizer cannot be loaded.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"the tokenizer {name_or_path!r} has no chat template")

    def render(content: str) -> str:
        return tokenizer.apply_chat_template(_message(content), tokenize=False, add_generation_prompt=True)

    return ChatTemplate.from_rendering(render(SENTINEL), render(PADDED), f"tokenizer {name_or_path}")


def from_llama_server(root: str, headers: dict) -> ChatTemplate | None:
    """llama-server's own rendering (``POST /apply-template`` -> ``{"prompt": ...}``); None where not offered."""

    def render(content: str) -> str | None:
        try:
            r = httpx.post(f"{root}/apply-template", json={"messages": _message(content)}, headers=headers, timeout=TIMEOUT)
            prompt = r.json().get("prompt") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return prompt if isinstance(prompt, str) else None

    return _from_renderer(render, "llama-server /apply-template")


def from_vllm(root: str, model: str, headers: dict) -> ChatTemplate | None:
    """vLLM's rendering: ``POST /tokenize`` with ``messages`` gives the template's token ids,
    ``POST /detokenize`` their text (special tokens included); None where not offered."""

    def render(content: str) -> str | None:
        try:
            r = httpx.post(f"{root}/tokenize", json={"model": model, "messages": _message(content), "add_generation_prompt": True},
                           headers=headers, timeout=TIMEOUT)
            tokens = r.json().get("tokens") if r.status_code == 200 else None
            if not isinstance(tokens, list):
                return None
            r = httpx.post(f"{root}/detokenize", json={"model": model, "tokens": tokens}, headers=headers, timeout=TIMEOUT)
            prompt = r.json().get("prompt") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return prompt if isinstance(prompt, str) else None

    return _from_renderer(render, "vLLM /tokenize + /detokenize")


def _from_renderer(render, source: str) -> ChatTemplate | None:
    plain = render(SENTINEL)
    padded = render(PADDED) if plain is not None else None
    if plain is None or padded is None:
        return None
    try:
        return ChatTemplate.from_rendering(plain, padded, source)
    except TemplateError as e:
        log.warning("%s; yes/no checks go one chat request each", e)
        return None
