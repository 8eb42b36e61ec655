"""A deterministic stand-in LLM for examples and for testing your own wiring (never for judgements)."""

from __future__ import annotations

from autorule.llm.base import LLM, ChatRequest, Completion, OnItem, OnResult


class FakeLLM(LLM):
    """Answers every yes/no check with the same P(Yes) and every chat request with the same text.

    Use it to check that data flows through your trainer, notebook or server setup
    without loading a model or calling a server. Its verdicts mean nothing.

    Args:
        p_yes: P(Yes) returned for every rule check.
        reply: text returned for every chat request.

    Example:
        >>> llm = FakeLLM(p_yes=0.75)
        >>> llm.score_yes_no("conversation ...", ["Is it short?", "Is it polite?"])
        [0.75, 0.75]
        >>> llm.generate([ChatRequest(messages=[{"role": "user", "content": "Hi"}])])[0].text
        'ok'
    """

    def __init__(self, p_yes: float = 0.5, reply: str = "ok"):
        super().__init__()
        if not 0.0 <= p_yes <= 1.0:
            raise ValueError(f"p_yes={p_yes}: a probability must be in [0, 1]")
        self.p_yes, self.reply = p_yes, reply
        self.spec = f"fake:{p_yes}"

    def _generate(self, requests: list[ChatRequest], desc: str | None, on_result: OnResult | None) -> list[Completion]:
        out = []
        for i, _ in enumerate(requests):
            out.append(Completion(text=self.reply))
            self.stats["requests"] += 1
            if on_result:
                on_result(i, out[-1])
        return out

    def _score_yes_no_batch(self, items, on_item: OnItem | None, errors, keys=None) -> list[list[float]]:
        out = []
        for i, (_, questions) in enumerate(items):
            self.stats["yes_no_checks"] += len(questions)
            out.append([self.p_yes] * len(questions))
            if on_item:
                on_item(i)
        return out
