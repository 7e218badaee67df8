"""Two-phase commit with presumed abort: the coordinator and participant state machines.

Every state and every allowed transition is in the two tables below (h11's ``_state.py`` is the
model). The code that runs the protocol moves a transaction only through :func:`advance`, which
refuses anything the table does not list, and :mod:`kvlab.viz` draws the state diagrams from the
same tables, so the pictures cannot drift from the code.

The force-log rules (each one is why a crash can never split an outcome):

* a participant makes PREPARED durable before it votes yes, so a yes survives its crash;
* the coordinator makes its COMMIT decision durable before it tells anyone, so a commit that any
  participant may have applied survives the coordinator's crash;
* a participant makes COMMITTED durable before it acks, so the coordinator may forget the
  transaction once every participant acked.

None of these handlers sends anything "after the flush" itself: the driver holds back whatever a
node says while a forced record it appended is not durable (:class:`kvlab.effects.Outbox`), so a
COMMIT resent or quoted to an in-doubt participant can never overtake its DECISION either.

Presumed abort: aborts are never forced and never acked. A coordinator that has no record of a
transaction answers "abort", which is right because it logs nothing until it decides commit.

Retries never give up while the peer can be reached: after ``max_retries`` a coordinator (or an
in-doubt participant) *parks* and asks its driver to tell it when the peer is reachable
(``Outputs.watch``); the driver answers with a ``PeerUp`` input at once if the peer is up and
connected (plain message loss), or when a restart, heal or new partition reconnects them. So with
every node up and connected nothing stays undecided, and a run still goes quiet while a peer is
really down.

Range reads (serializable scans): the PREPARE carries the transaction's scanned ranges to every
participant (with partitioned placement any node may own keys in a range), the participant
validates them with the store (no key in a range has a version newer than the snapshot, none is
locked by a prepared writer), takes a range lock on each until the decision, and writes them in
its forced PREPARE record (optional field ``ranges``: older logs replay unchanged), so a
recovered in-doubt participant takes its range locks again before anyone can write a phantom.

Forgetting (so memory stays flat): a coordinator forgets a finished transaction (aborted, or
committed and acked by all) after ``Timing.keep_outcomes`` newer ones finished; late messages
about it then get presumed-abort answers, which every handler below treats as stale. A
participant forgets a finished transaction once its start timestamp is below the *horizon*, the
cluster's low watermark (no transaction that old is undecided anywhere), and refuses any PREPARE
that old it does not know: such a PREPARE can only be a delayed duplicate of a decided
transaction, and re-preparing a committed one would lock its keys again and record an abort.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kvlab.effects import Outputs
from kvlab.errors import ProtocolError
from kvlab.messages import (
    ABORT,
    ACK,
    COMMIT,
    DECISION_REPLY,
    DECISION_REQ,
    PREPARE,
    STATUS,
    TS_REQUEST,
    TSO,
    VOTE_NO,
    VOTE_YES,
    Message,
    freeze,
    mixed_hash,
)
from kvlab.mvcc import Span, Store

# ---------------------------------------------------------------------------------------------
# The state tables
# ---------------------------------------------------------------------------------------------
ACTIVE = "ACTIVE"  # coordinator side: the client is still reading and writing
PREPARING = "PREPARING"  # PREPARE sent, collecting votes
AWAIT_TS = "AWAIT_TS"  # every vote was yes; asking the oracle for a commit timestamp
COMMITTING = "COMMITTING"  # decision durable, COMMIT sent, collecting acks
COMMITTED = "COMMITTED"
ABORTED = "ABORTED"
INIT = "INIT"  # participant side: nothing known about the transaction yet
PREPARED = "PREPARED"  # voted yes, holds locks, waits for the decision
IN_DOUBT = "IN_DOUBT"  # prepared and the decision is late (or we just recovered): asking
DELEGATED = "DELEGATED"  # one-phase commit (kvlab.onephase): the only participant decides

COORDINATOR_STATES = (ACTIVE, PREPARING, AWAIT_TS, COMMITTING, COMMITTED, ABORTED)
UNDECIDED = (ACTIVE, PREPARING, AWAIT_TS, DELEGATED)  # the start timestamp matters (mvcc GC)
PARTICIPANT_STATES = (INIT, PREPARED, IN_DOUBT, COMMITTED, ABORTED)

# state -> {event: next state}
COORDINATOR_TRANSITIONS: dict[str, dict[str, str]] = {
    ACTIVE: {"commit": PREPARING, "commit read-only": COMMITTED, "rollback": ABORTED},
    PREPARING: {"vote yes": PREPARING, "all voted yes": AWAIT_TS, "vote no": ABORTED,
                "vote timeout": ABORTED},
    AWAIT_TS: {"commit ts": COMMITTING, "ts timeout": ABORTED},
    COMMITTING: {"ack": COMMITTING, "all acked": COMMITTED, "resend": COMMITTING,
                 "status": COMMITTING},
    COMMITTED: {},
    ABORTED: {"late vote": ABORTED},
}
# where a coordinator record starts: begin() creates it ACTIVE; recovery recreates it from a
# durable decision that has no END record
COORDINATOR_ENTRIES = {"begin": ACTIVE, "recover decision": COMMITTING}
COORDINATOR_RECOVERY = {e: s for e, s in COORDINATOR_ENTRIES.items() if e != "begin"}

PARTICIPANT_TRANSITIONS: dict[str, dict[str, str]] = {
    INIT: {"prepare ok": PREPARED, "prepare conflict": ABORTED, "abort": ABORTED,
           "recover prepared": IN_DOUBT, "unilateral abort": ABORTED},
    PREPARED: {"commit": COMMITTED, "abort": ABORTED, "decision timeout": IN_DOUBT,
               "prepare again": PREPARED},
    IN_DOUBT: {"commit": COMMITTED, "abort": ABORTED, "ask again": IN_DOUBT,
               "prepare again": IN_DOUBT},
    COMMITTED: {"commit again": COMMITTED, "stale presumed abort": COMMITTED},
    ABORTED: {"abort again": ABORTED, "late prepare": ABORTED},
}


def advance(table: dict[str, dict[str, str]], state: str, event: str) -> str:
    """The next state, or ProtocolError if the table does not allow ``event`` in ``state``."""
    try:
        return table[state][event]
    except KeyError:
        raise ProtocolError(
            f"2PC bug: event {event!r} is not allowed in state {state} (see kvlab.twopc tables)"
        ) from None


@dataclass
class Timing:
    """Protocol timeouts in simulated ticks."""

    vote_timeout: int = 60  # coordinator gives up on missing votes and aborts
    ts_timeout: int = 60
    decision_timeout: int = 60  # a prepared participant starts asking the coordinator
    retry_interval: int = 20  # first retransmission; doubles each time
    max_retries: int = 5  # then park until the driver says the peer is reachable
    keep_outcomes: int = 10_000  # finished coordinator records kept for outcome()

    def __post_init__(self) -> None:
        from kvlab.errors import ConfigurationError

        for name in ("vote_timeout", "ts_timeout", "decision_timeout", "retry_interval",
                     "max_retries", "keep_outcomes"):
            v = getattr(self, name)
            if type(v) is not int or v < (0 if name in ("max_retries", "keep_outcomes") else 1):
                raise ConfigurationError(f"Timing.{name} must be a positive whole number of "
                                         f"ticks (or a count), got {v!r}")


@dataclass(frozen=True)
class Rules:
    """The force-log rules, as switches, so a lesson can turn one off and watch atomicity break.

    Never change these outside an experiment: with any of them False, a crash at the wrong
    moment loses a committed write or splits an outcome (the exhaustive crash tests show where).
    """

    force_prepare: bool = True  # participant: PREPARED durable before voting yes
    force_decision: bool = True  # coordinator: COMMIT decision durable before sending it
    force_commit: bool = True  # participant: COMMITTED durable before acking

    @property
    def safe(self) -> bool:
        return self.force_prepare and self.force_decision and self.force_commit


_DONE: dict = {}  # the working sets of every finished transaction (never written to)


def _spans(raw: Sequence[Sequence[Any]]) -> tuple[Span, ...]:
    """Ranges as a PREPARE or its record carries them (JSON lists) -> hashable spans."""
    return tuple((r[0], r[1]) for r in raw)
_MASK = (1 << 64) - 1  # fingerprints of sets are sums of hashes, kept to 64 bits


# ---------------------------------------------------------------------------------------------
# Coordinator
# ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class CoordTx:
    """Everything the coordinator (the node where the transaction began) knows about it."""

    id: str
    start_ts: int
    isolation: str
    state: str = ACTIVE
    writes: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # buffered until commit
    reads: dict[str, None] = field(default_factory=dict)  # keys read (ordered set)
    participants: list[str] = field(default_factory=list)
    votes: dict[str, bool] = field(default_factory=dict)
    acked: dict[str, None] = field(default_factory=dict)
    commit_ts: int | None = None
    reason: str = ""
    call: int | None = None  # the client call waiting for the outcome
    attempt: int = 0
    fp: int | None = field(default=None, repr=False, compare=False)  # once finished
    fixed: int | None = field(default=None, repr=False, compare=False)  # hash of what commit
    # fixed for good (id, snapshot, writes, reads, scans, participants), once the client is done
    scans: dict[Span, None] = field(default_factory=dict)  # ranges scanned (serializable)
    request: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # what
    # a one-phase commit resends (kvlab.onephase); fixed by the fields above

    def clone(self) -> CoordTx:
        if self.state in (COMMITTED, ABORTED):
            return self  # a finished record never changes again: share it
        return CoordTx(self.id, self.start_ts, self.isolation, self.state, dict(self.writes),
                       dict(self.reads), self.participants, dict(self.votes),
                       dict(self.acked), self.commit_ts, self.reason, self.call, self.attempt,
                       None, self.fixed, dict(self.scans), self.request)

    def fingerprint(self) -> int:
        if self.fp is not None:
            return self.fp
        fixed = self.fixed
        if fixed is None:
            fixed = hash((self.id, self.start_ts, self.isolation, freeze(self.writes),
                          tuple(self.reads), tuple(self.participants), tuple(self.scans)))
            if self.state != ACTIVE:  # nothing of it changes after commit() started
                self.fixed = fixed
        fp = mixed_hash((fixed, self.state, tuple(sorted(self.votes)) if self.votes else (),
                   tuple(sorted(self.acked)) if self.acked else (), self.commit_ts, self.call,
                   self.attempt))
        if self.state in (COMMITTED, ABORTED):
            self.fp = fp
        return fp


class Coordinator:
    """Drives the transactions that began on this node through 2PC."""

    TRANSITIONS = COORDINATOR_TRANSITIONS  # the table _move follows (Paxos Commit has its own)
    END_WHEN_ACKED = True  # log END once every participant acked (Paxos Commit: at its decision)
    VOTE_ROUNDS = 1  # round trips a vote takes to arrive (the vote timer allows vote_timeout each)

    def __init__(self, node_id: str, timing: Timing, rules: Rules = Rules()) -> None:
        self.node_id = node_id
        self.timing = timing
        self.rules = rules
        self.txs: dict[str, CoordTx] = {}
        self.undecided: dict[str, CoordTx] = {}  # index of txs in UNDECIDED states
        self.finished: dict[str, None] = {}  # finished txs, oldest first (forgotten in turn)
        self.parked: dict[Any, dict[str, None]] = {}  # peer -> COMMITTING txs waiting for it

    def clone(self) -> Coordinator:
        c = Coordinator.__new__(Coordinator)
        c.node_id, c.timing, c.rules = self.node_id, self.timing, self.rules
        c.txs = {k: t.clone() for k, t in self.txs.items()}
        c.undecided = {k: c.txs[k] for k in self.undecided}
        c.finished = dict(self.finished)
        c.parked = {p: dict(t) for p, t in self.parked.items()}
        return c

    def fingerprint(self) -> tuple:
        # the order transactions finished in decides which are forgotten first, which can only
        # matter once this node has more transactions than it keeps outcomes for
        return (sum(t.fingerprint() for t in self.txs.values()) & _MASK,
                tuple(self.finished) if len(self.txs) >= self.timing.keep_outcomes else (),
                tuple(sorted((p, tuple(sorted(t))) for p, t in self.parked.items() if t))
                if self.parked else ())

    def _move(self, out: Outputs, tx: CoordTx, event: str) -> None:
        if tx.state == INIT:  # a record being created: begin() or recovery
            new = COORDINATOR_ENTRIES[event]
        else:
            new = advance(self.TRANSITIONS, tx.state, event)
        out.note(role="coordinator", tx=tx.id, event=event, old=tx.state, new=new)
        tx.state = new
        if new in UNDECIDED:
            self.undecided[tx.id] = tx
        else:
            self.undecided.pop(tx.id, None)
        if new in (COMMITTED, ABORTED):  # the working sets are done with; keep the outcome
            tx.writes, tx.reads, tx.scans, tx.votes, tx.acked = _DONE, _DONE, _DONE, _DONE, _DONE
            self.finished[tx.id] = None
            while len(self.finished) > self.timing.keep_outcomes:
                old = next(iter(self.finished))
                del self.finished[old]
                self.txs.pop(old, None)

    def _msg(self, dst: str, kind: str, tx: CoordTx, **body: Any) -> Message:
        return Message(self.node_id, dst, kind, tx.id, body)

    def begin(self, tx_id: str, start_ts: int, isolation: str) -> Outputs:
        out = Outputs()
        tx = self.txs[tx_id] = CoordTx(tx_id, start_ts, isolation, state=INIT)
        self._move(out, tx, "begin")
        return out

    # -- phase 1 ---------------------------------------------------------------------------
    def start(self, tx: CoordTx, call: int, plan: dict[str, dict[str, Any]]) -> Outputs:
        """Begin 2PC. ``plan`` maps each participant to the writes/reads (and, optionally,
        the scanned ``ranges``) it must validate."""
        out = Outputs()
        tx.call = call
        if not plan:
            self._move(out, tx, "commit read-only")
            tx.reason = "committed: read-only, so no two-phase commit was needed"
            out.reply(call, True)
            return out
        self._move(out, tx, "commit")
        tx.participants = sorted(plan)
        for p in tx.participants:
            extra = {"ranges": plan[p]["ranges"]} if plan[p].get("ranges") else {}
            out.send(self._msg(p, PREPARE, tx, start_ts=tx.start_ts, isolation=tx.isolation,
                               coordinator=self.node_id, participants=tx.participants,
                               writes=plan[p]["writes"], reads=plan[p]["reads"], **extra))
        out.timer(("vote", tx.id), self.timing.vote_timeout * self.VOTE_ROUNDS)
        return out

    def on_vote(self, msg: Message) -> Outputs:
        out = Outputs()
        tx = self.txs.get(msg.tx)
        if tx is None or tx.state == ABORTED:
            if msg.kind == VOTE_YES:  # presumed abort: release the locks it is holding
                if tx is not None:
                    self._move(out, tx, "late vote")
                out.send(Message(self.node_id, msg.src, ABORT, msg.tx,
                                 {"presumed": tx is None,
                                  "start_ts": msg.body.get("start_ts", 0) if tx is None
                                  else tx.start_ts}))
            return out
        if tx.state != PREPARING:
            return out  # a duplicate vote after the outcome is known
        if msg.kind == VOTE_NO:
            tx.reason = f"aborted: {msg.src} voted no: {msg.body['reason']}"
            return self._abort(out, tx, "vote no", skip=msg.src)
        tx.votes[msg.src] = True
        if len(tx.votes) < len(tx.participants):
            self._move(out, tx, "vote yes")
            return out
        self._move(out, tx, "all voted yes")
        out.cancel.append(("vote", tx.id))
        out.send(Message(self.node_id, TSO, TS_REQUEST, tx.id, {"purpose": "commit"}))
        out.timer(("ts", tx.id), self.timing.ts_timeout)
        return out

    def _abort(self, out: Outputs, tx: CoordTx, event: str, skip: str | None = None) -> Outputs:
        self._move(out, tx, event)
        out.cancel.append(("vote", tx.id))
        for p in tx.participants:
            if p != skip:
                out.send(self._msg(p, ABORT, tx, presumed=False, start_ts=tx.start_ts))
        if tx.call is not None:
            out.reply(tx.call, False)
        return out

    # -- the decision ----------------------------------------------------------------------
    def on_commit_ts(self, tx_id: str, ts: int) -> Outputs:
        out = Outputs()
        tx = self.txs.get(tx_id)
        if tx is None or tx.state != AWAIT_TS:
            return out
        out.cancel.append(("ts", tx.id))
        self._move(out, tx, "commit ts")
        tx.commit_ts = ts
        tx.reason = f"committed at ts {ts}"
        out.log("DECISION", {"tx": tx.id, "commit_ts": ts, "participants": tx.participants},
                force=self.rules.force_decision)
        for p in tx.participants:
            out.send(self._msg(p, COMMIT, tx, commit_ts=ts))
        if tx.call is not None:
            out.reply(tx.call, True)
        tx.attempt = 0
        out.timer(("resend", tx.id), self.timing.retry_interval)
        return out

    def on_ack(self, msg: Message) -> Outputs:
        out = Outputs()
        tx = self.txs.get(msg.tx)
        if tx is None or tx.state != COMMITTING or msg.src in tx.acked:
            return out
        tx.acked[msg.src] = None
        if len(tx.acked) < len(tx.participants):
            self._move(out, tx, "ack")
            return out
        self._move(out, tx, "all acked")
        out.cancel.append(("resend", tx.id))
        if self.END_WHEN_ACKED:
            out.log("END", {"tx": tx.id})  # not forced: losing it only means resending COMMIT
        return out

    def on_status(self, msg: Message) -> Outputs:
        """An in-doubt participant asks for the outcome."""
        out = Outputs()
        tx = self.txs.get(msg.tx)
        if tx is not None and tx.state in (PREPARING, AWAIT_TS):
            return out  # not decided yet; the participant will ask again
        if tx is not None and tx.state == COMMITTING:
            self._move(out, tx, "status")
            out.send(self._msg(msg.src, COMMIT, tx, commit_ts=tx.commit_ts))
        else:
            # Aborted, never heard of, or ended (every participant acked, END logged: a real
            # coordinator has forgotten it by now). Presumed abort answers all three, which is
            # right only because acks follow durable COMMITTED records (Rules.force_commit).
            presumed = tx is None or tx.state == COMMITTED  # no decision on record to quote
            out.send(Message(self.node_id, msg.src, ABORT, msg.tx,
                             {"presumed": presumed, "start_ts": 0 if presumed else tx.start_ts}))
        return out

    def on_timer(self, key: tuple) -> Outputs:
        out = Outputs()
        kind, tx_id = key[0], key[1]
        tx = self.txs.get(tx_id)
        if tx is None:
            return out
        if kind == "vote" and tx.state == PREPARING:
            missing = [p for p in tx.participants if p not in tx.votes]
            tx.reason = (f"aborted: no vote from {', '.join(map(str, missing))} within "
                         f"{self.timing.vote_timeout} ticks (crashed, partitioned or lost)")
            return self._abort(out, tx, "vote timeout")
        if kind == "ts" and tx.state == AWAIT_TS:
            tx.reason = "aborted: the timestamp oracle did not answer in time"
            return self._abort(out, tx, "ts timeout")
        if kind == "resend" and tx.state == COMMITTING:
            self._move(out, tx, "resend")
            self._resend(out, tx)
            tx.attempt += 1
            if tx.attempt < self.timing.max_retries:
                out.timer(("resend", tx.id), self.timing.retry_interval << tx.attempt)
            else:  # park: the driver wakes us (PeerUp) once each missing peer is reachable
                waiting = [p for p in tx.participants if p not in tx.acked]
                for p in waiting:
                    self.parked.setdefault(p, {})[tx.id] = None
                    out.watch.append(p)
                out.note(role="coordinator", tx=tx.id, event="parked", waiting_for=waiting)
        return out

    def _resend(self, out: Outputs, tx: CoordTx, only: str | None = None) -> None:
        for p in tx.participants:
            if p not in tx.acked and (only is None or p == only):
                out.send(self._msg(p, COMMIT, tx, commit_ts=tx.commit_ts))

    def on_peer_up(self, peer: str) -> Outputs:
        """A peer we parked on is reachable: resend, and retry on a fresh schedule."""
        out = Outputs()
        for tx_id in self.parked.pop(peer, ()):
            tx = self.txs.get(tx_id)
            if tx is None or tx.state != COMMITTING or peer in tx.acked:
                continue
            self._move(out, tx, "resend")
            self._resend(out, tx, only=peer)
            tx.attempt = 0
            out.timer(("resend", tx.id), self.timing.retry_interval)
        return out

    def recover(self, decided: dict[str, dict[str, Any]]) -> Outputs:
        """Restart phase 2 for every durable decision that has no END record."""
        out = Outputs()
        for tx_id, rec in decided.items():
            tx = CoordTx(tx_id, start_ts=0, isolation="", state=INIT)
            tx.participants = rec["participants"]
            tx.commit_ts = rec["commit_ts"]
            tx.reason = f"committed at ts {tx.commit_ts} (decision recovered from the WAL)"
            self._move(out, tx, "recover decision")
            self.txs[tx_id] = tx
            self._resend(out, tx)
            out.timer(("resend", tx_id), self.timing.retry_interval)
        return out


# ---------------------------------------------------------------------------------------------
# Participant
# ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class PartTx:
    id: str
    coordinator: str
    start_ts: int
    writes: dict[str, tuple[Any, bool]]
    reads: Sequence[str]  # a tuple once the transaction is over
    state: str = INIT
    commit_ts: int | None = None
    attempt: int = 0
    participants: Sequence[Any] = ()  # everyone the PREPARE named
    fp: int | None = field(default=None, repr=False, compare=False)  # once finished
    fixed: int | None = field(default=None, repr=False, compare=False)  # hash of the fields
    # set once by the PREPARE (writes, reads, ranges, coordinator, snapshot)
    ranges: tuple[Span, ...] = ()  # scanned ranges it validated and holds range locks on
    doubters: tuple[Any, ...] = ()  # cooperative: peers that answered "in doubt too"

    def clone(self) -> PartTx:
        if self.state in (COMMITTED, ABORTED):
            return self  # a finished record never changes again: share it
        # writes, reads and ranges are never changed in place (replaced once, when finished)
        return PartTx(self.id, self.coordinator, self.start_ts, self.writes, self.reads,
                      self.state, self.commit_ts, self.attempt, self.participants, None,
                      self.fixed, self.ranges, self.doubters)

    def fingerprint(self) -> int:
        if self.fp is not None:
            return self.fp
        if self.fixed is None:
            self.fixed = hash((self.id, self.coordinator, self.start_ts, freeze(self.writes),
                               tuple(self.reads), tuple(self.participants), self.ranges))
        fp = mixed_hash((self.fixed, self.state, self.commit_ts, self.attempt, self.doubters))
        if self.state in (COMMITTED, ABORTED):
            # its working sets are gone; the start timestamp still decides when it is
            # forgotten, and a late PREPARE of an aborted one is answered to its coordinator
            fp = mixed_hash((self.id, self.state, self.commit_ts, self.start_ts,
                             self.coordinator))
            self.fp = fp
        return fp


class Participant:
    """Validates, locks, and applies one node's share of each transaction."""

    TRANSITIONS = PARTICIPANT_TRANSITIONS  # the table _move follows (one-phase commit adds to it)
    # Presumed abort: an ABORT is never acked, so its record need not survive a crash (a
    # participant that forgets it asks again, and hears "aborted"). Paxos Commit acks aborts
    # (so that the acceptors may forget them) and forces the record first: see kvlab.paxos.
    FORCE_ABORT = False

    def __init__(self, node_id: str, store: Store, timing: Timing, rules: Rules = Rules(),
                 cooperative: bool = False) -> None:
        self.node_id = node_id
        self.store = store
        self.timing = timing
        self.rules = rules
        self.cooperative = cooperative  # ask the other participants too (module docstring)
        self.holding: dict[str, PartTx] = {}  # index of txs in PREPARED or IN_DOUBT
        self.txs: dict[str, PartTx] = {}
        self.parked: dict[Any, dict[str, None]] = {}  # coordinator -> in-doubt txs waiting
        self.horizon = 0  # finished txs that started below it are forgotten (see module doc)
        self._done: list[tuple[int, str]] = []  # heap of finished txs by start timestamp

    def clone(self, store: Store) -> Participant:
        p = Participant.__new__(Participant)
        p.node_id, p.store, p.timing, p.rules = self.node_id, store, self.timing, self.rules
        p.cooperative = self.cooperative
        p.txs = {k: t.clone() for k, t in self.txs.items()}
        p.holding = {k: p.txs[k] for k in self.holding}
        p.parked = {c: dict(t) for c, t in self.parked.items()}
        p.horizon = self.horizon
        p._done = list(self._done)
        return p

    def fingerprint(self) -> tuple:
        # _done only orders forgetting, which the horizon and the states already determine
        return (sum([t.fingerprint() for t in self.txs.values()]) & _MASK,
                tuple(sorted((c, tuple(sorted(t))) for c, t in self.parked.items() if t))
                if self.parked else (), self.horizon)

    def _move(self, out: Outputs, tx: PartTx, event: str) -> None:
        old = tx.state
        new = advance(self.TRANSITIONS, old, event)
        out.note(role="participant", tx=tx.id, event=event, old=old, new=new)
        tx.state = new
        if new in (PREPARED, IN_DOUBT):
            self.holding[tx.id] = tx
        else:
            self.holding.pop(tx.id, None)
            if new != old and new in (COMMITTED, ABORTED):  # just finished: forget it once
                # it is below the horizon
                self._finished(tx)

    def _finished(self, tx: PartTx) -> None:
        if tx.start_ts < self.horizon:
            self.txs.pop(tx.id, None)
        else:
            heapq.heappush(self._done, (tx.start_ts, tx.id))

    def forget(self, horizon: int) -> int:
        """Raise the horizon (the cluster's low watermark) and forget finished transactions
        that started below it; return how many were forgotten."""
        if horizon <= self.horizon:
            return 0
        self.horizon = horizon
        n = 0
        done = self._done
        while done and done[0][0] < horizon:
            _, tx_id = heapq.heappop(done)
            tx = self.txs.get(tx_id)
            if tx is not None and tx.state in (COMMITTED, ABORTED):
                del self.txs[tx_id]
                n += 1
        return n

    def _reply(self, tx: PartTx, kind: str, **body: Any) -> Message:
        return Message(self.node_id, tx.coordinator, kind, tx.id, body)

    def in_doubt(self) -> list[PartTx]:
        """Prepared and undecided: holding locks until the coordinator's decision arrives."""
        return list(self.holding.values())

    def on_prepare(self, msg: Message) -> Outputs:
        out = Outputs()
        b = msg.body
        tx = self.txs.get(msg.tx)
        if tx is not None:
            if tx.state in (PREPARED, IN_DOUBT):
                self._move(out, tx, "prepare again")
                out.send(self._reply(tx, VOTE_YES))  # held while PREPARE is not durable
            elif tx.state == ABORTED:
                self._move(out, tx, "late prepare")
                out.send(Message(self.node_id, b["coordinator"], VOTE_NO, tx.id,
                                 {"reason": "already aborted here"}))
            return out  # COMMITTED: a duplicate of a PREPARE long answered
        if b["start_ts"] < self.horizon:
            # Older than the low watermark and unknown: a delayed duplicate of a transaction
            # decided long ago (see the module docstring). Never prepare it twice.
            out.note(role="participant", tx=msg.tx, event="stale prepare refused")
            out.send(Message(self.node_id, b["coordinator"], VOTE_NO, msg.tx,
                             {"reason": f"{msg.tx} started below the low watermark "
                                        f"{self.horizon} and is decided already"}))
            return out
        writes = {k: (v[0], bool(v[1])) for k, v in b["writes"].items()}
        tx = PartTx(msg.tx, b["coordinator"], b["start_ts"], writes, list(b["reads"]),
                    participants=tuple(b["participants"]), ranges=_spans(b.get("ranges", ())))
        self.txs[tx.id] = tx
        conflicts = self.store.conflicts(
            tx.id, tx.start_ts, list(writes), tx.reads,
            check_committed=b["isolation"] != "read_committed", ranges=tx.ranges)
        if conflicts:
            c = conflicts[0]
            self._move(out, tx, "prepare conflict")
            out.send(self._reply(tx, VOTE_NO, reason=str(c), key=c.key, other=c.other,
                                 how=c.how))
            return out
        self.store.lock(tx.id, tx.start_ts, list(writes), tx.reads, tx.ranges)
        self._move(out, tx, "prepare ok")
        record = {"tx": tx.id, "coordinator": tx.coordinator, "start_ts": tx.start_ts,
                  "writes": b["writes"], "reads": tx.reads}
        if tx.ranges:  # optional, so logs without range reads stay byte-identical
            record["ranges"] = [list(r) for r in tx.ranges]
        if self.cooperative:  # whom to ask after a crash, when the coordinator is silent
            record["participants"] = list(tx.participants)
        out.log("PREPARE", record, force=self.rules.force_prepare)
        out.send(self._reply(tx, VOTE_YES))
        out.timer(("decision", tx.id), self.timing.decision_timeout)
        return out

    def on_commit(self, msg: Message) -> Outputs:
        out = Outputs()
        tx = self.txs.get(msg.tx)
        if tx is None or tx.state == COMMITTED:
            # Already committed here (possibly forgotten since): ack again. The ack is held
            # while the COMMITTED record is not durable.
            if tx is not None:
                self._move(out, tx, "commit again")
            out.send(Message(self.node_id, msg.src, ACK, msg.tx, {}))
            return out
        if tx.state not in (PREPARED, IN_DOUBT):
            raise ProtocolError(f"atomicity violated: {tx.id} got COMMIT in state {tx.state} "
                                f"on {self.node_id}")
        ts = msg.body["commit_ts"]
        self.store.apply(tx.id, ts, tx.writes)
        self.store.unlock(tx.id, list(tx.writes), tx.reads)
        tx.commit_ts = ts
        self._move(out, tx, "commit")
        out.cancel += [("decision", tx.id), ("status", tx.id)]
        out.log("COMMIT", {"tx": tx.id, "commit_ts": ts}, force=self.rules.force_commit)
        out.send(self._reply(tx, ACK))
        out.note(role="participant", tx=tx.id, event="released", keys=tuple(tx.writes))
        tx.writes, tx.reads, tx.ranges = {}, (), ()  # applied and unlocked: the outcome stays
        return out

    def on_abort(self, msg: Message) -> Outputs:
        out = Outputs()
        tx = self.txs.get(msg.tx)
        if tx is None:
            if msg.body.get("presumed"):
                # Only a participant that prepared asks (or votes) and so gets a presumed abort;
                # with no record left, it prepared, finished and checkpointed long ago. Stale.
                out.note(role="participant", tx=msg.tx, event="stale presumed abort ignored")
                return out
            # a decided ABORT overtook our PREPARE: remember it, and refuse that PREPARE later
            tx = PartTx(msg.tx, msg.body.get("coordinator", msg.src), msg.body.get("start_ts", 0),
                        {}, [])
            self.txs[tx.id] = tx
            self._move(out, tx, "abort")
            if self.FORCE_ABORT:
                out.log("ABORT", {"tx": tx.id, "start_ts": tx.start_ts}, force=True)
            return out
        if tx.state == ABORTED:
            self._move(out, tx, "abort again")
            return out
        if tx.state == COMMITTED:
            if msg.body.get("presumed"):
                # The answer to a STATUS we sent while in doubt, overtaken by the COMMIT: the
                # coordinator has since ended the transaction and forgotten it. We know better.
                self._move(out, tx, "stale presumed abort")
                return out
            raise ProtocolError(f"atomicity violated: {tx.id} got ABORT after committing on "
                                f"{self.node_id}")
        held = tx.state in (PREPARED, IN_DOUBT)
        self._move(out, tx, "abort")
        out.cancel += [("decision", tx.id), ("status", tx.id)]
        if held:
            self.store.unlock(tx.id, list(tx.writes), tx.reads)
            out.log("ABORT", {"tx": tx.id}, force=self.FORCE_ABORT)  # see FORCE_ABORT
            out.note(role="participant", tx=tx.id, event="released", keys=tuple(tx.writes))
        tx.writes, tx.reads, tx.ranges = {}, (), ()
        return out

    def on_timer(self, key: tuple) -> Outputs:
        out = Outputs()
        tx = self.txs.get(key[1])
        if tx is None or tx.state not in (PREPARED, IN_DOUBT):
            return out
        if key[0] == "decision" and tx.state == PREPARED:
            self._move(out, tx, "decision timeout")
            tx.attempt = 0
        elif key[0] == "status":
            self._move(out, tx, "ask again")
        else:
            return out
        return self._ask(out, tx)

    def _peers(self, tx: PartTx) -> list[Any]:
        """Whom a cooperative participant asks besides the coordinator."""
        return [p for p in tx.participants if p != self.node_id and p != tx.coordinator]

    def _ask(self, out: Outputs, tx: PartTx) -> Outputs:
        out.send(self._reply(tx, STATUS))
        peers = self._peers(tx) if self.cooperative else []
        for p in peers:
            out.send(Message(self.node_id, p, DECISION_REQ, tx.id,
                             {"start_ts": tx.start_ts, "coordinator": tx.coordinator}))
        if tx.attempt < self.timing.max_retries:
            out.timer(("status", tx.id), self.timing.retry_interval << tx.attempt)
            tx.attempt += 1
        else:  # park: the driver wakes us (PeerUp) once someone who may know is reachable
            # (not peers that said they are in doubt too: they cannot help, and watching a
            # reachable peer would wake us again and again, so run() would never go quiet)
            peers = [p for p in peers if p not in tx.doubters]
            for who in (tx.coordinator, *peers):
                self.parked.setdefault(who, {})[tx.id] = None
                out.watch.append(who)
            out.note(role="participant", tx=tx.id, event="parked",
                     waiting_for=[tx.coordinator, *peers] if peers else tx.coordinator)
        return out

    # -- cooperative termination -----------------------------------------------------------
    def on_decision_req(self, msg: Message) -> Outputs:
        """Another participant is in doubt and its coordinator is silent: help if we can."""
        out = Outputs()
        tx = self.txs.get(msg.tx)
        b = msg.body
        if tx is None and b["start_ts"] >= self.horizon:
            # We never voted, so the coordinator cannot have decided commit: abort now, for
            # good. Forced, so a crash cannot make us forget it and vote yes later.
            tx = PartTx(msg.tx, b["coordinator"], b["start_ts"], {}, ())
            self.txs[tx.id] = tx
            self._move(out, tx, "unilateral abort")
            out.log("ABORT", {"tx": tx.id, "start_ts": tx.start_ts,
                              "coordinator": tx.coordinator}, force=True)
        if tx is not None and tx.state == COMMITTED:
            body: dict[str, Any] = {"outcome": "commit", "commit_ts": tx.commit_ts}
        elif tx is not None and tx.state == ABORTED:
            body = {"outcome": "abort"}
        else:
            # Prepared and in doubt ourselves, or unknown below the horizon (forgotten once
            # finished: we cannot tell how). Say so, so the trace shows why nobody helps.
            body = {"outcome": None}
        out.send(Message(self.node_id, msg.src, DECISION_REPLY, msg.tx, body))
        return out

    def on_decision_reply(self, msg: Message) -> Outputs:
        """A peer's answer: an outcome it knows decides us as the coordinator's would."""
        tx = self.holding.get(msg.tx)
        outcome = msg.body["outcome"]
        if tx is None:
            return Outputs()
        if outcome is None:
            if msg.src not in tx.doubters:  # sorted: the order answers came in is no state
                tx.doubters = tuple(sorted((*tx.doubters, msg.src), key=str))
            return Outputs()
        if outcome == "commit":
            return self.on_commit(Message(msg.src, self.node_id, COMMIT, msg.tx,
                                          {"commit_ts": msg.body["commit_ts"]}))
        return self.on_abort(Message(msg.src, self.node_id, ABORT, msg.tx,
                                     {"presumed": False, "start_ts": tx.start_ts}))

    def on_peer_up(self, peer: str) -> Outputs:
        """The coordinator we parked on is reachable: ask again, on a fresh schedule."""
        out = Outputs()
        for tx_id in self.parked.pop(peer, ()):
            tx = self.holding.get(tx_id)
            if tx is not None and tx.state == IN_DOUBT:
                self._move(out, tx, "ask again")
                tx.attempt = 0
                self._ask(out, tx)
        return out

    def recover(self, prepared: dict[str, dict[str, Any]],
                finished: dict[str, tuple[str, int]], horizon: int = 0) -> Outputs:
        """Re-lock every prepared-but-undecided transaction and ask its coordinator.

        ``finished`` maps each finished transaction still remembered to (state, start_ts);
        ``horizon`` is the low watermark the driver knows now (see the module docstring)."""
        out = Outputs()
        self.horizon = horizon
        for tx_id, (status, start_ts) in finished.items():
            tx = self.txs[tx_id] = PartTx(tx_id, "", start_ts, {}, (), state=status)
            self._finished(tx)
        for tx_id, rec in prepared.items():
            writes = {k: (v[0], bool(v[1])) for k, v in rec["writes"].items()}
            tx = PartTx(tx_id, rec["coordinator"], rec["start_ts"], writes, list(rec["reads"]),
                        participants=tuple(rec.get("participants", ())),
                        ranges=_spans(rec.get("ranges", ())))
            self.txs[tx_id] = tx
            self.store.lock(tx_id, tx.start_ts, list(writes), tx.reads, tx.ranges)
            self._move(out, tx, "recover prepared")
            self._ask(out, tx)
        return out

    def remembered(self) -> dict[str, tuple[str, int]]:
        """Finished transactions not yet forgotten: (state, start_ts), for checkpoints."""
        return {t.id: (t.state, t.start_ts) for t in self.txs.values()
                if t.state in (COMMITTED, ABORTED)}
