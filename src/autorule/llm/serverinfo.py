"""What an OpenAI-compatible server says about itself: the model it serves, its context
per slot, its slot count, and whether it can count tokens.

- llama-server: ``GET /props`` (``model_path``, ``default_generation_settings.n_ctx``,
  ``total_slots``) and ``POST /tokenize`` (``{"content": ...}``).
- vLLM and SGLang: ``GET /v1/models`` (``id``, ``root``, ``max_model_len``); vLLM also
  ``POST /tokenize`` (``{"model": ..., "prompt": ...}``).
- Hosted APIs: usually only ``/v1/models``; then only the model's entry is used.

Every probe is best effort with a short timeout: a server that answers none of them
still works, with the defaults and a cache keyed by its address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePath

import httpx

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0


@dataclass
class ServerInfo:
    """What one server reported; None where it said nothing.

    Args:
        served: what identifies the served model (file name, model id and root); empty
            when the server reported nothing.
        context: prompt tokens one request may hold (context per slot).
        slots: requests the server runs at once (llama-server's ``total_slots``).
        tokenize_url: where to count tokens with the server's own tokenizer.

    Example:
        >>> ServerInfo(served={"model_file": "m.gguf"}, context=4096, slots=1).can_tokenize
        False
    """

    served: dict = field(default_factory=dict)
    context: int | None = None
    slots: int | None = None
    tokenize_url: str | None = None
    tokenize_style: str = "llama"  # "llama": {"content"}; "vllm": {"model", "prompt"}
    model: str = ""
    api_key: str = ""
    # one keep-alive client for every count (the verifier counts each conversation it fits)
    _http: httpx.Client | None = field(default=None, repr=False, compare=False)

    @property
    def can_tokenize(self) -> bool:
        return self.tokenize_url is not None

    def _tokenize(self, text: str, special: bool | None) -> dict | None:
        """The server's /tokenize reply for `text`, in its own request shape; `special`: ask it to add
        (True) or leave out (False) special tokens such as BOS, None: its default. None on failure."""
        if self.tokenize_style == "llama":
            body: dict = {"content": text} if special is None else {"content": text, "add_special": special}
        else:
            body = {"model": self.model, "prompt": text} if special is None else {"model": self.model, "prompt": text, "add_special_tokens": special}
        try:
            if self._http is None:
                self._http = httpx.Client(timeout=PROBE_TIMEOUT, headers=_auth(self.api_key))
            r = self._http.post(self.tokenize_url, json=body)  # type: ignore[arg-type]
            r.raise_for_status()
            data = r.json()
        except (httpx.HTTPError, ValueError) as e:
            log.info("tokenize at %s failed (%s); estimating token counts", self.tokenize_url, e)
            return None
        return data if isinstance(data, dict) else None

    def count_tokens(self, text: str) -> int | None:
        """Tokens in `text` by the server's tokenizer; None if it will not say."""
        data = self._tokenize(text, None)
        if data is None:
            return None
        if isinstance(data.get("count"), int):
            return data["count"]
        tokens = data.get("tokens")
        return len(tokens) if isinstance(tokens, list) else None

    def token_ids(self, text: str) -> list[int] | None:
        """The ids of `text` by the server's tokenizer, no special tokens added; None if it will not say."""
        tokens = (self._tokenize(text, False) or {}).get("tokens")
        if not isinstance(tokens, list):
            return None
        ids = [t.get("id") if isinstance(t, dict) else t for t in tokens]  # llama-server's with_pieces form
        return ids if all(isinstance(i, int) for i in ids) else None


def _auth(api_key: str) -> dict:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _get(url: str, api_key: str) -> dict | None:
    try:
        r = httpx.get(url, timeout=PROBE_TIMEOUT, headers=_auth(api_key))
        if r.status_code != 200:
            return None
        data = r.json()
        return data if isinstance(data, dict) else None
    except (httpx.HTTPError, ValueError):
        return None


def root_of(base_url: str) -> str:
    """The server's root from its OpenAI base URL (``http://h:8000/v1`` -> ``http://h:8000``), where
    its own routes live (llama-server's /props, /tokenize, /apply-template; vLLM's /tokenize).

    Example:
        >>> root_of("http://127.0.0.1:8000/v1/")
        'http://127.0.0.1:8000'
    """
    return base_url.rstrip("/").removesuffix("/v1")


def probe(base_url: str, api_key: str, model: str) -> ServerInfo:
    """Ask the server at `base_url` what it serves. Never raises.

    Example:
        >>> probe("http://127.0.0.1:9/v1", "", "local").served   # nothing listens there
        {}
    """
    info = ServerInfo(model=model, api_key=api_key)
    root = root_of(base_url)
    models = _get(base_url.rstrip("/") + "/models", api_key)
    entries = [m for m in (models or {}).get("data", []) or [] if isinstance(m, dict)]
    mine = [m for m in entries if m.get("id") == model]
    # a server that ignores the name (llama-server) lists what it really serves; a hosted API
    # lists many models, of which only the one asked for matters
    chosen = mine or (entries if len(entries) <= 4 else [])
    if chosen:
        info.served["models"] = sorted(str(m.get("root") or m.get("id")) for m in chosen)
        lengths = [m["max_model_len"] for m in chosen if isinstance(m.get("max_model_len"), int)]
        if lengths:
            info.context = min(lengths)
    props = _get(root + "/props", api_key)
    if props and (props.get("model_path") or props.get("default_generation_settings")):
        if props.get("model_path"):
            # the file name, not the path (nor /v1/models, which lists the path): replicas
            # that load the same file from different folders share cached answers
            info.served = {"model_file": PurePath(str(props["model_path"])).name}
        settings = props.get("default_generation_settings") or {}
        if isinstance(settings.get("n_ctx"), int) and settings["n_ctx"] > 0:
            info.context = settings["n_ctx"]
        if isinstance(props.get("total_slots"), int) and props["total_slots"] > 0:
            info.slots = props["total_slots"]
        info.tokenize_url, info.tokenize_style = root + "/tokenize", "llama"
    elif entries and any("max_model_len" in m for m in entries):
        # vLLM answers /tokenize; SGLang and others may not: a failed count falls back to an estimate
        info.tokenize_url, info.tokenize_style = root + "/tokenize", "vllm"
    if info.served:
        log.info("%s serves %s (context %s, slots %s)", base_url, info.served, info.context, info.slots)
    return info
