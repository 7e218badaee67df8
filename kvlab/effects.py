"""What a node asks the outside world to do after handling one input (the sans-I/O boundary).

A node never sends, writes or sleeps itself: it returns an :class:`Outputs` and the driver
(:mod:`kvlab.cluster`) carries it out. The one ordering rule lives here: when ``force`` is set,
the records must be durable before any message, reply or timer of the same output takes effect
(a participant logs PREPARED before voting yes; a coordinator logs its decision before sending it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvlab.messages import Message


@dataclass(slots=True)
class Record:
    """A WAL record: a type and a JSON-able payload. The WAL adds the LSN and checksum."""

    type: str
    data: dict[str, Any]


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
    force: bool = False
    timers: list[tuple[tuple, int]] = field(default_factory=list)  # (key, delay)
    cancel: list[tuple] = field(default_factory=list)  # timer keys no longer needed
    replies: list[Reply] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)  # state changes, for the trace

    def send(self, msg: Message) -> None:
        self.messages.append(msg)

    def log(self, type_: str, data: dict[str, Any], force: bool = False) -> None:
        self.records.append(Record(type_, data))
        self.force = self.force or force

    def timer(self, key: tuple, delay: int) -> None:
        self.timers.append((key, delay))

    def reply(self, call: int, value: Any = None, error: Exception | None = None) -> None:
        self.replies.append(Reply(call, value, error))

    def note(self, **detail: Any) -> None:
        self.notes.append(detail)

    def merge(self, other: Outputs) -> Outputs:
        self.messages += other.messages
        self.records += other.records
        self.force = self.force or other.force
        self.timers += other.timers
        self.cancel += other.cancel
        self.replies += other.replies
        self.notes += other.notes
        return self
