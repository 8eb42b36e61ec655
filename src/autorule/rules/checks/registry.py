"""The checkers a rule can be mapped to, and `CodeCheck`: a checker's name and parameters as
rules.yaml holds them (``check: {checker: length_constraints:number_words, params: {num_words: 60,
relation: less than}}``).

IFEval's checkers keep their registry ids and `build_description` parameters; ours are named
``autorule:...``. A check can be negated (``negate: true``): the rule holds where the checker says no.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from autorule.rules.checks import ifeval, ours

IFEVAL, OURS = ifeval.IFEVAL, "autorule"


@dataclass(frozen=True)
class Checker:
    """One checker a rule can be mapped to.

    Args:
        name: its name in rules.yaml (IFEval's instruction id, or ``autorule:...``);
        params: parameter -> kind ("count": a whole number >= 0, "relation": "less than" or
            "at least", "text": non-empty text, "words": a non-empty list of texts, "language":
            an ISO 639-1 code IFEval knows); says: what it checks, in words, with {param}
            placeholders; source: IFEVAL or OURS; build: (**params) -> (text -> bool).
    """

    name: str
    params: dict[str, str]
    says: str
    source: str
    build: Callable[..., Callable[[str], bool]]


def _ifeval(name: str, params: dict[str, str], says: str, escape: str | None = None) -> Checker:
    def build(**kw):
        if escape:  # IFEval reads keywords as regular expressions; a rule names them as plain words
            import re

            kw = {**kw, escape: [re.escape(w) for w in kw[escape]]}
        return ifeval.checker(name, **kw)

    return Checker(name, params, says, IFEVAL, build)


CHECKERS: dict[str, Checker] = {c.name: c for c in [
    _ifeval("length_constraints:number_words", {"num_words": "count", "relation": "relation"}, "{relation} {num_words} words"),
    _ifeval("detectable_format:number_bullet_lists", {"num_bullets": "count"}, "exactly {num_bullets} bullet lines ('* ' or '- ')"),
    _ifeval("change_case:english_capital", {}, "English, all in capital letters"),
    _ifeval("change_case:english_lowercase", {}, "English, all in lowercase letters"),
    _ifeval("punctuation:no_comma", {}, "no commas"),
    _ifeval("startend:quotation", {}, "wrapped in double quotation marks"),
    _ifeval("startend:end_checker", {"end_phrase": "text"}, "ends with {end_phrase!r}"),
    _ifeval("language:response_language", {"language": "language"}, "written in language {language}"),
    _ifeval("detectable_format:json_format", {}, "valid JSON (a ``` fence allowed)"),
    _ifeval("keywords:existence", {"keywords": "words"}, "contains {keywords}", escape="keywords"),
    _ifeval("keywords:forbidden_words", {"forbidden_words": "words"}, "none of the words {forbidden_words}", escape="forbidden_words"),
    Checker("autorule:word_range", {"min_words": "count", "max_words": "count"}, "{min_words} to {max_words} words", OURS, ours.word_range),
    Checker("autorule:number_sentences", {"num_sentences": "count", "relation": "relation"}, "{relation} {num_sentences} sentences", OURS,
            ours.number_sentences),
    Checker("autorule:number_paragraphs", {"num_paragraphs": "count", "relation": "relation"}, "{relation} {num_paragraphs} paragraphs", OURS,
            ours.number_paragraphs),
    Checker("autorule:bullet_list", {"min_items": "count"}, "at least {min_items} bullet lines ('* ' or '- ')", OURS, ours.bullet_list),
    Checker("autorule:numbered_list", {}, "a numbered list (two or more '1.' lines)", OURS, ours.numbered_list),
    Checker("autorule:heading", {}, "a markdown heading ('# ...')", OURS, ours.heading),
    Checker("autorule:code_block", {}, "a code block fenced with ```", OURS, ours.code_block),
    Checker("autorule:ends_with_question", {}, "ends with a question mark", OURS, ours.ends_with_question),
    Checker("autorule:starts_with", {"phrase": "text"}, "starts with {phrase!r}", OURS, ours.starts_with),
]}


def _param_problem(kind: str, value: Any) -> str | None:
    if kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"{value!r} is not a whole number >= 0"
    if kind == "relation":
        return None if value in ours.RELATIONS else f"{value!r} is not one of {', '.join(ours.RELATIONS)}"
    if kind == "text":
        return None if isinstance(value, str) and value.strip() else f"{value!r} is not non-empty text"
    if kind == "words":
        ok = isinstance(value, list) and value and all(isinstance(w, str) and w.strip() for w in value)
        return None if ok else f"{value!r} is not a non-empty list of words"
    if kind == "language":
        if not isinstance(value, str):
            return f"{value!r} is not a language code"
        known = ifeval.languages()
        return None if value in known else f"{value!r} is not a language IFEval knows ({', '.join(sorted(known))})"
    raise AssertionError(kind)


class CodeCheck(BaseModel):
    """A rule decided by a program: a checker from `CHECKERS`, its parameters, and whether it is negated.

    Args:
        checker: the checker's name (IFEval's instruction id, or ``autorule:...``);
        params: its parameters (see the checker's `Checker.params`); negate: the rule holds
            where the checker says no.

    Raises:
        pydantic.ValidationError: an unknown checker, a missing, unknown or ill-typed parameter.

    Example:
        >>> check = CodeCheck(checker="length_constraints:number_words", params={"num_words": 60, "relation": "less than"})
        >>> check.describe()
        'less than 60 words (lm-eval IFEval length_constraints:number_words)'
        >>> check.run("Short and sweet."), check.run("word " * 60)
        (True, False)
        >>> CodeCheck(checker="autorule:code_block", negate=True).run("no code here")
        True
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checker: str
    params: dict[str, Any] = Field(default_factory=dict)
    negate: bool = False

    @model_validator(mode="after")
    def _known(self) -> CodeCheck:
        spec = CHECKERS.get(self.checker)
        if spec is None:
            raise ValueError(f"unknown checker {self.checker!r} (known: {', '.join(CHECKERS)})")
        missing = [p for p in spec.params if p not in self.params]
        unknown = [p for p in self.params if p not in spec.params]
        if missing or unknown:
            raise ValueError(f"checker {self.checker!r} takes {sorted(spec.params) or 'no parameters'}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
        for p, kind in spec.params.items():
            if problem := _param_problem(kind, self.params[p]):
                raise ValueError(f"checker {self.checker!r} parameter {p!r}: {problem}")
        return self

    @model_serializer(mode="wrap")
    def _without_default_negate(self, handler) -> dict[str, Any]:
        data = handler(self)  # rules.yaml says `negate: true` only where a check is negated
        if isinstance(data, dict) and data.get("negate") is False:
            del data["negate"]
        return data

    @property
    def spec(self) -> Checker:
        """The checker this check runs."""
        return CHECKERS[self.checker]

    def describe(self) -> str:
        """What the check decides, in words, and who wrote the checker."""
        says = self.spec.says.format(**self.params)
        return f"{'not: ' if self.negate else ''}{says} ({self.spec.source} {self.checker})"

    def compile(self) -> Callable[[str], bool]:
        """The check as a function: response text -> whether the rule holds.

        Raises:
            MissingExtraError: an IFEval checker and lm-eval is not installed.
        """
        run = self.spec.build(**self.params)
        return (lambda text: not run(text)) if self.negate else run

    def run(self, text: str) -> bool:
        """Whether `text` follows the rule (compiles the checker each call: use `compile` for many texts)."""
        return self.compile()(text)
