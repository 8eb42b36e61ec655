"""How a server backend sends yes/no checks, decided once per backend, and how it reads them.

- **batched**: one ``/v1/completions`` request per conversation holding every rule's
  prompt (a list), ``max_tokens=1`` and ``logprobs``; the prompts are rendered with the chat
  template on the client (`chat_template`). vLLM, SGLang and llama-server take prompt lists.
- **score**: SGLang's ``/v1/score``: the conversation as the query, each rule's question as
  an item, the Yes and No token ids as labels; the server reads the next-token
  distribution without decoding.
- **chat**: one chat request per check, as any OpenAI-compatible API takes it.

On vLLM, batched requests also send ``logprob_token_ids`` (the Yes/No token ids), so the
verdict's tokens are always among the logprobs returned, not only when they are in the top N;
a server that ignores the field (vLLM before it) is noticed at the probe and not sent it.

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
import math
from dataclasses import dataclass
from typing import Any

import httpx

from autorule.errors import InputError
from autorule.llm.base import MIN_ANSWER_MASS, LLMError, yes_probability
from autorule.llm.chat_template import (
    ChatTemplate,
    TemplateError,
    from_llama_server,
    from_tokenizer,
    from_vllm,
)
from autorule.llm.serverinfo import root_of

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
    # the Yes and No token ids: /v1/score's labels (score), vLLM's logprob_token_ids (batched)
    label_ids: tuple[int, int] | None = None
    logprob_token_ids: list[int] | None = None
    # llama-server's slot count: each batched request is pinned to one free slot (``id_slot``)
    slots: int | None = None

    @property
    def batched(self) -> bool:
        return self.kind == "batched"

    @property
    def score(self) -> bool:
        return self.kind == "score"

    def describe(self) -> str:
        """One line for a run's summary."""
        if self.batched:
            ids = ", with logprob_token_ids" if self.logprob_token_ids else f", each request on one of {self.slots} slots (id_slot)" if self.slots else ""
            return f"batched: /v1/completions requests, every rule of a conversation in one (conversations with few rules share one){ids} (chat template from {self.template.source}; {self.reason})"  # type: ignore[union-attr]
        if self.score:
            return f"score: one /v1/score request per conversation, every rule an item (chat template from {self.template.source}; {self.reason})"  # type: ignore[union-attr]
        return f"one chat request per check ({self.reason})"

    def to_dict(self) -> dict:
        """What run records hold: ``{"mode", "reason", "template"}``."""
        return {"mode": self.kind, "reason": self.reason, "template": self.template.source if self.template else None,
                **({"logprob_token_ids": True} if self.logprob_token_ids else {})}


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


def merged_replies(reply: Any) -> Any:
    """A completions reply as one object: some llama-server builds answer a prompt list with a JSON array of one
    whole reply per prompt, merged here into one ``choices`` list in prompt order; any other reply as it came.

    Example:
        >>> merged_replies([{"choices": [{"text": "Yes", "index": 0}]}, {"choices": [{"text": "No", "index": 0}]}])
        {'choices': [{'text': 'Yes', 'index': 0}, {'text': 'No', 'index': 1}]}
        >>> merged_replies({"choices": []})
        {'choices': []}
    """
    if isinstance(reply, list) and reply and all(isinstance(x, dict) and isinstance(x.get("choices"), list) for x in reply):
        return {"choices": [{**c, "index": i} for i, c in enumerate(c for x in reply for c in x["choices"])]}
    return reply


def choice_thinks_first(choice: dict) -> bool:
    """The choice's token opens a reasoning block (``<think>``): no verdict comes in one token."""
    lp = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
    content, tokens = lp.get("content"), lp.get("tokens")
    first = (content[0].get("token") if isinstance(content, list) and content and isinstance(content[0], dict) else
             tokens[0] if isinstance(tokens, list) and tokens else choice.get("text")) or ""
    return str(first).strip().startswith(("<think", "<|think", "<reasoning"))


def score_yes_probability(row: list) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) from one ``/v1/score`` row ``[yes, no]``: probabilities, or logprobs (all <= 0 and
    not both in [0, 1]); None when the pair holds too little of the probability to be a verdict (`MIN_ANSWER_MASS`).

    Example:
        >>> round(score_yes_probability([0.6, 0.2]), 6), score_yes_probability([-0.1, -2.5]) > 0.9, score_yes_probability([0.001, 0.002])
        (0.75, True, None)
    """
    if not isinstance(row, list) or len(row) != 2 or not all(isinstance(v, (int, float)) for v in row):
        return None
    yes, no = (float(v) for v in row)
    if yes <= 0 and no <= 0 and not (yes == 0 and no == 0) and min(yes, no) < 0:
        yes, no = math.exp(yes), math.exp(no)
    if yes + no < MIN_ANSWER_MASS:
        return None
    return yes / (yes + no)


def yes_no_token_ids(llm: Any) -> tuple[int, int, dict[str, int]] | None:
    """(Yes id, No id, {spelling: id} for every single-token spelling of Yes/No) by the server's tokenizer (llama-server's,
    vLLM's or SGLang's ``/tokenize``) or the tokenizer named by --chat-template; None when they cannot be learned."""
    ids: dict[str, int] = {}
    for word in ("Yes", "No", " Yes", " No", "yes", "no", " yes", " no"):
        tokens = _token_ids(llm, word)
        if tokens is not None and len(tokens) == 1:
            ids[word] = tokens[0]
    if "Yes" not in ids or "No" not in ids:
        return None
    return ids["Yes"], ids["No"], ids


def _token_ids(llm: Any, text: str) -> list[int] | None:
    """Token ids of `text` by the server's own tokenizer (the ids it scores by), else by the --chat-template tokenizer."""
    if llm.info.can_tokenize:
        ids = llm.info.token_ids(text)
        if ids is not None:
            return ids
    if llm.chat_template:
        from transformers import AutoTokenizer

        if llm.chat_template not in _TOKENIZERS:
            _TOKENIZERS[llm.chat_template] = AutoTokenizer.from_pretrained(llm.chat_template)
        return list(_TOKENIZERS[llm.chat_template].encode(text, add_special_tokens=False))
    return None


_TOKENIZERS: dict[str, Any] = {}


def _top(pairs: list[tuple[str, float]] | None) -> tuple[str, float] | None:
    return max(pairs, key=lambda p: p[1]) if pairs else None


def _chat_reference(llm: Any, url: str, headers: dict) -> tuple[tuple[str, float] | None, float | None]:
    """The chat endpoint's answer to the first probe question: its top (token, logprob) and P(Yes)."""
    try:
        c = httpx.post(url.rstrip("/") + "/chat/completions", headers=headers, timeout=PROBE_TIMEOUT,
                       json={"model": llm.model, "messages": [{"role": "user", "content": _PROBE[0]}], "max_tokens": 1, "temperature": 0.0,
                             "logprobs": True, "top_logprobs": 5, **llm.extra_body})
        pairs = choice_yes_pairs(c.json()["choices"][0]) if c.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        pairs = None
    return _top(pairs), (yes_probability(pairs) if pairs else None)


def _probe_completions(llm: Any, url: str, headers: dict, template: ChatTemplate, ids: dict[str, int] | None) -> tuple[str | None, bool]:
    """(None when batched completions work and agree with chat requests, else why not; whether `ids` (spelling: id)
    were honoured: every spelling asked for came back, which a natural top list does not hold)."""
    body = {"model": llm.model, "prompt": [template.render(q) for q in _PROBE], "max_tokens": 1, "temperature": 0.0, "logprobs": 5, **llm.extra_body}
    if ids:
        body["logprob_token_ids"] = sorted(set(ids.values()))
    try:
        r = httpx.post(url.rstrip("/") + "/completions", headers=headers, timeout=PROBE_TIMEOUT, json=body)
    except httpx.HTTPError as e:
        return f"/v1/completions failed: {e}", False
    if r.status_code != 200:
        return f"/v1/completions with a prompt list answered {r.status_code}", False
    try:
        choices = merged_replies(r.json()).get("choices")
    except (ValueError, AttributeError):
        return "/v1/completions answered with no JSON object", False
    if not isinstance(choices, list) or len(choices) != len(_PROBE):
        return f"/v1/completions answered {len(choices) if isinstance(choices, list) else 'no'} choices for {len(_PROBE)} prompts", False
    choices = sorted(choices, key=lambda c: c.get("index", 0))
    pairs = [choice_yes_pairs(c) for c in choices]
    if any(p is None for p in pairs):
        return "/v1/completions answered without logprobs", False
    honoured = bool(ids) and all(set(ids) <= {t for t, _ in p} for p in pairs)  # type: ignore[union-attr]
    raw = _top(pairs[0])
    chat, chat_p = _chat_reference(llm, url, headers)
    if chat is None:
        return "the chat endpoint gave no logprobs to compare the client's rendering with", honoured
    # with logprob_token_ids the top entries are the requested ids, not the natural top: compare P(Yes) then
    if honoured:
        mismatch = abs((yes_probability(pairs[0]) or 0.0) - (chat_p or 0.0)) > MATCH_TOLERANCE  # type: ignore[arg-type]
    else:
        mismatch = chat[0] != raw[0] or abs(chat[1] - raw[1]) > MATCH_TOLERANCE  # type: ignore[index]
    if mismatch:
        return (f"the chat template from {template.source} renders differently from the server's own: the chat request's "
                f"top token is {chat[0]!r} ({chat[1]:.3f}), the rendered prompt's {raw[0]!r} ({raw[1]:.3f})"), honoured  # type: ignore[index]
    return None, honoured


def _probe_score(llm: Any, url: str, headers: dict, template: ChatTemplate, label_ids: tuple[int, int]) -> str | None:
    """None when SGLang's /v1/score works and agrees with the chat endpoint; else why not."""
    cut = _PROBE[0].index("Answer")
    body = {"model": llm.model, "query": template.head + _PROBE[0][:cut], "items": [_PROBE[0][cut:] + template.tail],
            "label_token_ids": list(label_ids), "apply_softmax": False}
    try:
        r = httpx.post(root_of(url) + "/v1/score", headers=headers, timeout=PROBE_TIMEOUT, json=body)
        scores = r.json().get("scores") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        scores = None
    if not isinstance(scores, list) or len(scores) != 1:
        return "no /v1/score"
    p = score_yes_probability(scores[0])
    _, chat = _chat_reference(llm, url, headers)
    if p is None or chat is None or abs(p - chat) > MATCH_TOLERANCE:
        return f"/v1/score's P(Yes) {p} does not agree with the chat endpoint's {chat}"
    return None


class ChatTemplateError(LLMError, InputError):
    """--chat-template names no usable tokenizer (bad input: exit 2)."""


def _template(llm: Any, headers: dict) -> ChatTemplate | None:
    if llm.chat_template:
        try:
            return from_tokenizer(llm.chat_template)
        except (TemplateError, OSError, ValueError) as e:
            first = " ".join(str(e).split())[:300]
            raise ChatTemplateError(f"--chat-template {llm.chat_template}: no tokenizer with a chat template could be loaded from it "
                                    f"(a hub id or a directory holding tokenizer.json / tokenizer_config.json with a chat_template). "
                                    f"transformers said: {first}") from e
    info, root = llm.info, root_of(llm.info_url)
    if info.tokenize_url and info.tokenize_style == "llama":
        return from_llama_server(root, headers)
    if info.tokenize_url and info.tokenize_style == "vllm":
        return from_vllm(root, llm.model, headers)
    return None


def detect_mode(llm: Any) -> YesNoMode:
    """The yes/no mode for a server backend (an `OpenAICompatLLM`), from its settings and one probe.

    Tried in order, each only when its probe agrees with the server's chat endpoint: SGLang's
    ``/v1/score``, batched ``/v1/completions`` (with vLLM's ``logprob_token_ids`` where honoured),
    then one chat request per check.

    Args:
        llm: the backend; its ``requested_mode`` ("auto", "batched", "chat") and ``chat_template`` decide what is tried.

    Raises:
        LLMError: "batched" was asked for and cannot run (the reason says why).
    """
    if llm.requested_mode == "chat":
        return YesNoMode("chat", "asked for: --yes-no-mode chat")
    headers = {"Authorization": f"Bearer {llm.api_key}"}
    template = _template(llm, headers)
    if template is None:
        why_not = ("the server renders no chat template for the client (llama-server's /apply-template, vLLM's /tokenize); "
                   "--chat-template TOKENIZER names one")
    else:
        url = llm.info_url  # the first replica that answered
        ids = yes_no_token_ids(llm)
        if ids is not None and llm.info.tokenize_style == "vllm" and _probe_score(llm, url, headers, template, ids[:2]) is None:
            return YesNoMode("score", "probed: /v1/score answers and agrees with the chat endpoint", template, label_ids=ids[:2])
        # logprob_token_ids is vLLM's; llama-server would ignore it
        asked = ids[2] if ids is not None and llm.info.tokenize_style == "vllm" else None
        why_not, honoured = _probe_completions(llm, url, headers, template, asked)
        if why_not is None:
            slots = llm.info.slots if llm.info.tokenize_style == "llama" and (llm.info.slots or 1) > 1 else None
            return YesNoMode("batched", "probed: the server takes prompt lists and agrees with its chat endpoint", template,
                             logprob_token_ids=sorted(set(asked.values())) if asked and honoured else None, slots=slots)
    if llm.requested_mode == "batched":
        raise LLMError(f"{llm.base_url}: --yes-no-mode batched cannot run: {why_not}")
    log.warning("%s: yes/no checks go one chat request each: %s", llm.base_url, why_not)
    return YesNoMode("chat", why_not)
