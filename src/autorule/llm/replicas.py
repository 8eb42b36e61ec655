"""Several servers of one model (data-parallel replicas), and which one a request goes to.

A request with an affinity key (the verifier's: the conversation before the response it
judges) goes to the same replica every time, so all rules of a conversation and all
completions of one prompt meet that replica's prefix cache. The choice is rendezvous
hashing over the replicas that answer, with bounded load: when the first choice is full
(as many requests as its concurrency limit) and holds more than its share of the requests
in flight (`LOAD_SLACK` times the mean, plus one), the next choice in the key's order takes it. A replica that stops answering (refused
or dropped connections, timeouts) is taken out for `cooldown` seconds; its requests go to
the others, and it is tried again after.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# a replica may hold this many times the mean load before a key spills to its next choice
LOAD_SLACK = 1.25
DEFAULT_COOLDOWN = 30.0


@dataclass(eq=False)
class Replica:
    """One server's address and what the client keeps for it.

    Args:
        url: its OpenAI-compatible root, e.g. ``http://10.0.0.2:8000/v1``.
        limit: its own bound on requests in flight (an `AdaptiveLimit`), set by the backend.
    """

    url: str
    limit: Any = None
    assigned: int = 0  # requests routed here and not yet finished (waiting or in flight)
    requests: int = 0  # requests sent here
    down_until: float = 0.0
    downs: int = 0
    clients: dict = field(default_factory=dict)
    busy_slots: set = field(default_factory=set)  # llama-server slots pinned by requests in flight

    def up(self, now: float) -> bool:
        return self.down_until <= now

    def take_slot(self, slots: int) -> int | None:
        """A free slot id among `slots` for one request (llama-server's ``id_slot``), or None when all are taken."""
        free = next((s for s in range(slots) if s not in self.busy_slots), None)
        if free is not None:
            self.busy_slots.add(free)
        return free

    def free_slot(self, slot: int | None) -> None:
        self.busy_slots.discard(slot)


def _weight(key: str, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{url}\n{key}".encode(), digest_size=8).digest(), "big")


class ReplicaSet:
    """Routes requests over replicas of one model.

    Args:
        urls: the replicas' base URLs (at least one).
        cooldown: seconds a replica that stopped answering is left out.

    Example:
        >>> replicas = ReplicaSet(["http://a/v1", "http://b/v1"])
        >>> first = replicas.pick("conversation 1")
        >>> replicas.pick("conversation 1") is first     # the same key, the same replica
        True
        >>> replicas.mark_down(first, "connection refused")
        True
        >>> replicas.pick("conversation 1") is not first  # re-routed while it is out
        True
    """

    def __init__(self, urls: list[str], cooldown: float = DEFAULT_COOLDOWN, clock=time.monotonic):
        if not urls:
            raise ValueError("no replica URLs")
        self.replicas = [Replica(u) for u in urls]
        self.cooldown = cooldown
        self.clock = clock

    def __len__(self) -> int:
        return len(self.replicas)

    def __iter__(self):
        return iter(self.replicas)

    def order(self, key: str | None) -> list[Replica]:
        """Replicas that answer, in `key`'s order of preference (by load where there is no key);
        when none answers, the one back soonest."""
        now = self.clock()
        up = [r for r in self.replicas if r.up(now)]
        if not up:
            return [min(self.replicas, key=lambda r: r.down_until)]
        if key is None:
            return sorted(up, key=lambda r: r.assigned)
        return sorted(up, key=lambda r: _weight(key, r.url), reverse=True)

    def pick(self, key: str | None) -> Replica:
        """The replica for a request with this affinity key (None: the least loaded)."""
        ranked = self.order(key)
        if len(ranked) == 1 or key is None:
            return ranked[0]
        # a replica with a free place keeps its keys; only a full one above its share spills to the next choice
        bound = math.ceil(LOAD_SLACK * (sum(r.assigned for r in ranked) + 1) / len(ranked))
        return next((r for r in ranked if r.assigned < max(bound, r.limit.limit if r.limit else 1)), ranked[0])

    def mark_down(self, replica: Replica, why: str) -> bool:
        """Take `replica` out for the cooldown; True when another replica still answers."""
        now = self.clock()
        if replica.up(now):
            replica.downs += 1
            log.warning("replica %s stopped answering (%s): its requests go to the other replicas for %g s", replica.url, why, self.cooldown)
        replica.down_until = now + self.cooldown
        return any(r.up(now) for r in self.replicas)
