"""A reasoning policy's thinking, cut off its completion: rules judge what the user reads.

A completion such as ``<think> ...reasoning... </think> final answer`` is judged on
``final answer``. When the chat template opened the block (DeepSeek-R1, Qwen3 thinking
models: the prompt ends with ``<think>``), the completion holds only the closing marker:
everything before it is reasoning. A block that is opened and never closed (a completion
cut off while thinking) leaves no answer: the completion is empty.

Markers read (each pair also anywhere in the text, and case-insensitively):

- ``<think>`` / ``</think>``: Qwen3, QwQ, DeepSeek-R1 and its distills, most open models;
- ``<thinking>`` / ``</thinking>`` and ``<reasoning>`` / ``</reasoning>``: common in
  prompted and fine-tuned policies;
- ``<seed:think>`` / ``</seed:think>``: Seed-OSS;
- ``[THINK]`` / ``[/THINK]``: Magistral;
- ``<|begin_of_thought|>`` / ``<|end_of_thought|>``: OpenThoughts / Bespoke-Stratos; their
  ``<|begin_of_solution|>`` / ``<|end_of_solution|>`` wrapper around the answer is
  removed too (its text stays).

Not read: gpt-oss's harmony channels (``<|channel|>analysis``), which reach a reward
function as separate fields or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from autorule.data.messages import Message

# (opening, closing) marker patterns of a reasoning block
REASONING_MARKERS: list[tuple[str, str]] = [
    (r"<think>", r"</think>"),
    (r"<thinking>", r"</thinking>"),
    (r"<reasoning>", r"</reasoning>"),
    (r"<seed:think>", r"</seed:think>"),
    (r"\[THINK\]", r"\[/THINK\]"),
    (r"<\|begin_of_thought\|>", r"<\|end_of_thought\|>"),
]
_PAIRS = [(re.compile(o, re.IGNORECASE), re.compile(c, re.IGNORECASE)) for o, c in REASONING_MARKERS]
# markers that wrap the answer itself: removed, their text kept
_ANSWER_WRAPPERS = re.compile(r"<\|begin_of_solution\|>|<\|end_of_solution\|>", re.IGNORECASE)


@dataclass(frozen=True)
class SplitAnswer:
    """A completion split into what the user reads and what was cut.

    Args:
        answer: the text after the reasoning (stripped of surrounding whitespace when
            anything was cut; the completion unchanged when nothing was).
        chars_stripped: characters removed: reasoning blocks with their markers, and
            answer-wrapper markers (whitespace around the answer not counted).
        unclosed: a reasoning block was opened and never closed (the completion was
            cut off while thinking).
        reasoning: the text of the reasoning blocks, each stripped, joined by newlines
            ("" when none); what a judge's reply parser keeps as the trace (left out of
            comparisons and the repr: the answer and the counts say what was cut).
    """

    answer: str
    chars_stripped: int = 0
    unclosed: bool = False
    reasoning: str = field(default="", compare=False, repr=False)


def _cut_pair(text: str, opening: re.Pattern, closing: re.Pattern, thoughts: list[str]) -> tuple[str, bool]:
    """`text` without the blocks of one marker pair (their texts appended to `thoughts`); True when a block was never closed."""
    kept, pos = [], 0
    first_close, first_open = closing.search(text), opening.search(text)
    if first_close and (first_open is None or first_open.start() > first_close.start()):
        thoughts.append(text[: first_close.start()])
        pos = first_close.end()  # the template opened the block: all before the close is reasoning
    while (start := opening.search(text, pos)) is not None:
        kept.append(text[pos : start.start()])
        end = closing.search(text, start.end())
        if end is None:  # cut off while thinking: the rest is reasoning
            thoughts.append(text[start.end() :])
            return "".join(kept), True
        thoughts.append(text[start.end() : end.start()])
        pos = end.end()
    kept.append(text[pos:])
    return "".join(kept), False


def split_answer(text: str) -> SplitAnswer:
    """The answer a user reads in a completion, with the reasoning before it cut and counted.

    Args:
        text: the completion (the final assistant turn).

    Example:
        >>> split_answer("<think>The user wants a yes.</think>\\n\\nYes.")
        SplitAnswer(answer='Yes.', chars_stripped=36, unclosed=False)
        >>> split_answer("It is long, so</think>Short answer.")  # the template opened the block
        SplitAnswer(answer='Short answer.', chars_stripped=22, unclosed=False)
        >>> split_answer("<think>Let me count: 1, 2")  # cut off while thinking: no answer
        SplitAnswer(answer='', chars_stripped=25, unclosed=True)
        >>> split_answer("No reasoning here.")
        SplitAnswer(answer='No reasoning here.', chars_stripped=0, unclosed=False)
        >>> split_answer("[THINK]Short is better.[/THINK]B").reasoning
        'Short is better.'
    """
    current, unclosed, thoughts = text, False, []
    for opening, closing in _PAIRS:
        current, cut = _cut_pair(current, opening, closing, thoughts)
        unclosed = unclosed or cut
    current = _ANSWER_WRAPPERS.sub("", current)
    stripped = len(text) - len(current)
    if not stripped:
        return SplitAnswer(text)
    reasoning = "\n".join(t.strip() for t in thoughts if t.strip())
    return SplitAnswer(current.strip(), stripped, unclosed, reasoning)


def has_reasoning(text: str) -> bool:
    """Whether a text holds a reasoning marker (an opening or closing one of `REASONING_MARKERS`).

    Args:
        text: a completion or a reply.

    Example:
        >>> has_reasoning("<think>Let me check"), has_reasoning("so it is fine.</think>"), has_reasoning("The response is polite")
        (True, True, False)
    """
    return any(o.search(text) or c.search(text) for o, c in _PAIRS)


def answer_only(conversation: list[Message]) -> tuple[list[Message], int]:
    """The conversation with its final assistant turn's reasoning cut, and the characters cut.

    Only the final turn (the response judged) is touched, and only when it is the
    assistant's; earlier turns are context and stay as they are.

    Args:
        conversation: the turns, ending with the response.

    Example:
        >>> conv, cut = answer_only([Message(role="user", content="2+2?"), Message(role="assistant", content="<think>4</think>4.")])
        >>> [m.content for m in conv], cut
        (['2+2?', '4.'], 16)
    """
    if not conversation or conversation[-1].role != "assistant":
        return conversation, 0
    split = split_answer(conversation[-1].content)
    if not split.chars_stripped:
        return conversation, 0
    return [*conversation[:-1], Message(role="assistant", content=split.answer)], split.chars_stripped
