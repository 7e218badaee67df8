"""The trace: every event of a run, in order. Views, replay and the determinism tests read it.

Each event is plain data (JSON-able); ``str(event)`` is one stable line, and
:meth:`Trace.digest` hashes those lines, so "same seed, same calls, same trace" is checkable
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

KINDS = ("call", "send", "deliver", "drop", "wal", "flush", "timer", "state", "crash",
         "restart", "torn", "partition", "heal", "peer_up", "gc", "checkpoint")


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
        if k in ("send", "deliver", "drop"):
            what = f"#{d['id']} {d['src']}->{d['dst']} {d['kind']}" + (
                f" {d['tx']}" if d.get("tx") else "")
            if k == "drop":
                what += f" ({d['reason']})"
        elif k == "wal":
            what = f"lsn {d['lsn']} {d['type']} {d.get('tx') or ''}" + (
                " [force]" if d.get("force") else "")
        elif k == "state":
            what = f"{d.get('role')} {d.get('tx') or ''} {d.get('event')}" + (
                f": {d['old']} -> {d['new']}" if "new" in d else "")
        else:
            what = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return f"t={self.time:<5} {k:<9} {self.node or '-':<4} {what.rstrip()}"

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "node": self.node,
                "data": self.data}


class Trace(list):
    """A list of :class:`Event` with a few helpers for reading it."""

    def __init__(self, events: Iterable[Event] = (), enabled: bool = True) -> None:
        super().__init__(events)
        self.enabled = enabled

    def record(self, time: int, kind: str, node: str | None, data: dict[str, Any]) -> None:
        if self.enabled:
            self.append(Event(len(self), time, kind, node, data))

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
        return self.filter(("send", "deliver", "drop"))

    def __getitem__(self, i):  # slices stay Traces
        got = super().__getitem__(i)
        return Trace(got) if isinstance(i, slice) else got

    def __repr__(self) -> str:
        return f"<Trace {len(self)} events>"
