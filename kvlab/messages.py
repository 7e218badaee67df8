"""What nodes say to each other (and to the timestamp oracle): small immutable messages."""

from __future__ import annotations

from typing import Any, NamedTuple

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
SCAN = "SCAN"  # a scan's node -> every owner (partitioned placement only): a key range at a ts
SCAN_REPLY = "SCAN_REPLY"  # owner -> scanning node: the rows it stores in that range
# cooperative termination: an in-doubt participant asks the other participants
DECISION_REQ = "DECISION_REQ"  # in-doubt participant -> another participant: what do you know?
DECISION_REPLY = "DECISION_REPLY"  # the outcome it knows (or that it aborted, never prepared)
# Paxos Commit: each participant's vote is decided by the acceptors
P1A = "P1A"  # a new leader -> acceptors: promise me ballot b, tell me what you accepted
P1B = "P1B"  # acceptor -> leader: promised, and the values it accepted so far
P2A = "P2A"  # a participant (ballot 0) or a leader -> acceptors: accept this value
P2B = "P2B"  # acceptor -> the ballot's leader: accepted
NACK = "NACK"  # acceptor -> a stale ballot's leader: refused, this higher ballot is promised
LEARNED = "LEARNED"  # coordinator -> acceptors: every participant has the outcome, forget it
MAY_FORGET = "MAY_FORGET"  # acceptor -> coordinator: my entry may have outlived LEARNED; may it go?
NOT_YET = "NOT_YET"  # coordinator -> that acceptor: still at work; LEARNED will come, stop asking

# one-phase commit (kvlab.onephase): the only participant decides
ONE_PHASE = "ONE_PHASE"  # coordinator -> its single participant: the writes; commit them
RESOLVE = "RESOLVE"  # a restarted coordinator -> that participant: how did it end?
BATCH = "BATCH"  # kvlab.batching: several messages to one peer, sent as one

KINDS = (TS_REQUEST, TS_REPLY, READ, READ_REPLY, PREPARE, VOTE_YES, VOTE_NO, COMMIT, ABORT, ACK,
         STATUS, SCAN, SCAN_REPLY, DECISION_REQ, DECISION_REPLY, P1A, P1B, P2A, P2B,
         NACK, LEARNED, MAY_FORGET, NOT_YET, ONE_PHASE, RESOLVE, BATCH)

TSO = "tso"  # network address of the timestamp oracle


def freeze(value: Any) -> Any:
    """A hashable, order-independent stand-in for a JSON-like value (for fingerprints)."""
    t = type(value)
    if t is dict:
        return ("{", tuple(sorted((k, freeze(v)) for k, v in value.items())))
    if t is list or t is tuple:
        return ("[", tuple(freeze(v) for v in value))
    return value


_MASK = (1 << 64) - 1


def mixed_hash(obj: Any) -> int:
    """``hash(obj)`` through the splitmix64 finaliser, for sums of hashes (multisets).

    Python's tuple hash is close to additive: ``hash((a, x, c)) + hash((a, y, d))`` can
    equal ``hash((a, x, d)) + hash((a, y, c))``, so a plain sum would make different sets of
    messages look alike. Mixed, the sum is a sound multiset hash (like AdHash)."""
    x = hash(obj) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Message(NamedTuple):
    """A message between two addresses; ``body`` holds kind-specific fields (JSON-able).

    Immutable (a named tuple: cheap to create, and the simulator creates a great many)."""

    src: str
    dst: str
    kind: str
    tx: str | None = None
    body: dict[str, Any] = {}  # never mutated: every sender builds a fresh dict

    @property
    def label(self) -> str:
        """Short text for diagrams: ``PREPARE T5``."""
        return f"{self.kind} {self.tx}" if self.tx else self.kind

    def key(self) -> tuple:
        """Everything that identifies this message's effect (for the explorer's fingerprints)."""
        return (self.src, self.dst, self.kind, self.tx, freeze(self.body))

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "kind": self.kind, "tx": self.tx,
                "body": self.body}
