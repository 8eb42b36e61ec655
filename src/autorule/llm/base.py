"""One interface for every LLM backend: batched chat generation and yes/no scoring."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from autorule.data.reasoning import split_answer
from autorule.errors import AutoruleError

OnResult = Callable[[int, "Completion"], None]
# called with an item's index once every question of that item is answered
OnItem = Callable[[int], None]
# a verdict the model gave no readable Yes/No for: neither pass nor fail
UNPARSED = math.nan


class LLMError(AutoruleError, RuntimeError):
    """A call that failed for good (after retries, or a fault retrying cannot fix).

    Args:
        message: what failed and, where known, how to fix it.

    Example:
        >>> str(LLMError("the server refused the request"))
        'the server refused the request'
    """


class RequestRefused(LLMError):
    """The server refused this one request (e.g. longer than its context); others may pass."""


@dataclass
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    # version of the prompt template that built `messages`; part of the cache key
    template: str = ""
    # start of the answer, written for the model: local backends continue from it (small
    # models follow formats far better so); chat servers have no portable way to prefill,
    # so they get the request without it. Completion.text includes it either way.
    prefill: str = ""

    def cache_fields(self) -> dict:
        return asdict(self)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Completion:
    text: str
    reasoning: str | None = None
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    cached: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Completion:
        return cls(text=d["text"], reasoning=d.get("reasoning"), finish_reason=d.get("finish_reason", "stop"), usage=Usage(**d.get("usage", {})))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("cached")
        return d


def split_reasoning(text: str) -> tuple[str | None, str]:
    """Split the reasoning out of a reply: (reasoning trace or None, final text).

    The one reader of reasoning markers (`autorule.data.reasoning.split_answer`) serves the judge's
    replies too: ``<think>``, ``<thinking>``, ``<reasoning>``, ``<seed:think>``, ``[THINK]``,
    ``<|begin_of_thought|>``. An unclosed block (a reply cut off mid-thought) is all
    reasoning, no answer; a reply with only the closing marker (the template opened the
    block) is reasoning up to it.

    Args:
        text: the generated reply.

    Example:
        >>> split_reasoning("<think>A is longer.</think>A wins")
        ('A is longer.', 'A wins')
        >>> split_reasoning("plan</think>answer"), split_reasoning("<reasoning>B is kinder.</reasoning> B"), split_reasoning("plain")
        (('plan', 'answer'), ('B is kinder.', 'B'), (None, 'plain'))
    """
    split = split_answer(text)
    return (split.reasoning or None), split.answer.strip()


def is_yes_token(token: str) -> bool:
    return token.strip().strip(".*[]\"'").lower() == "yes"


def is_no_token(token: str) -> bool:
    return token.strip().strip(".*[]\"'").lower() == "no"


# least probability Yes and No must share for their ratio to be read as a verdict
MIN_ANSWER_MASS = 0.01


def yes_probability(top_logprobs: Iterable[tuple[str, float]], min_mass: float = MIN_ANSWER_MASS) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) from (token, logprob) pairs.

    None if neither appears, or if together they hold less than `min_mass` of the
    probability (a model about to write "<think>", say): their ratio is noise, not a verdict.
    """
    pairs = list(top_logprobs)
    yes = [lp for tok, lp in pairs if is_yes_token(tok)]
    no = [lp for tok, lp in pairs if is_no_token(tok)]
    if sum(math.exp(lp) for lp in yes + no) < min_mass or (not yes and not no):
        return None
    ly = _logsumexp(yes) if yes else -math.inf
    ln = _logsumexp(no) if no else -math.inf
    return 1.0 / (1.0 + math.exp(ln - ly)) if ly > -math.inf else 0.0


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


_ANSWER = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(text: str) -> float | None:
    """1.0 / 0.0 from a short generated answer ('[[Yes]]', 'No.', 'Answer: yes'); None if unclear."""
    _, answer = split_reasoning(text)
    m = _ANSWER.search(answer)
    if not m:
        return None
    return 1.0 if m.group(1).lower() == "yes" else 0.0


# a reasoning this short is the verdict itself ("Yes", "No.", "Answer: yes"), cut off or not
_BARE_VERDICT_WORDS = 3


def parse_verdict(content: str | None, reasoning: str | None = None, *, cut: bool = False) -> float | None:
    """1.0 / 0.0 from a generated yes/no answer, or from the reasoning a server filed apart.

    The answer (`content`) decides when it holds any text (`parse_yes_no`). Only when it
    is empty (None or blank) is the reasoning read: vLLM and SGLang with
    ``--reasoning-parser`` file all of a reply under ``reasoning_content`` (``content:
    null``) when the model writes no closing tag. Then a bare verdict ("Yes", "No.") is
    read as it stands; a longer reasoning gives its *last* Yes/No, the conclusion ("...
    so the answer is Yes."), unless it was cut at the token limit (`cut`), where the last
    Yes/No may be a step of the thinking, not its end.

    Args:
        content: the reply's answer text (``message.content``; None for null).
        reasoning: ``reasoning_content`` (or ``reasoning``) of the reply, if any.
        cut: the reply stopped at ``max_tokens`` (``finish_reason == "length"``).

    Returns:
        1.0 for Yes, 0.0 for No, None when no verdict can be read.

    Example:
        >>> parse_verdict(None, "Yes"), parse_verdict("", "The reply is rude, so no. Then again... so the answer is Yes.")
        (1.0, 1.0)
        >>> parse_verdict("No.", "yes"), parse_verdict(None, "Is it polite? Yes. Is it short", cut=True)
        (0.0, None)
    """
    if content and content.strip():
        return parse_yes_no(content)
    if not reasoning or not reasoning.strip():
        return None
    if len(reasoning.split()) <= _BARE_VERDICT_WORDS:
        return parse_yes_no(reasoning)
    if cut:
        return None
    found = _ANSWER.findall(reasoning)
    return None if not found else 1.0 if found[-1].lower() == "yes" else 0.0


class LLM(ABC):
    """A model behind one spec string. Backends implement `_generate` and `_score_yes_no`.

    Args:
        (none: backends take their own; see `load_llm`.)

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> llm = FakeLLM(p_yes=0.3)
        >>> llm.score_yes_no("conversation", ["Is it short?"]), llm.stats["yes_no_checks"]
        ([0.3], 1)
    """

    spec: str = ""

    def __init__(self) -> None:
        # counts a run reports: requests, retries, faults by kind, unparsed yes/no answers
        self.stats: Counter = Counter()
        # the starts of the first generated yes/no answers that held no Yes/No and showed no
        # reasoning: an error quotes them rather than guess at the cause
        self.unparsed_replies: list[str] = []

    def note_unparsed_reply(self, text: str | None, keep: int = 3, chars: int = 80) -> None:
        """Keep the start of a generated yes/no answer that held no Yes/No (the first `keep` of a run).

        Args:
            text: the answer's text; keep: how many to keep; chars: how much of each.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> llm = FakeLLM()
            >>> llm.note_unparsed_reply("The response  is polite because it thanks the user for waiting patiently", chars=30)
            >>> llm.unparsed_replies
            ['The response is polite becaus…']
        """
        line = " ".join((text or "").split())
        if len(self.unparsed_replies) < keep:
            self.unparsed_replies.append(line if len(line) <= chars else line[: chars - 1].rstrip() + "…")

    @property
    def identity(self) -> dict:
        """What identifies the model's answers, for cache keys."""
        return {"spec": self.spec}

    @property
    def backend(self) -> LLM:
        """The model itself, behind any wrapper such as the cache (for its tokenizer, server info, speed)."""
        return self

    @property
    def yes_no_record(self) -> dict:
        """How this backend sends yes/no checks, for run records (``verifier_mode``): ``{"mode", "reason", "template"}``.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> FakeLLM().yes_no_record["mode"]
            'in-process'
        """
        return {"mode": "in-process", "reason": "the model runs in this process: each conversation's prefix computed once for all its rules", "template": None}

    def count_tokens(self, text: str) -> int:
        """Tokens in `text`; without a tokenizer, a conservative estimate (2 bytes a token)."""
        return len(text.encode()) // 2 + 1

    def generate(self, requests: list[ChatRequest], desc: str | None = None, on_result: OnResult | None = None) -> list[Completion]:
        """Chat completions, one per request, in order.

        `desc` labels a progress bar; `on_result(i, completion)` is called as each one
        finishes (in any order), so callers can persist work before the batch ends.
        """
        if not requests:
            return []
        return self._generate(requests, desc, on_result)

    def score_yes_no(self, prefix: str, questions: list[str]) -> list[float]:
        """P(Yes) for the user message `prefix + question`, one per question.

        The prefix (e.g. instructions and a conversation) is shared by every question, so
        backends process it once: local models reuse its KV cache, servers their prefix cache.
        A question the model gave no readable Yes/No for is NaN (`UNPARSED`), counted in
        ``stats["yes_no_unparsed"]``: callers leave it out, it is neither pass nor fail.
        """
        return self.score_yes_no_batch([(prefix, questions)])[0]

    def score_yes_no_batch(
        self, items: list[tuple[str, list[str]]], *, on_item: OnItem | None = None, errors: dict[int, str] | None = None,
        keys: list[str] | None = None,
    ) -> list[list[float]]:
        """`score_yes_no` for many prefixes at once (servers run them all concurrently).

        on_item: called with an item's index as soon as all its questions are answered
            (progress bars advance per conversation).
        errors: when given, an item the server refuses (e.g. too long for its context) gets
            NaN for every question and its reason in ``errors[index]``, and the rest still
            run; without it the refusal raises `RequestRefused`.
        keys: one affinity key per item (default: its prefix). A server backend with several
            replicas sends items of one key to one replica, so that its prefix cache serves
            them all (the verifier's key: the conversation before the judged response, which
            every completion of one prompt shares).
        """
        if not any(qs for _, qs in items):
            for i in range(len(items)):
                on_item and on_item(i)
            return [[] for _ in items]
        return self._score_yes_no_batch(items, on_item, errors, keys)

    @abstractmethod
    def _generate(self, requests: list[ChatRequest], desc: str | None, on_result: OnResult | None) -> list[Completion]: ...

    @abstractmethod
    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]], on_item: OnItem | None, errors: dict[int, str] | None,
                            keys: list[str] | None = None) -> list[list[float]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


# what a run summary shows of a backend's counts, in this order
_SHOWN = [
    ("requests", "requests"), ("cache_hits", "cache hits"), ("retries", "retries"), ("fault_timeout", "timeouts"),
    ("overload", "overloaded"), ("truncated", "cut at max tokens"), ("refused", "refused"), ("yes_no_fallback", "yes/no fallbacks"),
    ("yes_no_unparsed", "unparsed verdicts"), ("yes_no_thinking", "thinking-first verdicts"),
    ("logprobs_refused", "logprobs refused (verdicts read from short answers)"), ("top_logprobs_lowered", "top_logprobs lowered to the server's limit"),
    ("yes_no_from_reasoning", "verdicts read from reasoning_content"),
    ("context_learned", "context learned from the server's refusal"), ("context_retried", "requests refitted to it and retried"),
    ("replica_down", "replicas left out (stopped answering)"), ("rerouted", "requests re-routed to another replica"),
    ("batches_split", "batched requests split after a refusal"), ("code_checks", "checks decided by code (no LLM)"),
]


def describe_llm_stats(stats: dict) -> str:
    """One line of a backend's counts for a summary: requests, retries, timeouts, fallbacks...

    Zero counts are left out, except requests, retries, timeouts, truncations and unparsed
    verdicts, which are always shown so that "none" is visible.

    Example:
        >>> describe_llm_stats({"requests": 12, "retries": 3, "fault_503": 3, "concurrency_min": 2})
        'requests 12, retries 3 (503: 3), timeouts 0, cut at max tokens 0, unparsed verdicts 0, concurrency fell to 2'
    """
    always = {"requests", "retries", "fault_timeout", "truncated", "yes_no_unparsed"}
    parts = []
    for key, label in _SHOWN:
        n = stats.get(key, 0)
        if n or key in always:
            text = f"{label} {n}"
            if key == "retries" and n:
                faults = ", ".join(f"{k[6:]}: {v}" for k, v in stats.items() if k.startswith("fault_") and k != "fault_timeout" and v)
                text += f" ({faults})" if faults else ""
            parts.append(text)
    if "concurrency_min" in stats:
        parts.append(f"concurrency fell to {stats['concurrency_min']}")
    return ", ".join(parts)


def describe_mode(record: dict) -> str:
    """One line of a `LLM.yes_no_record` for a summary.

    Example:
        >>> describe_mode({"mode": "batched", "reason": "probed", "template": "llama-server /apply-template"})
        'batched (chat template from llama-server /apply-template): probed'
        >>> describe_mode({"mode": "chat", "reason": "asked for: --yes-no-mode chat", "template": None})
        'chat: asked for: --yes-no-mode chat'
    """
    template = f" (chat template from {record['template']})" if record.get("template") else ""
    return f"{record.get('mode')}{template}: {record.get('reason')}"
