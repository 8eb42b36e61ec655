"""Our few-line checkers, for what lm-eval's IFEval checkers lack (or count in a way a rule does not mean).

Each is text -> bool, built from its parameters. Counting words is IFEval's count
(`ifeval.count_words`), so a word bound means the same here and there.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from autorule.rules.checks.ifeval import count_words

# IFEval's bullet lines (detectable_format:number_bullet_lists): "* item" or "- item"
_BULLET = re.compile(r"^\s*\*[^\*].*$|^\s*-.*$", re.MULTILINE)
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+\S", re.MULTILINE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
RELATIONS = ("less than", "at least")  # IFEval's comparison relations, so bounds read the same everywhere


def compare(count: int, relation: str, bound: int) -> bool:
    """`count` against `bound` with an IFEval relation ("less than" or "at least").

    Example:
        >>> compare(3, "less than", 3), compare(3, "at least", 3)
        (False, True)
    """
    if relation not in RELATIONS:
        raise ValueError(f"relation {relation!r}: expected one of {RELATIONS}")
    return count < bound if relation == "less than" else count >= bound


def count_sentences(text: str) -> int:
    """Sentences: pieces ended by . ! or ? (and closing quotes or brackets) before a space, or by a line break,
    that hold at least one letter or digit.

    Example:
        >>> count_sentences("Hi there. How are you? Fine!\\n- a bullet")
        4
    """
    return sum(1 for piece in _SENTENCE_END.split(text.strip()) if re.search(r"\w", piece))


def count_paragraphs(text: str) -> int:
    """Paragraphs: blocks between blank lines that hold at least one letter or digit.

    Example:
        >>> count_paragraphs("One.\\n\\nTwo,\\nstill two.\\n\\n\\n")
        2
    """
    return sum(1 for block in _PARAGRAPH_BREAK.split(text) if re.search(r"\w", block))


def word_range(min_words: int, max_words: int) -> Callable[[str], bool]:
    """Between `min_words` and `max_words` words, both included (IFEval's word count).

    Example:
        >>> word_range(2, 3)("one two three"), word_range(2, 3)("one")
        (True, False)
    """
    return lambda text: min_words <= count_words(text) <= max_words


def number_sentences(num_sentences: int, relation: str) -> Callable[[str], bool]:
    """A sentence count against a bound (`count_sentences`; relation as IFEval's).

    Example:
        >>> number_sentences(2, "less than")("One sentence only.")
        True
    """
    compare(0, relation, 0)
    return lambda text: compare(count_sentences(text), relation, num_sentences)


def number_paragraphs(num_paragraphs: int, relation: str) -> Callable[[str], bool]:
    """A paragraph count against a bound (`count_paragraphs`; relation as IFEval's).

    Example:
        >>> number_paragraphs(2, "at least")("One.\\n\\nTwo.")
        True
    """
    compare(0, relation, 0)
    return lambda text: compare(count_paragraphs(text), relation, num_paragraphs)


def bullet_list(min_items: int) -> Callable[[str], bool]:
    """At least `min_items` bullet lines, as IFEval finds them ("* item" or "- item" lines).

    Example:
        >>> bullet_list(2)("Options:\\n- tea\\n- coffee"), bullet_list(1)("No list here.")
        (True, False)
    """
    return lambda text: len(_BULLET.findall(text)) >= min_items


def numbered_list() -> Callable[[str], bool]:
    """At least two numbered lines ("1. ..." or "1) ...").

    Example:
        >>> numbered_list()("Steps:\\n1. Boil water.\\n2. Add pasta."), numbered_list()("1. Only one.")
        (True, False)
    """
    return lambda text: len(_NUMBERED.findall(text)) >= 2


def heading() -> Callable[[str], bool]:
    """A markdown heading: a line starting with one to six # and a space.

    Example:
        >>> heading()("# Title\\ntext"), heading()("#hashtag")
        (True, False)
    """
    return lambda text: bool(_HEADING.search(text))


def code_block() -> Callable[[str], bool]:
    """A code block fenced with triple backticks (an opening and a closing fence).

    Example:
        >>> code_block()("```python\\nprint(1)\\n```"), code_block()("use `x`")
        (True, False)
    """
    return lambda text: text.count("```") >= 2


def ends_with_question() -> Callable[[str], bool]:
    """The last character, past trailing white space, is a question mark.

    Example:
        >>> ends_with_question()("Anything else?  "), ends_with_question()("Done.")
        (True, False)
    """
    return lambda text: text.rstrip().endswith("?")


def starts_with(phrase: str) -> Callable[[str], bool]:
    """Starts with `phrase`, ignoring case, leading white space and an opening quotation mark.

    Example:
        >>> starts_with("Sure")('"sure, here it is"'), starts_with("Sure")("Of course")
        (True, False)
    """
    wanted = phrase.strip().lower()
    return lambda text: text.strip().lstrip("\"'\u201c").lower().startswith(wanted)
