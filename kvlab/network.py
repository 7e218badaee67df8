"""The simulated network: messages in flight, seeded latency (so reordering), loss and partitions.

Nothing here knows about transactions. The cluster asks it to carry a message and later to
decide whether that message arrives: a partition, a crashed destination, or seeded random loss
can each stop it. The random generator is injected, so the same seed gives the same network.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kvlab.errors import ConfigurationError
from kvlab.messages import TSO, Message


@dataclass(slots=True, repr=False)
class Envelope:
    """A message in flight, with the network's id for it (what deliver()/drop() take)."""

    id: int
    msg: Message
    sent_at: int
    due: int

    @property
    def kind(self) -> str:
        return self.msg.kind

    @property
    def src(self) -> str:
        return self.msg.src

    @property
    def dst(self) -> str:
        return self.msg.dst

    @property
    def tx(self) -> str | None:
        return self.msg.tx

    def __str__(self) -> str:
        return f"#{self.id} {self.src}->{self.dst} {self.msg.label} (due t={self.due})"

    __repr__ = __str__


class Network:
    def __init__(self, rng: random.Random, latency: tuple[int, int] = (1, 1),
                 loss: float = 0.0) -> None:
        lo, hi = latency
        if not (1 <= lo <= hi):
            raise ConfigurationError(f"latency must be (min, max) ticks with 1 <= min <= max, "
                                     f"got {latency}")
        if not 0.0 <= loss < 1.0:
            raise ConfigurationError(f"loss is a probability in [0, 1), got {loss}")
        self.rng = rng
        self.latency = (lo, hi)
        self.loss = loss
        self.in_flight: dict[int, Envelope] = {}
        self.groups: dict[str, int] = {}  # node -> partition group; empty = fully connected
        self._next_id = 1

    def send(self, msg: Message, now: int) -> Envelope:
        lo, hi = self.latency
        delay = lo if lo == hi else self.rng.randint(lo, hi)
        env = Envelope(self._next_id, msg, now, now + delay)
        self._next_id += 1
        self.in_flight[env.id] = env
        return env

    def reachable(self, a: str, b: str) -> bool:
        """The oracle is reachable from everywhere; nodes only within their partition group."""
        if not self.groups or a == TSO or b == TSO:
            return True
        return self.groups.get(a, -1) == self.groups.get(b, -1)

    def lost(self) -> bool:
        return self.loss > 0.0 and self.rng.random() < self.loss

    def partition(self, groups: list[set[str]], everyone: list[str]) -> None:
        seen: set[str] = set()
        self.groups = {}
        for i, g in enumerate(groups):
            for n in sorted(g):
                if n in seen:
                    raise ConfigurationError(f"node {n!r} is in two partition groups; give "
                                             f"each node to one group")
                seen.add(n)
                self.groups[n] = i
        for n in everyone:  # nodes not named form one more group together
            self.groups.setdefault(n, len(groups))

    def heal(self) -> None:
        self.groups = {}
