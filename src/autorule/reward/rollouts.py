"""Recent rollouts and their rewards, kept by the scorer for what reads them during training
(the online rule refresh, the gold monitor)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from autorule.data import Message


@dataclass(frozen=True)
class Rollout:
    """One scored completion, as the scorer saw it.

    Args:
        prompt: the conversation before the completion.
        completion: the judged answer (its reasoning cut unless the scorer judges it).
        group: the GRPO group it belongs to (completions of one prompt in one step share it).
        step: the trainer's step when it was scored (None when the caller gave none).
        total: the reward returned (after aggregation and vetoes); NaN when there was none.
        rule: the rule reward (fraction satisfied); rm: the reward model's score (None without one).
        vetoed: an essential rule failed and capped the total.
        p_satisfied: per rule id, P(Yes) (rules dropped for its group left out).

    Example:
        >>> r = Rollout([Message(role="user", content="Hi")], "Hello", "g1", 3, 0.5, 0.5, None, False, {"r-1": 0.5})
        >>> r.step, r.vetoed
        (3, False)
    """

    prompt: list[Message]
    completion: str
    group: str
    step: int | None
    total: float
    rule: float
    rm: float | None
    vetoed: bool
    p_satisfied: dict[str, float] = field(default_factory=dict)


class RolloutBuffer:
    """The last `maxlen` scored completions (older ones fall out): bounded, whatever the run's length.

    Args:
        maxlen: completions kept.

    Example:
        >>> buf = RolloutBuffer(maxlen=2)
        >>> for i in range(3):
        ...     buf.add(Rollout([], f"c{i}", "g", i, 0.0, 0.0, None, False))
        >>> [r.completion for r in buf], [r.completion for r in buf.since(2)]
        (['c1', 'c2'], ['c2'])
    """

    def __init__(self, maxlen: int = 4096):
        self._items: deque[Rollout] = deque(maxlen=maxlen)

    def add(self, rollout: Rollout) -> None:
        self._items.append(rollout)

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def since(self, step: int) -> list[Rollout]:
        """Rollouts scored at `step` or later (those with no step are left out)."""
        return [r for r in self._items if r.step is not None and r.step >= step]

    def groups(self, rollouts: list[Rollout] | None = None) -> dict[str, list[Rollout]]:
        """Rollouts by group (those of `rollouts`, else all kept), in the order they came."""
        out: dict[str, list[Rollout]] = {}
        for r in self._items if rollouts is None else rollouts:
            out.setdefault(r.group, []).append(r)
        return out

    def clear(self) -> None:
        self._items.clear()
