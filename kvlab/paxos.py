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
  it aborts). A restarted coordinator with no BEGIN on record knows no PREPARE ever left;
* the coordinator forces END after the last ack, with (if its own acceptor has no entry of the
  transaction) a ballot-0 PROMISE there, before any LEARNED leaves: see Forgetting.

No DECISION record is written: the acceptors' forced ACCEPT records *are* the decision (any
leader recomputes it from F+1 of them). The coordinator forces END once every participant has
acked the outcome, commit or abort alike, and never before: a coordinator that restarts with a
BEGIN and no END leads the transaction again, and collects the acks itself. A
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

Forgetting (so memory stays flat: once every node is up and the run is quiet, no acceptor
holds an entry of a finished transaction, whatever was crashed, lost or delayed before):

* *When it is safe.* An acceptor's instances are read only by a leader's phase 1, and a leader
  is started only by a participant in doubt, by the coordinator (its vote timer, or its
  restart with a BEGIN and no END), or is one already running. Once the coordinator's END is
  durable none of these can happen again: every participant acked after its COMMIT or ABORT
  record was durable, so none is in doubt again, even after a crash (a delayed PREPARE finds
  the transaction finished, or is refused below the horizon); the END stops the coordinator
  leading it again; each participant's leader retired when its participant learned the
  outcome, and the coordinator's has decided. So an acceptor may drop a transaction's
  instances only on the word of its coordinator that its END is durable (LEARNED, sent after
  it: the Outbox holds it behind the forced END), never on its own.
* *LEARNED is acked and resent.* After the END the coordinator sends LEARNED to the other
  acceptors and resends it, as COMMIT is resent (parked on a peer that is down), until each
  acked; its own acceptor forgets last. That entry (a ballot-0 promise, forced with the END,
  if it had none) is the durable reminder: a coordinator that restarts with an entry of a
  transaction it coordinated and ended forgets it again, LEARNED to the others first.
* *An entry that may outlive its LEARNED asks.* An entry a message makes after its
  transaction's LEARNED came here (a delayed ballot-0 P2A, or an old leader's P1A or P2A,
  whose answer goes to a leader that is gone) gets no LEARNED again. The acceptor cannot tell
  it from a live one, but it can tell that it may be one: its coordinator's LEARNED for a
  transaction that started as late or later came already (``learned_below``), or this node
  restarted since (that knowledge is volatile). Such an entry arms a timer (``ASK_ROUNDS``
  decision timeouts), and so does every entry a restart brings back (its LEARNED record was
  unforced). If the timer fires, the acceptor asks the coordinator (MAY_FORGET, parked on it:
  asked again whenever the failure detector says it is reachable). Every acceptor entry and
  message names the coordinator (ballot 0's node, or the ``coordinator`` field of a
  takeover's P1A and P2A and of ACCEPT and PROMISE records). The coordinator answers LEARNED
  if it is not working on the transaction: every record that says it is (undecided, a leader,
  acks outstanding) is rebuilt by a restart from a BEGIN with no END, or from the checkpoint,
  and an acceptor has an entry only after the BEGIN was durable, so none left means ended.
  Otherwise it answers NOT_YET: the LEARNED after its END, resent
  until acked, will come; the acceptor stops asking, so a transaction blocked by a crashed
  node does not keep a live one busy forever. The coordinator's own acceptor asks it
  directly (no message), and an ended transaction's entry there starts forgetting again.
* A participant that is no acceptor of the transaction holds an entry only for its own
  takeover's promise: no LEARNED goes to it, and it drops the entry when its leader retires,
  or when a restart finds its outcome on record.

Every step is either forced before the next message leaves (END, the reminder) or repeated
until acknowledged, so a crash or a lost message only delays forgetting. The unforced
LEARNED record keeps a replay of the log from reviving the instances; losing it revives them
with their timer, and they ask again.
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
    MAY_FORGET,
    NACK,
    NOT_YET,
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
    IDLE: {"accept": ACCEPTED, "promise": PROMISED, "stale ballot": IDLE,
           "all learned": FORGOTTEN},
    PROMISED: {"accept": ACCEPTED, "promise": PROMISED, "stale ballot": PROMISED,
               "all learned": FORGOTTEN},
    ACCEPTED: {"accept": ACCEPTED, "promise": ACCEPTED, "stale ballot": ACCEPTED,
               "all learned": FORGOTTEN},
    FORGOTTEN: {},
}

# An acceptor's entry normally goes with the LEARNED its coordinator sends after the last ack:
# the votes (three round trips), the decision, the acks, a forced END. If it is still there
# after this many decision timeouts, the acceptor asks the coordinator (see Forgetting).
ASK_ROUNDS = 6

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
    coordinator: Any = None  # whom to ask whether the instances may go (see Forgetting)

    def clone(self) -> AccTx:
        return AccTx(self.id, self.start_ts, self.state, self.promised, dict(self.accepted),
                     self.coordinator)

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, self.state, self.promised,
                           tuple(sorted((str(k), v[0], tuple(v[1]))
                                        for k, v in self.accepted.items())),
                           self.coordinator))


def ask_key(tx_id: str) -> tuple:
    """An acceptor's timer for one transaction's entry: if it fires, the entry outlived the
    LEARNED that should have removed it (lost, or the entry came back after it: a delayed
    message, a replay), so the acceptor asks the coordinator (see Forgetting)."""
    return ("resend", tx_id, "acceptor")


class Acceptor:
    """One node's acceptor: promises and accepts, durably, and answers the ballot's leader."""

    def __init__(self, node_id: Any, timing: Timing | None = None) -> None:
        self.node_id = node_id
        self.timing = timing  # None: no timers (a bare acceptor, as the unit tests make)
        self.txs: dict[str, AccTx] = {}
        self.parked: dict[Any, dict[str, None]] = {}  # coordinator -> entries asking it
        # coordinator -> one past the largest start timestamp of its transactions whose
        # LEARNED came here: a new entry below it may be a late message's, after LEARNED
        self.learned_below: dict[Any, int] = {}
        self.restarted = False  # what the LEARNED before a crash said is gone: any may be

    def clone(self) -> Acceptor:
        a = Acceptor(self.node_id, self.timing)
        a.txs = {k: t.clone() for k, t in self.txs.items()}
        a.parked = {c: dict(t) for c, t in self.parked.items()}
        a.learned_below, a.restarted = dict(self.learned_below), self.restarted
        return a

    def fingerprint(self) -> int:
        parked = tuple(sorted((str(c), tuple(sorted(t))) for c, t in self.parked.items() if t))
        rest = (parked, tuple(sorted((str(c), b) for c, b in self.learned_below.items())),
                self.restarted)
        return (sum([t.fingerprint() for t in self.txs.values()]) + mixed_hash(rest)) & _MASK

    def _tx(self, out: Outputs, tx_id: str, start_ts: int, coordinator: Any,
            ask: bool = True) -> AccTx:
        """The entry of ``tx_id``, made if there is none. A new one made by a message
        (``ask``) that may have come after the transaction's LEARNED arms its timer (any
        other gets its LEARNED: the coordinator resends it until this acceptor acks)."""
        t = self.txs.get(tx_id)
        if t is None:
            t = self.txs[tx_id] = AccTx(tx_id, start_ts, coordinator=coordinator)
            if ask and coordinator is not None and self.timing is not None and (
                    self.restarted or start_ts < self.learned_below.get(coordinator, 0)):
                out.timer(ask_key(tx_id), self.timing.decision_timeout * ASK_ROUNDS)
        elif t.coordinator is None:
            t.coordinator = coordinator
        return t

    def _move(self, out: Outputs, t: AccTx, event: str) -> None:
        new = advance(ACCEPTOR_TRANSITIONS, t.state, event)
        out.note(role="acceptor", tx=t.id, event=event, old=t.state, new=new)
        t.state = new

    def _record(self, t: AccTx, bal: Ballot, **more: Any) -> dict[str, Any]:
        r = {"tx": t.id, "start_ts": t.start_ts, "ballot": list(bal), **more}
        if t.coordinator is not None:  # whom to ask after a restart (see Forgetting)
            r["coordinator"] = t.coordinator
        return r

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
        bal = ballot(b["ballot"])
        # ballot 0 is the coordinator's; a takeover leader names the coordinator
        t = self._tx(out, msg.tx, b["start_ts"],
                     b.get("coordinator", bal[1] if bal[0] == 0 else None))
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
            out.log("ACCEPT", self._record(t, bal, values=new), force=True)
        out.send(Message(self.node_id, bal[1], P2B, t.id,
                         {"ballot": list(bal), "values": answer}))
        return out

    def on_p1a(self, msg: Message) -> Outputs:
        """Promise a higher ballot (forced: a promise forgotten in a crash could let an older
        leader's value be chosen behind the new one) and report every value accepted."""
        out = Outputs()
        b = msg.body
        t = self._tx(out, msg.tx, b["start_ts"], b.get("coordinator"))
        bal = ballot(b["ballot"])
        if bal < t.promised:
            return self._nack(out, t, bal)
        self.promise(out, t.id, t.start_ts, bal)
        out.send(Message(self.node_id, bal[1], P1B, t.id,
                         {"ballot": list(bal),
                          "accepted": [[rm, list(ab), v] for rm, (ab, v) in
                                       sorted(t.accepted.items(), key=lambda kv: str(kv[0]))]}))
        return out

    def promise(self, out: Outputs, tx_id: str, start_ts: int, bal: Ballot,
                coordinator: Any = None) -> None:
        """Promise ``bal`` (forced). A leader also promises its own ballot here before phase
        1, acceptor of the transaction or not: after a crash this record makes it pick a
        higher one, so no ballot ever gets two leaders (two values) across incarnations."""
        t = self._tx(out, tx_id, start_ts, coordinator, ask=False)
        if bal > t.promised:
            t.promised = bal
            out.log("PROMISE", self._record(t, bal), force=True)
        self._move(out, t, "promise")

    def on_learned(self, msg: Message) -> Outputs:
        """The coordinator says every participant has the outcome durably: forget (see the
        module docstring, Forgetting), and ack, so that it stops resending."""
        out = Outputs()
        self.forget(out, msg.tx, msg.src, msg.body.get("start_ts"))
        out.send(Message(self.node_id, msg.src, ACK, msg.tx, {"forgot": True}))
        return out

    def on_not_yet(self, msg: Message) -> Outputs:
        """The coordinator, asked, is still at work on the transaction, and will send LEARNED
        when it is done (resent until acked): stop asking."""
        out = Outputs()
        if msg.tx in self.txs:
            self._stop_asking(out, msg.tx)
        return out

    def forget(self, out: Outputs, tx_id: str, coordinator: Any = None,
               start_ts: int | None = None) -> None:
        """Drop the instances. The unforced LEARNED record keeps a replay of the log from
        bringing them back; a crash that loses it brings them back with their timer, and the
        coordinator is asked again."""
        t = self.txs.get(tx_id)
        if t is not None:
            coordinator, start_ts = t.coordinator or coordinator, t.start_ts
        if coordinator is not None and start_ts is not None:
            self.learned_below[coordinator] = max(self.learned_below.get(coordinator, 0),
                                                  start_ts + 1)
        if t is None:
            return
        self._move(out, t, "all learned")
        del self.txs[tx_id]
        self._stop_asking(out, tx_id)
        out.log("LEARNED", {"tx": tx_id})

    def _stop_asking(self, out: Outputs, tx_id: str) -> None:
        out.cancel.append(ask_key(tx_id))
        for waiting in self.parked.values():
            waiting.pop(tx_id, None)

    def ask(self, tx_id: str) -> Outputs:
        """The entry's timer fired: ask its coordinator whether it may go (it answers LEARNED,
        or NOT_YET), and park on it: the failure detector wakes this acceptor to ask again
        while no answer came (at once if the coordinator is up, once it is back if not)."""
        out = Outputs()
        t = self.txs.get(tx_id)
        if t is None or t.coordinator is None:
            return out
        out.send(Message(self.node_id, t.coordinator, MAY_FORGET, t.id,
                         {"start_ts": t.start_ts}))
        self.parked.setdefault(t.coordinator, {})[t.id] = None
        out.watch.append(t.coordinator)
        return out

    def on_peer_up(self, peer: Any) -> Outputs:
        """A coordinator it parked on is reachable and has not answered: ask it again."""
        out = Outputs()
        for tx_id in self.parked.pop(peer, ()):
            out.merge(self.ask(tx_id))
        return out

    def recover(self, records: list[dict[str, Any]]) -> None:
        """Rebuild promises and accepted values from ACCEPT and PROMISE records, in order
        (and drop what a LEARNED record says every participant knows)."""
        self.restarted = True
        for r in records:
            if "ballot" not in r:  # LEARNED
                self.txs.pop(r["tx"], None)
                continue
            bal = ballot(r["ballot"])
            t = self.txs.get(r["tx"])
            if t is None:
                t = self.txs[r["tx"]] = AccTx(r["tx"], r["start_ts"])
            if t.coordinator is None:  # (ballot 0 is the coordinator's)
                t.coordinator = r.get("coordinator", bal[1] if bal[0] == 0 else None)
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
                       [[rm, list(b), v] for rm, (b, v) in t.accepted.items()], t.coordinator]
                for t in self.txs.values()}

    def load(self, data: Any) -> None:
        try:
            for tx_id, (start_ts, promised, accepted, *coordinator) in data.items():
                t = self.txs.get(tx_id)
                if t is None:
                    t = self.txs[tx_id] = AccTx(tx_id, int(start_ts))
                t.promised = ballot(promised)
                t.accepted = {rm: (ballot(b), list(v)) for rm, b, v in accepted}
                t.state = ACCEPTED if t.accepted else PROMISED
                t.coordinator = coordinator[0] if coordinator else None
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
class Unacked:
    """An outcome this coordinator decided by leading its transaction again (after a restart)
    or an abort, whose participants have not all acked it: until every one has (after its
    forced COMMIT or ABORT record), one of them may still be in doubt and lead a ballot, so
    the acceptors must keep the instances. (A commit decided by ballot 0 waits for its acks
    as two-phase commit's COMMITTING.)"""

    id: str
    start_ts: int  # resent with ABORT: a participant that never heard of the transaction
    # remembers it until the horizon passes it, and refuses its delayed PREPARE
    participants: tuple
    commit_ts: int | None = None  # None: aborted
    acked: dict[Any, None] = field(default_factory=dict)
    attempt: int = 0

    def clone(self) -> Unacked:
        return Unacked(self.id, self.start_ts, self.participants, self.commit_ts,
                       dict(self.acked), self.attempt)

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, self.participants, self.commit_ts,
                           tuple(sorted(map(str, self.acked))), self.attempt))


@dataclass(slots=True)
class Forgetting:
    """A finished transaction (END durable) whose other acceptors have not all acked
    LEARNED. This node's own acceptor keeps its entry until they have: the entry is the
    durable reminder that makes a restarted coordinator send LEARNED again."""

    id: str
    start_ts: int  # sent with LEARNED (see Acceptor.learned_below)
    waiting: dict[Any, None]  # acceptors that have not acked LEARNED
    attempt: int = 0

    def clone(self) -> Forgetting:
        return Forgetting(self.id, self.start_ts, dict(self.waiting), self.attempt)

    def fingerprint(self) -> int:
        return mixed_hash((self.id, self.start_ts, tuple(sorted(map(str, self.waiting))),
                           self.attempt))


class PaxosCoordinator(Coordinator):
    """Two-phase commit's coordinator as Paxos Commit's ballot-0 leader, plus this node's
    acceptor and every takeover it leads (a node has one leader per transaction, so that
    its ballots are unique whichever role started it)."""

    TRANSITIONS = PAXOS_COORDINATOR_TRANSITIONS  # two-phase commit's bookkeeping, this table
    END_WHEN_ACKED = False  # END is forced after the last ack, here (_all_acked)
    # a vote is three round trips away, not one: PREPARE, the prepare timestamp's, and the
    # acceptors' P2A/P2B (each after a forced record). Taking over sooner proposes "aborted"
    # for votes still on their way: with a tight vote_timeout nothing would ever commit.
    VOTE_ROUNDS = 3

    def __init__(self, node_id: Any, timing: Timing, rules: Rules, nodes: list[Any],
                 f: int) -> None:
        super().__init__(node_id, timing, rules)
        self.nodes, self.f = nodes, f
        self.acceptor = Acceptor(node_id, timing)
        self.leaders: dict[str, LeadTx] = {}
        self.lead_parked: dict[Any, dict[str, None]] = {}  # acceptor -> leaders waiting
        self.unacked: dict[str, Unacked] = {}  # decided here (see Unacked), not all acked
        self.forgetting: dict[str, Forgetting] = {}  # ended, LEARNED not acked by all

    def clone(self) -> PaxosCoordinator:
        c = Coordinator.clone(self)
        c.__class__ = PaxosCoordinator
        c.nodes, c.f = self.nodes, self.f
        c.acceptor = self.acceptor.clone()
        c.leaders = {k: t.clone() for k, t in self.leaders.items()}
        c.lead_parked = {p: dict(t) for p, t in self.lead_parked.items()}
        c.unacked = {k: t.clone() for k, t in self.unacked.items()}
        c.forgetting = {k: t.clone() for k, t in self.forgetting.items()}
        return c  # type: ignore[return-value]

    def fingerprint(self) -> tuple:
        return (*super().fingerprint(), self.acceptor.fingerprint(),
                sum([t.fingerprint() for t in self.leaders.values()]) & _MASK,
                tuple(sorted((str(p), tuple(sorted(t))) for p, t in self.lead_parked.items()
                             if t)),
                sum([t.fingerprint() for t in self.unacked.values()]) & _MASK,
                sum([t.fingerprint() for t in self.forgetting.values()]) & _MASK)

    def on_ack(self, msg: Message) -> Outputs:
        """Two-phase commit's acks, of a commit (its COMMIT record is durable) or, here, of an
        abort (its ABORT record is): once every participant acked, no leader can ever ask
        about the transaction again, so the acceptors may forget it. An acceptor acks
        LEARNED too (``forgot``)."""
        if msg.body.get("forgot"):
            return self._forgot(msg.src, msg.tx)
        ut = self.unacked.get(msg.tx)
        if ut is not None:
            out = Outputs()
            if msg.src in ut.participants and msg.src not in ut.acked:
                ut.acked[msg.src] = None
                if len(ut.acked) == len(ut.participants):
                    del self.unacked[ut.id]
                    out.cancel.append(("resend", ut.id))
                    self._all_acked(out, ut.id, ut.start_ts)
            return out
        tx = self.txs.get(msg.tx)
        was = tx.state if tx is not None else None
        out = super().on_ack(msg)
        if tx is not None and was == COMMITTING and tx.state == COMMITTED:
            self._all_acked(out, tx.id, tx.start_ts)
        return out

    def _all_acked(self, out: Outputs, tx_id: str, start_ts: int) -> None:
        """Every participant has the outcome durably: force END (this node does not lead the
        transaction again after a restart), then tell the acceptors to forget it."""
        out.log("END", {"tx": tx_id}, force=True)
        self._forget(out, tx_id, start_ts)

    def _forget(self, out: Outputs, tx_id: str, start_ts: int) -> None:
        """Send LEARNED to the other acceptors, resending until each acked; this node's own
        acceptor forgets last (see Forgetting)."""
        if tx_id in self.forgetting:
            return
        others = [a for a in acceptors_for(self.node_id, self.nodes, self.f)
                  if a != self.node_id]
        if not others:  # F = 0: this node is the only acceptor
            self.acceptor.forget(out, tx_id)
            return
        # the reminder: this node's own entry (a ballot-0 promise, if it had none), durable
        # before any LEARNED leaves (a restart finds it, and sends LEARNED again)
        self.acceptor.promise(out, tx_id, start_ts, (0, self.node_id), self.node_id)
        self.forgetting[tx_id] = Forgetting(tx_id, start_ts, dict.fromkeys(others))
        self._send_learned(out, tx_id, start_ts, others)
        out.timer(("resend", tx_id, "learned"), self.timing.retry_interval)

    def _send_learned(self, out: Outputs, tx_id: str, start_ts: int, to: Any) -> None:
        for a in to:
            out.send(Message(self.node_id, a, LEARNED, tx_id, {"start_ts": start_ts}))

    def _forgot(self, acceptor: Any, tx_id: str, out: Outputs | None = None) -> Outputs:
        """An acceptor acked LEARNED; after the last one, this node's own entry goes too."""
        out = Outputs() if out is None else out
        ft = self.forgetting.get(tx_id)
        if ft is None:
            return out
        ft.waiting.pop(acceptor, None)
        if not ft.waiting:
            del self.forgetting[tx_id]
            out.cancel.append(("resend", tx_id, "learned"))
            for waiting in self.parked.values():
                waiting.pop(tx_id, None)
            self.acceptor.forget(out, tx_id)
        return out

    def _unfinished(self, tx_id: str) -> bool:
        """Whether this node, the coordinator of ``tx_id``, still works on it: an entry at an
        acceptor exists only once BEGIN was durable here, and a restart rebuilds all of these
        from a BEGIN with no END (or from the checkpoint), so not unfinished means ended:
        every participant acked (see Forgetting)."""
        tx = self.txs.get(tx_id)
        return (tx_id in self.leaders or tx_id in self.unacked
                or (tx is not None and tx.state not in (COMMITTED, ABORTED)))

    def on_may_forget(self, msg: Message) -> Outputs:
        """An acceptor whose entry may have outlived LEARNED asks whether it may forget it."""
        out = Outputs()
        if self._unfinished(msg.tx):  # LEARNED follows the END, resent until acked
            out.send(Message(self.node_id, msg.src, NOT_YET, msg.tx))
        else:  # ended: no leader can need the instances again
            self._send_learned(out, msg.tx, msg.body["start_ts"], [msg.src])
        return out

    def _await_acks(self, out: Outputs, tx_id: str, start_ts: int, participants: Any,
                    commit_ts: int | None) -> None:
        """The outcome is decided and sent: collect the participants' acks, resending."""
        if tx_id not in self.unacked:
            self.unacked[tx_id] = Unacked(tx_id, start_ts, tuple(participants), commit_ts)
            out.timer(("resend", tx_id), self.timing.retry_interval)

    def _resend_outcome(self, out: Outputs, ut: Unacked, to: Any) -> None:
        for p in to:
            out.send(self._decision(p, ut.id, ut.start_ts, ut.commit_ts is not None,
                                    ut.commit_ts, self.node_id))

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
        self.acceptor.promise(out, lt.id, lt.start_ts, lt.ballot, lt.coordinator)
        self._send_phase(out, lt, lt.acceptors)
        out.timer(("lead", lt.id), self.timing.retry_interval << lt.attempt)

    def _send_phase(self, out: Outputs, lt: LeadTx, to: Any) -> None:
        """The current ballot's current phase, to ``to``: P1A, or P2A with the proposal that
        this ballot's phase-1 majority gave (resending it in the same ballot is safe)."""
        for a in to:
            if lt.state == PHASE1:
                out.send(Message(self.node_id, a, P1A, lt.id,
                                 {"ballot": list(lt.ballot), "start_ts": lt.start_ts,
                                  "coordinator": lt.coordinator}))
            elif lt.state == PHASE2 and lt.proposal:
                out.send(Message(self.node_id, a, P2A, lt.id,
                                 {"ballot": list(lt.ballot), "values": lt.proposal,
                                  "start_ts": lt.start_ts, "coordinator": lt.coordinator}))

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
            if lt.coordinator == self.node_id:
                # this node restarted and led its own transaction again from BEGIN: it
                # collects the acks (and then ends it) as after a decision of its own
                self._await_acks(out, lt.id, lt.start_ts, lt.participants, ts)
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
        # no END until every participant acked: a crash before that leads it again from
        # BEGIN after the restart, and the acks are collected then
        if commit:
            tx.commit_ts = ts
            self._move(out, tx, "decided commit")
            tx.attempt = 0
            out.timer(("resend", tx.id), self.timing.retry_interval)
        else:
            self._move(out, tx, "decided abort")
            self._await_acks(out, tx.id, tx.start_ts, tx.participants, None)
        for p in tx.participants:
            out.send(self._decision(p, tx.id, tx.start_ts, commit, ts, self.node_id))
        if tx.call is not None:
            out.reply(tx.call, commit)
        return True

    def _retire(self, out: Outputs, lt: LeadTx) -> None:
        self.leaders.pop(lt.id, None)
        out.cancel.append(("lead", lt.id))
        self._unpark(lt.id)
        if self.node_id not in lt.acceptors:
            # a participant that is no acceptor of the transaction: its entry holds only its
            # own ballot's promise, which it needs no more (it never leads the transaction
            # again: its outcome is logged, before this LEARNED record), and no LEARNED
            # comes here
            self.acceptor.forget(out, lt.id)

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
        if key == ask_key(tx_id):
            return self._ask_timer(tx_id)
        if key == ("resend", tx_id, "learned"):
            return self._learned_timer(tx_id)
        if kind == "resend" and tx_id in self.unacked:
            return self._unacked_timer(tx_id)
        return super().on_timer(key)

    def _unacked_timer(self, tx_id: str) -> Outputs:
        """Resend the outcome to the participants that did not ack, as COMMIT is resent;
        after ``max_retries``, park on them until the failure detector sees them up."""
        out = Outputs()
        ut = self.unacked[tx_id]
        waiting = [p for p in ut.participants if p not in ut.acked]
        self._resend_outcome(out, ut, waiting)
        self._retry(out, ut, ("resend", ut.id), waiting)
        return out

    def _learned_timer(self, tx_id: str) -> Outputs:
        """Resend LEARNED to the acceptors that did not ack it, the same way."""
        out = Outputs()
        ft = self.forgetting.get(tx_id)
        if ft is not None:
            self._send_learned(out, tx_id, ft.start_ts, list(ft.waiting))
            self._retry(out, ft, ("resend", ft.id, "learned"), list(ft.waiting))
        return out

    def _retry(self, out: Outputs, rec: Unacked | Forgetting, key: tuple,
               waiting: list[Any]) -> None:
        rec.attempt += 1
        if rec.attempt < self.timing.max_retries:
            out.timer(key, self.timing.retry_interval << rec.attempt)
        else:  # not on itself: its own participant's ack is on its way (see _lead_timer)
            for p in waiting:
                if p != self.node_id:
                    self.parked.setdefault(p, {})[rec.id] = None
                    out.watch.append(p)

    def _ask_timer(self, tx_id: str) -> Outputs:
        """This node's acceptor entry outlived its LEARNED (see Acceptor.ask). Its own
        transaction's entry needs no message: ended, and not being forgotten already (a
        restart, or a delayed message after LEARNED), it starts forgetting again."""
        t = self.acceptor.txs.get(tx_id)
        if t is None or t.coordinator != self.node_id:
            return self.acceptor.ask(tx_id)
        out = Outputs()
        if not self._unfinished(tx_id):
            self._forget(out, tx_id, t.start_ts)
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
        parked = self.parked.pop(peer, {})
        ours = [t for t in parked if t in self.unacked or t in self.forgetting]
        self.parked[peer] = {t: None for t in parked if t not in ours}
        out = super().on_peer_up(peer)  # two-phase commit's (COMMITTING): the rest
        for tx_id in ours:
            if tx_id in self.unacked:
                ut = self.unacked[tx_id]
                if peer not in ut.acked:
                    self._resend_outcome(out, ut, [peer])
                    ut.attempt = 0
                    out.timer(("resend", ut.id), self.timing.retry_interval)
            else:
                ft = self.forgetting[tx_id]
                if peer in ft.waiting:
                    self._send_learned(out, tx_id, ft.start_ts, [peer])
                    ft.attempt = 0
                    out.timer(("resend", tx_id, "learned"), self.timing.retry_interval)
        out.merge(self.acceptor.on_peer_up(peer))
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
        for ut in self.unacked.values():  # led again after a restart, the acks collected then
            out.setdefault(ut.id, {"start_ts": ut.start_ts, "participants": list(ut.participants)})
        return out

    def recover(self, decided: dict[str, dict[str, Any]]) -> Outputs:
        """Two-phase commit's recovery (for a checkpoint's commits still collecting acks),
        and every acceptor entry the log brought back asks again, as a new one does: its
        LEARNED may have been lost, or its LEARNED record (see Forgetting)."""
        out = super().recover(decided)
        for t in self.acceptor.txs.values():
            if t.coordinator is not None and \
                    self.node_id in acceptors_for(t.coordinator, self.nodes, self.f):
                out.timer(ask_key(t.id), self.timing.decision_timeout * ASK_ROUNDS)
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
        acceptor = self.leader.acceptor
        for tx_id, (status, start_ts) in finished.items():
            tx = self.txs[tx_id] = PartTx(tx_id, "", start_ts, {}, (), state=status)
            self._finished(tx)
            t = acceptor.txs.get(tx_id)
            if t is not None and t.coordinator is not None and \
                    self.node_id not in acceptors_for(t.coordinator, self.nodes, self.f):
                acceptor.forget(out, tx_id)  # its leader's promise, back from the log
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
