"""One node as a pure state machine: ``handle(input) -> Outputs``.

A node plays three roles: it runs its clients' transactions (buffering their writes and serving
their reads), it coordinates their commits, and it participates in everyone's commits for the keys
it stores. It never touches the network, the disk or a clock: the same inputs give the same
outputs, which is what lets the cluster replay, step and explore it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kvlab.batching import Batcher, one_record, unpack
from kvlab.effects import Outputs
from kvlab.errors import (
    CorruptLog,
    InvalidKey,
    InvalidValue,
    ProtocolError,
    TransactionClosed,
    TransactionNotFound,
)
from kvlab.messages import (
    ABORT,
    ACK,
    BATCH,
    COMMIT,
    DECISION_REPLY,
    DECISION_REQ,
    LEARNED,
    MAY_FORGET,
    NACK,
    NOT_YET,
    ONE_PHASE,
    P1A,
    P1B,
    P2A,
    P2B,
    PREPARE,
    READ,
    READ_REPLY,
    RESOLVE,
    SCAN,
    SCAN_REPLY,
    STATUS,
    TS_REPLY,
    TS_REQUEST,
    TSO,
    VOTE_NO,
    VOTE_YES,
    Message,
    freeze,
)
from kvlab.mvcc import Span, Store, in_span, span_text
from kvlab.onephase import OnePhaseCoordinator, OnePhaseParticipant
from kvlab.paxos import PaxosCoordinator, PaxosParticipant
from kvlab.twopc import (
    ABORTED,
    ACTIVE,
    AWAIT_TS,
    COMMITTED,
    COMMITTING,
    DELEGATED,
    PREPARING,
    Coordinator,
    CoordTx,
    Participant,
    Rules,
    Timing,
)
from kvlab.wal import LogRecord, check_encodable

ISOLATION_LEVELS = ("read_committed", "snapshot", "serializable")
PLACEMENTS = ("all", "partitioned")
COMMIT_PROTOCOLS = ("2pc", "cooperative", "paxos")


# -- inputs -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Begin:
    call: int
    isolation: str = "snapshot"


@dataclass(frozen=True, slots=True)
class Get:
    call: int
    tx: str
    key: str


@dataclass(frozen=True, slots=True)
class Scan:
    """Read every key with ``start <= key < end`` (``end`` None: no upper bound; ``start`` ""
    from the first key), at the transaction's snapshot, like :class:`Get` does one key."""

    call: int
    tx: str
    start: str = ""
    end: str | None = None


@dataclass(frozen=True, slots=True)
class Write:
    tx: str
    key: str
    value: Any
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Commit:
    call: int
    tx: str


@dataclass(frozen=True, slots=True)
class Rollback:
    tx: str


@dataclass(frozen=True, slots=True)
class Deliver:
    msg: Message


@dataclass(frozen=True, slots=True)
class Fire:
    key: tuple


@dataclass(frozen=True, slots=True)
class PeerUp:
    """The answer to ``Outputs.watch``: ``peer`` is up and reachable, resume parked retries."""

    peer: Any


@dataclass(frozen=True, slots=True)
class Abandon:
    """The client gave up on ``call`` (it timed out): forget it, so a late answer creates
    nothing (a begin's late timestamp would otherwise start a transaction nobody holds).
    ``requester``: forget a remote READ that node ``requester`` parked here under that id."""

    call: int
    requester: Any = None


@dataclass(frozen=True, slots=True)
class Recover:
    checkpoint: dict[str, Any] | None
    records: list  # list[wal.LogRecord]
    horizon: int = 0  # the low watermark the driver knows now (see kvlab.twopc, forgetting)


@dataclass(frozen=True, slots=True)
class Gc:
    watermark: int


@dataclass(frozen=True, slots=True)
class Resolve:
    """The client asks a restarted coordinator how its one-phase commit ended (it knows the
    transaction and where its writes went; the node forgot both in the crash)."""

    call: int
    tx: str
    participant: Any
    start_ts: int


@dataclass(slots=True)
class ReadResult:
    """What a read returns to the client: the value and which version it came from."""

    value: Any
    writer: str | None
    version_ts: int | None
    deleted: bool = False


class ScanRow(NamedTuple):
    """One key a scan found: its value and which version it came from (as in ReadResult)."""

    key: str
    value: Any
    writer: str | None
    version_ts: int | None


@dataclass(slots=True)
class ScanResult:
    """What a scan returns to the client: the rows in key order and the snapshot it read."""

    rows: list[ScanRow]
    ts: int


@dataclass(slots=True)
class _Waiting:
    """A read (or a scan, or one owner's part of it) parked behind a prepared write lock."""

    key: str  # a scan's: the start of its range
    ts: int
    tx: str
    call: int | None = None  # local client call...
    requester: str | None = None  # ...or a remote READ or SCAN to answer
    req: int | None = None
    blocked_by: str = ""
    span: Span | None = None  # a scan's range (None: a read of ``key``)


@dataclass(slots=True)
class _PendingRead:
    tx: str
    key: str
    ts: int | None = None
    attempt: int = 0


@dataclass(slots=True)
class _PendingScan:
    """A scan being answered: the owners asked and the rows each one returned so far."""

    tx: str
    span: Span
    own: dict[str, tuple[Any, bool]]  # the transaction's own writes in the range, at the call
    owners: tuple[str, ...]
    ts: int | None = None
    parts: dict[str, list] = field(default_factory=dict)  # owner -> [[key, value, writer, ts]]
    attempt: int = 0

    def clone(self) -> _PendingScan:
        # own and every part's rows are never changed once made: share them
        return _PendingScan(self.tx, self.span, self.own, self.owners, self.ts,
                            dict(self.parts), self.attempt)

    def key(self) -> tuple:
        return (self.tx, self.span, freeze(self.own), self.owners, self.ts,
                tuple(sorted((o, freeze(rows)) for o, rows in self.parts.items())), self.attempt)


def owner_of(key: str, nodes: list[str]) -> str:
    """Partitioned placement: a stable hash (CRC32, not Python's salted hash) picks the owner."""
    return nodes[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(nodes)]


@dataclass
class NodeConfig:
    nodes: list[str]
    placement: str = "all"
    timing: Timing = field(default_factory=Timing)
    rules: Rules = field(default_factory=Rules)
    commit_protocol: str = "2pc"  # or "cooperative", "paxos" (see kvlab.twopc, kvlab.paxos)
    paxos_f: int = 1  # Paxos Commit: acceptor crashes tolerated (2F+1 acceptors per transaction)
    fast_reads: bool = False  # reads skip prepared locks that must commit above them (Store.seen)
    one_phase: bool = False  # a single participant commits without a PREPARE round (onephase)
    batch_window: int | None = None  # hold messages to a peer this long, send one BATCH


class NodeCore:
    """The sans-I/O node. Feed it inputs with :meth:`handle`; carry out the Outputs."""

    def __init__(self, node_id: str, config: NodeConfig) -> None:
        self.id = node_id
        self.config = config
        self.nodes = sorted(config.nodes)
        self.store = Store()
        if config.commit_protocol == "paxos":  # the roles of kvlab.paxos
            self.coordinator = PaxosCoordinator(node_id, config.timing, config.rules,
                                                self.nodes, config.paxos_f)
            self.participant = PaxosParticipant(node_id, self.store, config.timing,
                                                config.rules, self.nodes, config.paxos_f,
                                                self.coordinator)
        else:
            coord, part = (OnePhaseCoordinator, OnePhaseParticipant) if config.one_phase \
                else (Coordinator, Participant)
            self.coordinator = coord(node_id, config.timing, config.rules)
            self.participant = part(node_id, self.store, config.timing, config.rules,
                                    cooperative=config.commit_protocol == "cooperative")
        self.waiting: list[_Waiting] = []
        self._begins: dict[int, list] = {}  # call -> [isolation, attempt], awaiting a timestamp
        self._reads: dict[int, _PendingRead] = {}  # call -> read awaiting ts or a remote reply
        self._scans: dict[int, _PendingScan] = {}  # call -> scan awaiting ts or owners' rows
        self.max_ts = 0
        self.batcher = Batcher(node_id, config.batch_window) \
            if config.batch_window is not None else None

    # -- routing -------------------------------------------------------------------------
    def handle(self, inp: Any) -> Outputs:
        if self.batcher is None:
            return self._handle(inp)
        if isinstance(inp, Fire) and inp.key[0] == "batch":  # a batch is due: send it
            return self.batcher.send(inp.key[1])
        out = self._handle(inp)
        self.batcher.hold(out)
        return out

    def _handle(self, inp: Any) -> Outputs:
        if isinstance(inp, Deliver):
            return self._deliver(inp.msg)
        if isinstance(inp, Get):
            return self._get(inp)
        if isinstance(inp, Scan):
            return self._scan(inp)
        if isinstance(inp, Write):
            return self._write(inp)
        if isinstance(inp, Begin):
            return self._begin(inp)
        if isinstance(inp, Commit):
            return self._commit(inp)
        if isinstance(inp, Rollback):
            return self._rollback(inp)
        if isinstance(inp, Fire):
            return self._fire(inp.key)
        if isinstance(inp, PeerUp):
            return self._peer_up(inp.peer)
        if isinstance(inp, Abandon):
            return self._abandon(inp)
        if isinstance(inp, Recover):
            return self._recover(inp)
        if isinstance(inp, Resolve):  # one-phase commit: the client asks a restarted node
            return self.coordinator.resolve(inp.call, inp.tx, inp.participant, inp.start_ts)
        if isinstance(inp, Gc):
            self.gc(inp.watermark)
            return Outputs()
        raise ProtocolError(f"unknown input {inp!r}")

    def deliver(self, msg: Message) -> Outputs:
        """``handle(Deliver(msg))`` without making the input (a driver's hot path)."""
        out = self._deliver(msg)
        if self.batcher is not None:
            self.batcher.hold(out)
        return out

    def gc(self, watermark: int) -> int:
        """Below the cluster's low watermark: collect old versions and forget finished
        participant records (see kvlab.twopc); return how many versions went."""
        self.participant.forget(watermark)
        return self.store.gc(watermark)

    def _peer_up(self, peer: Any) -> Outputs:
        return self.coordinator.on_peer_up(peer).merge(self.participant.on_peer_up(peer))

    def _abandon(self, inp: Abandon) -> Outputs:
        out = Outputs()
        call = inp.call
        if inp.requester is None:
            self._begins.pop(call, None)
            self._reads.pop(call, None)
            self._scans.pop(call, None)
            out.cancel += [("ts-retry", call), ("read-retry", call), ("scan-retry", call)]
            self.waiting = [w for w in self.waiting if not (w.call == call
                                                            and w.requester is None)]
        else:
            self.waiting = [w for w in self.waiting if not (w.requester == inp.requester
                                                            and w.req == call)]
        return out

    def _deliver(self, msg: Message) -> Outputs:
        k = msg.kind
        if k == BATCH:  # kvlab.batching: each message inside, in order, in one go
            out = None
            for inner in unpack(msg):
                got = self._deliver(inner)
                out = got if out is None else out.merge(got)
            if out is None:
                return Outputs()
            if out._records and len(out._records) > 1:  # one record for the batch
                out._records = [one_record(out._records)]
            return out
        if k == PREPARE:
            if self.config.fast_reads and self.store.seen != self.max_ts:
                self.store.seen, self.store._fp = self.max_ts, None  # see Store.seen
            return self._after_locks_change(self.participant.on_prepare(msg))
        if k == COMMIT:
            return self._after_locks_change(self.participant.on_commit(msg))
        if k == ONE_PHASE:  # kvlab.onephase: this node is the only participant, and decides
            if self.config.fast_reads and self.store.seen != self.max_ts:
                self.store.seen, self.store._fp = self.max_ts, None  # see Store.seen
            return self._after_locks_change(self.participant.on_one_phase(msg))
        if k == RESOLVE:
            return self.participant.on_resolve(msg)
        if k == ABORT:
            return self._after_locks_change(self.participant.on_abort(msg))
        if k in (VOTE_YES, VOTE_NO):
            return self.coordinator.on_vote(msg)
        if k == ACK:
            return self.coordinator.on_ack(msg)
        if k == STATUS:
            return self.coordinator.on_status(msg)
        if k == DECISION_REQ:  # cooperative termination (kvlab.twopc)
            return self._after_locks_change(self.participant.on_decision_req(msg))
        if k == DECISION_REPLY:
            return self._after_locks_change(self.participant.on_decision_reply(msg))
        if k == TS_REPLY:
            return self._ts_reply(msg)
        if k in (P1A, P2A):  # Paxos Commit (kvlab.paxos): this node's acceptor
            acc = self.coordinator.acceptor
            return acc.on_p1a(msg) if k == P1A else acc.on_p2a(msg)
        if k == P1B:
            return self.coordinator.on_p1b(msg)
        if k == P2B:
            return self.coordinator.on_p2b(msg)
        if k == NACK:
            return self.coordinator.on_nack(msg)
        if k == LEARNED:
            return self.coordinator.acceptor.on_learned(msg)
        if k == MAY_FORGET:
            return self.coordinator.on_may_forget(msg)
        if k == NOT_YET:
            return self.coordinator.acceptor.on_not_yet(msg)
        if k == READ:
            return self._serve_read(msg.body["key"], msg.body["ts"], msg.tx, requester=msg.src,
                                    req=msg.body["req"])
        if k == READ_REPLY:
            return self._read_reply(msg)
        if k == SCAN:
            b = msg.body
            return self._serve_scan((b["start"], b["end"]), b["ts"], msg.tx, requester=msg.src,
                                    req=b["req"])
        if k == SCAN_REPLY:
            return self._scan_part(msg.body["req"], msg.src, msg.body["rows"])
        raise ProtocolError(f"{self.id} cannot handle message kind {k}")

    # -- client calls ----------------------------------------------------------------------
    def tx(self, tx_id: str) -> CoordTx:
        try:
            return self.coordinator.txs[tx_id]
        except KeyError:
            raise TransactionNotFound(
                f"no transaction {tx_id!r} on node {self.id}: use the id returned by begin() on "
                f"this node (a transaction lives on the node that began it, and is lost if that "
                f"node crashed before committing)") from None

    def active(self, tx_id: str) -> CoordTx:
        tx = self.tx(tx_id)
        if tx.state != ACTIVE:
            if tx.state in (PREPARING, AWAIT_TS, DELEGATED):
                raise TransactionClosed(
                    f"transaction {tx_id} is committing (two-phase commit is running): wait "
                    f"for it with handle.wait() on the handle commit_async() returned, or "
                    f"cluster.run(); then node.outcome({tx_id!r}) says how it ended")
            what = {COMMITTED: "already committed", COMMITTING: "already committed",
                    ABORTED: "already aborted"}[tx.state]
            raise TransactionClosed(
                f"transaction {tx_id} is {what} ({tx.reason or tx.state}); begin a new "
                f"transaction")
        return tx

    def _begin(self, inp: Begin) -> Outputs:
        out = Outputs()
        self._begins[inp.call] = [inp.isolation, 0]
        out.send(Message(self.id, TSO, TS_REQUEST, None, {"purpose": "begin", "call": inp.call}))
        out.timer(("ts-retry", inp.call), self.config.timing.retry_interval)
        return out

    def _ts_reply(self, msg: Message) -> Outputs:
        out = Outputs()
        ts = msg.body["ts"]
        self.max_ts = max(self.max_ts, ts)
        purpose, call = msg.body["purpose"], msg.body.get("call")
        if purpose == "commit":
            return self._after_locks_change(self.coordinator.on_commit_ts(msg.tx, ts))
        if purpose == "one-phase":  # kvlab.onephase: the participant's commit timestamp
            return self._after_locks_change(self.participant.on_commit_ts(msg.tx, ts))
        if purpose == "prepare":  # Paxos Commit: a participant's prepare timestamp
            return self.participant.on_prepare_ts(msg.tx, ts)
        if purpose == "begin" and call in self._begins:
            isolation = self._begins.pop(call)[0]
            out.cancel.append(("ts-retry", call))
            tx_id = f"T{ts}"
            out.merge(self.coordinator.begin(tx_id, ts, isolation))
            out.reply(call, (tx_id, ts))
        elif purpose == "read" and call in self._reads and self._reads[call].ts is None:
            self._reads[call].ts = ts
            out.merge(self._start_read(call))
        elif purpose == "scan" and call in self._scans and self._scans[call].ts is None:
            self._scans[call].ts = ts
            out.merge(self._start_scan(call))
        return out

    def _get(self, inp: Get) -> Outputs:
        tx = self.active(inp.tx)
        out = Outputs()
        if inp.key in tx.writes:  # read your own writes
            value, deleted = tx.writes[inp.key]
            out.reply(inp.call, ReadResult(None if deleted else value, tx.id, None, deleted))
            return out
        if tx.isolation == "serializable":
            tx.reads[inp.key] = None
        self._reads[inp.call] = _PendingRead(tx.id, inp.key)
        if tx.isolation == "read_committed":  # a fresh snapshot for every statement
            out.send(Message(self.id, TSO, TS_REQUEST, tx.id,
                             {"purpose": "read", "call": inp.call}))
            out.timer(("read-retry", inp.call), self.config.timing.retry_interval)
            return out
        self._reads[inp.call].ts = tx.start_ts
        return self._start_read(inp.call)

    def _start_read(self, call: int) -> Outputs:
        r = self._reads[call]
        owner = self.owner(r.key)
        if owner == self.id:
            del self._reads[call]
            out = self._serve_read(r.key, r.ts, r.tx, call=call)
            out.cancel.append(("read-retry", call))  # set while a read-committed ts was due
            return out
        out = Outputs()
        out.send(Message(self.id, owner, READ, r.tx, {"key": r.key, "ts": r.ts, "req": call}))
        out.timer(("read-retry", call), self.config.timing.retry_interval)
        return out


    def _serve_read(self, key: str, ts: int, tx: str, call: int | None = None,
                    requester: str | None = None, req: int | None = None) -> Outputs:
        out = Outputs()
        lock = self.store.blocker(key, ts, tx)
        if lock is not None:
            if requester is not None and any(w.requester == requester and w.req == req
                                             for w in self.waiting):
                return out  # a retried READ that is already parked here
            self.waiting.append(_Waiting(key, ts, tx, call, requester, req, lock.tx))
            out.note(role="store", event="read waits", tx=tx, key=key, blocked_by=lock.tx)
            return out
        v = self.store.visible(key, ts)
        res = ReadResult(None, None, None) if v is None else \
            ReadResult(None if v.deleted else v.value, v.writer, v.commit_ts, v.deleted)
        if call is not None:
            out.reply(call, res)
        else:
            out.send(Message(self.id, requester, READ_REPLY, tx,
                             {"req": req, "value": res.value, "writer": res.writer,
                              "version_ts": res.version_ts, "deleted": res.deleted}))
        return out

    def _read_reply(self, msg: Message) -> Outputs:
        out = Outputs()
        call = msg.body["req"]
        if self._reads.pop(call, None) is not None:
            out.cancel.append(("read-retry", call))
            b = msg.body
            out.reply(call, ReadResult(b["value"], b["writer"], b["version_ts"], b["deleted"]))
        return out

    # -- range reads ----------------------------------------------------------------------
    def _scan(self, inp: Scan) -> Outputs:
        """A scan reads like a get, over a range: the snapshot (read committed: a fresh one),
        the transaction's own writes merged in. Serializable: the range joins the read set."""
        tx = self.active(inp.tx)
        span = check_span(inp.start, inp.end)
        own = {k: w for k, w in tx.writes.items() if in_span(k, span)}
        if tx.isolation == "serializable":
            tx.scans[span] = None
        owners = tuple(self.nodes) if self.config.placement == "partitioned" else (self.id,)
        self._scans[inp.call] = _PendingScan(tx.id, span, own, owners)
        if tx.isolation == "read_committed":  # a fresh snapshot for every statement
            out = Outputs()
            out.send(Message(self.id, TSO, TS_REQUEST, tx.id,
                             {"purpose": "scan", "call": inp.call}))
            out.timer(("scan-retry", inp.call), self.config.timing.retry_interval)
            return out
        self._scans[inp.call].ts = tx.start_ts
        return self._start_scan(inp.call)

    def _start_scan(self, call: int) -> Outputs:
        """Ask every owner (partitioned placement: every node may own keys in the range)."""
        s = self._scans[call]
        out = Outputs()
        remote = [p for p in s.owners if p != self.id]
        if remote:
            out.note(role="node", event="scan fan-out", tx=s.tx, range=span_text(s.span),
                     owners=list(s.owners))
            for p in remote:
                out.send(self._scan_msg(p, s, call))
            out.timer(("scan-retry", call), self.config.timing.retry_interval)
        else:
            out.cancel.append(("scan-retry", call))  # set while a read-committed ts was due
        if self.id in s.owners:
            out.merge(self._serve_scan(s.span, s.ts, s.tx, call=call))
        return out

    def _scan_msg(self, owner: str, s: _PendingScan, call: int) -> Message:
        return Message(self.id, owner, SCAN, s.tx,
                       {"start": s.span[0], "end": s.span[1], "ts": s.ts, "req": call})

    def _serve_scan(self, span: Span, ts: int, tx: str, call: int | None = None,
                    requester: str | None = None, req: int | None = None) -> Outputs:
        """This node's part of a scan: its rows, or a wait behind a prepared write in range."""
        out = Outputs()
        blocked = self.store.scan_blocker(span, ts, tx)
        if blocked is not None:
            if requester is not None and any(w.requester == requester and w.req == req
                                             for w in self.waiting):
                return out  # a retried SCAN that is already parked here
            key, lock = blocked
            self.waiting.append(_Waiting(span[0], ts, tx, call, requester, req, lock.tx, span))
            out.note(role="store", event="scan waits", tx=tx, range=span_text(span), key=key,
                     blocked_by=lock.tx)
            return out
        rows = [[k, v.value, v.writer, v.commit_ts] for k, v in self.store.scan(span, ts)]
        if call is not None:
            return out.merge(self._scan_part(call, self.id, rows))
        out.send(Message(self.id, requester, SCAN_REPLY, tx, {"req": req, "rows": rows}))
        return out

    def _scan_part(self, call: int, owner: str, rows: list) -> Outputs:
        """One owner's rows arrived; once all did, merge them with the own writes and reply."""
        out = Outputs()
        s = self._scans.get(call)
        if s is None or owner not in s.owners or owner in s.parts:
            return out  # abandoned, or a duplicate reply
        s.parts[owner] = rows
        if len(s.parts) < len(s.owners):
            if all(p in s.parts for p in s.owners if p != self.id):
                out.cancel.append(("scan-retry", call))  # only our own part is left
            return out
        del self._scans[call]
        out.cancel.append(("scan-retry", call))
        make = ScanRow._make
        if len(s.parts) == 1 and not s.own:  # one owner, nothing of our own: sorted already
            rows = [make(r) for r in rows]
        else:  # owners hold disjoint keys; our own writes and deletes win
            found = {r[0]: make(r) for part in s.parts.values() for r in part}
            for k, (value, deleted) in s.own.items():
                if deleted:
                    found.pop(k, None)
                else:
                    found[k] = ScanRow(k, value, s.tx, None)
            rows = [found[k] for k in sorted(found)]
        out.reply(call, ScanResult(rows, s.ts))
        return out

    def _after_locks_change(self, out: Outputs) -> Outputs:
        """Locks may have been released: retry every parked read and scan (in arrival order)."""
        if self.waiting:
            parked, self.waiting = self.waiting, []
            for w in parked:
                if w.span is None:
                    out.merge(self._serve_read(w.key, w.ts, w.tx, w.call, w.requester, w.req))
                else:
                    out.merge(self._serve_scan(w.span, w.ts, w.tx, w.call, w.requester, w.req))
        return out

    def _write(self, inp: Write) -> Outputs:
        tx = self.active(inp.tx)
        check_loggable(inp.key, inp.value)  # before anything changes, on every driver
        tx.writes[inp.key] = (inp.value, inp.deleted)
        return Outputs()

    def _commit(self, inp: Commit) -> Outputs:
        tx = self.active(inp.tx)
        plan: dict[str, dict[str, Any]] = {}
        if tx.writes:
            targets = self.nodes if self.config.placement == "all" else \
                sorted({self.owner(k) for k in tx.writes})
            for p in targets:
                plan[p] = {"writes": {k: [v, d] for k, (v, d) in tx.writes.items()
                                      if self.stores(p, k)},
                           "reads": []}
            if tx.isolation == "serializable":  # validate reads where they are stored
                for k in tx.reads:
                    if k in tx.writes:
                        continue
                    for p in (self.nodes if self.config.placement == "all" else [self.owner(k)]):
                        plan.setdefault(p, {"writes": {}, "reads": []})["reads"].append(k)
                if tx.scans:  # any node may store keys in a range: every node validates it
                    ranges = [list(span) for span in tx.scans]
                    for p in self.nodes:
                        plan.setdefault(p, {"writes": {}, "reads": []})["ranges"] = ranges
        return self.coordinator.start(tx, inp.call, plan)

    def _rollback(self, inp: Rollback) -> Outputs:
        tx = self.active(inp.tx)
        out = Outputs()
        tx.reason = "aborted: rolled back by the client"
        self.coordinator._move(out, tx, "rollback")
        return out

    # -- timers ---------------------------------------------------------------------------
    def _fire(self, key: tuple) -> Outputs:
        kind = key[0]
        if kind == "peer-up":  # the driver armed our watch: the peer is reachable
            return self._peer_up(key[1])
        if kind in ("vote", "ts", "resend", "lead"):
            return self.coordinator.on_timer(key)
        if kind in ("decision", "status"):
            return self.participant.on_timer(key)
        if kind == "commit-ts":  # kvlab.onephase: the oracle is late; the participant aborts
            return self._after_locks_change(self.participant.on_timer(key))
        out = Outputs()
        call = key[1]
        if kind == "ts-retry" and call in self._begins:
            self._begins[call][1] += 1
            attempt = self._begins[call][1]
            out.send(Message(self.id, TSO, TS_REQUEST, None, {"purpose": "begin", "call": call}))
        elif kind == "read-retry" and call in self._reads:
            r = self._reads[call]
            r.attempt += 1
            attempt = r.attempt
            if r.ts is None:
                out.send(Message(self.id, TSO, TS_REQUEST, r.tx,
                                 {"purpose": "read", "call": call}))
            else:
                out.send(Message(self.id, self.owner(r.key), READ, r.tx,
                                 {"key": r.key, "ts": r.ts, "req": call}))
        elif kind == "scan-retry" and call in self._scans:
            s = self._scans[call]
            s.attempt += 1
            attempt = s.attempt
            if s.ts is None:
                out.send(Message(self.id, TSO, TS_REQUEST, s.tx,
                                 {"purpose": "scan", "call": call}))
            else:
                for p in s.owners:
                    if p != self.id and p not in s.parts:
                        out.send(self._scan_msg(p, s, call))
        else:
            return out
        if attempt < self.config.timing.max_retries:
            out.timer((kind, call), self.config.timing.retry_interval << attempt)
        return out

    # -- placement --------------------------------------------------------------------------
    def owner(self, key: str) -> str:
        return self.id if self.config.placement == "all" else owner_of(key, self.nodes)

    def stores(self, node: str, key: str) -> bool:
        return self.config.placement == "all" or owner_of(key, self.nodes) == node

    # -- inspection -----------------------------------------------------------------------
    def min_active_ts(self) -> int | None:
        """Oldest start timestamp still in use here: its snapshot must stay readable, and
        until it is decided its PREPAREs must still find every newer version (tombstones too)
        to detect write-write conflicts."""
        stamps = [t.start_ts for t in self.coordinator.undecided.values()]
        stamps += [w.ts for w in self.waiting]
        if self.config.commit_protocol == "paxos":  # any leader may still decide these, at a
            stamps += [t.start_ts for t in self.participant.holding.values()]  # prepare ts
        return min(stamps) if stamps else None

    def why_waiting(self, call: int, requester: str | None = None) -> str:
        """Why a client call (or, with ``requester``, a remote READ) has no answer yet."""
        for w in self.waiting:
            if (requester is None and w.call == call) or \
                    (requester is not None and w.requester == requester and w.req == call):
                lock = self.store.write_locks.get(w.key) if w.span is None else None
                coord = ""
                ptx = self.participant.txs.get(w.blocked_by)
                if ptx is not None:
                    coord = f" (its coordinator is {ptx.coordinator})"
                what = f"read of {w.key!r}" if w.span is None else \
                    f"scan of {span_text(w.span)} (on {self.id})"
                return (f"the {what} by {w.tx} is waiting for prepared transaction "
                        f"{lock.tx if lock else w.blocked_by}{coord} to commit or abort")
        if call in self._scans and requester is None:
            s = self._scans[call]
            if s.ts is None:
                return (f"the scan of {span_text(s.span)} by {s.tx} is waiting for a "
                        f"timestamp from the oracle")
            missing = [p for p in s.owners if p not in s.parts]
            return (f"the scan of {span_text(s.span)} by {s.tx} is waiting for rows from "
                    f"{', '.join(map(str, missing))}")
        if call in self._reads:
            r = self._reads[call]
            return f"the read of {r.key!r} by {r.tx} is waiting for a reply from its owner"
        if call in self._begins:
            return "begin is waiting for a start timestamp from the oracle"
        for tx in self.coordinator.txs.values():
            if tx.call == call and tx.state in (PREPARING, AWAIT_TS):
                missing = [p for p in tx.participants if p not in tx.votes]
                return f"{tx.id} is in {tx.state}, waiting for votes from {missing}"
        return "the call is waiting for messages that cannot be delivered"

    # -- snapshots for kvlab.explore ------------------------------------------------------
    def clone(self) -> NodeCore:
        """An independent copy of this node's volatile state (far cheaper than deepcopy)."""
        n = NodeCore.__new__(NodeCore)
        n.id, n.config, n.nodes = self.id, self.config, self.nodes
        n.store = self.store.clone()
        n.coordinator = self.coordinator.clone()
        n.participant = self.participant.clone(n.store)
        if isinstance(n.participant, PaxosParticipant):
            n.participant.leader = n.coordinator
        n.waiting = list(self.waiting)  # _Waiting entries are never changed once made
        n._begins = {c: list(v) for c, v in self._begins.items()}
        n._reads = {c: _PendingRead(r.tx, r.key, r.ts, r.attempt) for c, r in self._reads.items()}
        n._scans = {c: s.clone() for c, s in self._scans.items()}
        n.max_ts = self.max_ts
        n.batcher = self.batcher.clone() if self.batcher is not None else None
        return n

    def fingerprint(self) -> tuple:
        """Everything of this node's volatile state that can influence its future."""
        return (self.store.fingerprint(), self.coordinator.fingerprint(),
                self.participant.fingerprint(),
                tuple([(w.key, w.ts, w.tx, w.call, w.requester, w.req, w.span)
                       for w in self.waiting]),
                tuple(sorted((c, v[0], v[1]) for c, v in self._begins.items()))
                if self._begins else (),
                tuple(sorted((c, r.tx, r.key, r.ts, r.attempt) for c, r in self._reads.items()))
                if self._reads else (),
                tuple(sorted((c, s.key()) for c, s in self._scans.items())) if self._scans else (),
                self.max_ts) + ((self.batcher.fingerprint(),) if self.batcher else ())

    # -- checkpoints and recovery ---------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Durable state only: versions, prepared transactions, undecided commits, outcomes."""
        p = self.participant
        ck = {
            "store": self.store.dump(),
            "watermark": self.store.watermark,
            "prepared": {t.id: {"coordinator": t.coordinator, "start_ts": t.start_ts,
                                "writes": {k: [v, d] for k, (v, d) in t.writes.items()},
                                "reads": list(t.reads),
                                **({"ranges": [list(r) for r in t.ranges]} if t.ranges else {}),
                                **({"participants": list(t.participants)}
                                   if p.cooperative else {})}
                         for t in p.in_doubt()},
            "decided": {t.id: {"commit_ts": t.commit_ts, "participants": t.participants}
                        for t in self.coordinator.txs.values() if t.state == COMMITTING},
            "finished": {tx: [state, ts] for tx, (state, ts) in p.remembered().items()},
            "horizon": p.horizon,
            "max_ts": self.max_ts,
        }
        if isinstance(p, PaxosParticipant):  # prepare timestamps, and the acceptor's state
            p.checkpoint(ck)
            ck["acceptor"] = self.coordinator.acceptor.dump()
            ck["begun"] = self.coordinator.begun()
        return ck

    def _check_members(self, live: list[tuple[str, str, dict[str, Any]]]) -> None:
        """CorruptLog if what recovery goes on to act on (``live``: (tx, record type, data)
        of the in-doubt, undecided and acceptor entries) names a node this cluster does not
        have: it would send to it, or rank its ballots, and fail half-way. The finished
        transactions a log names do not matter."""
        known = set(self.nodes)
        for tx, t, data in live:  # (only the fields each type declares: others are ignored)
            declared = _DECLARED[t]
            named = set(data.get("participants") or ()) if "participants" in declared else set()
            if "coordinator" in declared and "coordinator" in data:
                named.add(data["coordinator"])
            if "ballot" in declared:
                named.add(data["ballot"][1])
                named.update(pair[0] for pair in data.get("values", ()))
            if not named <= known:
                strangers = sorted(map(str, named - known))
                raise CorruptLog(f"the log's {t} record of {tx}, which recovery acts on, names "
                                 f"{', '.join(strangers)}, not a node of this cluster "
                                 f"({', '.join(map(str, self.nodes))}): it was written by a "
                                 f"cluster with other nodes. Open the data directory with the "
                                 f"node ids that wrote it, or delete the node's data directory "
                                 f"to start it empty.")

    def _recover(self, inp: Recover) -> Outputs:
        """Rebuild from a checkpoint and the log after it. Every record is checked first, so a
        record kvlab could not have written raises CorruptLog before anything changes."""
        ck = inp.checkpoint
        if ck is not None:
            check_checkpoint(ck)
        records = unbatched(inp.records)
        for r in records:
            check_record(r)
        prepared: dict[str, dict[str, Any]] = {}
        decided: dict[str, dict[str, Any]] = {}
        finished: dict[str, tuple[str, int]] = {}
        horizon = inp.horizon
        accepted: list[dict[str, Any]] = []
        begun: dict[str, dict[str, Any]] = {}  # Paxos Commit: commits this node started
        if ck is not None:
            begun.update(ck.get("begun", {}))
            self.store.load(ck["store"])
            self.store.watermark = ck["watermark"]
            prepared.update(ck["prepared"])
            decided.update(ck["decided"])
            finished.update((tx, (st, ts)) for tx, (st, ts) in ck.get("finished", {}).items())
            horizon = max(horizon, ck.get("horizon", 0))
            self.max_ts = ck["max_ts"]
        apply = self.store.apply
        for r in records:
            d = r.data
            t = r.type
            if t == "PREPARE":
                prepared[d["tx"]] = d
            elif t == "COMMIT":
                rec = prepared.pop(d["tx"], None)
                if rec is None and "writes" in d:  # one-phase: the record is the whole commit
                    rec = d
                if rec is not None:
                    apply(d["tx"], d["commit_ts"],
                          {k: (v[0], bool(v[1])) for k, v in rec["writes"].items()})
                    finished[d["tx"]] = (COMMITTED, rec["start_ts"])
                if d["commit_ts"] > self.max_ts:
                    self.max_ts = d["commit_ts"]
            elif t == "ABORT":
                rec = prepared.pop(d["tx"], None)
                if rec is not None:
                    finished[d["tx"]] = (ABORTED, rec["start_ts"])
                elif "start_ts" in d:  # aborted before any PREPARE was logged: unilaterally
                    # (cooperative termination), or a Paxos participant's forced no vote
                    finished[d["tx"]] = (ABORTED, d["start_ts"])
            elif t == "DECISION":
                decided[d["tx"]] = d
                if d["commit_ts"] > self.max_ts:
                    self.max_ts = d["commit_ts"]
            elif t == "END":
                decided.pop(d["tx"], None)
                begun.pop(d["tx"], None)
            elif t == "BEGIN":
                begun[d["tx"]] = d
            elif t in ("ACCEPT", "PROMISE", "LEARNED"):  # Paxos Commit's acceptor (kvlab.paxos)
                accepted.append(d)
        self._check_members([(tx, "PREPARE", d) for tx, d in prepared.items()]
                            + [(tx, "DECISION", d) for tx, d in decided.items()]
                            + [(tx, "BEGIN", d) for tx, d in begun.items()]
                            + [(r.data["tx"], r.type, r.data) for r in records
                               if "ballot" in _DECLARED[r.type]])
        for rec in prepared.values():
            self.max_ts = max(self.max_ts, rec["start_ts"])
        out = Outputs()
        out.note(role="node", event="recovered", versions=self.store.version_count(),
                 in_doubt=sorted(prepared), decided=sorted(decided))
        if isinstance(self.coordinator, PaxosCoordinator):  # before any takeover starts
            self.coordinator.recover_acceptor(ck, accepted)
        out.merge(self.participant.recover(prepared, finished, horizon))
        out.merge(self.coordinator.recover(decided))
        if begun and isinstance(self.coordinator, PaxosCoordinator):
            out.merge(self.coordinator.recover_begun(begun))
        return out


def check_loggable(key: Any, value: Any) -> None:
    """InvalidKey/InvalidValue unless the WAL can encode this write in a PREPARE record.

    Checked when the write is buffered, so nothing that ``put()`` accepted can fail half-way
    through two-phase commit (an int longer than Python's str() limit, say)."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"keys are non-empty strings, got {key!r}; e.g. put(tx, 'x', 1)")
    try:
        check_encodable({key: value})  # what encode() of a PREPARE with it would raise
    except (ValueError, TypeError, RecursionError) as e:
        raise InvalidValue(f"the write-ahead log cannot encode this value ({e}); store it in "
                           f"another form, e.g. a big int as a string") from None


def check_span(start: Any, end: Any) -> Span:
    """The range ``start <= key < end`` as a span, or InvalidKey saying how to write one.

    ``start`` None or "" is the first key, ``end`` None no upper bound; both are strings."""
    if start is None:
        start = ""
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not isinstance(bound, str):
            raise InvalidKey(f"scan bounds are key strings (or None for no bound), got {name}="
                             f"{bound!r}; e.g. scan(tx, 'a', 'n') for every key from 'a' up to "
                             f"but not including 'n'")
    if end is not None and start > end:
        raise InvalidKey(f"scan start {start!r} is after its end {end!r}: a range is "
                         f"start <= key < end, so swap them (scan(tx, {end!r}, {start!r}))")
    return (start, end)


# -- what kvlab writes to its log, checked before replay --------------------------------------
_ID = (str, int)
_KIND_NAMES = {_ID: "node ids", str: "keys"}
RECORD_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "PREPARE": {"tx": str, "coordinator": _ID, "start_ts": int, "writes": dict, "reads": list},
    "COMMIT": {"tx": str, "commit_ts": int},
    "ABORT": {"tx": str},
    "DECISION": {"tx": str, "commit_ts": int, "participants": list},
    "END": {"tx": str},
    # Paxos Commit's acceptor (kvlab.paxos): values accepted in a ballot, a promise made
    "ACCEPT": {"tx": str, "start_ts": int, "ballot": list, "values": list},
    "PROMISE": {"tx": str, "start_ts": int, "ballot": list},
    "LEARNED": {"tx": str},  # Paxos: every participant has the outcome, the instances go
    "BEGIN": {"tx": str, "start_ts": int, "participants": list},  # Paxos: who takes part
}
OPTIONAL_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "PREPARE": {"ranges": list,  # serializable scans; logs from before range reads lack it
                "participants": list,  # cooperative termination: whom to ask
                "prepare_ts": int},  # Paxos Commit: the vote's timestamp (kvlab.paxos)
    "ABORT": {"start_ts": int, "coordinator": _ID},  # cooperative: a unilateral abort
    # one-phase commit (kvlab.onephase): the participant's only record carries the writes
    "COMMIT": {"writes": dict, "start_ts": int, "coordinator": _ID},
    # Paxos Commit: whom the acceptor asks whether an entry may go (kvlab.paxos, Forgetting)
    "ACCEPT": {"coordinator": _ID},
    "PROMISE": {"coordinator": _ID},
}
# every field a record type may have (required or optional), by type
_DECLARED = {t: {**spec, **OPTIONAL_FIELDS.get(t, {})} for t, spec in RECORD_FIELDS.items()}
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "store": dict, "watermark": int, "prepared": dict, "decided": dict, "max_ts": int}
# what recovery reads from a checkpoint with a default (begun: Paxos Commit only): checked when
# present, as OPTIONAL_FIELDS are for a record
CHECKPOINT_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "finished": dict, "horizon": int, "begun": dict}


def _fields(data: Any, spec: dict[str, Any], what: str) -> None:
    problem = _field_problem(data, spec)
    if problem:
        raise CorruptLog(what + problem)


# Each check below returns what is wrong (the end of a CorruptLog message, after the record's
# name) or None: recovery checks every record, so the sound case builds no message.
def _field_problem(data: Any, spec: dict[str, Any], present: bool = False) -> str | None:
    """``data``'s fields of ``spec`` (only those it has, if ``present``)."""
    if not isinstance(data, dict):
        return " is not a JSON object"
    get = data.get
    for name, kind in spec.items():
        v = get(name)
        if v.__class__ is bool or not isinstance(v, kind):
            if present and name not in data:
                continue
            return f" has no valid {name!r} field (got {v!r})"
    return None


def _items(data: dict[str, Any], name: str, kind: Any) -> str | None:
    """The elements of ``data``'s list ``name`` (if it has one) are all ``kind``."""
    items = data.get(name)
    if items and not all(isinstance(x, kind) and x.__class__ is not bool for x in items):
        return f": its {name} are not all {_KIND_NAMES[kind]} (got {items!r})"
    return None


def _writes(writes: dict[str, Any]) -> str | None:
    for k, v in writes.items():
        if not (isinstance(v, list) and len(v) == 2 and isinstance(v[1], bool)):
            return f": the write of {k!r} is not a [value, deleted] pair"
    return None


def _ranges(data: dict[str, Any]) -> str | None:
    ranges = data.get("ranges", [])
    if not isinstance(ranges, list) or not all(
            isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
            and (r[1] is None or (isinstance(r[1], str) and r[0] <= r[1])) for r in ranges):
        return f": its scanned ranges are not [start, end] key pairs (got {ranges!r})"
    return None


def _ballot_values(data: dict[str, Any]) -> str | None:
    b = data["ballot"]
    if not (len(b) == 2 and type(b[0]) is int and isinstance(b[1], _ID)):
        return f": its ballot is not a [round, node] pair (got {b!r})"
    for pair in data.get("values", []):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], _ID)
                and isinstance(pair[1], list) and pair[1] and pair[1][0] in ("prepared",
                                                                              "aborted")):
            return f": {pair!r} is not an [instance, vote] pair"
    return None


# what a CorruptLog says of a log record that is intact but not one kvlab writes
_NOT_OURS = ("it passes its checksum but kvlab did not write it. Restore the log from a backup, "
             "or delete the node's data directory.")


def unbatched(records: list[Any]) -> list[Any]:
    """The log's records, each BATCH record (kvlab.batching) replaced by the records it lists,
    in order, with its LSN; CorruptLog if one is not a list of [type, data] records."""
    if not any(r.type == BATCH for r in records):
        return records
    out = []
    for r in records:
        if r.type != BATCH:
            out.append(r)
            continue
        inner = r.data.get("records") if isinstance(r.data, dict) else None
        if not (isinstance(inner, list) and inner and all(
                isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) and x[0] != BATCH
                and isinstance(x[1], dict) for x in inner)):
            raise CorruptLog(f"WAL record LSN {r.lsn} (BATCH) does not list [type, data] "
                             f"records: {_NOT_OURS}")
        out += [LogRecord(r.lsn, t, d) for t, d in inner]
    return out


def check_record(r: Any) -> None:
    """CorruptLog unless ``r`` is a record this module's recovery understands."""
    t, data = r.type, r.data
    spec = RECORD_FIELDS.get(t)
    if spec is None:
        raise CorruptLog(f"WAL record LSN {r.lsn} ({t}): unknown record type; kvlab never "
                         f"writes it. Restore the log from a backup, or delete the node's data "
                         f"directory.")
    optional = OPTIONAL_FIELDS.get(t)
    problem = _field_problem(data, spec) or (
        _field_problem(data, optional, present=True) if optional else None)
    if problem is None:
        if t == "PREPARE":
            problem = _writes(data["writes"]) or _ranges(data)
        elif t == "COMMIT" and "writes" in data:
            problem = _writes(data["writes"]) if "start_ts" in data and "coordinator" in data \
                else ": a one-phase commit without its start timestamp and coordinator"
        elif t in ("ACCEPT", "PROMISE"):
            problem = _ballot_values(data)
    if problem is None and "participants" in _DECLARED[t]:  # its lists of node ids and keys
        problem = _items(data, "participants", _ID) or _items(data, "reads", str)
    if problem is not None:
        raise CorruptLog(f"WAL record LSN {r.lsn} ({t}){problem}: {_NOT_OURS}")


def check_checkpoint(ck: Any) -> None:
    what = "the checkpoint"

    def optional(name: str) -> None:
        # checked just before it is read, so that a checkpoint with two problems is named by
        # the same one as before this was checked
        problem = _field_problem(ck, {name: CHECKPOINT_OPTIONAL[name]}, present=True)
        if problem:
            raise CorruptLog(what + problem)

    try:
        _fields(ck, CHECKPOINT_FIELDS, what)
        for key, rows in ck["store"].items():
            if not (isinstance(rows, list) and rows and all(
                    isinstance(row, list) and len(row) == 4 and type(row[0]) is int
                    for row in rows)):
                raise CorruptLog(f"{what}: the version chain of {key!r} is malformed")
        for tx, rec in ck["prepared"].items():
            _fields(rec, {k: v for k, v in RECORD_FIELDS["PREPARE"].items() if k != "tx"},
                    f"{what}: prepared {tx}")
            problem = _writes(rec["writes"]) or _ranges(rec)
            if problem:
                raise CorruptLog(f"{what}: prepared {tx}{problem}")
            if not isinstance(rec.get("participants", []), list):
                raise CorruptLog(f"{what}: prepared {tx} has no valid 'participants' list")
        for tx, rec in ck["decided"].items():
            _fields(rec, {"commit_ts": int, "participants": list}, f"{what}: decided {tx}")
        optional("begun")
        for tx, rec in ck.get("begun", {}).items():
            _fields(rec, {"start_ts": int, "participants": list}, f"{what}: begun {tx}")
        optional("finished")
        for tx, row in ck.get("finished", {}).items():
            if not (isinstance(row, list) and len(row) == 2 and row[0] in (COMMITTED, ABORTED)
                    and type(row[1]) is int):
                raise CorruptLog(f"{what}: the outcome of {tx} is malformed")
        optional("horizon")
        for part in ("prepared", "decided", "begun"):  # last: what was checked before goes first
            for tx, rec in ck.get(part, {}).items():
                problem = _items(rec, "participants", _ID) or (
                    _items(rec, "reads", str) if part == "prepared" else None)
                if problem:
                    raise CorruptLog(f"{what}: {part} {tx}{problem}")
    except CorruptLog as e:
        raise CorruptLog(f"{e}: it passes its checksum but kvlab did not write it. Restore it "
                         f"from a backup, or delete the node's data directory.") from None


__all__ = ["NodeCore", "NodeConfig", "ReadResult", "ScanRow", "ScanResult", "owner_of",
           "ISOLATION_LEVELS", "PLACEMENTS", "COMMIT_PROTOCOLS", "Begin", "Get", "Scan", "Write",
           "Commit", "Rollback",
           "Deliver", "Fire", "PeerUp", "Abandon", "Recover", "Gc", "Resolve", "RECORD_FIELDS",
           "OPTIONAL_FIELDS", "check_record", "check_checkpoint", "check_span", "unbatched"]
