"""Rules and rule sets: readable statements with provenance, weights and stats, in YAML."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from autorule.errors import InputError, describe
from autorule.rules.checks.registry import CodeCheck


class RulesFileError(InputError):
    """A rules file that cannot be used; the message names the file and the problem."""


def normalise_rule(text: str) -> str:
    """Lowercase, collapse whitespace, drop punctuation: catches trivial duplicates."""
    text = re.sub(r"[^\w\s]", " ", text.lower())
    return " ".join(text.split())


def rule_id(text: str) -> str:
    """A stable id: the same rule text gets the same id in every run."""
    return "r-" + hashlib.sha256(normalise_rule(text).encode()).hexdigest()[:8]


# how a plain-text rule is marked essential (a veto rule): "[essential]" before or after it, or a leading "!"
ESSENTIAL_MARK = re.compile(r"^\s*(?:!|\[essential\])\s*|\s*\[essential\]\s*$", re.IGNORECASE)


def plain_rule(line: str) -> dict:
    """A rule from one line of text: its id, its text and whether it is marked essential.

    A line marked "[essential]" (before or after the rule) or starting with "!" is an
    essential (veto) rule; the marker is not part of the text or the id.

    Args:
        line: one rule as a person writes it in a plain-text rules file.

    Example:
        >>> plain_rule("[essential] The response must not give dosage advice.")["essential"]
        True
        >>> plain_rule("! The response must not insult the user.")["text"]
        'The response must not insult the user.'
        >>> plain_rule("The response should be short.")
        {'id': 'r-...', 'text': 'The response should be short.', 'essential': False}
    """
    text, marks = ESSENTIAL_MARK.subn("", line.strip())
    text = text.strip()
    return {"id": rule_id(text), "text": text, "essential": bool(marks)}


class CandidateRef(BaseModel):
    """One extracted candidate behind a rule: its text, its pair and where it came from."""

    text: str
    pair_id: str
    excerpt: str = ""


class LintFlag(BaseModel):
    """One problem `autorule.rules.lint` found in a rule: a short code and the reason in words."""

    code: str
    reason: str


class RuleRevision(BaseModel):
    """One round of rewording a rule from its held-out errors (`autorule.rewording`): both texts and their figures.

    Args:
        round: 1 for the first rewording; text, agreement, n: the rule before this round, its held-out
            agreement and the discriminating pairs it rests on; reworded, reworded_agreement, reworded_n: the
            rewording, on the same pairs (None: the model gave none that could be read); kept: "reworded" or
            "original"; pairs: the held-out pairs shown to the model (where the rule disagreed with the label);
            data: the held-out data.

    Example:
        >>> RuleRevision(round=1, text="The response should be short.", agreement=0.4, n=5, reworded="The response should be under 50 words.",
        ...              reworded_agreement=0.8, reworded_n=5, kept="reworded", pairs=["p1"]).kept
        'reworded'
    """

    round: int
    text: str
    agreement: float | None
    n: int
    reworded: str | None
    reworded_agreement: float | None = None
    reworded_n: int = 0
    kept: str
    pairs: list[str] = Field(default_factory=list)
    data: str | None = None


class Rule(BaseModel):
    """A readable rule with its provenance, weight and statistics.

    A rule with a `check` (`autorule.rules.checks.CodeCheck`: a checker and its parameters) is
    decided by that program: the verifier takes its verdict (1.0 or 0.0) from it and never asks
    the LLM. rules.yaml holds ``check`` only where a rule has one (`autorule rules lint --apply-checks`
    proposes it; a person may edit or remove it).

    Args:
        id: a stable id derived from the text; text: the rule; weight: its reward weight;
            support: distinct pairs behind it; pairs, candidates: its provenance;
            stats: validation statistics; lint: problems the rule linter found (see `autorule.rules.lint`);
            essential: a veto rule: when a response fails it (P(Yes) below `veto_below`, else the
            verifier's threshold), its total reward is capped at the preset's floor (`autorule.reward.veto`);
            veto_below: the P(Yes) under which an essential rule counts as failed (None: the verifier's threshold).
            history: its rewordings from held-out errors (`RuleRevision`, `autorule rules reword`); in rules.yaml only when there are any.

    Example:
        >>> rule = Rule(id=rule_id("The response should cite a source."), text="The response should cite a source.")
        >>> rule.id.startswith("r-"), rule.weight
        (True, 1.0)
    """

    id: str
    text: str
    weight: float = 1.0
    support: int = 0  # distinct preference pairs behind the rule
    pairs: list[str] = Field(default_factory=list)
    candidates: list[CandidateRef] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)
    check: CodeCheck | None = None  # the program that decides the rule (None: the LLM verifier judges it)
    lint: list[LintFlag] = Field(default_factory=list)
    essential: bool = False
    veto_below: float | None = Field(None, ge=0.0, le=1.0)
    history: list[RuleRevision] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _without_empty_check(self, handler) -> dict[str, Any]:
        data = handler(self)  # a rule without a code check is written as before: no `check: null` in every rule
        if isinstance(data, dict) and data.get("check", True) is None:
            del data["check"]
        return data

    @field_validator("weight")
    @classmethod
    def _weight_not_negative(cls, v: float) -> float:
        # a negative weight would reward breaking the rule and, mixed with positive ones, can
        # cancel the reward out entirely ([1, -1] gives 0.5 whatever the verdicts); 0 turns a rule off
        if not v >= 0:
            raise ValueError(f"weight {v} is negative (or not a number); use 0 to turn a rule off")
        return v

    @field_validator("text")
    @classmethod
    def _text_not_empty(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("rule text is empty")
        return v.strip()

    @classmethod
    def from_candidates(cls, text: str, candidates: list[CandidateRef]) -> Rule:
        pairs = sorted({c.pair_id for c in candidates})
        return cls(id=rule_id(text), text=text, support=len(pairs), pairs=pairs, candidates=candidates)


class RuleSet(BaseModel):
    """Rules as a YAML file: load, save, and make from plain texts.

    Args:
        version: file format version; meta: where the rules came from; rules: the rules.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "rules.yaml"
        >>> RuleSet.from_texts(["The response should be short."]).save(path)
        >>> RuleSet.load(path).texts
        ['The response should be short.']
    """

    version: int = 1
    meta: dict[str, Any] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"duplicate rule id '{r.id}'")
            seen.add(r.id)
        return self

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def from_texts(cls, texts: list[str], weights: list[float] | None = None) -> RuleSet:
        """A rule set from plain rule texts (ids are derived from the texts).

        Args:
            texts: one rule per item, e.g. "The assistant's response should cite a source."; one
                marked "[essential]" or starting with "!" is an essential (veto) rule (`plain_rule`).
            weights: optional reward weight per rule (default 1 each).

        Example:
            >>> rules = RuleSet.from_texts(["The assistant's response should be short.", "The response should be polite."])
            >>> len(rules), rules.rules[0].weight
            (2, 1.0)
        """
        texts = list(texts)
        weights = list(weights) if weights is not None else [1.0] * len(texts)
        if len(weights) != len(texts):
            raise ValueError(f"{len(texts)} rule texts but {len(weights)} weights")
        return cls(rules=[Rule(**plain_rule(t), weight=w) for t, w in zip(texts, weights)])

    @property
    def texts(self) -> list[str]:
        """The rules' texts, in order."""
        return [r.text for r in self.rules]

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        data = self.model_dump()
        for rule in data["rules"]:  # veto settings are written only where a rule has them
            if not rule["essential"]:
                del rule["essential"]
            if rule["veto_below"] is None:
                del rule["veto_below"]
            if not rule["history"]:  # written only where a rule was reworded
                del rule["history"]
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))
        tmp.replace(path)  # atomic: readers never see half a file

    @classmethod
    def load(cls, path: str | Path) -> RuleSet:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RulesFileError(f"{path}: no such rules file") from None
        except UnicodeDecodeError as e:
            raise RulesFileError(f"{path}: not a text file: {e}") from None
        try:
            data = None if path.suffix == ".txt" else yaml.safe_load(text)
        except yaml.YAMLError as e:
            if path.suffix in (".yaml", ".yml"):
                raise RulesFileError(f"{path}: not valid YAML: {e}") from None
            data = None
        if data is None or isinstance(data, str):  # plain text: one rule per line (blank lines and # comments skipped)
            lines = [line.strip().lstrip("-*").strip() for line in text.splitlines()]
            data = [plain_rule(line) for line in lines if line and not line.startswith("#")]
            if not data:
                raise RulesFileError(f"{path}: no rules in the file")
        if isinstance(data, list):  # a bare list of rule texts is accepted too
            data = {"rules": [plain_rule(t) if isinstance(t, str) else t for t in data]}
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise RulesFileError(f"{path}: expected a mapping with a 'rules' list (or a list of rule texts)")
        for i, r in enumerate(data["rules"]):
            if isinstance(r, dict) and "id" not in r and isinstance(r.get("text"), str):
                r["id"] = rule_id(r["text"])
            elif isinstance(r, str):
                data["rules"][i] = plain_rule(r)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise RulesFileError(f"{path}: {describe(e)}") from None
