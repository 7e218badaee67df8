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

from dataclasses import dataclass, field
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


@dataclass(slots=True)
class Outputs:
    messages: list[Message] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    timers: list[tuple[tuple, int]] = field(default_factory=list)  # (key, delay)
    cancel: list[tuple] = field(default_factory=list)  # timer keys no longer needed
    replies: list[Reply] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)  # state changes, for the trace
    watch: list[Any] = field(default_factory=list)  # peers to hear about when reachable again
    # (tx, committed, commit_ts, reason) decided here by a Paxos Commit leader that may not be
    # the coordinator: the driver settles the client's commit handle with it
    outcomes: list[tuple[str, bool, int | None, str]] = field(default_factory=list)
    fp: Any = None  # kvlab.explore's fingerprint of a held output, once computed

    @property
    def force(self) -> bool:
        """True if any record here is forced (everything else here waits for it)."""
        return any(r.force for r in self.records)

    def send(self, msg: Message) -> None:
        self.messages.append(msg)

    def log(self, type_: str, data: dict[str, Any], force: bool = False) -> None:
        self.records.append(Record(type_, data, force))

    def timer(self, key: tuple, delay: int) -> None:
        self.timers.append((key, delay))

    def reply(self, call: int, value: Any = None, error: Exception | None = None) -> None:
        self.replies.append(Reply(call, value, error))

    def note(self, **detail: Any) -> None:
        self.notes.append(detail)

    def merge(self, other: Outputs) -> Outputs:
        self.messages += other.messages
        self.records += other.records
        self.timers += other.timers
        self.cancel += other.cancel
        self.replies += other.replies
        self.notes += other.notes
        self.watch += other.watch
        if other.outcomes:
            self.outcomes += other.outcomes
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
                o.fp = mixed_hash((tuple(m.key() for m in o.messages),
                                   tuple(k for k, _ in o.timers),
                                   tuple((r.call, repr(r.value), repr(r.error))
                                         for r in o.replies), tuple(o.watch))
                                  + ((tuple(o.outcomes),) if o.outcomes else ()))
            total += o.fp
        return total & 0xFFFFFFFFFFFFFFFF

    @property
    def waiting(self) -> bool:
        return bool(self.held)
