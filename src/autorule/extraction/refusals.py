"""Pairs a server refuses, one at a time, while the rest of the run goes on.

A refused request (HTTP 400 "maximum context length is N tokens", a content filter...)
raises `RequestRefused` for its whole batch. `generate_each` finds the refused item
(what finished is kept; the rest is split in halves and sent again), learns a smaller
context from the refusal when it names one and refits, and reports each item it cannot
get past the server. `RefusalLedger` records refused pairs (pair id, source row, stage,
reason) in the run directory, so a resumed run does not send them again unless asked,
and stops the run once their share passes the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from autorule.data import PreferencePair
from autorule.llm import LLM, ChatRequest, Completion, LLMError
from autorule.llm.base import RequestRefused
from autorule.extraction.context import DoesNotFit

log = logging.getLogger("autorule.extract")

REFUSED_FILE = "020_refused.jsonl"
# refusals named in an error message; all of them are in run.json and the ledger file
NAMED = 10


class Refusal(BaseModel):
    """One pair the server refused (or whose prompt cannot fit its context).

    Args:
        pair_id: the pair's id; row: its row in the source; source: the data it came from;
        stage: "010 reasoning" or "020 rule extraction"; reason: the server's words.
    """

    pair_id: str
    row: int
    source: str = ""
    stage: str
    reason: str

    def describe(self) -> str:
        """One line naming the pair.

        Example:
            >>> Refusal(pair_id="ab12", row=3, stage="010 reasoning", reason="too long").describe()
            'pair ab12 (row 3, 010 reasoning): too long'
        """
        return f"pair {self.pair_id} (row {self.row}, {self.stage}): {self.reason}"


class TooManyRefused(LLMError):
    """More pairs were refused than `--max-refused-share` allows: the run stops and names them."""


class RefusalLedger:
    """The refused pairs of a run directory (``020_refused.jsonl``), kept across resumes.

    Args:
        run_dir: the run directory.
        pairs: how many distinct pairs the run has (the share's denominator).
        max_share: the largest share of pairs that may be refused before the run stops.

    Example:
        >>> import tempfile
        >>> from autorule.data import PreferencePair
        >>> ledger = RefusalLedger(Path(tempfile.mkdtemp()), pairs=10, max_share=0.1)
        >>> ledger.add(PreferencePair(id="p1", prompt=[], chosen="a", rejected="b", row=4), "010 reasoning", "400: too long")
        >>> ledger.summary()
        {'pairs': 1, 'share': 0.1, 'by_stage': {'010 reasoning': 1}, 'list': [{'pair_id': 'p1', 'row': 4, 'source': '', 'stage': '010 reasoning', 'reason': '400: too long'}]}
        >>> ledger.add(PreferencePair(id="p2", prompt=[], chosen="a", rejected="b", row=9), "010 reasoning", "400: too long")
        Traceback (most recent call last):
        ...
        autorule.extraction.refusals.TooManyRefused: the server refused 2 of 10 pairs (20.0%), more than --max-refused-share 0.1 allows: pair p1 (row 4, 010 reasoning): 400: too long; pair p2 (row 9, 010 reasoning): 400: too long. They are recorded in .../020_refused.jsonl and run.json; a rerun does not send them again. Fix the cause (e.g. --max-input-tokens for a smaller context) and rerun with --retry-refused, or allow more with --max-refused-share
    """

    def __init__(self, run_dir: Path, pairs: int, max_share: float):
        self.path = run_dir / REFUSED_FILE
        self.pairs, self.max_share = pairs, max_share
        self.records: dict[str, Refusal] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = Refusal.model_validate_json(line)
                except ValueError:
                    continue  # a line a killed run was writing: that pair is tried again
                self.records[rec.pair_id] = rec

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def count(self, stage: str) -> int:
        return sum(r.stage == stage for r in self.records.values())

    def add(self, pair: PreferencePair, stage: str, reason: str) -> None:
        """Record a refused pair (written at once); raises `TooManyRefused` past the share."""
        rec = Refusal(pair_id=pair.id, row=pair.row, source=pair.source, stage=stage, reason=reason)
        self.records[pair.id] = rec
        with self.path.open("a", encoding="utf-8") as f:
            f.write(rec.model_dump_json() + "\n")
        log.warning("refused: %s", rec.describe())
        self.check()

    def check(self) -> None:
        """Raise `TooManyRefused` when more than `max_share` of the pairs were refused."""
        n = len(self.records)
        if n and n > self.max_share * self.pairs:
            named = "; ".join(r.describe() for r in list(self.records.values())[:NAMED])
            more = f"; and {n - NAMED} more" if n > NAMED else ""
            raise TooManyRefused(
                f"the server refused {n} of {self.pairs} pairs ({n / self.pairs:.1%}), more than --max-refused-share {self.max_share:g} "
                f"allows: {named}{more}. They are recorded in {self.path} and run.json; a rerun does not send them again. Fix the cause "
                "(e.g. --max-input-tokens for a smaller context) and rerun with --retry-refused, or allow more with --max-refused-share"
            )

    def clear(self) -> int:
        """Forget every refusal (`--retry-refused`: they are sent again); how many there were."""
        n = len(self.records)
        self.records.clear()
        self.path.unlink(missing_ok=True)
        return n

    def summary(self) -> dict:
        """What run.json and the summary show: how many, by stage, and each one."""
        by_stage: dict[str, int] = {}
        for r in self.records.values():
            by_stage[r.stage] = by_stage.get(r.stage, 0) + 1
        return {"pairs": len(self.records), "share": self.max_share, "by_stage": by_stage, "list": [r.model_dump() for r in self.records.values()]}


def generate_each(
    llm: LLM,
    n: int,
    build: Callable[[int], ChatRequest],
    on_result: Callable[[int, Completion], None],
    on_refused: Callable[[int, str], None],
    learn: Callable[[str], bool] | None = None,
    desc: str | None = None,
) -> None:
    """Completions for items 0..n-1, each refused item reported instead of failing the batch.

    Args:
        llm: the model.
        n: how many items.
        build: item i's request, built when it is sent (after `learn` it is fitted again);
            may raise `DoesNotFit`, reported as the item's refusal without a request.
        on_result: called with (item, completion) as each finishes.
        on_refused: called with (item, reason) for an item the server refused.
        learn: called with a refusal's text; True when it taught something (a smaller
            context) that makes a rebuilt request worth sending again.
        desc: a progress bar's label for the first batch.

    Example:
        >>> from autorule.llm.base import LLM, Completion, RequestRefused
        >>> class Picky(LLM):
        ...     def _generate(self, requests, desc, on_result):
        ...         for i, r in enumerate(requests):
        ...             if "bad" in r.messages[0]["content"]:
        ...                 raise RequestRefused("400: no")
        ...             on_result(i, Completion(text="ok"))
        ...     def _score_yes_no_batch(self, items, on_item, errors, keys=None): ...
        >>> texts, done, refused = ["a", "bad", "c", "d"], [], []
        >>> generate_each(Picky(), 4, lambda i: ChatRequest([{"role": "user", "content": texts[i]}]), lambda i, c: done.append(i), lambda i, why: refused.append((i, why)))
        >>> sorted(done), refused
        ([0, 2, 3], [(1, '400: no')])
    """
    _each(llm, list(range(n)), build, on_result, on_refused, learn, desc)


def _each(llm, pending: list[int], build, on_result, on_refused, learn, desc: str | None = None) -> None:
    while pending:
        ready, requests = [], []
        for i in pending:
            try:
                requests.append(build(i))
                ready.append(i)
            except DoesNotFit as e:
                on_refused(i, str(e))
        if not ready:
            return
        done: set[int] = set()

        def got(j: int, c: Completion) -> None:
            done.add(ready[j])
            on_result(ready[j], c)

        try:
            llm.generate(requests, desc, on_result=got)
            return
        except RequestRefused as e:
            left = [i for i in ready if i not in done]
            if not left:
                return
            if learn is not None and learn(str(e)):
                pending = left  # a smaller context: every unfinished request is fitted again
                continue
            if len(left) == 1:
                on_refused(left[0], str(e))
                return
            # one of these was refused (which one the batch does not say): halves, until it is alone
            half = len(left) // 2
            _each(llm, left[:half], build, on_result, on_refused, learn)
            _each(llm, left[half:], build, on_result, on_refused, learn)
            return


def describe_refusals(summary: dict, shown: int = 3) -> str:
    """The summary table's line for refused pairs.

    Example:
        >>> describe_refusals({"pairs": 1, "list": [{"pair_id": "ab", "row": 3, "stage": "010 reasoning", "reason": "400 too long"}]})
        'pair ab (row 3, 010 reasoning): 400 too long'
        >>> describe_refusals({"pairs": 0, "list": []})
        'none'
    """
    if not summary.get("pairs"):
        return "none"
    lines = [Refusal(**r).describe() for r in summary["list"][:shown]]
    more = summary["pairs"] - len(lines)
    return "; ".join(lines) + (f"; and {more} more (run.json)" if more > 0 else "")
