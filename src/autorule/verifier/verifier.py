"""The verifier, the hot path of RL with rule rewards.

Prompt layout: [instructions][conversation][rule][answer cue]. Everything up to the
end of the conversation is one prefix shared by all K rules, so a backend processes it
once (local: one KV cache; vLLM/SGLang: their prefix cache) and each rule costs only its
short suffix and one next-token read. Verdicts are cached by content through the LLM
cache (model, prompt text, which includes the template and rule).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from collections.abc import Callable
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from autorule.data import Message, to_conversation
# the truncation moved to a shared module (extraction fits its prompts the same way); old names kept
from autorule.llm.fitting import CHAT_TEMPLATE_RESERVE, DEFAULT_CONTEXT, OMITTED, Context, context_limit, fit_messages, fit_prompt, truncate_middle  # noqa: F401
from autorule.llm import LLM, LLMError
from autorule.rules import RuleSet

PROMPTS = Path(__file__).parent / "prompts"
_TEXTS = {name: (PROMPTS / f"{name}.txt").read_text(encoding="utf-8") for name in ("instructions", "rule", "rule_paper", "applies")}
INSTRUCTIONS = Template(_TEXTS["instructions"])
QUESTIONS = {"default": Template(_TEXTS["rule"]), "paper": Template(_TEXTS["rule_paper"])}
APPLIES = Template(_TEXTS["applies"])
TEMPLATE_VERSION = "verify@" + hashlib.sha256("".join(_TEXTS.values()).encode()).hexdigest()[:8]

Style = Literal["default", "paper"]


def _nonce(messages: list[Message]) -> str:
    # derived from the content itself, so the content cannot contain it (and caching stays stable)
    return hashlib.sha256(json.dumps([m.model_dump() for m in messages]).encode()).hexdigest()[:12]


def affinity_key(messages: list[Message]) -> str:
    """What routes a conversation to a replica: everything before the response it judges, so that all
    completions of one prompt (a GRPO group) meet one replica's prefix cache.

    Example:
        >>> a = [Message(role="user", content="Hi"), Message(role="assistant", content="Hello")]
        >>> b = [Message(role="user", content="Hi"), Message(role="assistant", content="Hey there")]
        >>> affinity_key(a) == affinity_key(b) != affinity_key([Message(role="user", content="Bye"), a[1]])
        True
    """
    return hashlib.sha256(json.dumps([m.model_dump() for m in messages[:-1]]).encode()).hexdigest()[:16]


def render_prefix(messages: list[Message]) -> str:
    """Instructions and the conversation. The final response (what a policy writes) sits
    inside markers tagged with a nonce it cannot contain, and the conversation's closing
    marker carries it too; earlier turns have plain markers, so all completions of one
    prompt share everything up to their response (a server's prefix cache, or the local
    backend's shared head, computes it once)."""
    nonce = _nonce(messages)
    turns = []
    for i, m in enumerate(messages):
        if i == len(messages) - 1:
            tag = f"{m.role}-final-response"
            turns.append(f'<{tag} id="{nonce}">\n{m.content}\n</{tag} id="{nonce}">')
        else:
            turns.append(f"<{m.role}>\n{m.content}\n</{m.role}>")
    return INSTRUCTIONS.substitute(nonce=nonce, turns="\n".join(turns))


@dataclass
class Verdicts:
    """P(satisfied) for each (response, rule); P(applies) too when applicability is on.

    A check the verifier gave no readable Yes/No for is NaN: it is neither pass nor
    fail, and is left out of pass rates and rewards like a rule that does not apply.
    A response the server refused outright has NaN everywhere and its reason in `errors`.

    Example:
        >>> import numpy as np
        >>> v = Verdicts(["r1", "r2"], np.array([[0.9, float("nan")], [0.2, 0.7]]))
        >>> v.unparsed, v.pass_rates()
        (1, {'r1': 0.5, 'r2': 1.0})

    Args:
        rule_ids: the rules, in column order; p_satisfied: (responses, rules) P(Yes);
        p_applies: P(the rule applies), with applicability; threshold: P(Yes) that
        counts as satisfied; errors: refused responses (index -> reason);
        by_code: the ids of the rules a program decided (`Rule.check`): their verdicts are
        1.0 or 0.0 and they always apply.
    """

    rule_ids: list[str]
    p_satisfied: np.ndarray  # (responses, rules)
    p_applies: np.ndarray | None = None
    threshold: float = 0.5
    errors: dict[int, str] = field(default_factory=dict)  # response index -> why the server refused it
    by_code: list[str] = field(default_factory=list)  # rules decided by a program, not the LLM

    @property
    def code_checks(self) -> int:
        """Checks decided by a program (`by_code` rules on responses not refused).

        Example:
            >>> import numpy as np
            >>> Verdicts(["r1", "r2"], np.array([[1.0, 0.7], [0.0, 0.2]]), by_code=["r1"]).code_checks
            2
        """
        return len(self.by_code) * (self.p_satisfied.shape[0] - len(self.errors))

    @property
    def parsed(self) -> np.ndarray:
        """Where the verifier gave a readable verdict (and, with applicability, a readable 'applies')."""
        ok = ~np.isnan(self.p_satisfied)
        if self.p_applies is not None:
            ok &= ~np.isnan(self.p_applies)
        return ok

    def unparsed_per_response(self) -> list[int]:
        """Checks per response with no readable answer (0 for a response the server refused)."""
        counts = (~self.parsed).sum(axis=1)
        return [0 if i in self.errors else int(n) for i, n in enumerate(counts)]

    @property
    def unparsed(self) -> int:
        """Checks with no readable answer, not counting responses the server refused."""
        return sum(self.unparsed_per_response())

    @property
    def hard(self) -> np.ndarray:
        return np.nan_to_num(self.p_satisfied, nan=0.0) >= self.threshold

    @property
    def applicable(self) -> np.ndarray:
        """Rules that apply and were judged: the checks a reward averages over."""
        if self.p_applies is None:
            return self.parsed
        return self.parsed & (np.nan_to_num(self.p_applies, nan=0.0) >= self.threshold)

    def pass_rates(self, kept: np.ndarray | None = None) -> dict[str, float]:
        """Per rule: the fraction of responses (where it applies) that satisfy it.

        Args:
            kept: shape (n, k) bool, where a rule counts at all (rule dropout); None: everywhere.
        """
        judged = self.applicable if kept is None else self.applicable & kept
        rates = {}
        for j, rid in enumerate(self.rule_ids):
            mask = judged[:, j]
            rates[rid] = float(self.hard[mask, j].mean()) if mask.any() else float("nan")
        return rates

    @classmethod
    def concat(cls, parts: list[Verdicts]) -> Verdicts:
        """The verdicts of several batches of responses (same rules) as one, in order.

        Args:
            parts: Verdicts over the same rules, e.g. one per chunk of a large file.

        Example:
            >>> import numpy as np
            >>> both = Verdicts.concat([Verdicts(["r1"], np.array([[0.9]])), Verdicts(["r1"], np.array([[0.2], [0.4]]), errors={1: "refused"})])
            >>> both.p_satisfied.ravel().tolist(), both.errors
            ([0.9, 0.2, 0.4], {2: 'refused'})
        """
        if not parts:
            raise ValueError("no verdicts to join")
        first = parts[0]
        errors, offset = {}, 0
        for part in parts:
            errors.update({offset + i: why for i, why in part.errors.items()})
            offset += part.p_satisfied.shape[0]
        applies = None if first.p_applies is None else np.concatenate([p.p_applies for p in parts])
        return cls(first.rule_ids, np.concatenate([p.p_satisfied for p in parts]), applies, first.threshold, errors, first.by_code)

    def to_rows(self) -> list[dict]:
        """One dict per (response, rule): ``response``, ``rule_id``, ``p_satisfied``, ``satisfied``
        (None where unread), ``p_applies`` (with applicability) and ``error`` (a refused response).

        Example:
            >>> import numpy as np
            >>> Verdicts(["r1"], np.array([[0.9], [float("nan")]])).to_rows()[1]
            {'response': 1, 'rule_id': 'r1', 'p_satisfied': None, 'satisfied': None, 'error': None}
        """
        rows = []
        for i in range(self.p_satisfied.shape[0]):
            for j, rid in enumerate(self.rule_ids):
                p = float(self.p_satisfied[i, j])
                row = {"response": i, "rule_id": rid, "p_satisfied": None if np.isnan(p) else p,
                       "satisfied": None if np.isnan(p) else bool(p >= self.threshold)}
                if self.p_applies is not None:
                    a = float(self.p_applies[i, j])
                    row["p_applies"] = None if np.isnan(a) else a
                row["error"] = self.errors.get(i)
                rows.append(row)
        return rows

    def to_pandas(self):
        """`to_rows` as a pandas DataFrame (needs pandas).

        Example:
            >>> import numpy as np
            >>> Verdicts(["r1", "r2"], np.array([[0.9, 0.1]])).to_pandas()["satisfied"].tolist()
            [True, False]
        """
        import pandas as pd

        return pd.DataFrame(self.to_rows())


class UnparsedVerdicts(LLMError):
    """Too many checks came back with no readable Yes/No: the verifier's results cannot be trusted."""


class Verifier:
    """Judges responses against every rule of a RuleSet with one LLM.

    style: "default" asks whether the final response follows the rule; "paper" is the
        AutoRule paper's check (a rule that does not apply counts as satisfied, and the
        response must also be concise).
    applicability: also ask whether each rule applies; rewards then average only over
        the rules that apply (three-valued verdicts: yes / no / not applicable).
    max_input_tokens: the verifier's context budget (default: what the server reports,
        else 8192); long conversations are cut in the middle of their turns to fit, never
        the instructions, rule or answer cue.
    max_unparsed: the largest share of checks that may come back with no readable
        Yes/No before `verify` stops with `UnparsedVerdicts` (they are left out of
        rewards, but past this share the rewards rest on too little).

    Rules with a code check (`Rule.check`, see `autorule.rules.checks`) are decided by their
    program on the final response's text: P(Yes) is 1.0 or 0.0, they always apply, and they are
    never sent to the LLM (counted: `Verdicts.by_code`, `Verdicts.code_checks`, and
    ``llm.stats["code_checks"]``). A rule set of code checks only makes no LLM call at all.

    Args:
        llm: the judge (an LLM from `load_llm`).
        rules: the RuleSet to judge against.
        (style, applicability, threshold, max_input_tokens, max_unparsed: as above.)

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> verifier = Verifier(FakeLLM(p_yes=0.8), RuleSet.from_texts(["The response should be short."]))
        >>> verifier.verify([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]]).p_satisfied.tolist()
        [[0.8]]
    """

    def __init__(
        self,
        llm: LLM,
        rules: RuleSet,
        *,
        style: Style = "default",
        applicability: bool = False,
        threshold: float = 0.5,
        max_input_tokens: int | None = None,
        max_unparsed: float = 0.2,
    ):
        if not rules.rules:
            raise ValueError("the rule set is empty: nothing to verify")
        self.llm, self.rules, self.style = llm, rules, style
        self.applicability, self.threshold = applicability, threshold
        self.max_unparsed = max_unparsed
        # the one context object extraction uses too: the budget, and what a server's refusal taught about it
        reported = getattr(llm.backend, "max_context", None)
        tokens, source = (max_input_tokens, "--max-input-tokens") if max_input_tokens else (reported, "server") if reported else (DEFAULT_CONTEXT, "default")
        self.context = Context(tokens, source, llm.count_tokens)
        # rules a program decides never reach the LLM: the questions are the other rules' only
        self.code_checks = {j: r.check.compile() for j, r in enumerate(rules.rules) if r.check is not None}
        self.llm_columns = [j for j in range(len(rules.rules)) if j not in self.code_checks]
        asked = [rules.rules[j] for j in self.llm_columns]
        self.questions = [QUESTIONS[style].substitute(rule=r.text) for r in asked]
        if applicability:
            self.questions += [APPLIES.substitute(rule=r.text) for r in asked]
        self._suffix_tokens = max((llm.count_tokens(q) for q in self.questions), default=0)

    @property
    def max_input_tokens(self) -> int:
        """The context prefixes are fitted to (the setting, the server's, or one a refusal taught)."""
        return self.context.tokens

    @property
    def learned(self) -> list[int]:
        """Each smaller context a server's refusal named, in order."""
        return self.context.learned

    def prefix(self, messages: list[Message]) -> str:
        """The shared prefix, with the conversation cut in the middle until prefix + any rule fits."""

        def render(texts: list[str]) -> str:
            return render_prefix([Message(role=m.role, content=t) for m, t in zip(messages, texts)])

        # the longest rule question stands where a request's answer tokens stand in extraction's budget
        return self.context.fit(render, [m.content for m in messages], self._suffix_tokens).text

    def learn_context(self, reason: str) -> bool:
        """Take a smaller context from a refusal that names one ("maximum context length is N tokens");
        True when it did: prefixes are fitted to it from now on.

        Args:
            reason: the refusal (status and body) of one request.

        Example:
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> verifier = Verifier(FakeLLM(), RuleSet.from_texts(["The response should be short."]), max_input_tokens=8192)
            >>> verifier.learn_context("400: This model's maximum context length is 2000 tokens. However, you requested 9000 tokens"), verifier.max_input_tokens
            (True, 2000)
            >>> verifier.learn_context("400: The prompt was rejected by the content filter."), verifier.learned
            (False, [2000])
        """
        learned = self.context.learn(reason)
        if learned:
            self.llm.stats["context_learned"] += 1
        return learned

    def _retry_with_learned_context(self, chunk: list[list[Message]], scored: list[list[float]], errors: dict[int, str]) -> None:
        """Conversations refused as longer than the server's context, when the refusal taught a smaller one:
        refitted (cut in the middle) and sent once more; `scored` and `errors` are updated in place."""
        too_long = [i for i, why in errors.items() if context_limit(why) is not None]
        if not too_long or not any([self.learn_context(errors[i]) for i in too_long]):
            return  # no refusal named a context smaller than the one fitted to: a refit would be the same
        self.llm.stats["context_retried"] += len(too_long)
        again: dict[int, str] = {}
        redone = self.llm.score_yes_no_batch([(self.prefix(chunk[i]), self.questions) for i in too_long], errors=again,
                                             keys=[affinity_key(chunk[i]) for i in too_long])
        for t, i in enumerate(too_long):
            scored[i] = redone[t]
            if t in again:
                errors[i] = again[t]  # still refused: an error row with the new reason
            else:
                del errors[i]

    def verify(self, conversations: list, desc: str | None = None, batch: int = 64, on_item: Callable[[], None] | None = None) -> Verdicts:
        """Every conversation (ending with the response to judge) against every rule.

        Conversations are lists of `Message` or OpenAI-style dicts, or bare reply strings.

        A conversation the server refuses as longer than its context, when the refusal
        names the context ("maximum context length is N tokens", as vLLM says), teaches
        that context (`learn_context`): it is refitted and sent once more, and later ones
        are fitted to it (counted: ``llm.stats["context_learned"]``, ``["context_retried"]``).
        A conversation the server still refuses gets NaN verdicts and its reason in
        `Verdicts.errors`; every other conversation is still judged.
        Raises `UnparsedVerdicts` when more than `max_unparsed` of the checks had no
        readable answer. `on_item()` is called as each conversation is judged (a caller's
        own progress bar over many calls).

        Raises:
            MessageError: a message `to_conversation` cannot read.
            UnparsedVerdicts: too many checks with no readable answer.
        """
        return self.verify_messages([to_conversation(c) for c in conversations], desc=desc, batch=batch, on_item=on_item)

    def verify_messages(self, conversations: list[list[Message]], desc: str | None = None, batch: int = 64,
                        on_item: Callable[[], None] | None = None) -> Verdicts:
        """`verify` for conversations already read into `Message` lists (the scorer's, the API's):
        a conversation is read once, where it enters autorule.

        Args:
            conversations: lists of `Message`, each ending with the response to judge.
            desc, batch, on_item: as for `verify`.

        Raises:
            UnparsedVerdicts: too many checks with no readable answer.

        Example:
            >>> from autorule.rules import RuleSet
            >>> from autorule.testing.fake_llm import FakeLLM
            >>> verifier = Verifier(FakeLLM(p_yes=0.9), RuleSet.from_texts(["The response should be short."]))
            >>> verifier.verify_messages([[Message(role="assistant", content="Hi")]]).p_satisfied.tolist()
            [[0.9]]
        """
        rows: list[list[float]] = []
        errors: dict[int, str] = {}
        stats = self.llm.stats
        thinking_before = stats["yes_no_thinking"]
        with tqdm(total=len(conversations), desc=desc, disable=desc is None, unit="resp") as bar:
            for start in range(0, len(conversations), batch):
                chunk = conversations[start : start + batch]
                if not self.questions:  # every rule is decided by code: nothing to ask
                    rows.extend([] for _ in chunk)
                    for _ in chunk:
                        bar.update(1)
                        if on_item:
                            on_item()
                    continue
                chunk_errors: dict[int, str] = {}
                scored = self.llm.score_yes_no_batch([(self.prefix(c), self.questions) for c in chunk], on_item=lambda _: (bar.update(1), on_item and on_item()),
                                                     errors=chunk_errors, keys=[affinity_key(c) for c in chunk])
                self._retry_with_learned_context(chunk, scored, chunk_errors)
                rows.extend(scored)
                errors.update({start + i: why for i, why in chunk_errors.items()})
        probs = np.array(rows, dtype=float).reshape(len(conversations), len(self.questions))
        k, asked = len(self.rules.rules), len(self.llm_columns)
        p_satisfied = np.full((len(conversations), k), np.nan)
        p_satisfied[:, self.llm_columns] = probs[:, :asked]
        p_applies = None
        if self.applicability:
            p_applies = np.ones((len(conversations), k))
            p_applies[:, self.llm_columns] = probs[:, asked:]
        for j, check in self.code_checks.items():
            p_satisfied[:, j] = [float(check(c[-1].content)) if c else np.nan for c in conversations]
        if errors and self.code_checks:  # a refused response has NaN everywhere, as without code checks
            p_satisfied[np.ix_(list(errors), list(self.code_checks))] = np.nan
        verdicts = Verdicts(
            rule_ids=[r.id for r in self.rules.rules],
            p_satisfied=p_satisfied,
            p_applies=p_applies,
            threshold=self.threshold,
            errors=errors,
            by_code=[self.rules.rules[j].id for j in self.code_checks],
        )
        stats["code_checks"] += verdicts.code_checks
        judged = (len(conversations) - len(errors)) * len(self.questions)
        unparsed = int(np.isnan(np.delete(probs, list(errors), axis=0)).sum())
        if judged and unparsed / judged > self.max_unparsed:
            thinking = stats["yes_no_thinking"] - thinking_before
            raise UnparsedVerdicts(unparsed_message(unparsed, judged, thinking, getattr(self.llm.backend, "unparsed_replies", [])))
        return verdicts


def unparsed_message(unparsed: int, judged: int, thinking: int, replies: list[str]) -> str:
    """Why too many checks had no readable Yes/No. Thinking is named (with the switch that turns it off)
    only when replies showed reasoning (a <think> tag or reasoning_content); otherwise the replies are quoted.

    Args:
        unparsed: checks with no verdict; judged: checks asked; thinking: replies that showed reasoning;
        replies: the starts of replies with neither Yes/No nor reasoning.

    Example:
        >>> unparsed_message(4, 4, 0, ["The response is polite because"])
        "4 of 4 rule checks had no readable Yes/No (the verifier answered with text that has no Yes or No, e.g. 'The response is polite because'). Unparsed checks are left out of the reward, but at this share it rests on too little. Use a verifier that answers the question with Yes or No (an instruction-tuned model; check the server's chat template)."
    """
    causes, advice = [], []
    if thinking:
        causes.append(f"{thinking} answers began with a reasoning block (<think>): the verifier thinks before it answers")
        advice.append("Use a model that answers directly, or turn thinking off for the verifier: "
                      "--extra-body '{\"chat_template_kwargs\": {\"enable_thinking\": false}}' (Qwen3 on vLLM or "
                      "SGLang; llama-server: start it with --reasoning-budget 0).")
    if replies:
        causes.append(f"the verifier answered with text that has no Yes or No, e.g. {replies[0]!r}")
    if not causes:
        causes.append("the verifier answered with neither Yes nor No")
    if replies or not thinking:
        advice.append("Use a verifier that answers the question with Yes or No (an instruction-tuned model; check the server's chat template).")
    return (f"{unparsed} of {judged} rule checks had no readable Yes/No ({'; '.join(causes)}). Unparsed checks are left out of the "
            f"reward, but at this share it rests on too little. {' '.join(advice)}")
