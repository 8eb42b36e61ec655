"""Stage 030: pool candidates, drop duplicates, cluster by embedding, merge each cluster
with the LLM, and repeat until the set is compact. Provenance follows every merge.

No prompt ever holds more than `max_cluster` rules. A cluster whose merge fails (no
parseable answer, or no fewer rules than it was given) falls back to its medoid, the
member closest to the others, so every round shrinks the set and the loop ends.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autorule.llm import LLM, ChatRequest, Completion
from autorule.rules import CandidateRef, Rule, normalise_rule
from autorule.rules.embed import EMBEDDER_PACKAGE, Embed, load_embedder  # noqa: F401 (re-exported for the merge's callers)
from autorule.extraction import prompt
from autorule.extraction.context import Context
from autorule.extraction.refusals import generate_each
from autorule.extraction.candidates import PREFILL, parse_rule_list

TEMPLATE, TEMPLATE_VERSION = prompt("merge")


def cached_embedder(path: Path | None = None, embed: Embed | None = None, batch: int = 4096) -> Embed:
    """`embed` (default: `load_embedder()`) with every text's vector kept by content: in
    memory, and in the SQLite file `path` when given, so a later merge round or a resumed run
    embeds no text twice. New texts are embedded `batch` at a time.

    Args:
        path: a SQLite file for the vectors (created if missing), or None for memory only.
        embed: the embedding function to wrap.
        batch: texts per call to `embed`.

    Example:
        >>> calls = []
        >>> def embed(texts):
        ...     calls.append(len(texts))
        ...     return np.ones((len(texts), 2), dtype=np.float32)
        >>> cached = cached_embedder(embed=embed)
        >>> cached(["a", "b", "a"]).shape, cached(["b", "c"]).shape, calls
        ((3, 2), (2, 2), [2, 1])
    """
    embed = embed or load_embedder()
    known: dict[bytes, np.ndarray] = {}
    db = None
    if path is not None:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB)")

    def lookup(texts: list[str]) -> np.ndarray:
        keys = [hashlib.sha1(t.encode("utf-8")).digest() for t in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in known}
        if missing and db is not None:
            todo = list(missing)
            for s in range(0, len(todo), 500):  # SQLite's bound on parameters per statement
                part = todo[s : s + 500]
                rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(part))})", part).fetchall()
                for key, blob in rows:
                    known[key] = np.frombuffer(blob, dtype=np.float32)
                    missing.pop(key, None)
        todo = list(missing.items())
        for s in range(0, len(todo), batch):
            part = todo[s : s + batch]
            vectors = np.asarray(embed([t for _, t in part]), dtype=np.float32)
            for (key, _), v in zip(part, vectors):
                known[key] = v
            if db is not None:
                with db:
                    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", [(key, v.tobytes()) for (key, _), v in zip(part, vectors)])
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([known[k] for k in keys])

    return lookup


@dataclass
class MergeLog:
    rounds: list[dict] = field(default_factory=list)
    duplicates_dropped: int = 0
    near_duplicates_merged: int = 0
    merge_failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    clusters_split: int = 0  # clusters whose merge prompt was over the context: merged in parts
    merge_refused: list[str] = field(default_factory=list)  # the server's reason for each merge it refused (medoid kept)


def dedupe(rules: list[Rule]) -> tuple[list[Rule], int]:
    """One rule per normalised text; the duplicates' provenance joins the survivor's."""
    by_norm: dict[str, list[Rule]] = {}
    for r in rules:
        by_norm.setdefault(normalise_rule(r.text), []).append(r)
    out = [Rule.from_candidates(group[0].text, [c for r in group for c in r.candidates]) for group in by_norm.values()]
    return out, len(rules) - len(out)


# cosine similarity at or above which two rules' wordings are folded into one (see collapse_near_duplicates)
NEAR_DUPLICATE = 0.92
# each merge round clusters the rules into about 1/SHRINK as many groups, for at most MAX_ROUNDS rounds
SHRINK = 3.0
MAX_ROUNDS = 10


def collapse_near_duplicates(rules: list[Rule], embed: Embed, threshold: float) -> tuple[list[Rule], int]:
    """Fold each rule whose embedding is within `threshold` cosine of a kept one into it.

    Rules are visited by support (then text), so the best-supported wording survives and
    the others' provenance joins it. No LLM call: this runs whatever the rule count, so
    near-duplicates never survive just because the set is already small. The default
    threshold (`NEAR_DUPLICATE`, 0.92) was set on MiniLM: rephrasings of one demand score 0.93-0.96, while
    "should be concise" and "should be detailed" (opposites) score 0.90.

    Past `BUCKET` rules the pass runs inside the mini-batch k-means buckets that `cluster`
    uses, then once more over the survivors in a second bucketing (another seed), so time
    and memory stay linear in the pool. That is approximate: two near-duplicates that both
    bucketings put apart stay two rules (the LLM merge rounds still see them together).

    Example:
        >>> vectors = {"be brief": [1.0, 0.0], "be short": [0.99, 0.14], "use lists": [0.0, 1.0]}
        >>> embed = lambda texts: np.array([vectors[t] for t in texts]) / np.linalg.norm([vectors[t] for t in texts], axis=1, keepdims=True)
        >>> kept, folded = collapse_near_duplicates([Rule.from_candidates(t, []) for t in vectors], embed, NEAR_DUPLICATE)
        >>> [r.text for r in kept], folded
        (['be brief', 'use lists'], 1)
    """
    if len(rules) < 2:
        return rules, 0
    order = sorted(range(len(rules)), key=lambda i: (-rules[i].support, rules[i].text))
    vectors = embed([rules[i].text for i in order])
    groups: dict[int, list[int]] = {}  # kept position in `order` -> the positions folded into it
    if len(order) <= BUCKET:
        _fold(vectors, np.arange(len(order)), threshold, groups)
    else:
        for bucket in _buckets(vectors):
            _fold(vectors, bucket, threshold, groups)
        # a second bucketing (another seed) of the survivors catches pairs a bucket border split
        survivors = np.array(sorted(groups))
        second: dict[int, list[int]] = {}
        for bucket in _buckets(vectors[survivors], seed=1):
            _fold(vectors, survivors[bucket], threshold, second)
        groups = {k: [m for s in folded for m in groups[s]] for k, folded in second.items()}
    kept = sorted(groups)
    out = [Rule.from_candidates(rules[order[k]].text, [c for m in groups[k] for c in rules[order[m]].candidates]) for k in kept]
    return out, len(rules) - len(out)


def _fold(vectors: np.ndarray, members: np.ndarray, threshold: float, groups: dict[int, list[int]]) -> None:
    """The greedy near-duplicate pass over `members` (ascending positions), into `groups`."""
    sims = vectors[members] @ vectors[members].T
    kept: list[int] = []  # indices into members
    for j in range(len(members)):
        if kept:
            row = sims[j, kept]
            best = int(np.argmax(row))
            if row[best] >= threshold:
                groups[int(members[kept[best]])].append(int(members[j]))
                continue
        kept.append(j)
        groups[int(members[j])] = [int(members[j])]


# agglomerative clustering holds an n x n distance matrix: past this many rules it runs
# inside buckets of about half this size, found by mini-batch k-means (memory linear in n)
BUCKET = 2000


def cluster(vectors: np.ndarray, k: int, max_size: int) -> list[list[int]]:
    """Agglomerative clusters (cosine, average linkage), big ones cut into chunks.

    Up to `BUCKET` rules this is one agglomerative clustering, as always; past it, mini-batch
    k-means splits the rules into buckets first and each bucket is clustered on its own,
    with its share of the `k` clusters, so memory stays linear in the number of rules.

    Example:
        >>> v = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [0.14, 0.99]])
        >>> sorted(cluster(v / np.linalg.norm(v, axis=1, keepdims=True), 2, 10))
        [[0, 1], [2, 3]]
    """
    n = len(vectors)
    if k >= n:
        return [[i] for i in range(n)]
    if n > BUCKET:
        return _bucketed(vectors, k, max_size)
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average").fit_predict(vectors)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    out = []
    for members in groups.values():
        out.extend(members[s : s + max_size] for s in range(0, len(members), max_size))
    return out


def _buckets(vectors: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Mini-batch k-means buckets of about BUCKET / 2 rows (ascending indices), none past BUCKET."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(vectors)
    if n <= BUCKET:
        return [np.arange(n)]
    labels = MiniBatchKMeans(n_clusters=math.ceil(2 * n / BUCKET), batch_size=4096, n_init=1, random_state=seed).fit_predict(vectors)
    out = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) <= BUCKET:
            out.append(members)
        elif len(members) < n:  # a big bucket is split again
            out.extend(members[sub] for sub in _buckets(vectors[members], seed))
        else:  # k-means could not split them (all alike): cut in order instead
            out.extend(members[s : s + BUCKET] for s in range(0, n, BUCKET))
    return out


def _bucketed(vectors: np.ndarray, k: int, max_size: int) -> list[list[int]]:
    n = len(vectors)
    out: list[list[int]] = []
    for chunk in _buckets(vectors):
        share = max(1, round(k * len(chunk) / n))
        out.extend([int(chunk[i]) for i in group] for group in cluster(vectors[chunk], share, max_size))
    return out


def merge_request(texts: list[str], max_rules: int, max_tokens: int, seed: int) -> ChatRequest:
    """The merge prompt for one cluster's rules.

    Example:
        >>> merge_request(["The response should be short.", "The response should be brief."], 1, 64, 0).messages[0]["content"].count("The response should")
        2
    """
    listing = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
    text = TEMPLATE.substitute(rules=listing, max_rules=max_rules)
    return ChatRequest([{"role": "user", "content": text}], max_tokens=max_tokens, temperature=0.0, seed=seed, template=TEMPLATE_VERSION, prefill=PREFILL)


def split_to_fit(group: list[int], texts: list[str], max_tokens: int, seed: int, context: Context | None) -> list[list[int]]:
    """A cluster as parts whose merge prompts fit the context (halved until they do); whole when it fits.

    Rules are never cut: a part of one rule needs no merge and is kept as it is.

    Args:
        group: the cluster's rule indices.
        texts: every rule's text, by index.
        max_tokens: the merge answer's tokens.
        seed: the sampling seed.
        context: the merge model's context (None: no limit).

    Example:
        >>> from autorule.extraction.context import Context
        >>> texts = ["The response should be short and clear."] * 8
        >>> split_to_fit(list(range(8)), texts, 100, 0, Context(100 + 64 + 160, "server", lambda s: len(s) // 4))
        [[0, 1], [2, 3], [4, 5], [6, 7]]
    """
    if context is None or len(group) < 2:
        return [group]
    request = merge_request([texts[i] for i in group], len(group) - 1, max_tokens, seed)
    if context.count_tokens(request.messages[0]["content"]) <= context.budget(max_tokens):
        return [group]
    half = len(group) // 2
    return split_to_fit(group[:half], texts, max_tokens, seed, context) + split_to_fit(group[half:], texts, max_tokens, seed, context)


def _medoid(vectors: np.ndarray) -> int:
    return int(np.argmax((vectors @ vectors.T).mean(axis=1)))


def merge_rules(
    rules: list[Rule],
    llm: LLM,
    embed: Embed,
    *,
    target: int = 25,
    max_cluster: int = 10,
    shrink: float = SHRINK,
    max_rounds: int = MAX_ROUNDS,
    max_tokens: int = 512,
    seed: int = 0,
    near_duplicate: float = NEAR_DUPLICATE,
    progress: bool = False,
    context: Context | None = None,
) -> tuple[list[Rule], MergeLog]:
    """Merge rules round by round until at most `target` remain (see the module's docstring).

    With a `context`, a cluster whose prompt is over it is merged in parts, and a merge
    the server refuses keeps the cluster's medoid; both are counted in the `MergeLog`.
    """
    log = MergeLog()
    rules, log.duplicates_dropped = dedupe(rules)
    rules, log.near_duplicates_merged = collapse_near_duplicates(rules, embed, near_duplicate)
    for round_no in range(1, max_rounds + 1):
        if len(rules) <= target:
            break
        before = len(rules)
        vectors = embed([r.text for r in rules])
        groups = cluster(vectors, max(target, math.ceil(len(rules) / shrink)), max_cluster)
        texts_now = [r.text for r in rules]
        parts = [split_to_fit(g, texts_now, max_tokens, seed, context) for g in groups]
        log.clusters_split += sum(len(p) > 1 for p in parts)
        groups = [part for p in parts for part in p]
        to_merge = [g for g in groups if len(g) > 1]
        replies: list = [Completion(text="") for _ in to_merge]
        refused: dict[int, str] = {}

        def got(i: int, c: Completion) -> None:
            replies[i] = c

        # a merge the server refuses falls back to the cluster's medoid; the others go on
        generate_each(llm, len(to_merge), lambda i: merge_request([rules[j].text for j in to_merge[i]], len(to_merge[i]) - 1, max_tokens, seed),
                      got, refused.__setitem__, context.learn if context is not None else None, desc=f"merge round {round_no}" if progress else None)
        log.merge_refused.extend(refused.values())
        outputs = [[] if i in refused else parse_rule_list(reply.text) for i, reply in enumerate(replies)]
        embed([t for texts in outputs for t in texts])  # one batched call; the loop below finds them cached
        merged = [rules[g[0]] for g in groups if len(g) == 1]
        failures = 0
        for g, reply, texts in zip(to_merge, replies, outputs):
            log.prompt_tokens += reply.usage.prompt_tokens
            log.completion_tokens += reply.usage.completion_tokens
            if not texts or len(texts) >= len(g):
                failures += 1
                texts = [rules[g[_medoid(vectors[g])]].text]
            # each member goes to the merged rule it is closest to; unclaimed outputs are dropped
            nearest = np.argmax(vectors[g] @ embed(texts).T, axis=1)
            for j, text in enumerate(texts):
                members = [rules[g[m]] for m in range(len(g)) if nearest[m] == j]
                if members:
                    merged.append(Rule.from_candidates(text, [c for r in members for c in r.candidates]))
        rules, dups = dedupe(merged)
        log.merge_failures += failures
        log.rounds.append({"round": round_no, "rules_in": before, "clusters": len(groups), "merged_clusters": len(to_merge), "failures": failures, "duplicates_dropped": dups, "rules_out": len(rules)})
    if len(rules) > target:
        # rounds exhausted: one last deterministic pass, medoids of exactly `target` clusters
        vectors = embed([r.text for r in rules])
        groups = cluster(vectors, target, len(rules))
        rules = [Rule.from_candidates(rules[g[_medoid(vectors[g])]].text, [c for i in g for c in rules[i].candidates]) for g in groups]
        log.rounds.append({"round": "final-medoid", "rules_out": len(rules)})
    # merged wordings can land close to each other: one more pass over the final set
    rules, folded = collapse_near_duplicates(rules, embed, near_duplicate)
    log.near_duplicates_merged += folded
    rules.sort(key=lambda r: (-r.support, r.text))
    return rules, log


def candidate_refs(pair_id: str, texts: list[str], excerpt: str) -> list[Rule]:
    """Each candidate as a one-member rule, the unit `merge_rules` works on."""
    return [Rule.from_candidates(t, [CandidateRef(text=t, pair_id=pair_id, excerpt=excerpt)]) for t in texts]
