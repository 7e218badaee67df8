"""The trace: every event of a run, in order. Views, replay and the determinism tests read it.

Each event is plain data (JSON-able); ``str(event)`` is one stable line, and
:meth:`Trace.digest` hashes those lines, so "same seed, same calls, same trace" is checkable
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

KINDS = ("call", "send", "duplicate", "deliver", "drop", "wal", "flush", "timer", "state",
         "crash", "restart", "torn", "partition", "heal", "gc", "checkpoint")


@dataclass(slots=True)
class Event:
    seq: int
    time: int
    kind: str
    node: str | None
    data: dict[str, Any]

    @property
    def tx(self) -> str | None:
        return self.data.get("tx")

    def __str__(self) -> str:
        d = self.data
        k = self.kind
        if k in ("send", "deliver", "drop", "duplicate"):
            what = f"#{d['id']} {d['src']}->{d['dst']} {d['kind']}" + (
                f" {d['tx']}" if d.get("tx") else "")
            if k == "drop":
                what += f" ({d['reason']})"
            elif k == "duplicate":
                what += f" (copy of #{d['of']})"
        elif k == "wal":
            what = f"lsn {d['lsn']} {d['type']} {d.get('tx') or ''}" + (
                " [force]" if d.get("force") else "")
        elif k == "state":
            what = f"{d.get('role')} {d.get('tx') or ''} {d.get('event')}" + (
                f": {d['old']} -> {d['new']}" if "new" in d else "")
        else:
            what = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        node = "-" if self.node is None else str(self.node)
        return f"t={self.time:<5} {k:<9} {node:<4} {what.rstrip()}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "node": self.node,
                "data": self.data}


_SEQ, _TIME, _KIND, _NODE = "\0seq", "\0time", "\0kind", "\0node"  # can't clash: not keys


def _event(stored: dict[str, Any]) -> Event:
    data = dict(stored)
    return Event(data.pop(_SEQ), data.pop(_TIME), data.pop(_KIND), data.pop(_NODE), data)


def _store(e: Event) -> dict[str, Any]:
    return {**e.data, _SEQ: e.seq, _TIME: e.time, _KIND: e.kind, _NODE: e.node}


class Trace(list):
    """A list of :class:`Event` with a few helpers for reading it.

    Stored compactly: each event is one dict holding its details plus its time, kind and node.
    A dict of plain values is invisible to Python's cyclic garbage collector, while a tuple or
    object holding a dict never is; with hundreds of thousands of events that difference is
    most of the collector's work in a long run. Indexing and iterating give :class:`Event`s.
    """

    def __init__(self, events: Iterable[Event] = (), enabled: bool = True) -> None:
        super().__init__(_store(e) for e in events)  # Events in, compact dicts stored
        self.enabled = enabled

    def record(self, time: int, kind: str, node: str | None, data: dict[str, Any]) -> None:
        """Append an event; the trace takes ``data`` over (callers pass a fresh dict)."""
        if self.enabled:
            data[_SEQ], data[_TIME], data[_KIND], data[_NODE] = len(self), time, kind, node
            self.append(data)

    def __iter__(self) -> Iterator[Event]:
        return map(_event, super().__iter__())

    def __reversed__(self) -> Iterator[Event]:
        return map(_event, super().__reversed__())

    def __getitem__(self, i):  # slices stay Traces
        got = super().__getitem__(i)
        if isinstance(i, slice):
            t = Trace()
            list.extend(t, got)
            return t
        return _event(got)

    def lines(self) -> list[str]:
        return [str(e) for e in self]

    def text(self, last: int | None = None) -> str:
        events = self if last is None else self[-last:]
        return "\n".join(str(e) for e in events)

    def digest(self) -> str:
        h = hashlib.sha256()
        for e in self:
            h.update(json.dumps(e.to_dict(), sort_keys=True, default=str).encode())
            h.update(b"\n")
        return h.hexdigest()

    def filter(self, kind: str | Iterable[str] | None = None, tx: str | None = None,
               node: str | None = None) -> Trace:
        kinds = {kind} if isinstance(kind, str) else set(kind) if kind is not None else None
        return Trace(e for e in self if (kinds is None or e.kind in kinds)
                     and (tx is None or e.data.get("tx") == tx)
                     and (node is None or e.node == node))

    def messages(self) -> Trace:
        return self.filter(("send", "duplicate", "deliver", "drop"))

    def __repr__(self) -> str:
        return f"<Trace {len(self)} events>"
