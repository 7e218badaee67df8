"""2PC as sans-I/O state machines: NodeCore driven with hand-made messages, no network.

Every output is checked against kvlab.twopc's transition tables (``Checked.feed``), and the
state notes of each transaction must form a connected path (each note starts where the
previous one ended).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import NODES, bad_transitions

from kvlab.effects import Outputs
from kvlab.errors import ProtocolError, TransactionClosed, TransactionNotFound
from kvlab.messages import (
    ABORT,
    ACK,
    COMMIT,
    PREPARE,
    STATUS,
    TS_REPLY,
    TS_REQUEST,
    TSO,
    VOTE_NO,
    VOTE_YES,
    Message,
)
from kvlab.node import (
    Begin,
    Commit,
    Deliver,
    Fire,
    Get,
    NodeConfig,
    NodeCore,
    ReadResult,
    Recover,
    Rollback,
    Write,
    owner_of,
)
from kvlab.twopc import (
    ABORTED,
    ACTIVE,
    AWAIT_TS,
    COMMITTED,
    COMMITTING,
    COORDINATOR_STATES,
    COORDINATOR_TRANSITIONS,
    IN_DOUBT,
    PARTICIPANT_STATES,
    PARTICIPANT_TRANSITIONS,
    PREPARED,
    PREPARING,
    Timing,
    advance,
)
from kvlab.wal import LogRecord


class Checked:
    """A NodeCore whose every output is validated against the 2PC tables."""

    def __init__(self, node_id: str = "n2", placement: str = "all") -> None:
        self.core = NodeCore(node_id, NodeConfig(list(NODES), placement, Timing()))
        self.last: dict[tuple[str, str], str | None] = {}
        self.notes: list[dict[str, Any]] = []

    def feed(self, inp: Any) -> Outputs:
        out = self.core.handle(inp)
        assert bad_transitions(out.notes) == []
        for n in out.notes:
            if "new" in n and n.get("role") in ("coordinator", "participant"):
                key = (n["role"], n["tx"])
                if key in self.last:
                    assert n["old"] == self.last[key], f"state path broken: {n}"
                self.last[key] = n["new"]
        self.notes += out.notes
        return out

    def msg(self, src: str, kind: str, tx: str | None, **body: Any) -> Outputs:
        return self.feed(Deliver(Message(src, self.core.id, kind, tx, body)))


def prepare_body(start_ts: int, writes: dict[str, Any], coordinator: str = "n1",
                 reads: list[str] | None = None, isolation: str = "snapshot") -> dict[str, Any]:
    w = {k: [None, True] if v is None else [v, False] for k, v in writes.items()}
    return {"start_ts": start_ts, "isolation": isolation, "coordinator": coordinator,
            "participants": list(NODES), "writes": w, "reads": reads or []}


def kinds(out: Outputs) -> list[tuple[str, str, str | None]]:
    return [(m.kind, m.dst, m.tx) for m in out.messages]


def transitions(out: Outputs) -> list[tuple[str, str | None, str, str]]:
    return [(n["role"], n["old"], n["event"], n["new"]) for n in out.notes if "new" in n]


# -- participant ------------------------------------------------------------------------------
def test_prepare_forces_a_prepare_record_then_votes_yes():
    p = Checked("n2")
    out = p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1, "y": None}))
    assert [r.type for r in out.records] == ["PREPARE"]
    rec = out.records[0].data
    assert rec["tx"] == "T5" and rec["coordinator"] == "n1" and rec["start_ts"] == 5
    assert rec["writes"] == {"x": [1, False], "y": [None, True]}
    assert out.force is True  # the vote may not leave before the record is durable
    assert kinds(out) == [(VOTE_YES, "n1", "T5")]
    assert out.messages[0].src == "n2"
    assert [k for k, _ in out.timers] == [("decision", "T5")]
    assert transitions(out) == [("participant", "INIT", "prepare ok", PREPARED)]
    assert p.core.store.write_locks["x"].tx == "T5"
    assert p.core.store.write_locks["y"].tx == "T5"
    assert p.core.participant.txs["T5"].state == PREPARED


def test_prepare_meeting_a_prepared_lock_votes_no_with_the_reason():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    out = p.msg("n3", PREPARE, "T6", **prepare_body(6, {"x": 2, "z": 3}, coordinator="n3"))
    assert kinds(out) == [(VOTE_NO, "n3", "T6")]
    body = out.messages[0].body
    assert body["key"] == "x" and body["other"] == "T5" and body["how"] == "locked"
    assert "'x'" in body["reason"] and "T5" in body["reason"]
    assert out.records == [] and out.force is False and out.timers == []
    assert transitions(out) == [("participant", "INIT", "prepare conflict", ABORTED)]
    # the loser took no locks, the winner still holds its own
    assert p.core.store.write_locks["x"].tx == "T5"
    assert "z" not in p.core.store.write_locks


def test_prepare_meeting_a_newer_committed_version_votes_no_first_committer_wins():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    p.msg("n1", COMMIT, "T5", commit_ts=9)
    out = p.msg("n3", PREPARE, "T7", **prepare_body(7, {"x": 2}, coordinator="n3"))
    assert kinds(out) == [(VOTE_NO, "n3", "T7")]
    body = out.messages[0].body
    assert (body["key"], body["other"], body["how"]) == ("x", "T5", "committed")
    assert "first committer wins" in body["reason"]
    # a transaction that started after T5 committed does not conflict
    out = p.msg("n3", PREPARE, "T10", **prepare_body(10, {"x": 3}, coordinator="n3"))
    assert kinds(out) == [(VOTE_YES, "n3", "T10")]


def test_commit_forces_a_commit_record_applies_and_acks():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": [1, 2], "gone": None}))
    out = p.msg("n1", COMMIT, "T5", commit_ts=9)
    assert [(r.type, r.data) for r in out.records] == [("COMMIT", {"tx": "T5", "commit_ts": 9})]
    assert out.force is True  # the ack may not leave before COMMITTED is durable
    assert kinds(out) == [(ACK, "n1", "T5")]
    assert ("decision", "T5") in out.cancel
    assert transitions(out) == [("participant", PREPARED, "commit", COMMITTED)]
    store = p.core.store
    assert store.write_locks == {}
    assert store.visible("x", 8) is None
    v = store.visible("x", 9)
    assert (v.value, v.writer, v.commit_ts) == ([1, 2], "T5", 9)
    assert store.visible("gone", 9).deleted


def test_duplicate_commit_is_acked_again_without_reapplying():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    p.msg("n1", COMMIT, "T5", commit_ts=9)
    out = p.msg("n1", COMMIT, "T5", commit_ts=9)
    assert kinds(out) == [(ACK, "n1", "T5")]
    assert out.records == []  # no second record; the driver holds the ack while COMMIT is
    # not durable (kvlab.effects.Outbox, tested in test_outbox.py)
    assert transitions(out) == [("participant", COMMITTED, "commit again", COMMITTED)]
    assert len(p.core.store.chains["x"]) == 1


def test_commit_for_a_forgotten_transaction_is_acked():
    # after a checkpoint a participant forgets committed transactions; a resent COMMIT is acked
    p = Checked("n2")
    out = p.msg("n1", COMMIT, "T5", commit_ts=9)
    assert kinds(out) == [(ACK, "n1", "T5")] and out.records == []
    assert p.core.store.version_count() == 0


def test_abort_releases_locks_with_an_unforced_record_and_no_ack():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    out = p.msg("n1", ABORT, "T5")
    assert [r.type for r in out.records] == ["ABORT"]
    assert out.force is False  # presumed abort: aborts are never forced
    assert out.messages == []  # ...and never acked
    assert transitions(out) == [("participant", PREPARED, "abort", ABORTED)]
    assert p.core.store.write_locks == {}
    assert p.core.store.version_count() == 0
    out = p.msg("n3", PREPARE, "T6", **prepare_body(6, {"x": 2}, coordinator="n3"))
    assert kinds(out) == [(VOTE_YES, "n3", "T6")]


def test_abort_before_prepare_then_late_prepare_votes_no():
    p = Checked("n2")
    out = p.msg("n1", ABORT, "T5")
    assert transitions(out) == [("participant", "INIT", "abort", ABORTED)]
    assert out.messages == [] and out.records == []
    out = p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    assert kinds(out) == [(VOTE_NO, "n1", "T5")]
    assert "aborted" in out.messages[0].body["reason"]
    assert out.records == []
    assert transitions(out) == [("participant", ABORTED, "late prepare", ABORTED)]
    assert p.core.store.write_locks == {}
    out = p.msg("n1", ABORT, "T5")
    assert transitions(out) == [("participant", ABORTED, "abort again", ABORTED)]


def test_duplicate_prepare_votes_yes_again_without_a_second_record():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    out = p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    assert kinds(out) == [(VOTE_YES, "n1", "T5")]
    assert out.records == []  # the driver holds this vote while PREPARE is not durable
    assert transitions(out) == [("participant", PREPARED, "prepare again", PREPARED)]


def test_commit_after_abort_and_abort_after_commit_are_protocol_errors():
    p = Checked("n2")
    p.msg("n1", ABORT, "T5")
    with pytest.raises(ProtocolError, match="T5"):
        p.msg("n1", COMMIT, "T5", commit_ts=9)
    q = Checked("n2")
    q.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    q.msg("n1", COMMIT, "T5", commit_ts=9)
    with pytest.raises(ProtocolError, match="T5"):
        q.msg("n1", ABORT, "T5")


def test_prepared_participant_times_out_into_in_doubt_and_asks_the_coordinator():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    out = p.feed(Fire(("decision", "T5")))
    assert transitions(out) == [("participant", PREPARED, "decision timeout", IN_DOUBT)]
    assert kinds(out) == [(STATUS, "n1", "T5")]
    asks = 1
    retries = Timing().max_retries
    for _ in range(retries + 2):
        out = p.feed(Fire(("status", "T5")))
        if out.messages:
            asks += 1
            assert kinds(out) == [(STATUS, "n1", "T5")]
        if not out.timers:
            break
    assert asks == retries + 1
    assert any(n.get("event") == "parked" for n in out.notes)
    # the lock is still held while in doubt; the answer resolves it
    assert p.core.store.write_locks["x"].tx == "T5"
    out = p.msg("n1", COMMIT, "T5", commit_ts=9)
    assert transitions(out) == [("participant", IN_DOUBT, "commit", COMMITTED)]
    assert ("status", "T5") in out.cancel


def test_stale_participant_timers_do_nothing():
    p = Checked("n2")
    p.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": 1}))
    p.msg("n1", COMMIT, "T5", commit_ts=9)
    assert p.feed(Fire(("decision", "T5"))) == Outputs()
    assert p.feed(Fire(("status", "T5"))) == Outputs()
    assert p.feed(Fire(("decision", "T99"))) == Outputs()


# -- coordinator ------------------------------------------------------------------------------
def begin(c: Checked, call: int, ts: int) -> str:
    out = c.feed(Begin(call))
    assert [(m.kind, m.dst) for m in out.messages] == [(TS_REQUEST, TSO)]
    out = c.feed(Deliver(Message(TSO, c.core.id, TS_REPLY, None,
                                 {"purpose": "begin", "call": call, "ts": ts})))
    [reply] = out.replies
    assert reply.call == call and reply.value == (f"T{ts}", ts)
    assert transitions(out) == [("coordinator", "INIT", "begin", ACTIVE)]
    return reply.value[0]


def start_commit(c: Checked, ts: int = 5, call: int = 2, **writes: Any) -> tuple[str, Outputs]:
    tx = begin(c, 1, ts)
    for k, v in writes.items():
        c.feed(Write(tx, k, v, v is None))
    return tx, c.feed(Commit(call, tx))


def test_coordinator_happy_path():
    c = Checked("n1")
    tx, out = start_commit(c, x=1)
    assert kinds(out) == [(PREPARE, n, tx) for n in NODES]
    assert all(m.body["writes"] == {"x": [1, False]} and m.body["start_ts"] == 5
               and m.body["coordinator"] == "n1" for m in out.messages)
    assert out.records == []  # presumed abort: nothing logged before the decision
    assert [k for k, _ in out.timers] == [("vote", tx)]
    assert transitions(out) == [("coordinator", ACTIVE, "commit", PREPARING)]
    assert c.msg("n1", VOTE_YES, tx).messages == []
    assert c.msg("n2", VOTE_YES, tx).messages == []
    out = c.msg("n3", VOTE_YES, tx)
    assert transitions(out) == [("coordinator", PREPARING, "all voted yes", AWAIT_TS)]
    assert [(m.kind, m.dst, m.body) for m in out.messages] == [(TS_REQUEST, TSO,
                                                                {"purpose": "commit"})]
    assert ("vote", tx) in out.cancel
    out = c.feed(Deliver(Message(TSO, "n1", TS_REPLY, tx, {"purpose": "commit", "ts": 9})))
    assert [(r.type, r.data["commit_ts"]) for r in out.records] == [("DECISION", 9)]
    assert out.records[0].data["participants"] == NODES
    assert out.force is True  # COMMIT and the client's True wait for the durable decision
    assert kinds(out) == [(COMMIT, n, tx) for n in NODES]
    assert all(m.body["commit_ts"] == 9 for m in out.messages)
    assert [(r.call, r.value) for r in out.replies] == [(2, True)]
    assert transitions(out) == [("coordinator", AWAIT_TS, "commit ts", COMMITTING)]
    # an in-doubt participant asking now learns COMMIT
    out = c.msg("n2", STATUS, tx)
    assert [(m.kind, m.dst, m.body["commit_ts"]) for m in out.messages] == [(COMMIT, "n2", 9)]
    c.msg("n1", ACK, tx)
    c.msg("n2", ACK, tx)
    assert c.msg("n2", ACK, tx).notes == []  # duplicate ack ignored
    out = c.msg("n3", ACK, tx)
    assert transitions(out) == [("coordinator", COMMITTING, "all acked", COMMITTED)]
    assert [r.type for r in out.records] == ["END"] and out.force is False
    assert ("resend", tx) in out.cancel
    rec = c.core.coordinator.txs[tx]
    assert (rec.state, rec.commit_ts) == (COMMITTED, 9)


def test_coordinator_vote_no_aborts_everyone_else_and_reports_the_reason():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    c.msg("n1", VOTE_YES, tx)
    out = c.msg("n2", VOTE_NO, tx, reason="key 'x' is locked by prepared transaction T3",
                key="x", other="T3", how="locked")
    assert transitions(out) == [("coordinator", PREPARING, "vote no", ABORTED)]
    assert sorted(kinds(out)) == [(ABORT, "n1", tx), (ABORT, "n3", tx)]  # not the no-voter
    assert [(r.call, r.value) for r in out.replies] == [(2, False)]
    assert out.records == []  # presumed abort: nothing logged
    reason = c.core.coordinator.txs[tx].reason
    assert "n2" in reason and "'x'" in reason and "T3" in reason
    # a yes vote arriving after the abort gets an ABORT back to release its locks
    out = c.msg("n3", VOTE_YES, tx)
    assert kinds(out) == [(ABORT, "n3", tx)]
    assert transitions(out) == [("coordinator", ABORTED, "late vote", ABORTED)]


def test_coordinator_vote_timeout_aborts_and_names_the_silent_participants():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    c.msg("n1", VOTE_YES, tx)
    out = c.feed(Fire(("vote", tx)))
    assert transitions(out) == [("coordinator", PREPARING, "vote timeout", ABORTED)]
    assert sorted(kinds(out)) == [(ABORT, n, tx) for n in NODES]
    assert [(r.call, r.value) for r in out.replies] == [(2, False)]
    reason = c.core.coordinator.txs[tx].reason
    assert "n2" in reason and "n3" in reason and "n1" not in reason.split("from")[1]


def test_coordinator_ts_timeout_aborts():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    for n in NODES:
        c.msg(n, VOTE_YES, tx)
    out = c.feed(Fire(("ts", tx)))
    assert transitions(out) == [("coordinator", AWAIT_TS, "ts timeout", ABORTED)]
    assert [(r.call, r.value) for r in out.replies] == [(2, False)]
    # the late timestamp changes nothing
    out = c.feed(Deliver(Message(TSO, "n1", TS_REPLY, tx, {"purpose": "commit", "ts": 9})))
    assert out.records == [] and out.messages == [] and out.replies == []


def test_coordinator_without_a_record_presumes_abort():
    c = Checked("n1")
    out = c.msg("n2", STATUS, "T77")
    assert [(m.kind, m.src, m.dst, m.tx) for m in out.messages] == [(ABORT, "n1", "n2", "T77")]
    assert out.messages[0].body == {"presumed": True, "start_ts": 0}
    assert out.records == []


def test_coordinator_answers_status_for_an_aborted_transaction_with_abort():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    c.msg("n2", VOTE_NO, tx, reason="r", key="x", other="T1", how="locked")
    out = c.msg("n3", STATUS, tx)
    assert kinds(out) == [(ABORT, "n3", tx)]
    assert out.messages[0].body == {"presumed": False, "start_ts": 5}


def test_coordinator_does_not_answer_status_before_deciding():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    assert c.msg("n2", STATUS, tx).messages == []
    for n in NODES:
        c.msg(n, VOTE_YES, tx)
    assert c.core.coordinator.txs[tx].state == AWAIT_TS
    assert c.msg("n2", STATUS, tx).messages == []


def test_coordinator_resends_commit_to_participants_that_did_not_ack():
    c = Checked("n1")
    tx, _ = start_commit(c, x=1)
    for n in NODES:
        c.msg(n, VOTE_YES, tx)
    c.feed(Deliver(Message(TSO, "n1", TS_REPLY, tx, {"purpose": "commit", "ts": 9})))
    c.msg("n1", ACK, tx)
    out = c.feed(Fire(("resend", tx)))
    assert transitions(out) == [("coordinator", COMMITTING, "resend", COMMITTING)]
    assert sorted(kinds(out)) == [(COMMIT, "n2", tx), (COMMIT, "n3", tx)]


def test_read_only_commit_sends_nothing():
    c = Checked("n1")
    tx = begin(c, 1, 5)
    out = c.feed(Commit(2, tx))
    assert out.messages == [] and out.records == [] and out.timers == []
    assert [(r.call, r.value) for r in out.replies] == [(2, True)]
    assert transitions(out) == [("coordinator", ACTIVE, "commit read-only", COMMITTED)]


def test_rollback_is_a_table_transition_and_closes_the_transaction():
    c = Checked("n1")
    tx = begin(c, 1, 5)
    c.feed(Write(tx, "x", 1))
    out = c.feed(Rollback(tx))
    assert transitions(out) == [("coordinator", ACTIVE, "rollback", ABORTED)]
    assert out.messages == []
    with pytest.raises(TransactionClosed, match="already aborted"):
        c.feed(Write(tx, "x", 2))
    with pytest.raises(TransactionNotFound, match="T99"):
        c.feed(Get(3, "T99", "x"))


def test_partitioned_commit_prepares_only_the_owners_of_written_keys():
    key = next(k for k in (f"k{i}" for i in range(100)) if owner_of(k, NODES) == "n3")
    c = Checked("n1", placement="partitioned")
    tx, out = start_commit(c, **{key: 1})
    assert kinds(out) == [(PREPARE, "n3", tx)]
    assert out.messages[0].body["participants"] == ["n3"]


# -- reads meeting prepared locks -------------------------------------------------------------
def test_read_waits_for_an_older_prepared_writer_and_is_answered_by_its_commit():
    n = Checked("n2")
    n.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": "new"}))
    reader = begin(n, 1, 7)
    out = n.feed(Get(2, reader, "x"))
    assert out.replies == []
    assert any(e.get("event") == "read waits" and e.get("blocked_by") == "T5"
               for e in out.notes)
    out = n.msg("n1", COMMIT, "T5", commit_ts=6)
    [reply] = out.replies
    assert reply.call == 2
    assert reply.value == ReadResult("new", "T5", 6, False)


def test_read_waits_and_sees_the_old_value_when_the_writer_commits_above_the_snapshot():
    n = Checked("n2")
    n.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": "new"}))
    reader = begin(n, 1, 7)
    assert n.feed(Get(2, reader, "x")).replies == []
    [reply] = n.msg("n1", COMMIT, "T5", commit_ts=8).replies
    assert reply.value == ReadResult(None, None, None, False)


def test_read_waits_and_an_abort_releases_it():
    n = Checked("n2")
    n.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": "new"}))
    reader = begin(n, 1, 7)
    assert n.feed(Get(2, reader, "x")).replies == []
    [reply] = n.msg("n1", ABORT, "T5").replies
    assert reply.value.value is None


def test_read_does_not_wait_for_a_writer_that_started_after_the_snapshot():
    n = Checked("n2")
    reader = begin(n, 1, 4)
    n.msg("n1", PREPARE, "T5", **prepare_body(5, {"x": "new"}))
    [reply] = n.feed(Get(2, reader, "x")).replies
    assert reply.value.value is None


# -- recovery ---------------------------------------------------------------------------------
def test_recovered_prepare_is_in_doubt_locked_and_asks_its_coordinator():
    n = Checked("n2")
    rec = LogRecord(1, "PREPARE", {"tx": "T5", "coordinator": "n1", "start_ts": 5,
                                   "writes": {"x": [1, False]}, "reads": []})
    out = n.feed(Recover(None, [rec]))
    assert ("participant", "INIT", "recover prepared", IN_DOUBT) in transitions(out)
    assert kinds(out) == [(STATUS, "n1", "T5")]
    assert n.core.store.write_locks["x"].tx == "T5"
    out = n.msg("n1", ABORT, "T5", presumed=True)
    assert transitions(out) == [("participant", IN_DOUBT, "abort", ABORTED)]
    assert n.core.store.write_locks == {}


def test_recovered_commit_is_applied_and_not_in_doubt():
    n = Checked("n2")
    out = n.feed(Recover(None, [
        LogRecord(1, "PREPARE", {"tx": "T5", "coordinator": "n1", "start_ts": 5,
                                 "writes": {"x": [1, False]}, "reads": []}),
        LogRecord(2, "COMMIT", {"tx": "T5", "commit_ts": 9})]))
    assert out.messages == []
    assert n.core.store.visible("x", 9).value == 1
    assert n.core.store.write_locks == {}
    assert n.core.max_ts >= 9


def test_recovered_decision_without_end_resends_commit():
    n = Checked("n1")
    out = n.feed(Recover(None, [LogRecord(1, "DECISION", {"tx": "T5", "commit_ts": 9,
                                                          "participants": NODES})]))
    assert transitions(out) == [("coordinator", "INIT", "recover decision", COMMITTING)]
    assert sorted(kinds(out)) == [(COMMIT, p, "T5") for p in NODES]
    assert all(m.body["commit_ts"] == 9 for m in out.messages)
    out = n.msg("n2", STATUS, "T5")
    assert [(m.kind, m.body["commit_ts"]) for m in out.messages] == [(COMMIT, 9)]


def test_recovered_decision_with_end_is_finished():
    n = Checked("n1")
    out = n.feed(Recover(None, [
        LogRecord(1, "DECISION", {"tx": "T5", "commit_ts": 9, "participants": NODES}),
        LogRecord(2, "END", {"tx": "T5"})]))
    assert out.messages == []
    assert [m.kind for m in n.msg("n2", STATUS, "T5").messages] == [ABORT]


# -- tables and determinism -------------------------------------------------------------------
def test_tables_only_name_known_states():
    for table, states in ((COORDINATOR_TRANSITIONS, COORDINATOR_STATES),
                          (PARTICIPANT_TRANSITIONS, PARTICIPANT_STATES)):
        assert set(table) == set(states)
        for events in table.values():
            assert set(events.values()) <= set(states)


def test_advance_refuses_transitions_outside_the_table():
    assert advance(PARTICIPANT_TRANSITIONS, PREPARED, "commit") == COMMITTED
    with pytest.raises(ProtocolError, match="not allowed"):
        advance(PARTICIPANT_TRANSITIONS, ABORTED, "commit")
    with pytest.raises(ProtocolError):
        advance(COORDINATOR_TRANSITIONS, COMMITTED, "vote no")


def script() -> list[Any]:
    """A mixed input sequence touching both roles (the node is n1)."""
    return [
        Begin(1),
        Deliver(Message(TSO, "n1", TS_REPLY, None, {"purpose": "begin", "call": 1, "ts": 3})),
        Write("T3", "x", [1, {"a": 2}]),
        Write("T3", "y", None, True),
        Commit(2, "T3"),
        Deliver(Message("n1", "n1", PREPARE, "T3", prepare_body(3, {"x": [1, {"a": 2}],
                                                                    "y": None}))),
        Deliver(Message("n2", "n1", PREPARE, "T4", prepare_body(4, {"x": 5}, "n2"))),
        Deliver(Message("n1", "n1", VOTE_YES, "T3", {})),
        Deliver(Message("n2", "n1", VOTE_YES, "T3", {})),
        Deliver(Message("n3", "n1", VOTE_YES, "T3", {})),
        Deliver(Message(TSO, "n1", TS_REPLY, "T3", {"purpose": "commit", "ts": 6})),
        Deliver(Message("n1", "n1", COMMIT, "T3", {"commit_ts": 6})),
        Fire(("resend", "T3")),
        Deliver(Message("n3", "n1", ABORT, "T8", {})),
        Deliver(Message("n3", "n1", PREPARE, "T8", prepare_body(8, {"z": 1}, "n3"))),
        Deliver(Message("n2", "n1", STATUS, "T9", {})),
    ]


def test_same_inputs_give_same_outputs():
    a, b = Checked("n1"), Checked("n1")
    outs_a = [a.feed(i) for i in script()]
    outs_b = [b.feed(i) for i in script()]
    assert outs_a == outs_b
    assert a.core.store.dump() == b.core.store.dump()
    assert a.core.checkpoint_state() == b.core.checkpoint_state()
    # and the script really exercised the protocol
    assert any(o.records and o.records[0].type == "DECISION" for o in outs_a)
    assert [m.kind for m in outs_a[6].messages] == [VOTE_NO]
    assert outs_a[-2].messages[0].body["reason"] == "already aborted here"


def test_committed_participant_ignores_a_stale_presumed_abort_but_not_a_real_one():
    core = NodeCore("n2", NodeConfig(["n1", "n2"]))
    prepare = Message("n1", "n2", PREPARE, "T1", {"start_ts": 1, "isolation": "snapshot",
                                                  "coordinator": "n1",
                                                  "participants": ["n1", "n2"],
                                                  "writes": {"x": [1, False]}, "reads": []})
    core.handle(Deliver(prepare))
    core.handle(Deliver(Message("n1", "n2", COMMIT, "T1", {"commit_ts": 5})))
    out = core.handle(Deliver(Message("n1", "n2", ABORT, "T1", {"presumed": True})))
    assert [n["event"] for n in out.notes] == ["stale presumed abort"]
    assert core.store.latest("x").writer == "T1"
    with pytest.raises(ProtocolError, match="atomicity violated"):
        core.handle(Deliver(Message("n1", "n2", ABORT, "T1", {})))


def test_presumed_abort_for_a_forgotten_transaction_leaves_no_record():
    # after a checkpoint and restart a participant has forgotten T1; a stale presumed ABORT
    # must not invent an ABORTED record that a delayed duplicate COMMIT would then contradict
    core = NodeCore("n2", NodeConfig(["n1", "n2"]))
    out = core.handle(Deliver(Message("n1", "n2", ABORT, "T1", {"presumed": True})))
    assert "T1" not in core.participant.txs
    assert [n["event"] for n in out.notes] == ["stale presumed abort ignored"]
    core.handle(Deliver(Message("n1", "n2", COMMIT, "T1", {"commit_ts": 5})))  # re-acked
    decided = core.handle(Deliver(Message("n1", "n2", ABORT, "T9", {})))
    assert core.participant.txs["T9"].state == ABORTED and decided.notes
