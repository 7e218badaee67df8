"""Paxos Commit (Gray and Lamport, *Consensus on Transaction Commit*, TODS 2006): the acceptor
and leader state machines, and the tables that say which moves they may make.

Each participant's vote is the value of its own Paxos instance, decided by 2F+1 acceptors (the
transaction's coordinator and the next 2F nodes of the cluster): a participant that prepared
proposes ``["prepared", ts]`` in ballot 0, one that cannot proposes ``["aborted"]``. An instance
is *chosen* once F+1 acceptors accepted the same ballot; the transaction commits if every
instance chose "prepared", at the largest prepare timestamp of them all. Because that timestamp
is part of the chosen values, any leader that finishes the transaction picks the same one (as
Spanner derives a commit timestamp from its participants' prepare timestamps).

The coordinator leads ballot 0 and needs no log of its own: what it decided is recoverable from
the acceptors. When it is silent, any participant in doubt takes a higher ballot (leader
election), asks a majority of acceptors what they accepted (phase 1), proposes for each instance
the value accepted in the highest ballot, or "aborted" where nothing was accepted (phase 2), and
finishes the transaction. With F = 0 the only acceptor is the coordinator: its accept records
are two-phase commit's decision record, and a coordinator crash blocks again.

Forced records (each one is what a crash must not lose):

* a participant forces its vote (PREPARE with the prepare timestamp, or ABORT) before sending
  it to the acceptors, so it can never propose two different values in ballot 0;
* an acceptor forces ACCEPT before answering phase 2, and PROMISE before answering phase 1, so
  a chosen value survives any F crashes and a promise made is never forgotten;
* a participant forces COMMIT before acking, as in two-phase commit, and ABORT before acking
  an abort (two-phase commit's presumed abort never acks one; here the acks let the acceptors
  forget aborted transactions too, see Forgetting);
* the coordinator forces BEGIN (the participants) before any PREPARE leaves: participants learn
  of a transaction only from its PREPARE, so if every PREPARE died with the coordinator, only
  its restart can finish the transaction (it leads it again, and the acceptors' answers say
  it aborts). A restarted coordinator with no BEGIN on record knows no PREPARE ever left.

No DECISION record is written: the acceptors' forced ACCEPT records *are* the decision (any
leader recomputes it from F+1 of them); the coordinator's unforced END only spares it leading
a decided transaction again after a restart. A
participant's "no" vote is forced too (ABORT with its start timestamp): after a crash a
duplicate PREPARE must not give its instance a second ballot-0 value.

Liveness (leaders must not preempt each other forever, nor outrun a slow acceptor):

* an acceptor answers a ballot below its promise with a NACK naming the promised ballot;
* a leader's retry (its timer, or a parked peer coming back) resends the *same* ballot's
  current phase to the acceptors that did not answer, so a slow acceptor's late answer still
  counts. Only a preemption opens a higher ballot: a NACK naming this node's own older
  ballot (from before a crash) makes it jump above at once; another node's makes it *defer*
  (DEFERRED: it watches, counting any accepts it still gets, and leads again with a ballot
  above the highest seen if the transaction is not decided within ``decision_timeout``,
  doubling per deferral). Of two duelling leaders the higher ballot's never defers, so one
  finishes. A resent phase 2 carries the proposal this ballot's phase-1 majority gave, so a
  ballot's phase-2 value still comes from its own phase 1;
* a leader promises its own ballot on its own acceptor (a forced PROMISE) before phase 1, an
  acceptor of the transaction or not: after a restart it picks a higher ballot, so no ballot
  ever gets two leaders (and two values) across incarnations;
* a takeover proposes "aborted" for every vote not yet accepted, so the coordinator's vote
  timer and a participant's decision timer wait ``VOTE_ROUNDS`` (3) times their timeout: a
  vote is three round trips away (PREPARE, the prepare timestamp, the acceptors).

Forgetting (so memory stays flat): an acceptor drops a transaction's instances when the
coordinator says every participant has the outcome (LEARNED, sent when the last ACK of a commit
or of an abort arrives, after a forced END; the coordinator resends the decision to those that
have not acked, as two-phase commit resends COMMIT). That is safe because no leader can ever
ask again: a leader is started only by an in-doubt participant (each acked after its COMMIT or
ABORT record was durable, so none is in doubt again, even after a crash; a delayed PREPARE
finds the transaction finished, or is refused below the horizon), by the coordinator restarting
with a BEGIN and no END (the END is forced before LEARNED leaves), or is one already running
(each retires when its own participant learns the outcome; the coordinator's has decided). A
delayed P1A or P2A of an old leader may still arrive and recreate an entry; its answer goes to
a leader that is gone, and no new one will run phase 1, so it changes no outcome (the entry is
a leak bounded by the messages in flight). The unforced LEARNED record keeps a log replay from
reviving the instances; a crash that loses it revives only the records since the last
checkpoint. An abort logs no END until its last ack, so a coordinator that crashes before then
leads the transaction again from its BEGIN after the restart, and collects the acks then. A
commit's END is logged at the decision too (unforced), so a coordinator that crashes after it
and before the last ack keeps its acceptors' entries (a leak bounded by crashes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvlab.effects import Outputs, Record
from kvlab.errors import CorruptLog
from kvlab.messages import (
    ABORT,
    ACK,
    COMMIT,
    LEARNED,
    NACK,
    P1A,
    P1B,
    P2A,
    P2B,
    TS_REQUEST,
    TSO,
    Message,
    mixed_hash,
)
from kvlab.mvcc import Store
from kvlab.twopc import (
    _MASK,
    ABORTED,
    ACTIVE,
    COMMITTED,
    COMMITTING,
    COORDINATOR_TRANSITIONS,
    IN_DOUBT,
    PARTICIPANT_TRANSITIONS,
    PREPARED,
    PREPARING,
    Coordinator,
    CoordTx,
    Participant,
    PartTx,
    Rules,
    Timing,
    _spans,
    advance,
)

# -- the state tables ---------------------------------------------------------------------------
IDLE = "IDLE"  # acceptor: nothing promised or accepted for this transaction yet
PROMISED = "PROMISED"  # promised not to accept ballots below ``promised``
ACCEPTED = "ACCEPTED"  # accepted a value for at least one instance

FORGOTTEN = "FORGOTTEN"  # every participant has the outcome durably: the instances are dropped
ACCEPTOR_TRANSITIONS: dict[str, dict[str, str]] = {
    IDLE: {"accept": ACCEPTED, "promise": PROMISED, "stale ballot": IDLE},
    PROMISED: {"accept": ACCEPTED, "promise": PROMISED, "stale ballot": PROMISED,
               "all learned": FORGOTTEN},
    ACCEPTED: {"accept": ACCEPTED, "promise": ACCEPTED, "stale ballot": ACCEPTED,
               "all learned": FORGOTTEN},
    FORGOTTEN: {},
}

PHASE1 = "PHASE1"  # leader: collecting promises (and what was accepted) from a majority
PHASE2 = "PHASE2"  # leader: collecting accepts for its proposals, instance by instance
DEFERRED = "DEFERRED"  # a higher ballot's leader runs it: watch, lead again if it goes silent
DECIDED = "DECIDED"  # every instance chosen (or the outcome learned): the leader is done
# "accepted" counts in phase 1 (and deferred) too: a ballot-0 accept that arrives after a
# takeover began is still an accept, and F+1 of them for one value is still a choice.
# "retry" resends the ballot's current phase; only "new ballot" (after a preemption, or a
# crash) opens a higher one, so a slow acceptor's late answer still counts.
LEADER_TRANSITIONS: dict[str, dict[str, str]] = {
    PHASE1: {"promise": PHASE1, "majority promised": PHASE2, "accepted": PHASE1,
             "all chosen": DECIDED, "retry": PHASE1, "parked": PHASE1, "preempted": DEFERRED,
             "new ballot": PHASE1, "outcome learned": DECIDED},
    PHASE2: {"accepted": PHASE2, "all chosen": DECIDED, "take over": PHASE1, "retry": PHASE2,
             "parked": PHASE2, "preempted": DEFERRED, "new ballot": PHASE1,
             "outcome learned": DECIDED},
    DEFERRED: {"accepted": DEFERRED, "all chosen": DECIDED, "new ballot": PHASE1,
               "outcome learned": DECIDED},
    DECIDED: {"resend": DECIDED, "outcome learned": DECIDED},
}
# ballot 0 starts in phase 2 (the participants propose for themselves); a takeover in phase 1
LEADER_ENTRIES = {"ballot 0": PHASE2, "take over": PHASE1}

# The coordinator and participant tables under Paxos Commit: two-phase commit's, where the
# votes are no longer collected by the coordinator but chosen by the acceptors.
PAXOS_COORDINATOR_TRANSITIONS: dict[str, dict[str, str]] = {
    ACTIVE: dict(COORDINATOR_TRANSITIONS[ACTIVE]),
    PREPARING: {"vote timeout": PREPARING,  # take over with ballot (1, self): no abort yet
                "decided commit": COMMITTING, "decided abort": ABORTED},
    COMMITTING: dict(COORDINATOR_TRANSITIONS[COMMITTING]),
    COMMITTED: {},
    ABORTED: {},
}
PAXOS_PARTICIPANT_TRANSITIONS: dict[str, dict[str, str]] = {
    s: dict(m) for s, m in PARTICIPANT_TRANSITIONS.items()}
PAXOS_PARTICIPANT_TRANSITIONS[PREPARED]["voted"] = PREPARED  # prepare ts known, vote proposed
PAXOS_PARTICIPANT_TRANSITIONS[IN_DOUBT]["take over"] = IN_DOUBT  # this node's leader runs
_PAXOS_ONLY = ("voted", "take over")  # self-loops the two-phase commit table does not have

Ballot = tuple  # (round, node): compared lexicographically; round 0 is the coordinator's


def ballot(b: Any) -> Ballot:
    return (b[0], b[1])


def acceptors_for(coordinator: Any, nodes: list[Any], f: int) -> list[Any]:
    """The 2F+1 acceptors of a transaction: its coordinator, then the next 2F nodes."""
    i = nodes.index(coordinator)
    ring = nodes[i:] + nodes[:i]
    return ring[:2 * f + 1]


def _vkey(rm: Any) -> str:
    return str(rm)


# -- acceptor -----------------------------------------------------------------------------------
@dataclass(slots=True)
class AccTx:
    """What one acceptor knows of one transaction's instances."""

    id: str
    start_ts: int
    state: str = IDLE
    promised: Ballot = (-1, "")
    accepted: dict[Any, tuple[Ballot, list]] = field(default_factory=dict)  # rm -> (b, value)

    def clone(self) -> AccTx:
        return AccTx(self.id, self.start_ts, self.state, self.promised, dict(self.accepted))

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, self.state, self.promised,
                           tuple(sorted((str(k), v[0], tuple(v[1]))
                                        for k, v in self.accepted.items()))))


class Acceptor:
    """One node's acceptor: promises and accepts, durably, and answers the ballot's leader."""

    def __init__(self, node_id: Any) -> None:
        self.node_id = node_id
        self.txs: dict[str, AccTx] = {}

    def clone(self) -> Acceptor:
        a = Acceptor(self.node_id)
        a.txs = {k: t.clone() for k, t in self.txs.items()}
        return a

    def fingerprint(self) -> int:
        return sum([t.fingerprint() for t in self.txs.values()]) & _MASK

    def _tx(self, tx_id: str, start_ts: int) -> AccTx:
        t = self.txs.get(tx_id)
        if t is None:
            t = self.txs[tx_id] = AccTx(tx_id, start_ts)
        return t

    def _move(self, out: Outputs, t: AccTx, event: str) -> None:
        new = advance(ACCEPTOR_TRANSITIONS, t.state, event)
        out.note(role="acceptor", tx=t.id, event=event, old=t.state, new=new)
        t.state = new

    def promised_round(self, tx_id: str) -> int:
        t = self.txs.get(tx_id)
        return t.promised[0] if t is not None else -1

    def _nack(self, out: Outputs, t: AccTx, bal: Ballot) -> Outputs:
        """Refuse a ballot below the promise, and say which ballot is promised: its leader
        then knows it was preempted (it defers, or jumps above), instead of retrying blind."""
        self._move(out, t, "stale ballot")
        out.send(Message(self.node_id, bal[1], NACK, t.id,
                         {"ballot": list(bal), "promised": list(t.promised)}))
        return out

    def on_p2a(self, msg: Message) -> Outputs:
        """Accept unless promised a higher ballot; at ballot 0 only the first value of each
        instance (its participant proposes once: another one is a stale duplicate)."""
        out = Outputs()
        b = msg.body
        t = self._tx(msg.tx, b["start_ts"])
        bal = ballot(b["ballot"])
        if bal < t.promised:
            return self._nack(out, t, bal)
        new: list[list] = []
        answer: list[list] = []
        for rm, value in b["values"]:
            value = list(value)
            have = t.accepted.get(rm)
            if have is not None and have[0] == bal and have[1] != value:
                continue  # a second value in one ballot: only ballot 0's stale duplicates
            if have != (bal, value):
                t.accepted[rm] = (bal, value)
                new.append([rm, value])
            answer.append([rm, value])
        if not answer:
            self._move(out, t, "stale ballot")
            return out
        t.promised = max(t.promised, bal)
        self._move(out, t, "accept")
        if new:  # forced: a chosen value must survive F acceptor crashes
            out.log("ACCEPT", {"tx": t.id, "start_ts": t.start_ts, "ballot": list(bal),
                               "values": new}, force=True)
        out.send(Message(self.node_id, bal[1], P2B, t.id,
                         {"ballot": list(bal), "values": answer}))
        return out

    def on_p1a(self, msg: Message) -> Outputs:
        """Promise a higher ballot (forced: a promise forgotten in a crash could let an older
        leader's value be chosen behind the new one) and report every value accepted."""
        out = Outputs()
        b = msg.body
        t = self._tx(msg.tx, b["start_ts"])
        bal = ballot(b["ballot"])
        if bal < t.promised:
            return self._nack(out, t, bal)
        self.promise(out, t.id, t.start_ts, bal)
        out.send(Message(self.node_id, bal[1], P1B, t.id,
                         {"ballot": list(bal),
                          "accepted": [[rm, list(ab), v] for rm, (ab, v) in
                                       sorted(t.accepted.items(), key=lambda kv: str(kv[0]))]}))
        return out

    def promise(self, out: Outputs, tx_id: str, start_ts: int, bal: Ballot) -> None:
        """Promise ``bal`` (forced). A leader also promises its own ballot here before phase
        1, acceptor of the transaction or not: after a crash this record makes it pick a
        higher one, so no ballot ever gets two leaders (two values) across incarnations."""
        t = self._tx(tx_id, start_ts)
        if bal > t.promised:
            t.promised = bal
            out.log("PROMISE", {"tx": t.id, "start_ts": t.start_ts, "ballot": list(bal)},
                    force=True)
        self._move(out, t, "promise")

    def on_learned(self, msg: Message) -> Outputs:
        """The coordinator says every participant has the outcome durably: forget (see the
        module docstring, Forgetting). The unforced LEARNED record keeps a replay of the log
        from bringing the instances back; losing it only means keeping them."""
        out = Outputs()
        t = self.txs.get(msg.tx)
        if t is not None:
            self._move(out, t, "all learned")
            del self.txs[t.id]
            out.log("LEARNED", {"tx": t.id})
        return out

    def recover(self, records: list[dict[str, Any]]) -> None:
        """Rebuild promises and accepted values from ACCEPT and PROMISE records, in order
        (and drop what a LEARNED record says every participant knows)."""
        for r in records:
            if "ballot" not in r:  # LEARNED
                self.txs.pop(r["tx"], None)
                continue
            t = self._tx(r["tx"], r["start_ts"])
            bal = ballot(r["ballot"])
            t.promised = max(t.promised, bal)
            if "values" in r:
                for rm, value in r["values"]:
                    t.accepted[rm] = (bal, list(value))
                t.state = ACCEPTED
            elif t.state == IDLE:
                t.state = PROMISED

    def dump(self) -> dict[str, Any]:
        """For a checkpoint (the log it truncates held the ACCEPT and PROMISE records)."""
        return {t.id: [t.start_ts, list(t.promised),
                       [[rm, list(b), v] for rm, (b, v) in t.accepted.items()]]
                for t in self.txs.values()}

    def load(self, data: Any) -> None:
        try:
            for tx_id, (start_ts, promised, accepted) in data.items():
                t = self._tx(tx_id, int(start_ts))
                t.promised = ballot(promised)
                t.accepted = {rm: (ballot(b), list(v)) for rm, b, v in accepted}
                t.state = ACCEPTED if t.accepted else PROMISED
        except (TypeError, ValueError, AttributeError) as e:
            raise CorruptLog(f"the checkpoint: the acceptor state is malformed ({e}): it "
                             f"passes its checksum but kvlab did not write it. Restore it from "
                             f"a backup, or delete the node's data directory.") from None


# -- leader -------------------------------------------------------------------------------------
@dataclass(slots=True)
class LeadTx:
    """One node's leadership of one transaction: ballot 0 (its coordinator) or a takeover."""

    id: str
    start_ts: int
    coordinator: Any
    participants: tuple
    acceptors: tuple
    state: str
    ballot: Ballot
    attempt: int = 0
    promises: dict[Any, list] = field(default_factory=dict)  # acceptor -> what it accepted
    accepts: dict[tuple, tuple] = field(default_factory=dict)  # (rm, ballot, value) -> accs
    chosen: dict[Any, list] = field(default_factory=dict)  # rm -> value chosen
    proposal: list = field(default_factory=list)  # this ballot's phase-2 values (a resend)
    seen: Ballot = (-1, "")  # the highest ballot an acceptor said it promised (NACK)
    defers: int = 0  # times this leader deferred to a higher ballot: its wait doubles

    def clone(self) -> LeadTx:
        return LeadTx(self.id, self.start_ts, self.coordinator, self.participants,
                      self.acceptors, self.state, self.ballot, self.attempt,
                      dict(self.promises), dict(self.accepts),
                      dict(self.chosen), self.proposal, self.seen, self.defers)

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, self.state, self.ballot, self.attempt,
                           self.seen, self.defers, repr(self.proposal),
                           tuple(sorted((str(a), repr(v)) for a, v in self.promises.items())),
                           tuple(sorted((repr(k), tuple(sorted(map(str, v))))
                                        for k, v in self.accepts.items())),
                           tuple(sorted((str(k), tuple(v)) for k, v in self.chosen.items()))))


@dataclass(slots=True)
class AbortTx:
    """An aborted transaction whose participants have not all acked the abort: until every
    one has (after its forced ABORT record), one of them may still be in doubt and lead a
    ballot, so the acceptors must keep the instances."""

    id: str
    start_ts: int  # resent with ABORT: a participant that never heard of the transaction
    # remembers it until the horizon passes it, and refuses its delayed PREPARE
    participants: tuple
    acked: dict[Any, None] = field(default_factory=dict)
    attempt: int = 0

    def clone(self) -> AbortTx:
        return AbortTx(self.id, self.start_ts, self.participants, dict(self.acked),
                       self.attempt)

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, self.participants,
                           tuple(sorted(map(str, self.acked))), self.attempt))


class PaxosCoordinator(Coordinator):
    """Two-phase commit's coordinator as Paxos Commit's ballot-0 leader, plus this node's
    acceptor and every takeover it leads (a node has one leader per transaction, so that
    its ballots are unique whichever role started it)."""

    TRANSITIONS = PAXOS_COORDINATOR_TRANSITIONS  # two-phase commit's bookkeeping, this table
    END_WHEN_ACKED = False  # there is no DECISION to end; END is logged at the decision
    # a vote is three round trips away, not one: PREPARE, the prepare timestamp's, and the
    # acceptors' P2A/P2B (each after a forced record). Taking over sooner proposes "aborted"
    # for votes still on their way: with a tight vote_timeout nothing would ever commit.
    VOTE_ROUNDS = 3

    def __init__(self, node_id: Any, timing: Timing, rules: Rules, nodes: list[Any],
                 f: int) -> None:
        super().__init__(node_id, timing, rules)
        self.nodes, self.f = nodes, f
        self.acceptor = Acceptor(node_id)
        self.leaders: dict[str, LeadTx] = {}
        self.lead_parked: dict[Any, dict[str, None]] = {}  # acceptor -> leaders waiting
        self.aborts: dict[str, AbortTx] = {}  # aborted here, not yet acked by everyone

    def clone(self) -> PaxosCoordinator:
        c = Coordinator.clone(self)
        c.__class__ = PaxosCoordinator
        c.nodes, c.f = self.nodes, self.f
        c.acceptor = self.acceptor.clone()
        c.leaders = {k: t.clone() for k, t in self.leaders.items()}
        c.lead_parked = {p: dict(t) for p, t in self.lead_parked.items()}
        c.aborts = {k: t.clone() for k, t in self.aborts.items()}
        return c  # type: ignore[return-value]

    def fingerprint(self) -> tuple:
        return (*super().fingerprint(), self.acceptor.fingerprint(),
                sum([t.fingerprint() for t in self.leaders.values()]) & _MASK,
                tuple(sorted((str(p), tuple(sorted(t))) for p, t in self.lead_parked.items()
                             if t)),
                sum([t.fingerprint() for t in self.aborts.values()]) & _MASK)

    def on_ack(self, msg: Message) -> Outputs:
        """Two-phase commit's acks, of a commit (its COMMIT record is durable) or, here, of an
        abort (its ABORT record is): once every participant acked, no leader can ever ask
        about the transaction again, so the acceptors may forget it."""
        at = self.aborts.get(msg.tx)
        if at is not None:
            out = Outputs()
            if msg.src in at.participants and msg.src not in at.acked:
                at.acked[msg.src] = None
                if len(at.acked) == len(at.participants):
                    del self.aborts[at.id]
                    out.cancel.append(("resend", at.id))
                    self._all_learned(out, at.id)
            return out
        tx = self.txs.get(msg.tx)
        was = tx.state if tx is not None else None
        out = super().on_ack(msg)
        if tx is not None and was == COMMITTING and tx.state == COMMITTED:
            self._all_learned(out, tx.id)
        return out

    def _all_learned(self, out: Outputs, tx_id: str) -> None:
        """Force END (so this node does not lead the transaction again after a restart
        either), then tell the acceptors to forget it."""
        out.log("END", {"tx": tx_id}, force=True)
        for a in acceptors_for(self.node_id, self.nodes, self.f):
            out.send(Message(self.node_id, a, LEARNED, tx_id, {}))

    def _await_abort_acks(self, out: Outputs, tx_id: str, start_ts: int,
                          participants: Any) -> None:
        """The abort is decided and sent: collect the participants' acks, resending."""
        if tx_id not in self.aborts:
            self.aborts[tx_id] = AbortTx(tx_id, start_ts, tuple(participants))
            out.timer(("resend", tx_id), self.timing.retry_interval)

    def _resend_abort(self, out: Outputs, at: AbortTx, to: Any) -> None:
        for p in to:
            out.send(self._decision(p, at.id, at.start_ts, False, None, self.node_id))

    def _lmove(self, out: Outputs, lt: LeadTx, event: str) -> None:
        new = advance(LEADER_TRANSITIONS, lt.state, event)
        out.note(role="leader", tx=lt.id, event=event, old=lt.state, new=new,
                 ballot=list(lt.ballot))
        lt.state = new

    # -- ballot 0 ----------------------------------------------------------------------------
    def start(self, tx: CoordTx, call: int, plan: dict[str, dict[str, Any]]) -> Outputs:
        """Send PREPARE as two-phase commit does, and lead ballot 0: the participants propose
        their own votes to the acceptors, whose answers come here."""
        out = super().start(tx, call, plan)
        if tx.state == PREPARING:
            # kvlab's participants learn of a transaction only from its PREPARE (writes are
            # buffered here until commit), so this node alone knows who takes part. Forced
            # before any PREPARE leaves (the Outbox holds them): a coordinator that crashes
            # with every PREPARE lost can then finish the transaction when it restarts;
            # without the record nobody could, and the client would wait forever. Gray and
            # Lamport's participants have joined before commit starts: this is the join.
            out.records.insert(0, Record("BEGIN", {"tx": tx.id, "start_ts": tx.start_ts,
                                                   "participants": list(tx.participants)},
                                         force=True))
            lt = LeadTx(tx.id, tx.start_ts, self.node_id, tuple(tx.participants),
                        tuple(acceptors_for(self.node_id, self.nodes, self.f)),
                        LEADER_ENTRIES["ballot 0"], (0, self.node_id))
            self.leaders[tx.id] = lt
            out.note(role="leader", tx=tx.id, event="ballot 0", old="", new=lt.state,
                     ballot=[0, self.node_id])
        return out

    # -- takeover ----------------------------------------------------------------------------
    def take_over(self, out: Outputs, tx_id: str, start_ts: int, coordinator: Any,
                  participants: Any) -> None:
        """Lead ``tx_id`` with a higher ballot (an in-doubt participant, or the coordinator
        whose votes are late); nothing to do if this node already leads a takeover."""
        lt = self.leaders.get(tx_id)
        if lt is None:
            lt = LeadTx(tx_id, start_ts, coordinator, tuple(participants),
                        tuple(acceptors_for(coordinator, self.nodes, self.f)),
                        LEADER_ENTRIES["take over"], (0, self.node_id))
            self.leaders[tx_id] = lt
            out.note(role="leader", tx=tx_id, event="take over", old="", new=lt.state)
            self._ballot(out, lt, None)
        elif lt.ballot[0] == 0 and lt.state == PHASE2:
            self._ballot(out, lt, "take over")

    def _ballot(self, out: Outputs, lt: LeadTx, event: str | None) -> None:
        """Phase 1 of a fresh ballot, above any this node has seen for the transaction (its
        own, an acceptor's NACK, its own acceptor's promise), promised here first (forced:
        see Acceptor.promise) so that no restart of this node can lead it again."""
        rnd = max(lt.ballot[0], lt.seen[0], self.acceptor.promised_round(lt.id)) + 1
        lt.ballot = (rnd, self.node_id)
        lt.promises, lt.proposal = {}, []
        self._unpark(lt.id)
        if event is not None:
            self._lmove(out, lt, event)
        self.acceptor.promise(out, lt.id, lt.start_ts, lt.ballot)
        self._send_phase(out, lt, lt.acceptors)
        out.timer(("lead", lt.id), self.timing.retry_interval << lt.attempt)

    def _send_phase(self, out: Outputs, lt: LeadTx, to: Any) -> None:
        """The current ballot's current phase, to ``to``: P1A, or P2A with the proposal that
        this ballot's phase-1 majority gave (resending it in the same ballot is safe)."""
        for a in to:
            if lt.state == PHASE1:
                out.send(Message(self.node_id, a, P1A, lt.id,
                                 {"ballot": list(lt.ballot), "start_ts": lt.start_ts}))
            elif lt.state == PHASE2 and lt.proposal:
                out.send(Message(self.node_id, a, P2A, lt.id,
                                 {"ballot": list(lt.ballot), "values": lt.proposal,
                                  "start_ts": lt.start_ts}))

    def _answered(self, lt: LeadTx) -> set:
        """The acceptors that answered the current phase of the current ballot."""
        if lt.state == PHASE1:
            return set(lt.promises)
        return {a for (_, b, _), accs in lt.accepts.items() if b == lt.ballot for a in accs}

    def _unpark(self, tx_id: str) -> None:
        for waiting in self.lead_parked.values():
            waiting.pop(tx_id, None)

    def on_nack(self, msg: Message) -> Outputs:
        """An acceptor refused this leader's ballot: it promised a higher one. Another node's
        ballot: defer to it (watch; lead again if it goes silent), so two leaders do not
        preempt each other forever. This node's own (from before a crash): jump above it."""
        out = Outputs()
        lt = self.leaders.get(msg.tx)
        if lt is None or lt.state in (DECIDED, DEFERRED) \
                or ballot(msg.body["ballot"]) != lt.ballot:
            return out  # done, deferred already, or about an older ballot of ours
        promised = ballot(msg.body["promised"])
        lt.seen = max(lt.seen, promised)
        if promised <= lt.ballot:
            return out
        if promised[1] == self.node_id:
            lt.attempt = 0
            self._ballot(out, lt, "new ballot")
            return out
        self._lmove(out, lt, "preempted")
        self._unpark(lt.id)
        out.timer(("lead", lt.id), self.timing.decision_timeout << min(lt.defers, 4))
        lt.defers += 1
        return out

    def on_p1b(self, msg: Message) -> Outputs:
        out = Outputs()
        lt = self.leaders.get(msg.tx)
        if lt is None or lt.state != PHASE1 or ballot(msg.body["ballot"]) != lt.ballot \
                or msg.src in lt.promises:
            return out  # late, for an older ballot, or a duplicate
        lt.promises[msg.src] = msg.body["accepted"]
        if len(lt.promises) <= self.f:
            self._lmove(out, lt, "promise")
            return out
        self._lmove(out, lt, "majority promised")
        best: dict[Any, tuple[Ballot, list]] = {}
        for accepted in lt.promises.values():
            for rm, b, value in accepted:
                b = ballot(b)
                if rm not in best or (b, value) > (best[rm][0], best[rm][1]):
                    best[rm] = (b, list(value))
        lt.proposal = [[rm, lt.chosen.get(rm) or (best[rm][1] if rm in best else ["aborted"])]
                       for rm in lt.participants]
        self._send_phase(out, lt, lt.acceptors)
        return out

    def on_p2b(self, msg: Message) -> Outputs:
        """Count accepts per (instance, ballot, value): F+1 of one is a choice."""
        out = Outputs()
        lt = self.leaders.get(msg.tx)
        if lt is None:
            return out
        bal = ballot(msg.body["ballot"])
        fresh = False
        for rm, value in msg.body["values"]:
            key = (rm, bal, tuple(value))
            if rm in lt.chosen:
                continue
            accs = lt.accepts.get(key, ())
            if msg.src in accs:
                continue
            fresh = True
            accs = lt.accepts[key] = (*accs, msg.src)
            if len(accs) > self.f:  # chosen: later accepts of it change nothing here
                lt.chosen[rm] = list(value)
                lt.accepts = {k: v for k, v in lt.accepts.items() if k[0] != rm}
        if not fresh:
            return out
        if all(p in lt.chosen for p in lt.participants):
            self._decide(out, lt)
        else:
            self._lmove(out, lt, "accepted")
        return out

    def _decide(self, out: Outputs, lt: LeadTx) -> None:
        """Every instance is chosen: commit iff every vote is "prepared", at the largest
        prepare timestamp (any leader computes the same). Nothing is logged: the acceptors'
        forced ACCEPT records are the decision."""
        values = [lt.chosen[p] for p in lt.participants]
        commit = all(v[0] == "prepared" for v in values)
        ts = max(v[1] for v in values) if commit else None
        self._lmove(out, lt, "all chosen")
        self._unpark(lt.id)
        if self.node_id in lt.participants:
            # stay until this node's own participant has the outcome (the message to it may
            # be lost, and its decision timer has fired already): resend it to ourselves
            lt.attempt = 0
            out.timer(("lead", lt.id), self.timing.retry_interval)
        else:
            self._retire(out, lt)
        if commit:
            reason = (f"committed at ts {ts}, the largest prepare timestamp (decided by "
                      f"{self.node_id} in ballot {list(lt.ballot)})")
        else:
            no = [str(p) for p, v in zip(lt.participants, values, strict=True)
                  if v[0] != "prepared"]
            reason = (f"aborted: the vote of {', '.join(no)} was chosen as aborted (decided "
                      f"by {self.node_id} in ballot {list(lt.ballot)})")
        if not self._settle_own(out, lt.id, commit, ts, reason):
            for p in lt.participants:
                out.send(self._decision(p, lt.id, lt.start_ts, commit, ts, lt.coordinator))
            if not commit and lt.coordinator == self.node_id:
                # this node restarted and led its own transaction again from BEGIN: the
                # abort's acks still let the acceptors forget it
                self._await_abort_acks(out, lt.id, lt.start_ts, lt.participants)
        out.outcomes.append((lt.id, commit, ts, reason))

    def _decision(self, p: Any, tx_id: str, start_ts: int, commit: bool, ts: int | None,
                  coordinator: Any) -> Message:
        if commit:
            return Message(self.node_id, p, COMMIT, tx_id, {"commit_ts": ts})
        # the coordinator: whom the participant acks the abort (it collects the acks)
        return Message(self.node_id, p, ABORT, tx_id, {"presumed": False, "start_ts": start_ts,
                                                        "coordinator": coordinator})

    def _settle_own(self, out: Outputs, tx_id: str, commit: bool, ts: int | None,
                    reason: str) -> bool:
        """If this node coordinates ``tx_id`` and it is undecided here: two-phase commit's
        phase 2 from here on (COMMIT with acks and resends, or ABORT) and the client's answer."""
        tx = self.txs.get(tx_id)
        if tx is None or tx.state != PREPARING:
            return False
        out.cancel.append(("vote", tx.id))
        tx.reason = reason
        if commit:
            out.log("END", {"tx": tx.id})  # not forced: losing it only means leading it again
            tx.commit_ts = ts
            self._move(out, tx, "decided commit")
            tx.attempt = 0
            out.timer(("resend", tx.id), self.timing.retry_interval)
        else:
            # no END until every participant acked: a crash before that leads it again
            # from BEGIN after the restart, and the abort's acks are collected then
            self._move(out, tx, "decided abort")
            self._await_abort_acks(out, tx.id, tx.start_ts, tx.participants)
        for p in tx.participants:
            out.send(self._decision(p, tx.id, tx.start_ts, commit, ts, self.node_id))
        if tx.call is not None:
            out.reply(tx.call, commit)
        return True

    def _retire(self, out: Outputs, lt: LeadTx) -> None:
        self.leaders.pop(lt.id, None)
        out.cancel.append(("lead", lt.id))
        self._unpark(lt.id)

    def learned(self, out: Outputs, tx_id: str, commit: bool, ts: int | None) -> None:
        """This node's participant heard the outcome from some leader: stop leading, and
        answer the client if this node coordinates the transaction."""
        lt = self.leaders.get(tx_id)
        if lt is not None:
            self._lmove(out, lt, "outcome learned")
            self._retire(out, lt)
        reason = (f"committed at ts {ts} (learned from another leader)" if commit
                  else "aborted (learned from another leader)")
        if self._settle_own(out, tx_id, commit, ts, reason):
            out.outcomes.append((tx_id, commit, ts, reason))

    # -- timers and the failure detector ------------------------------------------------------
    def on_timer(self, key: tuple) -> Outputs:
        kind, tx_id = key[0], key[1]
        if kind == "vote":
            out = Outputs()
            tx = self.txs.get(tx_id)
            if tx is not None and tx.state == PREPARING:
                self._move(out, tx, "vote timeout")
                self.take_over(out, tx.id, tx.start_ts, self.node_id, tx.participants)
            return out
        if kind == "lead":
            return self._lead_timer(tx_id)
        if kind == "resend" and tx_id in self.aborts:
            return self._abort_timer(tx_id)
        return super().on_timer(key)

    def _abort_timer(self, tx_id: str) -> Outputs:
        """Resend ABORT to the participants that did not ack, as COMMIT is resent; after
        ``max_retries``, park on them until the failure detector sees them up."""
        out = Outputs()
        at = self.aborts.get(tx_id)
        if at is None:
            return out
        waiting = [p for p in at.participants if p not in at.acked]
        self._resend_abort(out, at, waiting)
        at.attempt += 1
        if at.attempt < self.timing.max_retries:
            out.timer(("resend", at.id), self.timing.retry_interval << at.attempt)
        else:  # not on itself: its own participant's ack is on its way (see _lead_timer)
            for p in waiting:
                if p != self.node_id:
                    self.parked.setdefault(p, {})[at.id] = None
                    out.watch.append(p)
        return out

    def _lead_timer(self, tx_id: str) -> Outputs:
        out = Outputs()
        lt = self.leaders.get(tx_id)
        if lt is None:
            return out
        if lt.state == DECIDED:
            values = [lt.chosen[p] for p in lt.participants]
            commit = all(v[0] == "prepared" for v in values)
            self._lmove(out, lt, "resend")
            out.send(self._decision(self.node_id, lt.id, lt.start_ts, commit,
                                    max(v[1] for v in values) if commit else None,
                                    lt.coordinator))
            lt.attempt = min(lt.attempt + 1, self.timing.max_retries)
            out.timer(("lead", lt.id), self.timing.retry_interval << lt.attempt)
            return out
        if lt.state == DEFERRED:  # the higher ballot's leader went silent: lead again
            lt.attempt = 0
            self._ballot(out, lt, "new ballot")
            return out
        answered = self._answered(lt)
        if lt.attempt < self.timing.max_retries:
            # the same ballot again, to those that did not answer: a new ballot here would
            # make a slow acceptor's answer stale each time, and two leaders on the same
            # schedule would preempt each other forever (only a NACK opens a higher one)
            lt.attempt += 1
            self._lmove(out, lt, "retry")
            self._send_phase(out, lt, [a for a in lt.acceptors if a not in answered])
            out.timer(("lead", lt.id), self.timing.retry_interval << lt.attempt)
            return out
        # never this node itself: its own acceptor's answer is on its way (behind a flush),
        # and a watch on itself would wake it at once, again and again: run() would spin
        waiting = [a for a in lt.acceptors if a not in answered and a != self.node_id]
        for a in waiting:
            self.lead_parked.setdefault(a, {})[lt.id] = None
            out.watch.append(a)
        self._lmove(out, lt, "parked")
        out.note(role="leader", tx=lt.id, event="parked", waiting_for=waiting)
        return out

    def on_peer_up(self, peer: Any) -> Outputs:
        out = Outputs()
        parked = self.parked.get(peer, {})
        for tx_id in [t for t in parked if t in self.aborts]:
            del parked[tx_id]
            at = self.aborts[tx_id]
            if peer not in at.acked:
                self._resend_abort(out, at, [peer])
                at.attempt = 0
                out.timer(("resend", at.id), self.timing.retry_interval)
        out.merge(super().on_peer_up(peer))
        for tx_id in self.lead_parked.pop(peer, ()):
            lt = self.leaders.get(tx_id)
            if lt is None or lt.state not in (PHASE1, PHASE2):
                continue
            # the same ballot to the peer that is back (the others stay parked on): its
            # answer, however late, is for the ballot still being led
            lt.attempt = 0
            self._lmove(out, lt, "retry")
            self._send_phase(out, lt, [peer])
            out.timer(("lead", lt.id), self.timing.retry_interval)
        return out

    # -- checkpoints and recovery ----------------------------------------------------------
    def recover_begun(self, begun: dict[str, dict[str, Any]]) -> Outputs:
        """Lead, with a fresh ballot, every transaction this node began committing and did not
        see decided before its crash: the acceptors' answers say what was chosen, or nothing
        was and it aborts. Either way the client's handle is settled (Outputs.outcomes)."""
        out = Outputs()
        for tx_id, rec in begun.items():
            self.take_over(out, tx_id, rec["start_ts"], self.node_id, rec["participants"])
        return out

    def begun(self) -> dict[str, dict[str, Any]]:
        """Transactions whose BEGIN is on record and whose outcome this node has not seen,
        for checkpoints."""
        out = {t.id: {"start_ts": t.start_ts, "participants": list(t.participants)}
               for t in self.txs.values() if t.state == PREPARING}
        for lt in self.leaders.values():
            if lt.coordinator == self.node_id and lt.state != DECIDED and lt.id not in out:
                out[lt.id] = {"start_ts": lt.start_ts, "participants": list(lt.participants)}
        return out

    def recover_acceptor(self, checkpoint: dict[str, Any] | None,
                         records: list[dict[str, Any]]) -> None:
        if checkpoint is not None and "acceptor" in checkpoint:
            self.acceptor.load(checkpoint["acceptor"])
        self.acceptor.recover(records)


# -- participant (resource manager) ----------------------------------------------------------
class PaxosParticipant(Participant):
    """Two-phase commit's participant whose vote goes to the acceptors (ballot 0) instead of
    the coordinator, and which, in doubt, takes over as leader instead of asking."""

    FORCE_ABORT = True  # an abort is acked (so the acceptors may forget it): durable first

    def __init__(self, node_id: Any, store: Store, timing: Timing, rules: Rules,
                 nodes: list[Any], f: int, leader: PaxosCoordinator) -> None:
        super().__init__(node_id, store, timing, rules)
        self.nodes, self.f, self.leader = nodes, f, leader
        self.prepare_ts: dict[str, int] = {}  # voted "prepared" at this timestamp

    def clone(self, store: Store) -> PaxosParticipant:
        p = Participant.clone(self, store)
        p.__class__ = PaxosParticipant
        p.nodes, p.f, p.leader = self.nodes, self.f, self.leader  # NodeCore.clone rewires
        p.prepare_ts = dict(self.prepare_ts)
        return p  # type: ignore[return-value]

    def fingerprint(self) -> tuple:
        return (*super().fingerprint(), tuple(sorted(self.prepare_ts.items())))

    def _move(self, out: Outputs, tx: PartTx, event: str) -> None:
        if event in _PAXOS_ONLY:
            new = advance(PAXOS_PARTICIPANT_TRANSITIONS, tx.state, event)
            out.note(role="participant", tx=tx.id, event=event, old=tx.state, new=new)
            tx.state = new
            return
        super()._move(out, tx, event)

    def _propose(self, out: Outputs, tx: PartTx, value: list) -> None:
        """Ballot 0 of this participant's instance: its vote, to the 2F+1 acceptors."""
        for a in acceptors_for(tx.coordinator, self.nodes, self.f):
            out.send(Message(self.node_id, a, P2A, tx.id,
                             {"ballot": [0, tx.coordinator], "values": [[self.node_id, value]],
                              "start_ts": tx.start_ts}))

    def on_prepare(self, msg: Message) -> Outputs:
        out = Outputs()
        b = msg.body
        tx = self.txs.get(msg.tx)
        if tx is not None:
            if tx.state in (PREPARED, IN_DOUBT):
                self._move(out, tx, "prepare again")
                if tx.id in self.prepare_ts:  # held while PREPARE is not durable
                    self._propose(out, tx, ["prepared", self.prepare_ts[tx.id]])
            elif tx.state == ABORTED:
                self._move(out, tx, "late prepare")  # decided, or voted: nothing to say
            return out
        if b["start_ts"] < self.horizon:
            # a delayed duplicate of a transaction decided long ago: no ballot-0 value
            out.note(role="participant", tx=msg.tx, event="stale prepare refused")
            return out
        writes = {k: (v[0], bool(v[1])) for k, v in b["writes"].items()}
        tx = PartTx(msg.tx, b["coordinator"], b["start_ts"], writes, list(b["reads"]),
                    participants=tuple(b["participants"]), ranges=_spans(b.get("ranges", ())))
        self.txs[tx.id] = tx
        conflicts = self.store.conflicts(
            tx.id, tx.start_ts, list(writes), tx.reads,
            check_committed=b["isolation"] != "read_committed", ranges=tx.ranges)
        if conflicts:
            self._move(out, tx, "prepare conflict")
            out.note(role="participant", tx=tx.id, event="conflict", reason=str(conflicts[0]))
            # forced: after a crash a duplicate PREPARE must not get a second ballot-0 value
            out.log("ABORT", {"tx": tx.id, "start_ts": tx.start_ts}, force=True)
            self._propose(out, tx, ["aborted"])
            tx.writes, tx.reads, tx.ranges = {}, (), ()
            return out
        self.store.lock(tx.id, tx.start_ts, list(writes), tx.reads, tx.ranges)
        self._move(out, tx, "prepare ok")
        # the commit timestamp must exceed every snapshot that read these keys before the lock
        out.send(Message(self.node_id, TSO, TS_REQUEST, tx.id, {"purpose": "prepare"}))
        # a takeover is no mere question (as two-phase commit's STATUS is): it proposes
        # "aborted" for every vote not yet accepted, so it waits for as many round trips as
        # the coordinator's vote timer does (PaxosCoordinator.VOTE_ROUNDS)
        out.timer(("decision", tx.id), self.timing.decision_timeout * PaxosCoordinator.VOTE_ROUNDS)
        return out

    def on_prepare_ts(self, tx_id: str, ts: int) -> Outputs:
        """Locked and timestamped: force PREPARE (with the timestamp), then vote."""
        out = Outputs()
        tx = self.txs.get(tx_id)
        if tx is None or tx.state != PREPARED or tx_id in self.prepare_ts:
            return out  # a duplicate, or too late: this node took over already
        self.prepare_ts[tx_id] = ts
        self._move(out, tx, "voted")
        record = {"tx": tx.id, "coordinator": tx.coordinator, "start_ts": tx.start_ts,
                  "writes": {k: [v, d] for k, (v, d) in tx.writes.items()},
                  "reads": list(tx.reads)}
        if tx.ranges:
            record["ranges"] = [list(r) for r in tx.ranges]
        record["participants"] = list(tx.participants)
        record["prepare_ts"] = ts
        out.log("PREPARE", record, force=self.rules.force_prepare)
        self._propose(out, tx, ["prepared", ts])
        return out

    def on_timer(self, key: tuple) -> Outputs:
        out = Outputs()
        tx = self.txs.get(key[1])
        if key[0] == "decision" and tx is not None and tx.state == PREPARED:
            self._move(out, tx, "decision timeout")
            self._take_over(out, tx)
        return out

    def _take_over(self, out: Outputs, tx: PartTx) -> None:
        self._move(out, tx, "take over")
        self.leader.take_over(out, tx.id, tx.start_ts, tx.coordinator, tx.participants)

    def on_commit(self, msg: Message) -> Outputs:
        out = super().on_commit(msg)
        self.prepare_ts.pop(msg.tx, None)
        self.leader.learned(out, msg.tx, True, msg.body["commit_ts"])
        return out

    def on_abort(self, msg: Message) -> Outputs:
        """Abort as two-phase commit does, with the ABORT record forced (FORCE_ABORT), and
        ack it to the coordinator: the acks let the acceptors forget the transaction."""
        out = super().on_abort(msg)
        self.prepare_ts.pop(msg.tx, None)
        self.leader.learned(out, msg.tx, False, None)
        tx = self.txs.get(msg.tx)  # (None: aborted and forgotten at once, below the horizon)
        if (tx is None or tx.state == ABORTED) and not msg.body.get("presumed"):
            out.send(Message(self.node_id, msg.body.get("coordinator", msg.src), ACK, msg.tx, {}))
        return out

    def on_peer_up(self, peer: Any) -> Outputs:
        return Outputs()  # never parks itself: its leader does (PaxosCoordinator)

    def recover(self, prepared: dict[str, dict[str, Any]],
                finished: dict[str, tuple[str, int]], horizon: int = 0) -> Outputs:
        """Re-lock every prepared-but-undecided transaction and take it over at once."""
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
            if "prepare_ts" in rec:
                self.prepare_ts[tx_id] = rec["prepare_ts"]
            self._move(out, tx, "recover prepared")
            self._take_over(out, tx)
        return out

    def checkpoint(self, ck: dict[str, Any]) -> None:
        """Add what recovery needs to the checkpoint's prepared records."""
        for tx_id in [t for t in ck["prepared"] if t not in self.prepare_ts]:
            del ck["prepared"][tx_id]  # locked but not voted yet: volatile, as in a crash
        for tx_id, rec in ck["prepared"].items():
            tx = self.txs[tx_id]
            rec["participants"] = list(tx.participants)
            if tx_id in self.prepare_ts:
                rec["prepare_ts"] = self.prepare_ts[tx_id]


__all__ = ["ACCEPTOR_TRANSITIONS", "LEADER_TRANSITIONS", "LEADER_ENTRIES",
           "PAXOS_COORDINATOR_TRANSITIONS", "PAXOS_PARTICIPANT_TRANSITIONS", "Acceptor",
           "PaxosCoordinator", "PaxosParticipant", "acceptors_for", "ballot"]
