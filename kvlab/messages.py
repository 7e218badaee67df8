"""What nodes say to each other (and to the timestamp oracle): small immutable messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Message kinds. Strings rather than an Enum so traces stay plain JSON.
TS_REQUEST = "TS_REQUEST"  # node -> tso: give me a timestamp
TS_REPLY = "TS_REPLY"  # tso -> node
READ = "READ"  # coordinator -> key owner (partitioned placement only)
READ_REPLY = "READ_REPLY"
PREPARE = "PREPARE"  # phase 1: coordinator -> participant, carries the write set
VOTE_YES = "VOTE_YES"  # participant -> coordinator, sent only after PREPARED is durable
VOTE_NO = "VOTE_NO"  # carries the reason (conflicting key and transaction)
COMMIT = "COMMIT"  # phase 2, sent only after the decision is durable
ABORT = "ABORT"
ACK = "ACK"  # participant -> coordinator after COMMIT is durable
STATUS = "STATUS"  # in-doubt participant -> coordinator: what did you decide?

KINDS = (TS_REQUEST, TS_REPLY, READ, READ_REPLY, PREPARE, VOTE_YES, VOTE_NO, COMMIT, ABORT, ACK,
         STATUS)

TSO = "tso"  # network address of the timestamp oracle


@dataclass(frozen=True, slots=True)
class Message:
    """A message between two addresses; ``body`` holds kind-specific fields (JSON-able)."""

    src: str
    dst: str
    kind: str
    tx: str | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Short text for diagrams: ``PREPARE T5``."""
        return f"{self.kind} {self.tx}" if self.tx else self.kind

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "kind": self.kind, "tx": self.tx,
                "body": self.body}
