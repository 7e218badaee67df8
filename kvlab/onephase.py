"""One-phase commit: a transaction with a single participant skips the PREPARE round.

With one participant there is nobody to agree with, so the vote and the decision are the same
act. The coordinator sends ONE_PHASE (the write set, like a PREPARE) and from then on **the
participant decides**: it validates and locks as for a PREPARE, asks the oracle for a commit
timestamp (issued after it locked, so fast reads' floor still holds), applies the writes and
forces a single COMMIT record that carries them. That record is the vote, the decision and the
redo log at once, which is why it is still atomic: before it is durable nothing of the
transaction is anywhere on disk (a crash forgets it whole), after it the commit survives any
crash, and the driver holds back everything the node says until then (kvlab.effects.Outbox), so
nobody reads or hears of the commit before it is safe. Cost, against 2PC for one participant:
two messages instead of four, one forced record instead of three (PREPARE, DECISION, COMMIT).

What that changes for the coordinator: it decides nothing, so it never aborts on a timeout (the
participant may be committing at that moment); it resends ONE_PHASE, which the participant
answers from what it knows (committed: ACK again; aborted: VOTE_NO again; still working: nothing,
the answer follows; never heard of it: it starts on it, which is right because nobody has been
told anything yet). A participant's abort is a decision too, so it is **forced** (ABORT with the
start timestamp and coordinator, as cooperative termination's unilateral abort), and a later
duplicate ONE_PHASE finds it and is refused: otherwise a crash after a "no" could let a
delayed copy commit a transaction its client was told had aborted. The same holds for a request
older than the low watermark (two-phase commit's "stale PREPARE", see kvlab.twopc): refused on
the log, because a watermark known only in memory can be lower after a restart.

A coordinator crash while it waits leaves the outcome to the participant, so its client's handle
is not settled at the crash (2PC's presumed abort would be a guess here). After the restart the
client asks again (``Cluster.restart`` feeds the node a :class:`kvlab.node.Resolve` for each such
handle); the coordinator sends RESOLVE, and a participant that never heard of the transaction
aborts it for good (forced) before answering, so the ONE_PHASE still in the network cannot
commit it afterwards.

A switch: ``Cluster(one_phase=True)`` (off by default so the lessons keep the full 2PC rounds);
with two participants or more, everything is two-phase commit as before.
"""

from __future__ import annotations

from typing import Any

from kvlab.effects import Outputs
from kvlab.messages import ACK, ONE_PHASE, RESOLVE, TS_REQUEST, TSO, VOTE_NO, Message
from kvlab.mvcc import Store
from kvlab.twopc import (
    ABORTED,
    ACTIVE,
    COMMITTED,
    COORDINATOR_TRANSITIONS,
    DELEGATED,
    INIT,
    PARTICIPANT_TRANSITIONS,
    Coordinator,
    CoordTx,
    Participant,
    PartTx,
    _spans,
)

# The coordinator waits for the single participant's answer (DELEGATED, in kvlab.twopc because
# its snapshot holds back garbage collection like any undecided state); the participant holds
# its locks while the oracle gives it a commit timestamp (nothing is durable yet).
LOCKED = "LOCKED"  # participant: validated and locked, waiting for its commit timestamp

ONE_PHASE_COORDINATOR: dict[str, dict[str, str]] = {
    ACTIVE: {"commit one-phase": DELEGATED},
    DELEGATED: {"resend": DELEGATED, "participant committed": COMMITTED,
                "participant aborted": ABORTED},
}
ONE_PHASE_PARTICIPANT: dict[str, dict[str, str]] = {
    INIT: {"one-phase ok": LOCKED, "one-phase conflict": ABORTED,
           "stale request refused": ABORTED},
    LOCKED: {"commit ts": COMMITTED, "ts timeout": ABORTED, "one-phase again": LOCKED},
}
ONE_PHASE_ENTRIES = {"ask after restart": DELEGATED}  # the client asks a restarted coordinator


def _merged(base: dict[str, dict[str, str]],
            extra: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {s: {**base.get(s, {}), **extra.get(s, {})} for s in {**base, **extra}}


COORDINATOR_TRANSITIONS_1PC = _merged(COORDINATOR_TRANSITIONS, ONE_PHASE_COORDINATOR)
PARTICIPANT_TRANSITIONS_1PC = _merged(PARTICIPANT_TRANSITIONS, ONE_PHASE_PARTICIPANT)


class OnePhaseCoordinator(Coordinator):
    """Two-phase commit's coordinator, handing single-participant commits to the participant."""

    TRANSITIONS = COORDINATOR_TRANSITIONS_1PC

    def clone(self) -> OnePhaseCoordinator:
        c = super().clone()
        c.__class__ = OnePhaseCoordinator
        return c

    def start(self, tx: CoordTx, call: int, plan: dict[str, dict[str, Any]]) -> Outputs:
        if len(plan) != 1:
            return super().start(tx, call, plan)
        out = Outputs()
        tx.call = call
        (p, part), = plan.items()
        tx.participants = [p]
        tx.request = part
        self._move(out, tx, "commit one-phase")
        out.send(self._request(tx))
        tx.attempt = 0
        out.timer(("resend", tx.id), self.timing.vote_timeout)
        return out

    def _request(self, tx: CoordTx) -> Message:
        part = tx.request
        assert part is not None
        extra = {"ranges": part["ranges"]} if part.get("ranges") else {}
        return self._msg(tx.participants[0], ONE_PHASE, tx, start_ts=tx.start_ts,
                         isolation=tx.isolation, coordinator=self.node_id,
                         participants=tx.participants, writes=part["writes"],
                         reads=part["reads"], **extra)

    def _ask(self, tx: CoordTx) -> Message:
        """The request again, or (after a restart, when the writes are gone) RESOLVE."""
        if tx.request is not None:
            return self._request(tx)
        return self._msg(tx.participants[0], RESOLVE, tx, start_ts=tx.start_ts,
                         coordinator=self.node_id)

    def resolve(self, call: int, tx_id: str, participant: Any, start_ts: int) -> Outputs:
        """The client asks again after this node restarted: find out from the participant."""
        out = Outputs()
        tx = CoordTx(tx_id, start_ts, "", state=INIT)
        tx.participants, tx.call = [participant], call
        self.txs[tx_id] = tx
        new = ONE_PHASE_ENTRIES["ask after restart"]
        out.note(role="coordinator", tx=tx_id, event="ask after restart", old=INIT, new=new)
        tx.state = new
        self.undecided[tx_id] = tx
        out.send(self._ask(tx))
        out.timer(("resend", tx_id), self.timing.retry_interval)
        return out

    def on_vote(self, msg: Message) -> Outputs:
        tx = self.txs.get(msg.tx)
        if tx is None or tx.state != DELEGATED:
            return super().on_vote(msg)
        if msg.kind != VOTE_NO:
            return Outputs()
        # the client heard it from the participant
        return self._settled(tx, "participant aborted", f"aborted: {msg.src} (the only "
                             f"participant) said no: {msg.body['reason']}")

    def on_ack(self, msg: Message) -> Outputs:
        tx = self.txs.get(msg.tx)
        if tx is None or tx.state != DELEGATED:
            return super().on_ack(msg)
        tx.commit_ts = msg.body["commit_ts"]
        # the client heard it already
        return self._settled(tx, "participant committed", f"committed at ts {tx.commit_ts} "
                             f"(one-phase, decided by {msg.src})")

    def _settled(self, tx: CoordTx, event: str, reason: str) -> Outputs:
        """The participant decided (and settled the client's handle): stop asking it."""
        out = Outputs()
        tx.reason = reason
        out.cancel.append(("resend", tx.id))
        self._move(out, tx, event)
        tx.request = None
        return out

    def on_timer(self, key: tuple) -> Outputs:
        tx = self.txs.get(key[1])
        if tx is None or tx.state != DELEGATED or key[0] != "resend":
            return super().on_timer(key)
        out = Outputs()
        self._move(out, tx, "resend")
        out.send(self._ask(tx))
        tx.attempt += 1
        if tx.attempt < self.timing.max_retries:
            out.timer(("resend", tx.id), self.timing.retry_interval << tx.attempt)
        else:  # park until the participant is reachable (the driver's PeerUp)
            p = tx.participants[0]
            self.parked.setdefault(p, {})[tx.id] = None
            out.watch.append(p)
            out.note(role="coordinator", tx=tx.id, event="parked", waiting_for=[p])
        return out

    def on_peer_up(self, peer: str) -> Outputs:
        out = Outputs()
        parked = self.parked.get(peer, {})
        for tx_id in [t for t in parked if t in self.txs and self.txs[t].state == DELEGATED]:
            del parked[tx_id]
            tx = self.txs[tx_id]
            self._move(out, tx, "resend")
            out.send(self._ask(tx))
            tx.attempt = 0
            out.timer(("resend", tx_id), self.timing.retry_interval)
        return out.merge(super().on_peer_up(peer))


class OnePhaseParticipant(Participant):
    """Two-phase commit's participant that also decides single-participant commits."""

    TRANSITIONS = PARTICIPANT_TRANSITIONS_1PC

    def clone(self, store: Store) -> OnePhaseParticipant:
        p = super().clone(store)
        p.__class__ = OnePhaseParticipant
        return p  # type: ignore[return-value]

    def on_one_phase(self, msg: Message) -> Outputs:
        out = Outputs()
        b = msg.body
        tx = self.txs.get(msg.tx)
        if tx is not None:
            return self._answer(out, tx, msg.src, again=True)
        writes = {k: (v[0], bool(v[1])) for k, v in b["writes"].items()}
        tx = PartTx(msg.tx, b["coordinator"], b["start_ts"], writes, list(b["reads"]),
                    participants=tuple(b["participants"]), ranges=_spans(b.get("ranges", ())))
        self.txs[tx.id] = tx
        if tx.start_ts < self.horizon:
            # Older than the low watermark and unknown: decided long ago, or its coordinator
            # crashed and the watermark moved on. Refused, and (unlike 2PC's refusal) for
            # good, on the log: this "no" is what its client hears.
            return self._abort_1pc(out, tx, "stale request refused",
                                   f"{tx.id} started below the low watermark {self.horizon}")
        conflicts = self.store.conflicts(
            tx.id, tx.start_ts, list(writes), tx.reads,
            check_committed=b["isolation"] != "read_committed", ranges=tx.ranges)
        if conflicts:
            c = conflicts[0]
            return self._abort_1pc(out, tx, "one-phase conflict", str(c),
                                   key=c.key, other=c.other, how=c.how)
        self.store.lock(tx.id, tx.start_ts, list(writes), tx.reads, tx.ranges)
        self._move(out, tx, "one-phase ok")
        # the commit timestamp is issued after the locks are taken (fast reads rely on it)
        out.send(Message(self.node_id, TSO, TS_REQUEST, tx.id, {"purpose": "one-phase"}))
        out.timer(("commit-ts", tx.id), self.timing.ts_timeout)
        return out

    def _answer(self, out: Outputs, tx: PartTx, asker: Any, again: bool) -> Outputs:
        """Tell the coordinator what we decided (a resent ONE_PHASE or a RESOLVE; a record
        recovered from a checkpoint no longer names its coordinator, so answer the asker)."""
        if tx.state == COMMITTED:
            self._move(out, tx, "commit again")
            self._yes(out, tx, asker)
        elif tx.state == ABORTED:
            self._move(out, tx, "late prepare")
            self._no(out, tx.id, asker, "already aborted here")
        elif tx.state == LOCKED and again:
            self._move(out, tx, "one-phase again")  # the answer follows the timestamp
        return out

    def _abort_1pc(self, out: Outputs, tx: PartTx, event: str, reason: str,
                   **why: Any) -> Outputs:
        """A one-phase "no" is the decision: forced, so no later copy of ONE_PHASE commits it."""
        held = tx.state == LOCKED
        self._move(out, tx, event)
        if held:
            self.store.unlock(tx.id, list(tx.writes), tx.reads)
            out.note(role="participant", tx=tx.id, event="released", keys=tuple(tx.writes))
        out.log("ABORT", {"tx": tx.id, "start_ts": tx.start_ts, "coordinator": tx.coordinator},
                force=True)
        self._no(out, tx.id, tx.coordinator, reason, **why)
        tx.writes, tx.reads, tx.ranges = {}, (), ()
        return out

    def _yes(self, out: Outputs, tx: PartTx, to: Any) -> None:
        out.send(Message(self.node_id, to, ACK, tx.id, {"commit_ts": tx.commit_ts}))
        out.outcomes.append((tx.id, True, tx.commit_ts,
                             f"committed at ts {tx.commit_ts} (one-phase, decided by "
                             f"{self.node_id})"))

    def _no(self, out: Outputs, tx_id: str, coordinator: Any, reason: str, **why: Any) -> Outputs:
        """Answer no, to the coordinator and (held with it until durable) to the client: the
        coordinator may be down, and the decision is ours."""
        out.send(Message(self.node_id, coordinator, VOTE_NO, tx_id, {"reason": reason, **why}))
        out.outcomes.append((tx_id, False, None, f"aborted: {self.node_id} (the only "
                                                 f"participant) said no: {reason}"))
        return out

    def on_commit_ts(self, tx_id: str, ts: int) -> Outputs:
        """The oracle's commit timestamp: apply, and force the one record that decides."""
        out = Outputs()
        tx = self.txs.get(tx_id)
        if tx is None or tx.state != LOCKED:
            return out  # late: we gave up on the oracle and aborted
        out.cancel.append(("commit-ts", tx.id))
        writes = {k: [v, d] for k, (v, d) in tx.writes.items()}
        self.store.apply(tx.id, ts, tx.writes)
        self.store.unlock(tx.id, list(tx.writes), tx.reads)
        tx.commit_ts = ts
        self._move(out, tx, "commit ts")
        out.log("COMMIT", {"tx": tx.id, "commit_ts": ts, "start_ts": tx.start_ts,
                           "coordinator": tx.coordinator, "writes": writes},
                force=self.rules.force_commit)
        self._yes(out, tx, tx.coordinator)
        out.note(role="participant", tx=tx.id, event="released", keys=tuple(tx.writes))
        tx.writes, tx.reads, tx.ranges = {}, (), ()
        return out

    def on_timer(self, key: tuple) -> Outputs:
        tx = self.txs.get(key[1])
        if key[0] == "commit-ts" and tx is not None and tx.state == LOCKED:
            return self._abort_1pc(Outputs(), tx, "ts timeout",
                                   "the timestamp oracle did not answer in time")
        return super().on_timer(key)

    def on_resolve(self, msg: Message) -> Outputs:
        """A restarted coordinator's client asks how it ended; if we never heard of it, it
        aborts here and now, for good, so the ONE_PHASE still on its way cannot commit it."""
        out = Outputs()
        b = msg.body
        tx = self.txs.get(msg.tx)
        if tx is not None:
            return self._answer(out, tx, msg.src, again=False)
        if b["start_ts"] < self.horizon:
            # Unknown and that old: refused when it came, never committed (had it committed,
            # its client would have been told then and would not ask; and while the
            # coordinator asks, its snapshot holds the watermark back)
            return self._no(out, msg.tx, msg.src, f"{msg.tx} started below the low watermark")
        tx = PartTx(msg.tx, b["coordinator"], b["start_ts"], {}, ())
        self.txs[tx.id] = tx
        self._move(out, tx, "unilateral abort")
        out.log("ABORT", {"tx": tx.id, "start_ts": tx.start_ts, "coordinator": tx.coordinator},
                force=True)
        return self._no(out, tx.id, tx.coordinator, "the commit never reached it")
