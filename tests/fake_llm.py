"""A scripted in-process LLM for unit tests (never used by the product)."""

from __future__ import annotations

from collections.abc import Callable

from autorule.llm.base import LLM, ChatRequest, Completion


class ScriptedLLM(LLM):
    def __init__(self, p_yes: Callable[[str, str], float], reply: Callable[[ChatRequest], str] | None = None):
        super().__init__()
        self.spec = "scripted"
        self.p_yes = p_yes
        self.reply = reply or (lambda r: "ok")
        self.calls: list[tuple[str, str]] = []

    def _generate(self, requests, desc, on_result):
        out = []
        for i, r in enumerate(requests):
            c = Completion(text=self.reply(r))
            out.append(c)
            if on_result:
                on_result(i, c)
        return out

    def _score_yes_no_batch(self, items, on_item=None, errors=None, keys=None):
        self.stats["yes_no_checks"] += sum(len(qs) for _, qs in items)
        out = []
        for i, (prefix, questions) in enumerate(items):
            self.calls.extend((prefix, q) for q in questions)
            out.append([self.p_yes(prefix, q) for q in questions])
            if on_item:
                on_item(i)
        return out


def use_in_cli(monkeypatch, llm: LLM) -> LLM:
    """Make the CLI's `--verifier` (any spec) load `llm`, and skip the plan (it times real backends)."""
    monkeypatch.setattr("autorule.llm.load_llm", lambda spec, **kwargs: llm)
    monkeypatch.setattr("autorule.cli.options.show_plan", lambda make_plan, args: False)
    return llm
