"""The trace: every event of a run, in order. Views, replay and the determinism tests read it.

Each event is plain data (JSON-able); ``str(event)`` is one stable line, and
:meth:`Trace.digest` hashes those lines, so "same seed, same calls, same trace" is checkable
byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kvlab.batching import record_txs

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

    @property
    def txs(self) -> tuple[str, ...]:
        """The transactions this event concerns: its ``tx``, or those of a batch (kvlab.batching:
        a BATCH message or record speaks for several, and has no single ``tx``)."""
        d = self.data
        tx = d.get("tx")
        if tx:
            return (tx,)
        return tuple(d.get("txs") or ())

    def __str__(self) -> str:
        d = self.data
        k = self.kind
        if k in ("send", "deliver", "drop", "duplicate"):
            what = f"#{d['id']} {d['src']}->{d['dst']} {d['kind']}" + (
                f" {d['tx']}" if d.get("tx") else _batch(d))
            if k == "drop":
                what += f" ({d['reason']})"
            elif k == "duplicate":
                what += f" (copy of #{d['of']})"
        elif k == "wal":
            what = f"lsn {d['lsn']} {d['type']} {d.get('tx') or _batch(d).lstrip()}" + (
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


def _batch(d: dict[str, Any]) -> str:
    """A batch's transactions, as an event line shows them: `` (T1 T2 T3)``."""
    txs = d.get("txs")
    return f" ({' '.join(txs)})" if txs else ""


# How events are stored: end to end in one flat list of plain values, each event as
# ``seq, time, kind, node, form, *fields`` (``Trace._at`` says where each one starts), the details
# formatted into a dict only when the event is read (views read a few, runs record many). Plain
# values (ints, strings, None, tuples of them) are not objects Python's cyclic garbage collector
# tracks, so recording an event makes nothing the collector counts or walks: a tuple per event
# was one tracked object each (50-odd per transaction), which made the collector run twice as
# often and its full passes cost a fifth of a traced run. ``form`` says how ``fields`` become the
# event's ``data``; each builds the same dict, in the same key order, as the driver used to
# build eagerly (the trace is byte-for-byte what it was). A batch's event (kvlab.batching) stores a
# tuple of its transactions where ``tx`` goes; its ``data`` has ``tx`` None and ``txs`` their list.
#
# A dict is kept as its keys (one shared tuple per set of keys) and its values (rebuilt on read,
# in the same order).
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


_NOT_TX = ("peer-up", "batch")  # timers keyed by a peer, not a transaction


def _data(t: tuple) -> dict[str, Any]:
    form = t[4]
    if form == _PLAIN:
        return dict(zip(t[5], t[6:], strict=True))
    if form == _SEND:
        d = {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9], "due": t[10]}
        if t[11] is not None:
            d["body"] = dict(zip(t[11], t[12:], strict=True))
    elif form == _DELIVER:
        d = {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9]}
    elif form == _DROP:
        d = {"id": t[5], "src": t[6], "dst": t[7], "kind": t[8], "tx": t[9],
             "reason": t[10]}
    elif form == _WAL:
        d = {"lsn": t[5], "type": t[6], "tx": t[7], "force": t[8]}
    else:
        d = None
    if d is not None:
        if type(d["tx"]) is tuple:  # a batch's transactions
            d["txs"], d["tx"] = list(d["tx"]), None
        return d
    if form == _TIMER:
        key = t[5]
        return {"key": " ".join(map(str, key)),
                "tx": key[1] if isinstance(key[1], str) and key[0] not in _NOT_TX else None}
    if form == _FLUSH:
        return {"records": t[5], "lsn": t[6]}
    raise AssertionError(f"unknown stored event form {form!r}")


def _event(t: tuple) -> Event:
    return Event(t[0], t[1], t[2], t[3], _data(t))


class Trace:
    """A sequence of :class:`Event` with a few helpers for reading it.

    Stored compactly (see above): each event's plain fields (its sequence number, time, kind,
    node and details) in one flat list, formatted into an :class:`Event` only when read.
    ``len``, indexing and iterating give :class:`Event` objects (a fresh one, with a fresh
    ``data`` dict, each time); a slice is a Trace. The driver records through the specialised
    methods below (:meth:`send`, :meth:`wal`, ...), which store their fields without building
    anything; :meth:`record` takes any details.
    """

    __slots__ = ("enabled", "_flat", "_at")

    def __init__(self, events: Iterable[Event] = (), enabled: bool = True) -> None:
        self._flat: list[Any] = []
        self._at = array("q")  # where each event starts in _flat
        for e in events:
            self._at.append(len(self._flat))
            self._flat += (e.seq, e.time, e.kind, e.node, _PLAIN, _keys(e.data),
                           *e.data.values())
        self.enabled = enabled

    def record(self, time: int, kind: str, node: str | None, data: dict[str, Any]) -> None:
        """Append an event (its details are read from ``data`` now; keep no reference)."""
        if self.enabled:
            at, flat = self._at, self._flat
            n = len(at)
            at.append(len(flat))
            flat += (n, time, kind, node, _PLAIN, _keys(data), *data.values())

    # The driver's common events, stored without formatting (callers check ``enabled``).
    def send(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
             tx: str | None, due: int, body: dict[str, Any] | None) -> None:
        """A message sent; ``body`` None: not recorded (only plain bodies are)."""
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        if body is None:
            flat += (n, time, "send", node, _SEND, id_, src, dst, kind, tx, due, None)
        else:
            flat += (n, time, "send", node, _SEND, id_, src, dst, kind, tx, due, _keys(body),
                     *body.values())

    def deliver(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
                tx: str | None) -> None:
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        flat += (n, time, "deliver", node, _DELIVER, id_, src, dst, kind, tx)

    def drop(self, time: int, node: Any, id_: int, src: Any, dst: Any, kind: str,
             tx: str | None, reason: str) -> None:
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        flat += (n, time, "drop", node, _DROP, id_, src, dst, kind, tx, reason)

    def wal(self, time: int, node: Any, lsn: int, type_: str, tx: str | None,
            force: bool) -> None:
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        flat += (n, time, "wal", node, _WAL, lsn, type_, tx, force)

    def states(self, time: int, node: Any, notes: list[dict[str, Any]]) -> None:
        """A node's state changes (its Outputs' notes), in order."""
        at, flat, shapes = self._at, self._flat, _SHAPES
        for note in notes:
            keys = shapes.get(tuple(note)) or _keys(note)  # _keys, its common case inline
            at.append(len(flat))
            flat += (len(at) - 1, time, "state", node, _PLAIN, keys, *note.values())

    def wals(self, time: int, node: Any, lsn: int, records: list[Any]) -> None:
        """Records appended to a node's log from ``lsn`` on (objects with ``type``, ``data``
        and ``force``, as kvlab.effects.Record)."""
        at, flat = self._at, self._flat
        for rec in records:
            at.append(len(flat))
            data = rec.data
            tx = data.get("tx")
            if tx is None and rec.type == "BATCH":
                tx = record_txs(data)
            flat += (len(at) - 1, time, "wal", node, _WAL, lsn, rec.type, tx, rec.force)
            lsn += 1

    def timer(self, time: int, node: Any, key: tuple) -> None:
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        flat += (n, time, "timer", node, _TIMER, key)

    def flush(self, time: int, node: Any, records: int, lsn: int) -> None:
        at, flat = self._at, self._flat
        n = len(at)
        at.append(len(flat))
        flat += (n, time, "flush", node, _FLUSH, records, lsn)

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._at)

    def __bool__(self) -> bool:
        return len(self._at) > 0

    def _stored(self, i: int) -> list[Any]:
        """Event ``i``'s stored fields (``0 <= i < len``)."""
        at = self._at
        end = at[i + 1] if i + 1 < len(at) else len(self._flat)
        return self._flat[at[i]:end]

    def __iter__(self) -> Iterator[Event]:
        return (_event(self._stored(i)) for i in range(len(self._at)))

    def __reversed__(self) -> Iterator[Event]:
        return (_event(self._stored(i)) for i in range(len(self._at) - 1, -1, -1))

    def __getitem__(self, i):  # slices stay Traces
        n = len(self._at)
        if isinstance(i, slice):
            picked = range(n)[i]
            t = Trace()
            if picked.step == 1:  # a run of events: one slice of the flat list
                if picked:
                    base, end = self._at[picked.start], (
                        self._at[picked.stop] if picked.stop < n else len(self._flat))
                    t._flat = self._flat[base:end]
                    t._at = array("q", [a - base for a in self._at[picked.start:picked.stop]])
            else:
                for j in picked:
                    t._at.append(len(t._flat))
                    t._flat += self._stored(j)
            return t
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("trace index out of range")
        return _event(self._stored(i))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Trace):
            return self._at == other._at and self._flat == other._flat
        if isinstance(other, (list, tuple)):  # e.g. ``trace[start:] == []``
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, as the list it was

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
                     and (tx is None or tx in e.txs)
                     and (node is None or e.node == node))

    def messages(self) -> Trace:
        return self.filter(("send", "duplicate", "deliver", "drop"))

    def __repr__(self) -> str:
        return f"<Trace {len(self)} events>"
