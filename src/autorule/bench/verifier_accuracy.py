"""`autorule bench verifier-accuracy`: how often a verifier judges rules correctly, on rules
whose truth a program decides.

The gold set: real replies from the hh-rlhf and AlpacaEval files named by `--hh` and
`--alpaca` (a seeded sample), a few of them rewritten (all capitals, all lowercase, wrapped
in quotes, commas taken out) so that rare properties have positives too; every reply is checked against every rule
below. Each label comes from a program: lm-eval's IFEval instruction checkers where they
cover the rule (code nobody here wrote), else a short rule of ours, named in the output.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autorule.data import Message, stream_pairs
from autorule.rules.checks import CodeCheck, MissingExtraError  # noqa: F401 - the error this benchmark raises, under its old name
from autorule.rules.checks.ifeval import IFEVAL
from autorule.verifier.calibration import Check

OURS = "autorule program"
MAX_CHARS = 2500  # replies longer than this are not sampled: the verifier would judge a cut copy


_REFUSAL = re.compile(r"\b(I'm sorry|I am sorry|I can't|I cannot|I can not|I won't|I will not|I'm not able to|I am not able to|As an AI)\b",
                      re.IGNORECASE)


@dataclass
class Family:
    """A rule whose truth a program decides.

    Args:
        name: the family; rule: the rule's text; labeller: who decides (IFEval's checker
        id, or ours); check: reply -> whether it follows the rule.
    """

    name: str
    rule: str
    labeller: str
    check: Callable[[str], bool]


def families() -> list[Family]:
    """The rule families of the gold set, each with its labeller.

    Example:
        >>> fams = {f.name: f for f in families()}
        >>> fams["numbered-list"].check("Steps:\\n1. Boil water.\\n2. Add pasta."), fams["all-capitals"].labeller
        (True, 'lm-eval IFEval change_case:english_capital')
    """
    # each family's labeller is the code check that decides its rule (`autorule.rules.checks`): the one copy
    # of these programs, which code-checked rules in training use too
    table = [
        ("short", "The response should be fewer than 80 words long.", "length_constraints:number_words", {"num_words": 80, "relation": "less than"}),
        ("long", "The response should be at least 200 words long.", "length_constraints:number_words", {"num_words": 200, "relation": "at least"}),
        ("no-bullets", "The response should not contain any bullet points.", "detectable_format:number_bullet_lists", {"num_bullets": 0}),
        ("all-lowercase", "The response should be written entirely in lowercase letters, with no capital letters.", "change_case:english_lowercase", {}),
        ("all-capitals", "The response should be written entirely in capital letters.", "change_case:english_capital", {}),
        ("no-commas", "The response should not contain any commas.", "punctuation:no_comma", {}),
        ("quoted", "The entire response should be wrapped in double quotation marks.", "startend:quotation", {}),
        ("english", "The response should be written in English.", "language:response_language", {"language": "en"}),
        ("numbered-list", "The response should contain a numbered list.", "autorule:numbered_list", {}),
        ("heading", "The response should contain a markdown heading (a line starting with #).", "autorule:heading", {}),
        ("code-block", "The response should contain a code block fenced with triple backticks.", "autorule:code_block", {}),
        ("ends-with-question", "The response should end with a question.", "autorule:ends_with_question", {}),
    ]
    fams = []
    for name, rule, checker, params in table:
        check = CodeCheck(checker=checker, params=params)
        fams.append(Family(name, rule, f"{IFEVAL} {checker}" if check.spec.source == IFEVAL else OURS, check.compile()))
    # no program decides a refusal in general; this family's labeller is a phrase list of ours, only for the gold set
    fams.append(Family("refusal", "The response should contain a refusal or apology phrase such as \"I'm sorry\" or \"I can't\".", OURS,
                       lambda t: bool(_REFUSAL.search(t))))
    return fams


# rewrites that give rare properties positives; the labels are still decided by the programs
REWRITES: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "lower": str.lower,
    "quoted": lambda t: f'"{t.strip()}"',
    "no-commas": lambda t: t.replace(",", ""),
}


def sample_replies(hh: str | Path, alpaca: str | Path, families: list[Family], n: int = 48, per_label: int = 4, rewrites: int = 4,
                   seed: int = 0) -> list[tuple[list[Message], str, str]]:
    """Real replies (prompt, reply, source) for a gold set, seeded.

    From the first 400 pairs of each file (both sides; empty replies and replies longer
    than MAX_CHARS left out): first, for every family, replies until it has `per_label`
    of each truth (so rare properties, and rare failures, are represented); then random
    replies up to `n`; then `rewrites` more per rewrite in `REWRITES`, made from replies
    not yet picked.

    Args:
        hh, alpaca: the shared hh-rlhf and AlpacaEval files; families: the rules' families;
        n: natural replies; per_label: the least of each truth per family, where the pool
        has them; rewrites: rewritten replies per rewrite; seed: the sample's seed.
    """
    rng = random.Random(seed)
    pool: list[tuple[list[Message], str, str]] = []
    for path in (hh, alpaca):
        for pair in stream_pairs(str(path), on_bad_row="skip", limit=400):
            for side in ("chosen", "rejected"):
                text = getattr(pair, side)
                if text.strip() and len(text) <= MAX_CHARS:
                    pool.append((pair.prompt, text, f"{Path(path).name} row {pair.row} {side}"))
    rng.shuffle(pool)
    truth = [[f.check(text) for f in families] for _, text, _ in pool]
    picked: list[int] = []
    for j in range(len(families)):
        for label in (True, False):
            have = sum(truth[i][j] == label for i in picked)
            for i in range(len(pool)):
                if have >= per_label:
                    break
                if i not in picked and truth[i][j] == label:
                    picked.append(i)
                    have += 1
    rest = [i for i in range(len(pool)) if i not in picked]
    fill = max(0, n - len(picked))
    out = [pool[i] for i in picked + rest[:fill]]
    spare = rest[fill:]  # never picked: the rewrites' sources
    for k, (name, rewrite) in enumerate(REWRITES.items()):
        for i in spare[k * rewrites : (k + 1) * rewrites]:
            prompt, text, source = pool[i]
            out.append((prompt, rewrite(text), f"{source}, rewritten: {name}"))
    return out


def build_gold(hh: str | Path, alpaca: str | Path, n: int = 48, seed: int = 0) -> list[Check]:
    """Every sampled reply against every family's rule, labelled by the family's program.

    Args:
        hh, alpaca: the shared hh-rlhf and AlpacaEval files; n: natural replies (rewrites
            come on top, see `sample_replies`); seed: the sample's seed.
    """
    fams = families()
    return [Check(prompt, text, f.rule, f.check(text), f.name, f.labeller)
            for prompt, text, _ in sample_replies(hh, alpaca, fams, n, seed=seed) for f in fams]
