"""Model specs: the one grammar that names a model, and what each backend accepts.

A model spec is the string a user passes as ``--model`` / ``--verifier`` or ``model=``::

    embedded                 the packaged SmolLM2-135M-Instruct GGUF        local backend
    hf:PATH_OR_ID            a transformers checkpoint (directory or hub id) local backend
    gguf:FILE                a GGUF file, converted to transformers once     local backend
    DIR                      an existing model directory (as hf:DIR)         local backend
    openai:MODEL@BASE_URL    any OpenAI-compatible server                    server backend
    openai:MODEL@URL1,URL2   replicas of one model (data parallel), routed by prefix affinity
    vllm:MODEL               vLLM's offline engine: refused with advice (serve it, use openai:)

Only this module reads a spec's form: the rest of the package asks `parse_spec` (or
`spec_kind` for an LLM object's `spec`, which may be no spec at all) and dispatches on
`ModelSpec.kind`. Adding a backend means adding its form here and its branch in `load_llm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autorule.llm.base import LLMError

# the forms, as error messages and help texts name them
SPEC_FORMS = "embedded, hf:PATH_OR_ID, gguf:FILE, openai:MODEL@BASE_URL or a model directory"
OPENAI_EXAMPLE = "openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1"

# kinds served by `autorule.llm.local.LocalLLM` (in this process) and by a server
LOCAL_KINDS = ("embedded", "hf", "gguf", "dir")
SERVER_KINDS = ("openai",)

# the options each backend's constructor takes (`load_llm(spec, **options)`)
BACKEND_OPTIONS = {
    "local": ("batch_size", "device", "max_context", "no_repeat_ngram_size", "pack_tokens"),
    "server": ("api_key", "concurrency", "timeout", "max_retries", "backoff_base", "backoff_max", "top_logprobs",
               "extra_body", "max_input_tokens", "yes_no_mode", "chat_template", "replica_cooldown", "batch_prompts"),
}


class SpecError(LLMError, ValueError):
    """A string that is not a model spec, or a spec of a known form written wrongly.

    An `LLMError` (what `load_llm` raises) and a `ValueError` (bad input).

    Args:
        message: what is wrong and the form to write instead.

    Example:
        >>> isinstance(SpecError("x"), ValueError), isinstance(SpecError("x"), LLMError)
        (True, True)
    """


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Args:
        kind: "embedded", "hf", "gguf", "dir", "openai" or "vllm".
        model: what the backend loads or asks for: the checkpoint path or hub id (hf,
            dir), the GGUF file (gguf), the served model name (openai, vllm); "" for embedded.
        text: the spec as `load_llm` takes it (and as caches and reports name the model).
        base_url: the server's OpenAI-compatible root (openai only).

    Example:
        >>> spec = parse_spec("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
        >>> spec.kind, spec.model, spec.base_url, spec.backend
        ('openai', 'Qwen/Qwen3-8B', 'http://127.0.0.1:8000/v1', 'server')
    """

    kind: str
    model: str
    text: str
    base_url: str | None = None

    @property
    def backend(self) -> str | None:
        """"local" (a model in this process), "server", or None (no backend in this version: vllm)."""
        return "local" if self.kind in LOCAL_KINDS else "server" if self.kind in SERVER_KINDS else None

    @property
    def path(self) -> Path:
        """The local model's file or directory, ``~`` expanded (gguf, hf, dir).

        Raises:
            SpecError: the spec names no local file or directory (embedded, a server).

        Example:
            >>> parse_spec("gguf:~/m.gguf").path.name
            'm.gguf'
        """
        if self.kind not in ("hf", "gguf", "dir"):
            raise SpecError(f"{self.text!r} names no local file or directory")
        return Path(self.model).expanduser()

    def options(self, **options) -> dict:
        """The options among `options` this spec's backend takes, None values left out.

        Lets one set of settings (a command's flags, a config) serve every backend: a
        server's ``concurrency`` is not given to a local model.

        Args:
            **options: backend options, e.g. ``concurrency=8, timeout=None, batch_size=4``.

        Example:
            >>> parse_spec("embedded").options(concurrency=8, batch_size=4)
            {'batch_size': 4}
            >>> parse_spec("openai:m@http://h/v1").options(concurrency=8, timeout=None, batch_size=4)
            {'concurrency': 8}
        """
        accepted = BACKEND_OPTIONS.get(self.backend or "", ())
        return {k: v for k, v in options.items() if k in accepted and v is not None}


def parse_spec(text: str, *, bare: str | None = None) -> ModelSpec:
    """Read a model spec (see the module's grammar).

    Args:
        text: the spec.
        bare: how to read a text of no known form: None (an existing directory, else an
            error), or "hf" (a hub id or a directory, as ``hf:TEXT``).

    Raises:
        SpecError: not a spec, or a known form written wrongly (the message says the form).

    Example:
        >>> parse_spec("embedded").kind, parse_spec("hf:Qwen/Qwen3-0.6B").model
        ('embedded', 'Qwen/Qwen3-0.6B')
        >>> parse_spec("Qwen/Qwen3-0.6B", bare="hf").text
        'hf:Qwen/Qwen3-0.6B'
        >>> parse_spec("openai:foo")
        Traceback (most recent call last):
        ...
        autorule.llm.specs.SpecError: 'openai:foo' has no server address: write openai:MODEL@BASE_URL, e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1
        >>> parse_spec("gpt-4")
        Traceback (most recent call last):
        ...
        autorule.llm.specs.SpecError: unknown model spec 'gpt-4': use embedded, hf:PATH_OR_ID, gguf:FILE, openai:MODEL@BASE_URL or a model directory
    """
    if text == "embedded":
        return ModelSpec("embedded", "", text)
    prefix, sep, body = text.partition(":")
    if sep and prefix == "openai":
        model, _, url = body.rpartition("@")
        if "@" not in body or not url:
            raise SpecError(f"{text!r} has no server address: write openai:MODEL@BASE_URL, e.g. {OPENAI_EXAMPLE}")
        for one in url.split(","):  # replicas of one model: openai:MODEL@URL1,URL2
            if not one.strip().startswith(("http://", "https://")):
                raise SpecError(f"{text!r}: the server address {one.strip()!r} must start with http:// or https://")
        if not model:
            raise SpecError(f"{text!r} names no model: write openai:MODEL@BASE_URL, e.g. {OPENAI_EXAMPLE}")
        return ModelSpec("openai", model, text, base_url=url)
    if sep and prefix in ("hf", "gguf", "vllm"):
        if not body:
            raise SpecError(f"{text!r} names no model: write {prefix}:{'FILE' if prefix == 'gguf' else 'MODEL'}")
        return ModelSpec(prefix, body, text)
    if bare == "hf" and text:  # a directory too: hf: loads both
        return ModelSpec("hf", text, f"hf:{text}")
    directory = _directory(text)
    if directory is not None:
        return ModelSpec("dir", str(directory), text)
    raise SpecError(f"unknown model spec {text!r}: use {SPEC_FORMS}")


def _directory(text: str) -> Path | None:
    """`text` as an existing directory (``~`` expanded), else None."""
    try:
        path = Path(text).expanduser()
    except RuntimeError:  # ~user of no such user
        return None
    return path if text and path.is_dir() else None


def spec_kind(text: str) -> str | None:
    """The kind of `text` when it is a model spec, else None (an LLM object's own name,
    e.g. ``fake:0.5`` for `autorule.testing.fake_llm.FakeLLM`).

    Args:
        text: a spec, or any LLM's `spec` attribute.

    Example:
        >>> spec_kind("embedded"), spec_kind("fake:0.5")
        ('embedded', None)
    """
    try:
        return parse_spec(text).kind
    except SpecError:
        return None
