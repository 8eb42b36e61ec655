"""Rule lint: the problems that make a rule useless to a verifier, each with its reason.

Deterministic checks (text patterns, and embeddings for near-duplicates) run at the end of
every extraction and on demand (`autorule rules lint`); an optional LLM check asks a model
whether each rule is objectively checkable. Extraction drops fragments; every other flag
is kept on the rule (`Rule.lint`) and shown in the report, for a person to decide.

Lint also proposes code checks: rules a program decides (`autorule.rules.checks.recognise`),
which `autorule rules lint --apply-checks` writes into the rules file (`Rule.check`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import numpy as np

from autorule.rules import LintFlag, Rule, RuleSet
from autorule.rules.checks import CodeCheck
from autorule.rules.checks.recognise import recognise

FRAGMENT, NAMES_RESPONSE, COMPOUND, VAGUE, NEAR_DUPLICATE, PROMPT_FORMAT, NOT_CHECKABLE = (
    "fragment", "names-response", "compound", "vague", "near-duplicate", "prompt-format", "not-checkable",
)
CODES = (FRAGMENT, NAMES_RESPONSE, COMPOUND, VAGUE, NEAR_DUPLICATE, PROMPT_FORMAT, NOT_CHECKABLE)
NEAR_DUPLICATE_SIMILARITY = 0.85  # below the merge's folding threshold (extraction.merge.NEAR_DUPLICATE): close wordings it kept apart

_PROMPTS = Path(__file__).parent / "prompts"
CHECKABLE = Template((_PROMPTS / "checkable.txt").read_text(encoding="utf-8"))
CHECKABLE_QUESTION = (_PROMPTS / "question.txt").read_text(encoding="utf-8").strip()

# words a complete sentence does not end on
_DANGLING = set(
    "should must shall will would can could be being been is are was were not the a an to and or nor but of with without that "
    "for by in on as at from than its their his her your our this these those which who whom whose when where if because "
    "such into about like including unless while whether very more less most least any each every".split()
)
_STEM = re.compile(r"^.*?\b(should|must)\b\s*(not\b)?\s*", re.IGNORECASE)
_NAMES_RESPONSE = re.compile(
    r"\b(assistant|response|answer|reply|output|model) ?[ab12]\b"
    r"|\b(first|second|other|rejected|chosen|preferred|winning|losing|former|latter) (response|answer|reply|assistant)\b"
    r"|\bboth (responses|answers|replies|assistants)\b"
    r"|\b(the|this|above) (reasoning|justification|evaluation|judge|judgement|judgment)\b",
    re.IGNORECASE,
)
# demands a rule makes: verbs that start a second demand after "and"
_VERBS = set(
    "provide avoid include use offer explain acknowledge maintain refrain ensure give answer address respond stay keep remain "
    "demonstrate express suggest encourage consider refuse decline mention cite list describe state ask clarify recommend "
    "prioritize prioritise emphasize emphasise focus follow present show admit correct warn inform discuss adhere respect "
    "reflect support tailor validate engage redirect return directly not never always".split()
)
_COMPOUND = re.compile(
    r"\bwhile\b|\bas well as\b|\bbut also\b|\bfollowed by\b|;(?=\s*\w)|\band (also |should |must )?(" + "|".join(sorted(_VERBS)) + r")(s|ing)?\b", re.IGNORECASE
)
# opinions with no observable property; a rule made only of these (and filler) cannot be decided
_VAGUE_WORDS = set(
    "helpful good better best appropriate appropriately relevant effective effectively useful great nice excellent informative "
    "engaging proper properly suitable reasonable thoughtful quality high overall well better-quality higher-quality nuanced "
    "comprehensive thorough insightful valuable meaningful satisfying satisfactory adequate ideal optimal superior positive".split()
)
_FILLER = set("be is are the a an more most very and or of to in its it overall generally always highly also".split())
_PROMPT_FORMAT = re.compile(
    r"\bjson (array|list|format|object)s?\b|\barray of\b|\blist of (rules|strings|statements)\b|\brule-like\b|\bobjective and checkable\b"
    r"|\bthe (required|following) (form|format)\b|\bstatements? (that|which) (start|begin)|\b(be|in|as) (a |valid )?json\b"
    r"|\b(specified|given|following|above) (set of )?rules\b|\b(sentence|statement)s? (starting|beginning) with\b"
    r"|['\"]the assistant'?s (response|reply|answer) should",
    re.IGNORECASE,
)



def _word_ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


# the extraction prompt is read as a file (it is data, not code: lint sits below extraction)
_EXTRACTION_PROMPT = (Path(__file__).parents[1] / "extraction" / "prompts" / "rules.txt").read_text(encoding="utf-8")
# four-word runs of the extraction prompt's own instructions, the required stem taken out:
# a rule that shares one is the prompt echoed back, not a rule drawn from the reasoning
_INSTRUCTION_NGRAMS = _word_ngrams(_EXTRACTION_PROMPT.replace("$justification", " ").replace("The assistant's response should", " | "))


def repeats_instructions(rule: str) -> bool:
    """Whether a rule shares a four-word run with the extraction prompt's own instructions.

    Example:
        >>> repeats_instructions("The assistant's response should describe general behaviour, not the specific topic.")
        True
    """
    return bool(_word_ngrams(rule) & _INSTRUCTION_NGRAMS)


def _demand(text: str) -> str:
    """What the rule asks for: the words after its "should"/"must" (the whole text if none)."""
    m = _STEM.match(text)
    return text[m.end() :] if m else text


def fragment_reason(text: str) -> str | None:
    """Why `text` is an unfinished sentence, or None when it reads as a whole one.

    Args:
        text: a rule's text.

    Example:
        >>> fragment_reason("The assistant's reply should")
        "ends on 'should': the sentence stops before its demand"
        >>> fragment_reason("The response should cite a source for every statistic.") is None
        True
        >>> fragment_reason("Use bullet points."), fragment_reason("Be nice.")
        (None, '2 words: too short to state a demand')
    """
    stripped = text.strip()
    words = re.sub(r"[^\w\s'-]", " ", stripped).split()
    if len(words) < 4 and recognise(stripped) is None:  # "Use bullet points." is short and whole: a program can check it
        return f"{len(words)} words: too short to state a demand"
    if stripped[-1] in ",:;-(" or stripped.endswith(("...", "\u2026")):
        return f"ends with '{stripped[-1]}': cut off"
    last = words[-1].lower()
    if last in _DANGLING:
        return f"ends on '{last}': the sentence stops before its demand"
    repeated = re.search(r"\b(\w+) \1\b", stripped, re.IGNORECASE)
    if repeated and repeated.group(1).lower() not in ("that", "had"):
        return f"repeats '{repeated.group(1)}': garbled"
    if stripped.count('"') % 2 or stripped.count("(") != stripped.count(")"):
        return "an unclosed quotation mark or parenthesis: cut off"
    if _STEM.match(stripped) and len(_demand(stripped).split()) < 2:
        return "nothing after 'should': no demand"
    return None


def pattern_flags(text: str) -> list[LintFlag]:
    """The text-pattern checks for one rule (everything but near-duplicates and the LLM check).

    Args:
        text: a rule's text.

    Example:
        >>> [f.code for f in pattern_flags("The response should be helpful.")]
        ['vague']
        >>> [f.code for f in pattern_flags("The response should, like Assistant B, cite sources and avoid jargon.")]
        ['names-response', 'compound']
    """
    flags = []
    if reason := fragment_reason(text):
        flags.append(LintFlag(code=FRAGMENT, reason=reason))
    if m := _NAMES_RESPONSE.search(text):
        flags.append(LintFlag(code=NAMES_RESPONSE, reason=f"names '{m.group(0)}': a rule must judge one response on its own"))
    demand = _demand(text)
    if m := _COMPOUND.search(demand):
        flags.append(LintFlag(code=COMPOUND, reason=f"two demands joined by '{m.group(0).strip()}': split it, so each can be judged and weighted"))
    content = [w for w in re.sub(r"[^\w\s-]", " ", demand.lower()).split() if w not in _FILLER]
    if content and all(w in _VAGUE_WORDS for w in content):
        flags.append(LintFlag(code=VAGUE, reason=f"only opinion words ({', '.join(content)}): no observable property to check"))
    if m := _PROMPT_FORMAT.search(text):
        flags.append(LintFlag(code=PROMPT_FORMAT, reason=f"restates the extraction prompt's format ('{m.group(0)}'), not a property of responses"))
    else:
        if repeats_instructions(text):
            flags.append(LintFlag(code=PROMPT_FORMAT, reason="repeats the extraction prompt's instructions"))
    return flags


def propose_checks(rules: RuleSet) -> dict[str, CodeCheck]:
    """The code check for each rule a program decides and that has none yet (rule id -> check).

    Args:
        rules: the rule set; rules that already carry a check (set by a person or an
            earlier proposal) are left as they are.

    Example:
        >>> rules = RuleSet.from_texts(["The response should be under 60 words.", "The response should be polite."])
        >>> {rid: c.checker for rid, c in propose_checks(rules).items()} == {rules.rules[0].id: "length_constraints:number_words"}
        True
    """
    proposals = {}
    for r in rules.rules:
        if r.check is None and (check := recognise(r.text)) is not None:
            proposals[r.id] = check
    return proposals


def near_duplicates(texts: list[str], embed: Callable[[list[str]], np.ndarray], threshold: float = NEAR_DUPLICATE_SIMILARITY,
                    block: int = 1024) -> dict[int, tuple[int, float]]:
    """For each rule that has an earlier rule at least `threshold` similar: (that rule's index,
    the cosine similarity). Earlier rules are kept as the originals (rule sets list the
    best-supported first). Compared a block of rows at a time, never all pairs at once.

    Args:
        texts: the rules' texts, in order; embed: texts -> unit vectors;
        threshold: the cosine similarity from which two rules count as near-duplicates.

    Example:
        >>> import numpy as np
        >>> vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.99, 0.141]}
        >>> near_duplicates(["a", "b", "c"], lambda ts: np.array([vectors[t] for t in ts]))
        {2: (0, 0.99)}
    """
    if len(texts) < 2:
        return {}
    vectors = np.asarray(embed(texts), dtype=np.float32)
    found: dict[int, tuple[int, float]] = {}
    for start in range(0, len(texts), block):
        sims = vectors[start : start + block] @ vectors.T
        for r in range(sims.shape[0]):
            i = start + r
            earlier = sims[r, :i]
            if earlier.size and earlier.max() >= threshold:
                j = int(earlier.argmax())
                found[i] = (j, round(float(earlier[j]), 3))
    return found


@dataclass
class LintReport:
    """What `lint_rules` found: the rules, each carrying its flags in `Rule.lint`.

    Args:
        rules: the linted RuleSet (a copy; flags in each rule's `lint`);
        proposals: rule id -> the code check proposed for it (rules without a check whose
            text a program decides; see `propose_checks`).
    """

    rules: RuleSet
    proposals: dict[str, CodeCheck] = field(default_factory=dict)

    @property
    def code_checked(self) -> int:
        """Rules that already carry a code check."""
        return sum(r.check is not None for r in self.rules.rules)

    def with_checks(self, rules: RuleSet | None = None) -> RuleSet:
        """`rules` (default: the linted copy) with every proposed check set on its rule.

        Example:
            >>> report = lint_rules(RuleSet.from_texts(["The response should be under 60 words."]), embed=False)
            >>> report.with_checks().rules[0].check.params
            {'num_words': 60, 'relation': 'less than'}
        """
        out = (rules or self.rules).model_copy(deep=True)
        for r in out.rules:
            if r.id in self.proposals:
                r.check = self.proposals[r.id]
        return out

    @property
    def counts(self) -> dict[str, int]:
        """Flags by code (a rule with two flags counts under both)."""
        counts = {c: 0 for c in CODES}
        for r in self.rules.rules:
            for f in r.lint:
                counts[f.code] += 1
        return {c: n for c, n in counts.items() if n}

    @property
    def flagged(self) -> list[Rule]:
        """The rules with at least one flag, in rule-set order."""
        return [r for r in self.rules.rules if r.lint]

    def without(self, code: str) -> tuple[RuleSet, list[Rule]]:
        """The rule set minus the rules flagged `code`, and the rules taken out."""
        kept = [r for r in self.rules.rules if not any(f.code == code for f in r.lint)]
        dropped = [r for r in self.rules.rules if any(f.code == code for f in r.lint)]
        return self.rules.model_copy(update={"rules": kept}), dropped


def lint_rules(rules: RuleSet, *, embed: Callable[[list[str]], np.ndarray] | None = None, llm=None,
               near_duplicate: float = NEAR_DUPLICATE_SIMILARITY) -> LintReport:
    """Lint every rule of a set: text patterns, near-duplicates by embedding, and (with `llm`)
    the model's judgement of whether each rule is objectively checkable.

    Flags from an earlier lint are replaced. Deterministic without `llm`.

    Args:
        rules: the RuleSet to lint (not modified; the report holds a copy).
        embed: texts -> unit vectors for near-duplicates (default: the embedder extraction
            uses; pass ``False`` to skip the check).
        llm: an LLM from `load_llm` for the checkability question (flags P(Yes) < 0.5).
        near_duplicate: the cosine similarity from which two rules are near-duplicates.

    Example:
        >>> rules = RuleSet.from_texts(["The response should be helpful.", "The assistant's reply should",
        ...                             "The response should state the final answer in its first sentence."])
        >>> report = lint_rules(rules, embed=False)
        >>> report.counts
        {'fragment': 1, 'vague': 1}
        >>> [r.text for r in report.without("fragment")[1]]
        ["The assistant's reply should"]
    """
    linted = rules.model_copy(deep=True)
    for r in linted.rules:
        r.lint = pattern_flags(r.text)
    if embed is not False:
        if embed is None:  # imported here: extraction imports this module (fragments are dropped while parsing)
            from autorule.rules.embed import load_embedder

            embed = load_embedder()
        for i, (j, sim) in near_duplicates(linted.texts, embed, near_duplicate).items():
            other = linted.rules[j]
            linted.rules[i].lint.append(LintFlag(code=NEAR_DUPLICATE, reason=f"{sim:.2f} similar to {other.id} ({other.text!r})"))
    if llm is not None:
        items = [(CHECKABLE.substitute(rule=r.text).strip() + "\n\n", [CHECKABLE_QUESTION]) for r in linted.rules]
        for r, (p,) in zip(linted.rules, llm.score_yes_no_batch(items)):
            if not np.isnan(p) and p < 0.5:
                r.lint.append(LintFlag(code=NOT_CHECKABLE, reason=f"the model judges it not objectively checkable (P(Yes) {p:.2f})"))
    return LintReport(linted, propose_checks(linted))
