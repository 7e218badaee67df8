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


# How events are stored: one flat tuple each, ``(seq, time, kind, node, form, *fields)``, the
# details formatted into a dict only when the event is read (views read a few, runs record
# many). A tuple of plain values, like a dict of them, is invisible to Python's cyclic garbage
# collector once it has looked at it, so a long trace costs the collector nothing. ``form`` says
# how ``fields`` become the event's ``data``; each builds the same dict, in the same key order,
# as the driver used to build eagerly (the trace is byte-for-byte what it was).
#
# A dict is kept as its keys (one shared tuple per set of keys) and its values, at the end of
# the event's tuple (rebuilt on read, in the same order): the collector stops tracking a tuple
# of plain values, but never one that holds a dict, so a trace of dicts would be rescanned by
# every full collection for as long as it lives.
_PLAIN, _SEND, _DELIVER, _DROP, _WAL, _TIMER, _FLUSH = range(7)
_SHAPES: dict[tuple, tuple] = {}  # the keys tuples, shared (a run has a few dozen)


def _keys(d: dict[str, Any]) -> tuple:
    k = tuple(d)
    shared = _SHAPES.get(k)
    if shared is None:
        if len(_SHAPES) >= 10_000:  # arbitrary keys (not the engine's): don't keep them all
            return k
        shared = _SHAPES[k] = k
    return shared


def _data(t: tuple) -> dict[str, Any]:
    form = t[4]
    if form == _PLAIN:
        return dict(zip(t[5], t[6:], strict=True))
    if form == _SEND:
        d = {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9], "due": t[10]}
        if t[11] is not None:
            d["body"] = dict(zip(t[11], t[12:], strict=True))
        return d
    if form == _DELIVER:
        return {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9]}
    if form == _DROP:
        return {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9],
                "reason": t[10]}
    if form == _WAL:
        return {"lsn": t[5], "type": t[6], "tx": t[7], "force": t[8]}
    if form == _TIMER:
        key = t[5]
        return {"key": " ".join(map(str, key)),
                "tx": key[1] if isinstance(key[1], str) and key[0] != "peer-up" else None}
    if form == _FLUSH:
        return {"records": t[5], "lsn": t[6]}
    raise AssertionError(f"unknown stored event form {form!r}")


def _event(t: tuple) -> Event:
    return Event(t[0], t[1], t[2], t[3], _data(t))


class Trace(list):
    """A list of :class:`Event` with a few helpers for reading it.

    Stored compactly: each event is one flat tuple of plain values (its sequence number,
    time, kind, node and details), formatted into an :class:`Event` only when read. Indexing
    and iterating give an :class:`Event` (a fresh one, with a fresh ``data`` dict, each time).
    The driver records through the specialised methods below (:meth:`send`, :meth:`wal`, ...),
    which store their fields without building anything; :meth:`record` takes any details.
    """

    def __init__(self, events: Iterable[Event] = (), enabled: bool = True) -> None:
        super().__init__((e.seq, e.time, e.kind, e.node, _PLAIN, _keys(e.data),
                          *e.data.values()) for e in events)  # Events in, tuples stored
        self.enabled = enabled

    def record(self, time: int, kind: str, node: str | None, data: dict[str, Any]) -> None:
        """Append an event (its details are read from ``data`` now; keep no reference)."""
        if self.enabled:
            self.append((len(self), time, kind, node, _PLAIN, _keys(data), *data.values()))

    # The driver's common events, stored without formatting (callers check ``enabled``).
    def send(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
             tx: str | None, due: int, body: dict[str, Any] | None) -> None:
        """A message sent; ``body`` None: not recorded (only plain bodies are)."""
        if body is None:
            self.append((len(self), time, "send", node, _SEND, id_, src, dst, kind, tx, due,
                         None))
        else:
            self.append((len(self), time, "send", node, _SEND, id_, src, dst, kind, tx, due,
                         _keys(body), *body.values()))

    def deliver(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
                tx: str | None) -> None:
        self.append((len(self), time, "deliver", node, _DELIVER, id_, src, dst, kind, tx))

    def drop(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
             tx: str | None, reason: str) -> None:
        self.append((len(self), time, "drop", node, _DROP, id_, src, dst, kind, tx, reason))

    def wal(self, time: int, node: Any, lsn: int, type_: str, tx: str | None,
            force: bool) -> None:
        self.append((len(self), time, "wal", node, _WAL, lsn, type_, tx, force))

    def states(self, time: int, node: Any, notes: list[dict[str, Any]]) -> None:
        """A node's state changes (its Outputs' notes), in order."""
        append, shapes = self.append, _SHAPES
        for note in notes:
            keys = shapes.get(tuple(note)) or _keys(note)  # _keys, its common case inline
            append((len(self), time, "state", node, _PLAIN, keys, *note.values()))

    def wals(self, time: int, node: Any, lsn: int, records: list[Any]) -> None:
        """Records appended to a node's log from ``lsn`` on (objects with ``type``, ``data``
        and ``force``, as kvlab.effects.Record)."""
        append = self.append
        for rec in records:
            append((len(self), time, "wal", node, _WAL, lsn, rec.type, rec.data.get("tx"),
                    rec.force))
            lsn += 1

    def timer(self, time: int, node: Any, key: tuple) -> None:
        self.append((len(self), time, "timer", node, _TIMER, key))

    def flush(self, time: int, node: Any, records: int, lsn: int) -> None:
        self.append((len(self), time, "flush", node, _FLUSH, records, lsn))

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
