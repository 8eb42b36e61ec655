"""Any backend behind the content-addressed cache: only misses reach the model."""

from __future__ import annotations

import math

from autorule.cache import Cache, content_key
from autorule.llm.base import LLM, ChatRequest, Completion, OnItem, OnResult


class CachedLLM(LLM):
    def __init__(self, inner: LLM, cache: Cache):
        super().__init__()
        self.inner = inner
        self.cache = cache
        self.spec = inner.spec
        self.stats = inner.stats  # one set of counts for the run

    @property
    def identity(self) -> dict:
        return self.inner.identity

    @property
    def yes_no_record(self) -> dict:
        return self.inner.yes_no_record

    @property
    def backend(self) -> LLM:
        return self.inner.backend

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def _generate_key(self, request: ChatRequest) -> str:
        return content_key({"kind": "generate", "model": self.identity, "request": request.cache_fields()})

    def _check_key(self, prefix: str, question: str) -> str:
        return content_key({"kind": "yes_no", "model": self.identity, "prefix": prefix, "question": question})

    def cached_generations(self, requests: list[ChatRequest]) -> int:
        """How many of these requests the cache already answers (for plans)."""
        return len(self.cache.get_many([self._generate_key(r) for r in requests]))

    def cached_checks(self, items: list[tuple[str, list[str]]]) -> int:
        """How many of these yes/no checks the cache already answers (for plans)."""
        return len(self.cache.get_many([self._check_key(p, q) for p, qs in items for q in qs]))

    def _generate(self, requests: list[ChatRequest], desc: str | None, on_result: OnResult | None = None) -> list[Completion]:
        keys = [self._generate_key(r) for r in requests]
        found = self.cache.get_many(keys)
        out: list[Completion | None] = []
        for k in keys:
            if k in found:
                c = Completion.from_dict(found[k])
                c.cached = True
                out.append(c)
            else:
                out.append(None)
        self.stats["cache_hits"] += sum(1 for c in out if c is not None)
        todo = [i for i, c in enumerate(out) if c is None]

        # each miss is stored the moment it returns, so an interrupted batch keeps what finished
        def store(j: int, c: Completion) -> None:
            out[todo[j]] = c
            self.cache.put(keys[todo[j]], c.to_dict())
            if on_result:
                on_result(todo[j], c)

        if on_result:
            for i, c in enumerate(out):
                if c is not None:
                    on_result(i, c)

        if todo:
            self.inner.generate([requests[i] for i in todo], desc, on_result=store)
        return out  # type: ignore[return-value]

    def _score_yes_no_batch(self, items: list[tuple[str, list[str]]], on_item: OnItem | None, errors: dict[int, str] | None,
                            keys: list[str] | None = None) -> list[list[float]]:
        affinity = keys
        keys = [[self._check_key(prefix, q) for q in questions] for prefix, questions in items]
        found = self.cache.get_many([k for ks in keys for k in ks])
        self.stats["cache_hits"] += len(found)
        # only the missing questions go to the model, still grouped by their shared prefix
        todo = [(i, [j for j, k in enumerate(ks) if k not in found]) for i, ks in enumerate(keys)]
        todo = [(i, js) for i, js in todo if js]
        if on_item:
            pending = {i for i, _ in todo}
            for i in range(len(items)):
                if i not in pending:
                    on_item(i)
        if todo:
            inner_errors: dict[int, str] | None = {} if errors is not None else None
            probs = self.inner.score_yes_no_batch(
                [(items[i][0], [items[i][1][j] for j in js]) for i, js in todo],
                on_item=(lambda t: on_item(todo[t][0])) if on_item else None,
                errors=inner_errors,
                keys=[affinity[i] for i, _ in todo] if affinity else None,
            )
            fresh = {keys[i][j]: p for (i, js), ps in zip(todo, probs) for j, p in zip(js, ps)}
            # an unparsed or refused check is not an answer: never stored, asked again next time
            self.cache.put_many({k: p for k, p in fresh.items() if not math.isnan(p)})
            found.update(fresh)
            if inner_errors:
                errors.update({todo[t][0]: why for t, why in inner_errors.items()})  # type: ignore[union-attr]
        return [[found[k] for k in ks] for ks in keys]

    def close(self) -> None:
        self.inner.close()
