"""Chat-templated text read back into turns: what the reward server gets from OpenRLHF.

OpenRLHF applies the policy's chat template to the prompt and posts the decoded prompt +
response with special tokens kept. The verifier must see the conversation, never the
markup, so each template the policies people train use is read back here:

| template | turn markers | end of turn |
|---|---|---|
| ChatML (Qwen2/2.5/3, SmolLM, Phi-4) | ``<|im_start|>role\\n`` (or ``<|im_sep|>``) | ``<|im_end|>`` |
| Llama 3 | ``<|start_header_id|>role<|end_header_id|>`` | ``<|eot_id|>``, ``<|eom_id|>`` |
| Gemma | ``<start_of_turn>user`` / ``model`` | ``<end_of_turn>`` |
| Mistral / Llama 2 | ``[INST]``, ``[/INST]``, ``[SYSTEM_PROMPT]``, ``[TOOL_RESULTS]``, ``<<SYS>>`` | ``</s>`` |
| Phi-3 | ``<|system|>``, ``<|user|>``, ``<|assistant|>`` | ``<|end|>`` |
| DeepSeek-R1 and distills | ``<｜User｜>``, ``<｜Assistant｜>`` (fullwidth bars, U+2581) | ``<｜end▁of▁sentence｜>`` |

A reasoning block a template opens in the generation prompt (Qwen3's empty
``<think>\\n\\n</think>``, DeepSeek-R1's ``<think>``) is not a turn. The response ends at
its first end-of-turn marker (or a new turn's marker); anything after it is cut and
counted. With the policy's tokenizer (`TemplateReader(tokenizer=...)`), its own special
tokens are removed too, and its chat template is checked once against the ones above.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from autorule.data.messages import ROLE_ALIASES, ROLES, Message
from autorule.data.reasoning import split_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatTemplate:
    """How one family of chat templates marks turns.

    Args:
        name: the family's name.
        turn: a turn's opening marker; its ``role`` group names the role, else the
            marker itself is looked up in `roles`.
        ends: end-of-turn tokens: a response stops at the first.
        specials: other tokens removed wherever they appear (BOS, padding, tool tags).
        roles: marker text or role name -> role (None: a closing marker; its text, if
            any, is a user turn).
        head_role: the role of text before the first marker (DeepSeek puts the system
            prompt there).
    """

    name: str
    turn: re.Pattern
    ends: tuple[str, ...]
    specials: re.Pattern | None = None
    roles: dict[str, str | None] = field(default_factory=dict)
    head_role: str = "user"

    def role(self, match: re.Match) -> tuple[str | None, str]:
        """(role, label): a known role, or "user" with the unknown role's name as a label."""
        key = match.groupdict().get("role") or match.group(0)
        if key in self.roles:
            return self.roles[key], ""
        name = ROLE_ALIASES.get(key.lower(), key.lower())
        return (name, "") if name in ROLES else ("user", f"[{key}]\n")


def _tokens(*tokens: str) -> re.Pattern:
    return re.compile("|".join(re.escape(t) for t in tokens))


TEMPLATES: list[ChatTemplate] = [
    ChatTemplate("chatml", re.compile(r"<\|im_start\|>(?P<role>[A-Za-z_]+)(?:\n|<\|im_sep\|>)"), ("<|im_end|>", "<|endoftext|>"),
                 _tokens("<|im_sep|>", "<|endoftext|>", "<|im_end|>")),
    ChatTemplate("llama3", re.compile(r"<\|start_header_id\|>(?P<role>[A-Za-z_]+)<\|end_header_id\|>\n*"),
                 ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
                 _tokens("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>")),
    ChatTemplate("gemma", re.compile(r"<start_of_turn>(?P<role>[A-Za-z_]+)\n?"), ("<end_of_turn>", "<eos>"),
                 _tokens("<bos>", "<eos>", "<pad>", "<end_of_turn>")),
    ChatTemplate("deepseek", re.compile(r"<｜(?P<role>User|Assistant|user|assistant)｜>"), ("<｜end▁of▁sentence｜>",),
                 re.compile(r"<｜[^｜\n]{1,40}｜>"), head_role="system"),
    ChatTemplate("phi3", re.compile(r"<\|(?P<role>system|user|assistant)\|>\n?"), ("<|end|>", "<|endoftext|>"),
                 _tokens("<s>", "</s>", "<|end|>", "<|endoftext|>")),
    ChatTemplate("mistral", re.compile(r"\[INST\]|\[/INST\]|\[SYSTEM_PROMPT\]|\[/SYSTEM_PROMPT\]|\[TOOL_RESULTS\]|\[/TOOL_RESULTS\]"
                                       r"|\[AVAILABLE_TOOLS\]|\[/AVAILABLE_TOOLS\]|<<SYS>>|<</SYS>>"), ("</s>",),
                 _tokens("<s>", "</s>", "<unk>", "<pad>"),
                 roles={"[INST]": "user", "[/INST]": "assistant", "[SYSTEM_PROMPT]": "system", "[/SYSTEM_PROMPT]": None,
                        "[TOOL_RESULTS]": "tool", "[/TOOL_RESULTS]": "assistant", "[AVAILABLE_TOOLS]": "system",
                        "[/AVAILABLE_TOOLS]": None, "<<SYS>>": "system", "<</SYS>>": "user"}),
]
# every template's markers: none may reach the verifier when a template was read
ALL_MARKERS = re.compile("|".join(
    [t.turn.pattern.replace("(?P<role>", "(?:") for t in TEMPLATES] + [t.specials.pattern for t in TEMPLATES if t.specials is not None]
    + ["|".join(re.escape(e) for e in t.ends) for t in TEMPLATES]))


@dataclass
class ReadQuery:
    """A query read back: the conversation, and what reading it cut.

    Args:
        messages: the turns, ending with the response (an assistant turn).
        template: the template read, or None (unknown: scored as text).
        chars_after_end: characters after the response's end-of-turn marker, cut.
    """

    messages: list[Message]
    template: str | None
    chars_after_end: int = 0


def _turns(template: ChatTemplate, text: str) -> list[tuple[str | None, str]] | None:
    """(role, raw text) of each turn, the text before the first marker included; None when no marker is found."""
    markers = list(template.turn.finditer(text))
    if not markers:
        return None
    turns: list[tuple[str | None, str]] = [(template.head_role, text[: markers[0].start()])]
    for i, m in enumerate(markers):
        role, label = template.role(m)
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        turns.append((role, label + text[m.end() : end]))
    return turns


class TemplateReader:
    """Reads chat-templated prompts and responses back into turns (`read`).

    Args:
        tokenizer: the policy's tokenizer (optional): its special tokens are removed
            from every turn and end the response; its chat template is rendered once and
            matched against `TEMPLATES` (logged; when none matches, prompts that no known
            template reads are scored as text, counted).
        templates: the templates to try, in order.

    Example:
        >>> reader = TemplateReader()
        >>> got = reader.read("<s>[INST] Say hi. [/INST]Hi!</s>", "<s>[INST] Say hi. [/INST]")
        >>> got.template, [(m.role, m.content) for m in got.messages]
        ('mistral', [('user', 'Say hi.'), ('assistant', 'Hi!')])
    """

    def __init__(self, tokenizer: Any = None, templates: list[ChatTemplate] | None = None):
        self.templates = list(templates or TEMPLATES)
        self.tokenizer_template: str | None = None
        specials: list[str] = []
        stops: list[str] = []
        if tokenizer is not None:
            specials = sorted({t for t in getattr(tokenizer, "all_special_tokens", []) if t}, key=len, reverse=True)
            stops = [t for t in (getattr(tokenizer, "eos_token", None), getattr(tokenizer, "pad_token", None)) if t]
        self._specials = _tokens(*specials) if specials else None
        self._stops = tuple(stops)
        if tokenizer is not None:
            self.tokenizer_template = self._match_tokenizer(tokenizer)

    def _match_tokenizer(self, tokenizer: Any) -> str | None:
        """Which known template the tokenizer's chat template renders as (rendered once, on a probe conversation)."""
        probe = [{"role": "user", "content": "Probe question one."}, {"role": "assistant", "content": "Probe answer one."},
                 {"role": "user", "content": "Probe question two."}]
        try:
            text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - no template, or one that refuses the probe
            log.warning("the policy tokenizer's chat template could not be rendered (%s); prompts are read with the built-in templates", e)
            return None
        for template in self.templates:
            got = self._prompt(template, text)
            if got is not None and [(m.role, m.content) for m in got] == [(m["role"], m["content"]) for m in probe]:
                log.info("the policy's chat template reads back as %s", template.name)
                return template.name
        log.warning("the policy's chat template is none autorule reads back (%s); prompts in it are scored as text, "
                    "with the tokenizer's special tokens removed, and counted as unknown_template",
                    ", ".join(t.name for t in self.templates))
        return None

    def _clean(self, template: ChatTemplate | None, text: str) -> str:
        if template is not None and template.specials is not None:
            text = template.specials.sub("", text)
        if self._specials is not None:  # a line break where a token was: unknown templates stay readable as text
            text = self._specials.sub("\n", text)
        return text.strip()

    def _prompt(self, template: ChatTemplate, prompt: str) -> list[Message] | None:
        turns = _turns(template, prompt)
        if turns is None:
            return None
        out = []
        for i, (role, raw) in enumerate(turns):
            # before the first turn only BOS, padding (any template's) or DeepSeek's system prompt
            text = self._clean(template, ALL_MARKERS.sub("", raw) if i == 0 else raw)
            if role == "assistant" and i == len(turns) - 1:
                text = split_answer(text).answer  # the generation prompt: an opened or empty reasoning block is not a turn
            if not text:
                continue
            out.append(Message(role=role or "user", content=text))
        return out

    def _response(self, template: ChatTemplate | None, response: str) -> tuple[str, int]:
        """The response up to its end-of-turn marker (or a new turn), cleaned; and the characters cut after it."""
        ends = [*(template.ends if template else {e for t in self.templates for e in t.ends}), *self._stops]
        cut = min((i for i in (response.find(e) for e in ends) if i >= 0), default=len(response))
        for t in [template] if template else self.templates:
            m = t.turn.search(response)
            if m is not None:
                cut = min(cut, m.start())
        rest = response[cut:]
        for e in ends:  # the end markers themselves (and padding after them) are not cut text
            rest = rest.replace(e, "")
        rest = ALL_MARKERS.sub("", rest)
        if self._specials is not None:
            rest = self._specials.sub("", rest)
        text = response[:cut]
        if template is None:  # unknown: the known markers and the tokenizer's special tokens still go
            text = ALL_MARKERS.sub("", text)
        return self._clean(template, text), len(rest.strip())

    def read(self, query: str, prompt: str | None) -> ReadQuery:
        """The conversation in an OpenRLHF query (prompt + response as one text).

        Args:
            query: the prompt and the response, as OpenRLHF decodes them.
            prompt: the prompt sent beside it (None: the query alone; its last assistant
                turn is the response, or all of it when no template is found).
        """
        head = prompt if prompt and query.startswith(prompt) else None
        for template in self._candidates():
            if head is not None:
                turns = self._prompt(template, head)
                if turns is not None:
                    response, after = self._response(template, query[len(head) :])
                    return ReadQuery([*turns, Message(role="assistant", content=response)], template.name, after)
                continue
            # the prompt is not a prefix of the query (or none was sent): the query's last assistant turn is the response
            starts = [m for m in template.turn.finditer(query) if template.role(m)[0] == "assistant"]
            if starts:
                response, after = self._response(template, query[starts[-1].end() :])
                turns = self._prompt(template, query[: starts[-1].start()]) or []
                return ReadQuery([*turns, Message(role="assistant", content=response)], template.name, after)
        # no known template: the prompt is one user turn of text, the rest of the query the response
        rest = query[len(head) :] if head is not None else query
        user = self._clean(None, ALL_MARKERS.sub("", prompt or ""))
        response, after = self._response(None, rest)
        return ReadQuery([*([Message(role="user", content=user)] if user else []), Message(role="assistant", content=response)], None, after)

    def _candidates(self) -> list[ChatTemplate]:
        if self.tokenizer_template is None:
            return self.templates
        first = [t for t in self.templates if t.name == self.tokenizer_template]
        return first + [t for t in self.templates if t.name != self.tokenizer_template]
