"""What a node asks the outside world to do after handling one input (the sans-I/O boundary).

A node never sends, writes or sleeps itself: it returns an :class:`Outputs` and a driver
(:mod:`kvlab.cluster`, or any other) carries it out. The one ordering rule that keeps two-phase
commit safe lives here too, in :class:`Outbox`, so every driver applies it the same way and no
handler has to remember it:

    **log before you speak**: nothing a node says (a message, a reply to a client, a timer it
    sets) takes effect while a *forced* record that the node appended before it is not durable.

A participant's vote therefore never overtakes its PREPARE record, a coordinator's COMMIT (first
send, resend, or answer to a STATUS question) never overtakes its DECISION, and an ack never
overtakes COMMITTED. The rule is deliberately node-wide rather than per transaction: whatever a
node reveals after a forced append may depend on it (a read of a just-committed version, say),
and the price is small, because a forced record is flushed within one group-commit interval.
Unforced records (presumed-abort ABORTs, END) hold nothing back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kvlab.messages import Message, mixed_hash


@dataclass(slots=True)
class Record:
    """A WAL record: a type and a JSON-able payload. The WAL adds the LSN and checksum.

    ``force``: what the node says after appending it must wait until it is durable."""

    type: str
    data: dict[str, Any]
    force: bool = False


@dataclass(slots=True)
class Reply:
    """The answer to a client call made earlier (``call`` is the driver's call id)."""

    call: int
    value: Any = None
    error: Exception | None = None


_FIELDS = ("messages", "records", "timers", "cancel", "replies", "notes", "watch", "outcomes")


def _lazy(name: str) -> property:
    """A list field made on first use: most outputs fill two or three of the eight, and a
    driver reads the slot (None: nothing) without making one."""
    slot = "_" + name

    def get(self: Outputs) -> list:
        v = getattr(self, slot)
        if v is None:
            v = []
            setattr(self, slot, v)
        return v

    def put(self: Outputs, value: list) -> None:
        setattr(self, slot, value)

    return property(get, put)


class Outputs:
    """What one input made a node do: messages to send, records to log, timers to set or
    cancel, replies to clients, notes for the trace, peers to watch and (Paxos Commit)
    outcomes. Each list exists only once something is put in it (the driver reads the
    ``_name`` slots, None meaning empty); ``out.messages`` and the rest make it on demand."""

    __slots__ = ("_messages", "_records", "_timers", "_cancel", "_replies", "_notes", "_watch",
                 "_outcomes", "fp")

    messages = _lazy("messages")
    records = _lazy("records")
    timers = _lazy("timers")  # (key, delay)
    cancel = _lazy("cancel")  # timer keys no longer needed
    replies = _lazy("replies")
    notes = _lazy("notes")  # state changes, for the trace
    watch = _lazy("watch")  # peers to hear about when reachable again
    # (tx, committed, commit_ts, reason) decided here by a Paxos Commit leader that may not be
    # the coordinator: the driver settles the client's commit handle with it
    outcomes = _lazy("outcomes")

    def __init__(self, messages: list | None = None, records: list | None = None,
                 timers: list | None = None, cancel: list | None = None,
                 replies: list | None = None, notes: list | None = None,
                 watch: list | None = None, outcomes: list | None = None,
                 fp: Any = None) -> None:
        self._messages = messages
        self._records = records
        self._timers = timers
        self._cancel = cancel
        self._replies = replies
        self._notes = notes
        self._watch = watch
        self._outcomes = outcomes
        self.fp = fp  # kvlab.explore's fingerprint of a held output, once computed

    def _fields(self) -> tuple:
        return tuple(getattr(self, "_" + f) or [] for f in _FIELDS) + (self.fp,)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outputs):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        parts = [f"{f}={v!r}" for f, v in zip((*_FIELDS, "fp"), self._fields(), strict=True)]
        return f"Outputs({', '.join(parts)})"

    @property
    def force(self) -> bool:
        """True if any record here is forced (everything else here waits for it)."""
        return any(r.force for r in self._records or ())

    def send(self, msg: Message) -> None:
        m = self._messages
        if m is None:
            self._messages = [msg]
        else:
            m.append(msg)

    def log(self, type_: str, data: dict[str, Any], force: bool = False) -> None:
        r = self._records
        if r is None:
            self._records = [Record(type_, data, force)]
        else:
            r.append(Record(type_, data, force))

    def timer(self, key: tuple, delay: int) -> None:
        t = self._timers
        if t is None:
            self._timers = [(key, delay)]
        else:
            t.append((key, delay))

    def reply(self, call: int, value: Any = None, error: Exception | None = None) -> None:
        r = self._replies
        if r is None:
            self._replies = [Reply(call, value, error)]
        else:
            r.append(Reply(call, value, error))

    def note(self, **detail: Any) -> None:
        n = self._notes
        if n is None:
            self._notes = [detail]
        else:
            n.append(detail)

    def merge(self, other: Outputs) -> Outputs:
        """Append ``other``'s outputs after these (``other`` is not used again).

        Spelled out slot by slot: a loop of getattr/setattr over the eight slots cost twice
        as much, and a batch (kvlab.batching) merges once per message inside it."""
        theirs = other._messages
        if theirs:
            mine = self._messages
            if mine is None:
                self._messages = list(theirs)
            else:
                mine += theirs
        theirs = other._records
        if theirs:
            mine = self._records
            if mine is None:
                self._records = list(theirs)
            else:
                mine += theirs
        theirs = other._timers
        if theirs:
            mine = self._timers
            if mine is None:
                self._timers = list(theirs)
            else:
                mine += theirs
        theirs = other._cancel
        if theirs:
            mine = self._cancel
            if mine is None:
                self._cancel = list(theirs)
            else:
                mine += theirs
        theirs = other._replies
        if theirs:
            mine = self._replies
            if mine is None:
                self._replies = list(theirs)
            else:
                mine += theirs
        theirs = other._notes
        if theirs:
            mine = self._notes
            if mine is None:
                self._notes = list(theirs)
            else:
                mine += theirs
        if other._watch or other._outcomes:  # rare: failure handling, Paxos Commit
            for slot in ("_watch", "_outcomes"):
                theirs = getattr(other, slot)
                if theirs:
                    mine = getattr(self, slot)
                    if mine is None:
                        setattr(self, slot, list(theirs))
                    else:
                        mine += theirs
        return self


class _Log(Protocol):
    forced_lsn: int  # LSN of the newest forced record appended
    flushed_lsn: int  # every record up to here is durable


class Outbox:
    """One node's held outputs: the "log before you speak" rule, for every driver.

    The driver appends an output's records to the log first, then offers the output here:
    :meth:`admit` says whether it may take effect now. Held outputs wait, in order, until the
    driver has flushed the log (:meth:`release` after every flush or checkpoint); a crash
    discards them (:meth:`clear`), which is exactly what losing the unflushed tail means.
    """

    def __init__(self, log: _Log) -> None:
        self.log = log
        self.held: list[Outputs] = []

    def admit(self, out: Outputs) -> bool:
        """True if ``out`` may take effect now; otherwise it is held."""
        if self.log.forced_lsn > self.log.flushed_lsn:
            self.held.append(out)
            return False
        return True

    def release(self) -> list[Outputs]:
        """After a flush: the held outputs whose forced records are now durable, in order."""
        if not self.held or self.log.forced_lsn > self.log.flushed_lsn:
            return []
        held, self.held = self.held, []
        return held

    def clear(self) -> None:
        self.held.clear()

    def fingerprint(self) -> int:
        """What the held outputs will do once released, in any order (for kvlab.explore):
        they are released together by one flush, and messages may arrive in any order.
        A sum of hashes: the same multiset of outputs, the same number."""
        total = 0
        for o in self.held:
            if o.fp is None:
                o.fp = mixed_hash((tuple(m.key() for m in o._messages or ()),
                                   tuple(k for k, _ in o._timers or ()),
                                   tuple((r.call, repr(r.value), repr(r.error))
                                         for r in o._replies or ()), tuple(o._watch or ()))
                                  + ((tuple(o._outcomes),) if o._outcomes else ()))
            total += o.fp
        return total & 0xFFFFFFFFFFFFFFFF

    @property
    def waiting(self) -> bool:
        return bool(self.held)
