"""Two rule sets side by side: which rules they share, which are similar, which are unique
(matched by embedding), and, given pairs and a verifier, how often matched rules agree.

The paper's case study (rules learned from different datasets differ) as one call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from autorule.rules import Rule, RuleSet

SHARED, SIMILAR = 0.90, 0.70  # cosine similarity from which a matched pair is the same rule / a similar one


@dataclass
class RuleMatch:
    """One row of a diff: a rule of A, of B, or one of each matched by embedding.

    Args:
        kind: "shared", "similar", "only-a" or "only-b"; a, b: the rules (None on the
        side that has none); similarity: their cosine similarity; agreement: with data,
        the share of responses where both rules gave the same verdict, over `n` responses.
    """

    kind: str
    a: Rule | None
    b: Rule | None
    similarity: float | None = None
    agreement: float | None = None
    n: int = 0


@dataclass
class RuleDiff:
    """The matches between two rule sets, best first within each kind.

    Args:
        matches: every rule of both sets, once; shared, similar: the thresholds used.
    """

    matches: list[RuleMatch] = field(default_factory=list)
    shared: float = SHARED
    similar: float = SIMILAR

    def of(self, kind: str) -> list[RuleMatch]:
        """The matches of one kind ("shared", "similar", "only-a", "only-b")."""
        return [m for m in self.matches if m.kind == kind]

    def to_dict(self) -> dict:
        """Counts and rows as JSON-ready values."""
        def rule(r: Rule | None):
            return None if r is None else {"id": r.id, "text": r.text}

        return {
            "thresholds": {"shared": self.shared, "similar": self.similar},
            "counts": {k: len(self.of(k)) for k in ("shared", "similar", "only-a", "only-b")},
            "matches": [{"kind": m.kind, "a": rule(m.a), "b": rule(m.b), "similarity": m.similarity, "agreement": m.agreement, "n": m.n}
                        for m in self.matches],
        }

    def render(self, name_a: str = "A", name_b: str = "B") -> str:
        """The diff as text, as `autorule rules diff` prints it."""
        heads = {"shared": f"shared (similarity >= {self.shared:.2f})", "similar": f"similar ({self.similar:.2f} to {self.shared:.2f})",
                 "only-a": f"only in {name_a}", "only-b": f"only in {name_b}"}
        lines = []
        for kind, head in heads.items():
            rows = self.of(kind)
            lines.append(f"{head}: {len(rows)}")
            for m in rows:
                if m.a is not None and m.b is not None:
                    behaviour = f"  [same verdict on {m.agreement:.0%} of {m.n} responses]" if m.agreement is not None else ""
                    lines.append(f"  {m.similarity:.2f}  {m.a.id} {m.a.text}")
                    lines.append(f"        {m.b.id} {m.b.text}{behaviour}")
                else:
                    r = m.a or m.b
                    lines.append(f"        {r.id} {r.text}")
        return "\n".join(lines)


def diff_rules(a: RuleSet, b: RuleSet, embed: Callable[[list[str]], np.ndarray] | None = None, *, shared: float = SHARED,
               similar: float = SIMILAR) -> RuleDiff:
    """Match the rules of two sets one to one by embedding similarity (the best overall
    assignment) and sort them into shared, similar and unique.

    Args:
        a, b: the rule sets; embed: texts -> unit vectors (default: the embedder extraction
            uses); shared, similar: the similarity thresholds.

    Example:
        >>> import numpy as np
        >>> vec = {"The response should be short.": [1, 0, 0], "The reply should be brief.": [0.95, 0.312, 0], "The response should cite sources.": [0, 0, 1],
        ...        "The response should use a list.": [0, 1, 0]}
        >>> d = diff_rules(RuleSet.from_texts(["The response should be short.", "The response should cite sources."]),
        ...                RuleSet.from_texts(["The reply should be brief.", "The response should use a list."]), lambda ts: np.array([vec[t] for t in ts], dtype=float))
        >>> [(m.kind, m.similarity) for m in d.matches]
        [('shared', 0.95), ('only-a', None), ('only-b', None)]
    """
    from scipy.optimize import linear_sum_assignment

    if embed is None:
        from autorule.rules.embed import load_embedder

        embed = load_embedder()
    matches: list[RuleMatch] = []
    used_a: set[int] = set()
    used_b: set[int] = set()
    if a.rules and b.rules:
        sims = np.asarray(embed(a.texts), dtype=float) @ np.asarray(embed(b.texts), dtype=float).T
        rows, cols = linear_sum_assignment(-sims)
        for i, j in sorted(zip(rows, cols), key=lambda ij: -sims[ij]):
            s = round(float(sims[i, j]), 3)
            if s >= similar:
                matches.append(RuleMatch("shared" if s >= shared else "similar", a.rules[i], b.rules[j], s))
                used_a.add(i)
                used_b.add(j)
    matches.sort(key=lambda m: m.kind != "shared")  # stable: best first within each kind
    matches += [RuleMatch("only-a", r, None) for i, r in enumerate(a.rules) if i not in used_a]
    matches += [RuleMatch("only-b", None, r) for j, r in enumerate(b.rules) if j not in used_b]
    return RuleDiff(matches, shared, similar)
