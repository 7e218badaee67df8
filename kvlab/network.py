"""The simulated network: messages in flight, seeded latency (so reordering), loss, duplication
and partitions.

Nothing here knows about transactions. The cluster asks it to carry a message and later to
decide whether that message arrives: a partition, a crashed destination, or seeded random loss
can each stop it. The random generator is injected, so the same seed gives the same network.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from kvlab.errors import ConfigurationError
from kvlab.messages import TSO, Message, mixed_hash


@dataclass(slots=True, repr=False)
class Envelope:
    """A message in flight, with the network's id for it (what deliver()/drop() take)."""

    id: int
    msg: Message
    sent_at: int
    due: int
    _key: Any = None  # the message's fingerprint and its hash, computed once (kvlab.explore)
    _hash: int = 0

    def key(self) -> tuple:
        if self._key is None:
            self._key = self.msg.key()
            self._hash = mixed_hash(self._key)
        return self._key

    def key_hash(self) -> int:
        if self._key is None:
            self.key()
        return self._hash

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


def _probability(name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ConfigurationError(f"{name} is a probability in [0, 1), e.g. {name}=0.05; "
                                 f"got {p!r}")
    return float(p)


def check_latency(latency: Any) -> tuple[int, int]:
    """``(min, max)`` whole ticks with 1 <= min <= max, or ConfigurationError."""
    ok = isinstance(latency, (tuple, list)) and len(latency) == 2 and all(
        type(x) is int for x in latency)
    if not ok or not 1 <= latency[0] <= latency[1]:
        raise ConfigurationError(f"latency is (min, max) in whole simulated ticks with "
                                 f"1 <= min <= max, e.g. latency=(1, 5); got {latency!r}")
    return latency[0], latency[1]


class Network:
    def __init__(self, rng: random.Random, latency: tuple[int, int] = (1, 1),
                 loss: float = 0.0, duplicate: float = 0.0) -> None:
        self.rng = rng
        self.latency = check_latency(latency)
        self.loss = _probability("loss", loss)
        self.duplicate_rate = _probability("duplicate", duplicate)
        self.in_flight: dict[int, Envelope] = {}
        self.groups: dict[Any, int] = {}  # node -> partition group; empty = fully connected
        self._next_id = 1
        # kvlab.explore's network: a message identical to one already in flight is merged
        # with it (delivered once); the duplicates budget explores both copies arriving
        self.merge_identical = False

    @property
    def plain(self) -> bool:
        """True when :meth:`send` always carries exactly one envelope (no duplication, no
        merging), so a driver may call :meth:`carry` instead."""
        return not self.merge_identical and self.duplicate_rate == 0.0

    def send(self, msg: Message, now: int) -> list[Envelope]:
        """Put ``msg`` in flight; with the duplication rate, a second copy travels too.
        (Merged with an identical message in flight, when ``merge_identical``: no envelope.)"""
        if self.merge_identical:
            key = msg.key()
            h = mixed_hash(key)
            for e in self.in_flight.values():  # hashes first: equal keys are rare
                if e.key_hash() == h and e._key == key:
                    return []
            env = self.carry(msg, now)
            env._key, env._hash = key, h  # computed anyway: the explorer fingerprints it
            sent = [env]
        else:
            sent = [self.carry(msg, now)]
        if self.duplicate_rate > 0.0 and self.rng.random() < self.duplicate_rate:
            sent.append(self._carry(msg, now))
        return sent

    def copy(self, env: Envelope, now: int) -> Envelope:
        """A second copy of a message in flight, with its own delay (a duplicating network)."""
        return self._carry(env.msg, now)

    def carry(self, msg: Message, now: int) -> Envelope:
        """Put exactly one envelope for ``msg`` in flight (what :meth:`send` does when
        :attr:`plain`; the same random draws, so the same run)."""
        lo, hi = self.latency
        delay = lo if lo == hi else self.rng.randint(lo, hi)
        i = self._next_id
        self._next_id = i + 1
        env = self.in_flight[i] = Envelope(i, msg, now, now + delay)
        return env

    _carry = carry

    def reachable(self, a: Any, b: Any) -> bool:
        """The oracle is reachable from everywhere; nodes only within their partition group."""
        if not self.groups or a == TSO or b == TSO:
            return True
        return self.groups.get(a, -1) == self.groups.get(b, -1)

    def lost(self) -> bool:
        return self.loss > 0.0 and self.rng.random() < self.loss

    def partition(self, groups: list[set[Any]], everyone: list[Any]) -> None:
        """Cut the network between ``groups`` (nodes not named form one more group). Checks
        everything before changing anything."""
        seen: set[Any] = set()
        new: dict[Any, int] = {}
        for i, g in enumerate(groups):
            for n in sorted(g, key=str):
                if n in seen:
                    raise ConfigurationError(f"node {n!r} is in two partition groups; give "
                                             f"each node to one group")
                seen.add(n)
                new[n] = i
        for n in everyone:
            new.setdefault(n, len(groups))
        self.groups = new

    def heal(self) -> None:
        self.groups = {}
