"""Batching: a node's messages to one peer, held for a few ticks and sent as one BATCH.

With many transactions committing at once, a coordinator sends each participant one PREPARE per
transaction, and each participant answers with one vote per transaction. ``Cluster(batch_window=w)``
lets a node hold what it says to a peer for up to ``w`` ticks and send it all as **one** BATCH
message; the peer handles the messages inside in order, in one go, so the records they make
(say, eight PREPAREs) are appended together and made durable by **one** fsync, and the votes
they produce leave together, as one BATCH again. One message and one forced write for a batch
of transactions, which is what FoundationDB's commit proxies and every group-commit log do.

The bound: a message waits at most ``w`` ticks in the batch, counted from when its batch opened
(the first message to that peer since the last batch left). The batch's timer is armed when
that first message may be spoken, which is after the log flush it waits for ("log before you
speak", kvlab.effects.Outbox); a message that joins an open batch may therefore also wait for
that flush. ``w = 0`` only gathers what is said at the same tick: no delay at all.

The oracle is a peer like the others: a node's timestamp requests of one window travel as one
BATCH, and the oracle (kvlab.tso) answers it with one BATCH of replies carrying consecutive
timestamps, in the order of the requests, as TiDB's PD client batches its TSO requests. Every
timestamp still comes from the oracle and is issued when the batch arrives there, so after its
request was sent: a commit timestamp is still issued after every vote its request waited for.

Messages a node sends itself (its own participant's PREPARE, its vote, ...) wait in a batch too.
They cost no network, but a group-commit round needs them to: delivered at once, they would
make the node's own records a window before its peers' arrive, and one flush would become two
(a window of 1 tick raised figure 2's fsyncs per transaction from 0.56 to 0.94 that way).

The records the messages of one delivered BATCH make (the PREPAREs of eight transactions, say)
are logged as **one** record, a BATCH record listing them in order: one frame, one checksum, one
forced write for the batch, instead of one per transaction. It is forced if any record in it
is, which changes nothing: what the batch's messages make leaves as one output, held until
its forced records are durable anyway. Recovery reads a BATCH record as the records inside it,
in order (kvlab.node); a torn one is lost whole, and with it nothing anyone was told.

Nothing about safety changes: a batch is the same messages, later, and a delivery of a BATCH is
the delivery of each one in order, which the protocols already take in any order and after any
delay. A crash loses the open batches with the rest of the node's memory, as it loses messages
in its socket buffers.
"""

from __future__ import annotations

from typing import Any

from kvlab.effects import Outputs, Record
from kvlab.messages import BATCH, Message


class Batcher:
    """One node's open batches: peer -> the messages held for it, oldest first."""

    __slots__ = ("node_id", "window", "open")

    def __init__(self, node_id: Any, window: int) -> None:
        self.node_id = node_id
        self.window = window
        self.open: dict[Any, list[Message]] = {}

    def clone(self) -> Batcher:
        b = Batcher(self.node_id, self.window)
        b.open = {p: list(ms) for p, ms in self.open.items()}
        return b

    def fingerprint(self) -> tuple:
        return tuple(sorted((str(p), tuple(m.key() for m in ms)) for p, ms in self.open.items()))

    def hold(self, out: Outputs) -> None:
        """Move ``out``'s messages into their open batches, one per destination (opening a
        batch arms its timer, in the same Outputs, so it starts when they may be spoken)."""
        msgs = out._messages
        if not msgs:
            return
        for m in msgs:
            dst = m.dst
            batch = self.open.get(dst)
            if batch is None:
                self.open[dst] = [m]
                out.timer(("batch", dst), self.window)
            else:
                batch.append(m)
        out._messages = None

    def send(self, peer: Any) -> Outputs:
        """The batch timer fired: send what is held for ``peer`` (alone if it is one message)."""
        out = Outputs()
        held = self.open.pop(peer, None)
        if not held:
            return out
        out.send(held[0] if len(held) == 1 else pack(self.node_id, peer, held))
        return out


def pack(src: Any, dst: Any, msgs: list[Message]) -> Message:
    """One BATCH from ``src`` to ``dst`` carrying ``msgs`` (kind, tx and body each), in order."""
    return Message(src, dst, BATCH, None, {"messages": [[m.kind, m.tx, m.body] for m in msgs]})


def txs(msg: Message) -> tuple[str, ...] | None:
    """The transactions a BATCH message speaks for, in order (None for any other message,
    and for a BATCH of timestamp requests for begins, which belong to no transaction yet):
    the trace records them, so a view of one transaction keeps the batches it rode in."""
    if msg.kind != BATCH:
        return None
    return tuple(dict.fromkeys(tx for _k, tx, _b in msg.body["messages"] if tx)) or None


def record_txs(data: dict[str, Any]) -> tuple[str, ...] | None:
    """The transactions the records inside a BATCH record (its ``data``, as
    :func:`one_record` made it) belong to, in order."""
    return tuple(dict.fromkeys(d["tx"] for _t, d in data["records"] if d.get("tx"))) or None


def unpack(msg: Message) -> list[Message]:
    """The messages inside a BATCH, in the order they were said."""
    return [Message(msg.src, msg.dst, kind, tx, body) for kind, tx, body in msg.body["messages"]]


def one_record(records: list[Record]) -> Record:
    """The records one delivered batch made, as one BATCH record (forced if any of them is)."""
    return Record(BATCH, {"records": [[r.type, r.data] for r in records]},
                  any(r.force for r in records))


__all__ = ["Batcher", "pack", "unpack", "one_record", "txs", "record_txs"]
