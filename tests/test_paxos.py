"""Paxos Commit (kvlab.paxos): votes chosen by 2F+1 acceptors, so a coordinator crash no
longer leaves participants in doubt; with F = 0 it is two-phase commit again."""

from __future__ import annotations

from typing import Any

import pytest

import kvlab
from kvlab import explore
from kvlab.effects import Outputs
from kvlab.messages import COMMIT, LEARNED, MAY_FORGET, NACK, NOT_YET, P1A, P2A, P2B, Message
from kvlab.paxos import (
    ACCEPTOR_TRANSITIONS,
    DEFERRED,
    LEADER_TRANSITIONS,
    PHASE1,
    Acceptor,
    acceptors_for,
)
from kvlab.twopc import ABORTED, COMMITTED, COMMITTING, IN_DOUBT, PREPARED

NODES = ["n1", "n2", "n3"]
UNDECIDED = (PREPARED, IN_DOUBT)


def paxos(f: int = 1, **kw: Any) -> kvlab.Cluster:
    return kvlab.Cluster(NODES, seed=0, commit_protocol="paxos", paxos_f=f, **kw)


def start_one(c: kvlab.Cluster) -> tuple[str, Any]:
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 1)
    return t, n1.commit_async(t)


def outcomes(c: kvlab.Cluster, tx: str) -> dict[Any, str]:
    return {n: s for (n, role, t), s in c.states().items() if role == "participant" and t == tx}


def records(c: kvlab.Cluster, node: Any) -> list[Any]:
    return c.wal(node).scan().records


def voted(c: kvlab.Cluster, tx: str, nodes: list[Any]) -> bool:
    """Every one of ``nodes`` has a durable PREPARE of ``tx`` (its vote went to the acceptors)."""
    return all(any(r.type == "PREPARE" and r.data["tx"] == tx for r in records(c, n))
               and not c._outbox[n].waiting for n in nodes)


def run_until(c: kvlab.Cluster, ready: Any, limit: int = 10_000) -> None:
    for _ in range(limit):
        if ready():
            return
        assert c.step() is not None
    raise AssertionError("never ready")


# -- the normal case -----------------------------------------------------------------------------
def test_happy_commit_is_decided_by_the_acceptors_without_a_decision_record():
    c = paxos()
    t, h = start_one(c)
    c.run()
    assert h.committed is True and h.commit_ts is not None
    assert set(outcomes(c, t).values()) == {COMMITTED}
    prepare_ts = [r.data["prepare_ts"] for n in NODES for r in records(c, n)
                  if r.type == "PREPARE"]
    assert h.commit_ts == max(prepare_ts)  # derived from the chosen votes
    for n in NODES:
        kinds = [r.type for r in records(c, n)]
        assert "DECISION" not in kinds
        # only the coordinator logs its BEGIN (forced: who takes part) and its END (forced,
        # once every participant acked: never at the decision)
        assert (kinds.count("BEGIN"), kinds.count("END")) == ((1, 1) if n == "n1" else (0, 0))
        assert kinds.count("ACCEPT") == 3  # every node accepts every participant's vote
        assert c.core(n).coordinator.acceptor.txs == {}  # forgotten: every participant acked
        assert c.core(n).store.chains["x"][-1].commit_ts == h.commit_ts
    assert {e.data["kind"] for e in c.trace if e.kind == "send"} >= {P2A, P2B, COMMIT}


def test_a_conflict_aborts_through_an_aborted_ballot_0_vote():
    c = paxos()
    a, b = c["n1"], c["n2"]
    t1, t2 = a.begin(), b.begin()
    a.put(t1, "y", 1)
    b.put(t2, "y", 2)
    h1, h2 = a.commit_async(t1), b.commit_async(t2)
    c.run()
    assert sorted([h1.committed, h2.committed]) == [False, True]
    loser = t2 if h1.committed else t1
    assert set(outcomes(c, loser).values()) == {"ABORTED"}
    aborts = [r for n in NODES for r in records(c, n) if r.type == "ABORT"
              and r.data["tx"] == loser and "start_ts" in r.data]
    assert aborts  # the no vote is forced: a duplicate PREPARE must not get another value
    assert c.core("n1").store.write_locks == {} and c.quiet


def test_two_pc_and_cooperative_stay_without_paxos_messages():
    for proto in ("2pc", "cooperative"):
        c = kvlab.Cluster(NODES, seed=0, commit_protocol=proto)
        start_one(c)
        c.run()
        kinds = {e.data["kind"] for e in c.trace if e.kind == "send"}
        assert not kinds & {"P1A", "P1B", P2A, P2B}


# -- coordinator crashes ----------------------------------------------------------------------
def test_a_coordinator_crash_at_any_step_never_blocks_and_the_outcome_agrees():
    base = paxos()
    t, _ = start_one(base)
    steps = base.run()
    assert steps > 20
    for k in range(steps + 1):
        c = paxos()
        _, h = start_one(c)
        for _ in range(k):
            c.step()
        c.crash("n1")
        for env in [e for e in c.pending() if e.msg.src == "n1"]:
            c.drop(env)  # its unsent messages go with it
        c.run()
        live = {n: s for n, s in outcomes(c, t).items() if n != "n1"}
        assert not set(live.values()) & set(UNDECIDED), (k, live)
        assert len(set(live.values())) <= 1, (k, live)
        c.restart("n1")
        c.run()
        final = outcomes(c, t)
        assert len(set(final.values())) <= 1 and not set(final.values()) & set(UNDECIDED), \
            (k, final)
        if final:
            decided = set(final.values()).pop() == COMMITTED
            assert h.done and h.committed is decided, (k, h, final)
            if decided:
                assert {c.core(n).store.chains["x"][-1].commit_ts for n in NODES} == \
                    {h.commit_ts}


def test_f_plus_1_acceptors_down_blocks_then_one_returning_unblocks():
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, ["n2"]))
    c.crash("n1")
    c.crash("n3")
    c.run()
    assert c.quiet and outcomes(c, t)["n2"] == IN_DOUBT  # only F of 2F+1 acceptors up
    c.restart("n3")
    c.run()
    state = outcomes(c, t)["n2"]
    assert state not in UNDECIDED and outcomes(c, t)["n3"] == state
    assert h.done and h.committed is (state == COMMITTED)  # n1, its coordinator, still down
    c.restart("n1")
    c.run()
    assert set(outcomes(c, t).values()) == {state}


def test_commit_ts_is_the_same_whichever_leader_decides():
    c = paxos()
    t, h = start_one(c)
    # the coordinator decides; its COMMITs to n2 and n3 are lost until they decided themselves
    for _ in range(10_000):
        undecided = [n for n in ("n2", "n3") if outcomes(c, t).get(n) in UNDECIDED]
        if h.done and not undecided:
            break
        for env in c.pending():
            if env.msg.kind == COMMIT and env.msg.src == "n1" and env.msg.dst in undecided:
                c.drop(env)
        if not c.step():
            break
    c.run()
    assert h.committed is True
    leaders = {e.node for e in c.trace if e.kind == "state" and e.data.get("role") == "leader"
               and e.data.get("event") == "all chosen"}
    assert leaders >= {"n1", "n2"} or leaders >= {"n1", "n3"}, leaders
    assert {c.core(n).store.chains["x"][-1].commit_ts for n in NODES} == {h.commit_ts}


# -- recovery from the log ------------------------------------------------------------------
@pytest.mark.parametrize("disk", ["memory", "data_dir", "checkpoint"])
def test_acceptors_and_participants_recover_their_votes_from_the_wal(disk, tmp_path):
    c = paxos(data_dir=tmp_path if disk == "data_dir" else None)
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, NODES) and all(
        sum(r.type == "ACCEPT" for r in records(c, n)) == 3 for n in NODES))
    if disk == "checkpoint":
        c.checkpoint()
        assert not any(r.type in ("ACCEPT", "PREPARE") for r in records(c, "n2"))
    for n in NODES:
        c.crash(n)
    c.run()
    for n in NODES:
        c.restart(n)
        assert len(c.core(n).coordinator.acceptor.txs[t].accepted) == 3
    assert all(s == IN_DOUBT for s in outcomes(c, t).values())
    c.run()
    assert set(outcomes(c, t).values()) == {COMMITTED}  # every vote had been chosen
    stamps = {c.core(n).store.chains["x"][-1].commit_ts for n in NODES}
    assert h.done and h.committed is True and stamps == {h.commit_ts}
    c.close()


def test_a_damaged_accept_record_is_refused():
    from kvlab.errors import CorruptLog
    from kvlab.node import check_record
    from kvlab.wal import LogRecord

    good = {"tx": "T1", "start_ts": 1, "ballot": [0, "n1"], "values": [["n2", ["aborted"]]]}
    check_record(LogRecord(1, "ACCEPT", good))
    with pytest.raises(CorruptLog):
        check_record(LogRecord(1, "ACCEPT", {**good, "values": [["n2", ["maybe"]]]}))
    with pytest.raises(CorruptLog):
        check_record(LogRecord(1, "PROMISE", {"tx": "T1", "start_ts": 1, "ballot": [0]}))
    check_record(LogRecord(1, "ACCEPT", {**good, "coordinator": "n1"}))
    with pytest.raises(CorruptLog, match="coordinator"):
        check_record(LogRecord(1, "PROMISE", {"tx": "T1", "start_ts": 1, "ballot": [0, "n1"],
                                              "coordinator": ["n1"]}))


# -- duplicates and stale ballot-0 values ------------------------------------------------------
def p2a(b: list, values: list, src: str = "n2") -> Message:
    return Message(src, "n1", P2A, "T1", {"ballot": b, "values": values, "start_ts": 1})


def test_the_acceptor_takes_only_the_first_ballot_0_value_of_an_instance():
    a = Acceptor("n1")
    out = a.on_p2a(p2a([0, "n1"], [["n2", ["prepared", 5]]]))
    assert [r.type for r in out.records] == ["ACCEPT"] and out.force
    assert out.messages[0].kind == P2B and out.messages[0].dst == "n1"
    again = a.on_p2a(p2a([0, "n1"], [["n2", ["prepared", 5]]]))  # duplicate: answered again
    assert not again.records and again.messages[0].body["values"] == [["n2", ["prepared", 5]]]
    stale = a.on_p2a(p2a([0, "n1"], [["n2", ["aborted"]]]))  # a second ballot-0 value
    assert not stale.records and not stale.messages
    assert a.txs["T1"].accepted["n2"] == ((0, "n1"), ["prepared", 5])
    # a leader's higher ballot may replace it; ballot 0 is then refused
    a.on_p1a(Message("n3", "n1", "P1A", "T1", {"ballot": [1, "n3"], "start_ts": 1}))
    late = a.on_p2a(p2a([0, "n1"], [["n3", ["prepared", 6]]], src="n3"))
    assert "n3" not in a.txs["T1"].accepted and not late.records
    # refused with a NACK to ballot 0's leader (the coordinator), naming the promised ballot
    assert [(m.kind, m.dst, m.body) for m in late.messages] == \
        [(NACK, "n1", {"ballot": [0, "n1"], "promised": [1, "n3"]})]
    b = Acceptor("n1")
    b.recover([r.data for r in out.records])
    assert b.txs["T1"].accepted == a.txs["T1"].accepted


def test_duplicated_and_delayed_ballot_0_messages_change_nothing():
    c = paxos()
    t, h = start_one(c)
    copies = 0
    for _ in range(10_000):
        for env in c.pending():
            if env.msg.kind == P2A and env.id % 2 == 0 and copies < 12:
                c.duplicate(env)
                copies += 1
        if not c.step():
            break
    assert copies and h.committed is True
    assert set(outcomes(c, t).values()) == {COMMITTED}
    counts = {n: sum(r.type == "ACCEPT" for r in records(c, n)) for n in NODES}
    assert counts == {n: 3 for n in NODES}  # a duplicate is answered, never logged again


def test_a_delayed_prepare_below_the_horizon_gets_no_vote():
    c = paxos()
    t, _ = start_one(c)
    c.run()
    p = c.core("n2").participant
    p.forget(10**6)
    assert t not in p.txs
    prep = next(e for e in c.trace if e.kind == "send" and e.data["kind"] == "PREPARE")
    msg = Message("n1", "n2", "PREPARE", t, {"start_ts": 1, "coordinator": "n1",
                                               "participants": NODES, "writes": {},
                                               "reads": [], "isolation": "snapshot"})
    out = p.on_prepare(msg)
    assert prep and not out.messages and not out.records


# -- F = 0 is two-phase commit ---------------------------------------------------------------
def test_f_0_is_two_phase_commit_a_coordinator_crash_blocks():
    assert acceptors_for("n1", NODES, 0) == ["n1"]
    c = paxos(f=0)
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, ["n2", "n3"]))
    c.crash("n1")
    c.run()
    assert c.quiet and {outcomes(c, t)[n] for n in ("n2", "n3")} <= set(UNDECIDED)
    assert not any(r.type == "ACCEPT" for n in ("n2", "n3") for r in records(c, n))
    c.restart("n1")  # its ACCEPT records are two-phase commit's decision record
    c.run()
    assert len(set(outcomes(c, t).values())) == 1
    assert set(outcomes(c, t).values()) <= {COMMITTED, "ABORTED"}


# -- the watermark --------------------------------------------------------------------------
def test_the_watermark_waits_for_an_undecided_transaction_whose_coordinator_is_down():
    c = paxos(f=0)
    t, _ = start_one(c)
    run_until(c, lambda: voted(c, t, ["n2", "n3"]))
    start_ts = c.core("n2").participant.txs[t].start_ts
    c.crash("n1")
    c.run()
    n3 = c["n3"]
    for _ in range(3):
        u = n3.begin()
        n3.rollback(u)
    assert c.gc() <= start_ts


# -- forgetting: what the acceptors and coordinators keep ---------------------------------
def entries(c: kvlab.Cluster) -> dict[Any, list[str]]:
    """Acceptor entries left, by node (the count the memory tests make)."""
    return {n: sorted(c.core(n).coordinator.acceptor.txs) for n in c.ids
            if c.up(n) and c.core(n).coordinator.acceptor.txs}


def nothing_left(c: kvlab.Cluster) -> str | None:
    """End invariant: no acceptor holds an entry (every transaction is finished at the end
    of a schedule), and no coordinator still waits for acks of an outcome or of LEARNED."""
    if entries(c):
        return f"acceptors still hold finished transactions: {entries(c)}"
    for n in c.ids:
        co = c.core(n).coordinator
        if co.unacked or co.forgetting:
            return f"{n} still keeps {sorted(co.unacked)} {sorted(co.forgetting)}"
    return None


# -- the explorer ---------------------------------------------------------------------------
def remote_commit(protocol: str = "paxos") -> kvlab.Cluster:
    """n1 coordinates one write to y, which n2 owns: coordinator and participant differ."""
    c = kvlab.Cluster(NODES, seed=0, commit_protocol=protocol, placement="partitioned")
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "y", 1)
    n1.commit_async(t)
    return c


def test_explorer_paxos_never_blocks_after_any_single_crash():
    # and forgets: no acceptor keeps the finished transaction (nothing_left, below)
    r = explore.search(remote_commit, crashes=1, invariants=[explore.nonblocking],
                       end_invariants=[nothing_left])
    assert r.status == "exhausted", r
    assert r.states > 10_000 and r.terminal > 0


def test_explorer_finds_two_phase_commit_blocking_where_paxos_does_not():
    r = explore.search(lambda: remote_commit("2pc"), crashes=1,
                       invariants=[explore.nonblocking])
    assert r.status == "violation" and "blocked" in r.violation, r
    assert any(ch.kind == "crash" and ch.node == "n1" for ch in r.schedule)


@pytest.mark.slow
def test_explorer_paxos_never_blocks_with_a_crash_and_a_drop():
    # not seen to exhaust (past 400,000 states in 450 s): bounded, and no violation allowed
    r = explore.search(remote_commit, crashes=1, drops=1, invariants=[explore.nonblocking],
                       time_limit=1800)
    assert r.status in ("exhausted", "limit") and r.violation is None, r


def test_a_coordinator_whose_prepares_all_died_with_it_finishes_the_commit_on_restart():
    """Every PREPARE lost in the crash: nobody else knows the transaction, so the restarted
    coordinator leads it from its forced BEGIN record and settles the client's handle."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: any(r.type == "BEGIN" for r in records(c, "n1"))
              and not c.pending_flushes())
    for env in [e for e in c.pending() if e.msg.src == "n1" and e.msg.dst != "n1"]:
        c.drop(env)
    c.crash("n1")
    c.run()
    assert not h.done  # undecided: n1 may have proposed, nobody else knows
    c.restart("n1")
    c.run()
    assert h.done and h.committed is False
    assert "aborted" in h.reason
    assert set(outcomes(c, t).values()) <= {ABORTED}


def test_a_coordinator_that_crashed_before_its_begin_was_durable_aborts_on_restart():
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: c.pending_flushes() == ["n1"])  # BEGIN appended, not yet durable
    assert not [e for e in c.pending() if e.kind == "PREPARE"]  # held back by the Outbox
    c.crash("n1")
    c.run()
    assert not h.done
    c.restart("n1")
    assert h.done and h.committed is False and "BEGIN" in h.reason


# -- liveness: retries keep their ballot, preempted leaders defer ----------------------------
def storm(**kw: Any) -> kvlab.Cluster:
    """The fuzzer's storm timing: no retries before parking, a 3-tick retry interval, and an
    fsync that makes every acceptor's answer slower than that."""
    return paxos(latency=(2, 2), fsync_latency=3,
                 timing=kvlab.Timing(max_retries=0, retry_interval=3), **kw)


def test_duelling_leaders_with_slow_acceptors_finish():
    """n1 (a participant) crashes as the PREPAREs leave: the coordinator n2 and the participant
    n3 both take over, on the same retry schedule, and every acceptor answers later than the
    retry fires. Retrying with a new ballot each time livelocked here (each late answer was
    stale, and each leader's ballot preempted the other's)."""
    c = storm()
    n2 = c["n2"]
    t = n2.begin()
    n2.put(t, "x", 1)
    h = n2.commit_async(t)
    run_until(c, lambda: any(e.kind == "send" and e.data["kind"] == "PREPARE" for e in c.trace))
    c.crash("n1")
    c.run(max_steps=20_000)  # SimulationTimeout before the fix
    live = outcomes(c, t)
    assert set(live) == {"n2", "n3"} and len(set(live.values())) == 1
    assert not set(live.values()) & set(UNDECIDED)
    assert h.done and h.committed is (live["n2"] == COMMITTED)
    events = [e.data.get("event") for e in c.trace if e.kind == "state"
              and e.data.get("role") == "leader"]
    assert "preempted" in events  # one of the two deferred to the other's higher ballot


def lead(c: kvlab.Cluster, node: str, tx: str) -> Any:
    return c.core(node).coordinator.leaders[tx]


def test_a_retry_resends_the_same_ballot_and_only_a_nack_opens_a_higher_one():
    c = paxos(timing=kvlab.Timing(max_retries=2))
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, ["n2"]))
    c.crash("n1")
    co = c.core("n2").coordinator
    out = Outputs()
    p = c.core("n2").participant.txs[t]
    co.take_over(out, t, p.start_ts, p.coordinator, p.participants)
    lt = co.leaders[t]
    first = lt.ballot
    assert lt.state == PHASE1 and first[1] == "n2" and first[0] >= 1
    assert [r.type for r in out.records] == ["PROMISE"] and out.force  # its own ballot, first
    again = co.on_timer(("lead", t))  # a retry: the same ballot to those that did not answer
    assert lt.ballot == first and {m.kind for m in again.messages} == {"P1A"}
    assert {tuple(m.body["ballot"]) for m in again.messages} == {first}
    higher = (first[0] + 5, "n3")
    nack = Message("n3", "n2", NACK, t, {"ballot": list(first), "promised": list(higher)})
    stale = co.on_nack(Message("n3", "n2", NACK, t, {"ballot": [0, "n2"],
                                                      "promised": list(higher)}))
    assert lt.state == PHASE1 and not stale.messages  # about a ballot it no longer leads
    deferred = co.on_nack(nack)
    assert lt.state == DEFERRED and not deferred.messages  # watches the higher ballot
    assert [k for k, _ in deferred.timers] == [("lead", t)]
    back = co.on_timer(("lead", t))  # that leader went silent: lead again, above it
    assert lt.state == PHASE1 and lt.ballot == (higher[0] + 1, "n2")
    assert {tuple(m.body["ballot"]) for m in back.messages if m.kind == "P1A"} == {lt.ballot}


def test_a_restarted_leader_never_reuses_a_ballot_it_led_before():
    """4 nodes: n4 takes part but is no acceptor of n1's transaction; its ballot is promised
    (forced) on n4 itself, so after a crash it takes a higher one."""
    c = kvlab.Cluster(["n1", "n2", "n3", "n4"], seed=0, commit_protocol="paxos", paxos_f=1)
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 1)  # every node stores every key: all four take part
    n1.commit_async(t)
    assert "n4" not in acceptors_for("n1", c.ids, 1)
    run_until(c, lambda: voted(c, t, ["n4"]))
    c.crash("n1")
    co = c.core("n4").coordinator
    p = c.core("n4").participant.txs[t]
    out = Outputs()
    co.take_over(out, t, p.start_ts, p.coordinator, p.participants)
    used = co.leaders[t].ballot
    c._apply("n4", out)
    run_until(c, lambda: not c.pending_flushes())
    c.crash("n4")
    c.restart("n4")
    assert c.core("n4").coordinator.leaders[t].ballot > used


# -- waiting for a handle whose coordinator is down ------------------------------------------
def test_wait_runs_on_while_the_coordinator_is_down_and_another_leader_settles_it():
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, NODES))
    c.crash("n1")
    assert not h.done
    committed = h.wait()  # n2 or n3 takes over and decides; NodeUnavailable before
    assert h.done and committed is h.committed
    c.run()  # the leader's decision reaches the other participant too
    live = outcomes(c, t)
    assert set(live.values()) == {COMMITTED if committed else ABORTED}
    assert not c.up("n1")


def test_wait_still_says_the_coordinator_is_down_when_nobody_else_can_decide():
    from kvlab.errors import NodeUnavailable

    c = paxos(f=0)  # the coordinator is the only acceptor: two-phase commit again
    t, h = start_one(c)
    run_until(c, lambda: voted(c, t, ["n2", "n3"]))
    c.crash("n1")
    with pytest.raises(NodeUnavailable):
        h.wait()


# -- what cluster.states() reports ---------------------------------------------------------
def test_states_reports_acceptors_and_leaders_beside_the_two_phase_commit_roles():
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: all(t in c.core(n).coordinator.acceptor.txs for n in ("n2", "n3")))
    c.crash("n1")  # n2, n3 still undecided; their acceptors hold votes
    s = c.states()
    roles = {(n, r) for (n, r, tx) in s if tx == t}
    assert {("n2", "participant"), ("n2", "acceptor"), ("n3", "acceptor")} <= roles
    assert not any(n == "n1" for n, _ in roles)  # crashed: remembers nothing
    assert {s[(n, "acceptor", t)] for n in ("n2", "n3")} <= set(ACCEPTOR_TRANSITIONS)
    run_until(c, lambda: any(r == "leader" for (_, r, tx) in c.states() if tx == t))
    lead_states = {st for (n, r, tx), st in c.states().items() if r == "leader" and tx == t}
    assert lead_states and lead_states <= set(LEADER_TRANSITIONS)
    c.run()
    assert h.done
    s = c.states()
    assert not [k for k in s if k[1] == "leader"]  # retired once their participant learned
    for proto in ("2pc", "cooperative"):
        c2 = kvlab.Cluster(NODES, seed=0, commit_protocol=proto)
        start_one(c2)
        for _ in range(10):
            c2.step()
        assert {r for (_, r, _) in c2.states()} <= {"coordinator", "participant"}


# -- forgetting: acceptors drop a transaction once every participant has its outcome ---------
def test_acceptor_tables_stay_bounded_and_a_late_phase_1_changes_nothing():
    c = paxos()
    sizes = []
    for i in range(30):
        node = c[NODES[i % 3]]
        t = node.begin()
        node.put(t, f"k{i % 4}", i)
        assert node.commit(t) is True
        c.run()
        sizes.append(sum(len(c.core(n).coordinator.acceptor.txs) for n in NODES))
    assert sizes == [0] * 30  # every commit acked by all: LEARNED, and the instances go
    c.checkpoint()
    for n in NODES:  # nor does a checkpoint or a restart bring them back
        assert c.wal(n).scan().checkpoint.data["acceptor"] == {}
        c.crash(n)
        c.restart(n)
        assert c.core(n).coordinator.acceptor.txs == {}
    # a delayed P1A from a finished transaction's old leader: the acceptor answers it from a
    # fresh entry, but no leader of that transaction is left to use the answer
    acc = c.core("n3").coordinator.acceptor
    late = acc.on_p1a(Message("n2", "n3", "P1A", t, {"ballot": [7, "n2"], "start_ts": 1}))
    p1b = next(m for m in late.messages if m.kind == "P1B")
    assert p1b.body["accepted"] == [] and t not in c.core("n2").coordinator.leaders
    assert not c.core("n2").coordinator.on_p1b(p1b).messages
    assert c.core("n2").participant.txs.get(t) is None or \
        c.core("n2").participant.txs[t].state == COMMITTED


# -- forgetting aborts: participants ack them (after a forced ABORT), then LEARNED ---------------
def remote_abort(newer: str = "y", writes: tuple[str, ...] = ("y",),
                 settle: bool = True) -> kvlab.Cluster:
    """n1 coordinates T1, writing keys other nodes own (y on n2, z on n3), ``newer`` over a
    version committed after T1's snapshot: its owner votes no. ``settle``: that commit is
    forgotten (LEARNED acked) before T1 commits."""
    c = kvlab.Cluster(NODES, seed=0, commit_protocol="paxos", placement="partitioned")
    n1, owner = c["n1"], c[c.core("n1").owner(newer)]
    t = n1.begin()
    u = owner.begin()
    owner.put(u, newer, 0)
    assert owner.commit(u) is True
    if settle:
        c.run()
    for key in writes:
        n1.put(t, key, 1)
    n1.commit_async(t)
    return c


def abort_round_closed(c: kvlab.Cluster) -> str | None:
    """End invariant: no abort still waits for acks, and a coordinator that began committing
    T1 (a BEGIN on record) finished it (a forced END after the last ack)."""
    left = {n: sorted(c.core(n).coordinator.unacked) for n in NODES
            if c.core(n).coordinator.unacked}
    if left:
        return f"aborts still waiting for acks: {left}"
    kinds = [r.type for r in records(c, "n1") if r.data.get("tx") == "T1"]
    if "BEGIN" in kinds and "END" not in kinds:
        return "n1 began committing T1 and never ended it"
    return None


def test_aborted_transactions_are_forgotten_by_the_acceptors_too():
    c = paxos(trace=False)
    committed = aborted = 0
    for i in range(40):
        batch = []
        for j in range(6):
            node = c[NODES[j % 3]]
            t = node.begin()
            node.put(t, f"k{(i + j) % 3}", j)
            batch.append(node.commit_async(t))
        c.run()
        committed += sum(h.committed for h in batch)
        aborted += sum(not h.committed for h in batch)
        for n in NODES:
            assert c.core(n).coordinator.acceptor.txs == {}, (i, n)
            assert c.core(n).coordinator.unacked == {}
    assert committed > 40 and aborted > 40


def test_an_abort_is_acked_only_once_its_abort_record_is_durable():
    """n2 prepares T1 (y), n3 votes no (z has a newer version): n2's ABORT must be durable
    before its ack lets the acceptors forget T1."""
    c, t = remote_abort(newer="z", writes=("y", "z")), "T1"
    run_until(c, lambda: any(e.msg.kind == "ABORT" and e.msg.dst == "n2" for e in c.pending()))
    env = next(e for e in c.pending() if e.msg.kind == "ABORT" and e.msg.dst == "n2")
    assert c.states()[("n2", "participant", t)] in UNDECIDED
    c.deliver(env.id)
    acks = [e for e in c.pending() if e.msg.kind == "ACK" and e.msg.tx == t]
    assert acks == [] and c.pending_flushes() == ["n2"]  # held behind the forced ABORT
    c.flush("n2")
    assert [e.msg.dst for e in c.pending() if e.msg.kind == "ACK" and e.msg.tx == t] == ["n1"]


def test_explorer_every_abort_round_closes_under_any_single_crash():
    """And no acceptor keeps T1 (at crashes=0 too: a delayed ballot-0 vote after LEARNED
    used to leave it on n3)."""
    for crashes in (0, 1):
        r = explore.search(remote_abort, crashes=crashes,
                           end_invariants=[abort_round_closed, nothing_left])
        assert r.status == "exhausted", (crashes, r)
    assert r.states > 10_000


@pytest.mark.slow
def test_explorer_abort_rounds_close_while_an_earlier_commit_is_still_being_forgotten():
    # the earlier commit's LEARNED round (sends, acks, resends) interleaved with all of T1's
    # schedules: not seen to exhaust (past 1,000,000 states in 400 s), so bounded
    r = explore.search(lambda: remote_abort(settle=False), crashes=1,
                       end_invariants=[abort_round_closed, nothing_left], time_limit=1200)
    assert r.status in ("exhausted", "limit") and r.violation is None, r


# -- forgetting under faults: every entry goes, whatever was lost, crashed or delayed ----------
def finish(c: kvlab.Cluster, h: Any, t: str) -> None:
    c.run()
    assert h.done and h.committed is True
    assert set(outcomes(c, t).values()) <= {COMMITTED}  # (or forgotten below the horizon)
    assert {c.core(n).store.chains["x"][-1].commit_ts for n in NODES} == {h.commit_ts}
    assert nothing_left(c) is None, nothing_left(c)


def test_a_coordinator_that_crashes_after_its_decision_and_before_the_acks_still_forgets():
    """The acks die with the coordinator. Its END is logged only after the last ack, so the
    restart leads the commit again from BEGIN, collects the acks, and sends LEARNED (an END
    logged at the decision made the restart skip it: the acceptors kept it forever)."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: c.states().get(("n1", "coordinator", t)) == COMMITTING)
    if "n1" in c.pending_flushes():
        c.flush("n1")  # whatever the decision logged is durable
    c.crash("n1")
    c.run()
    assert entries(c)  # n2 and n3 acked into the void: their acceptors keep T1
    c.restart("n1")
    finish(c, h, t)


def restart_with_every_learned_lost(c: kvlab.Cluster) -> None:
    """Drop every LEARNED in flight, then crash and restart the coordinator n1."""
    for env in [e for e in c.pending() if e.msg.kind == LEARNED]:
        c.drop(env)
    c.crash("n1")
    c.restart("n1")


def test_a_coordinator_that_crashes_after_its_end_and_before_learned_still_forgets():
    """END durable, every LEARNED lost with the crash: the coordinator's own acceptor entry,
    kept until the others acked, makes the restarted coordinator send LEARNED again."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: any(e.msg.kind == LEARNED for e in c.pending()))
    restart_with_every_learned_lost(c)
    finish(c, h, t)


def test_a_coordinator_whose_own_acceptor_accepted_nothing_still_has_its_reminder():
    """Every vote to n1's own acceptor is lost: n1 decides from n2's and n3's accepts, so only
    the ballot-0 promise forced with its END is left to remind the restarted n1 of T1."""
    c = paxos()
    t, h = start_one(c)
    for _ in range(10_000):
        for env in c.pending():
            if env.msg.kind == P2A and env.msg.dst == "n1":
                c.drop(env)
        if any(e.msg.kind == LEARNED for e in c.pending()):
            break
        assert c.step()
    assert [r.type for r in records(c, "n1") if r.data.get("tx") == t][-2:] == \
        ["END", "PROMISE"]
    restart_with_every_learned_lost(c)
    finish(c, h, t)


def test_a_lost_learned_is_sent_again_until_acked():
    c = paxos()
    t, h = start_one(c)
    lost: set[Any] = set()
    for _ in range(10_000):
        for env in c.pending():
            if env.msg.kind == LEARNED and env.msg.dst not in lost | {"n1"}:
                lost.add(env.msg.dst)
                c.drop(env)
        if not c.step():
            break
    assert lost == {"n2", "n3"}
    finish(c, h, t)


def test_a_ballot_0_vote_delivered_after_learned_is_forgotten_too():
    """n2's vote to n3 is delayed until T1 is over: n3 makes an entry for it, answered by
    nobody, and asks the coordinator, which has ended T1 and says forget it."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: any(e.msg.kind == P2A and e.msg.src == "n2" and e.msg.dst == "n3"
                             for e in c.pending()))
    env = next(e for e in c.pending()
               if e.msg.kind == P2A and e.msg.src == "n2" and e.msg.dst == "n3")
    c.drop(env)
    finish(c, h, t)
    c._apply("n3", c.core("n3").deliver(env.msg))  # the delayed copy arrives
    assert entries(c) == {"n3": [t]}
    finish(c, h, t)


def test_a_phase_1_of_an_old_leader_delivered_after_learned_is_forgotten_too():
    c = paxos()
    t, h = start_one(c)
    finish(c, h, t)
    late = Message("n2", "n3", P1A, t, {"ballot": [7, "n2"], "start_ts": 1,
                                         "coordinator": "n1"})
    c._apply("n3", c.core("n3").deliver(late))
    assert entries(c) == {"n3": [t]}
    finish(c, h, t)


def test_an_acceptor_that_loses_its_learned_record_in_a_crash_asks_again():
    """n2 forgets T1 and acks, then crashes before its (unforced) LEARNED record is durable:
    the replay brings the entry back, and it asks the coordinator again."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: any(e.msg.kind == LEARNED and e.msg.dst == "n2"
                             for e in c.pending()))
    c.deliver(next(e for e in c.pending() if e.msg.kind == LEARNED and e.msg.dst == "n2"))
    assert t not in c.core("n2").coordinator.acceptor.txs
    c.crash("n2")
    c.restart("n2")
    assert t in c.core("n2").coordinator.acceptor.txs  # back from its ACCEPT records
    start = len(c.trace)
    finish(c, h, t)
    # it asked, and n1, done with T1, answered LEARNED (n2 had acked the first one already)
    said = asked(c, t, start)
    assert said.index(("n2", "n1", MAY_FORGET)) < said.index(("n1", "n2", LEARNED))
    assert ("n1", "n2", NOT_YET) not in said


def asked(c: kvlab.Cluster, t: str, start: int = 0) -> list[tuple[str, str, str]]:
    """The acceptors' questions about ``t`` and the coordinator's answers, in order."""
    return [(e.data["src"], e.data["dst"], e.data["kind"]) for e in c.trace[start:]
            if e.kind == "send" and e.tx == t and e.data["kind"] in (MAY_FORGET, NOT_YET, LEARNED)]


def test_an_acceptor_asks_with_may_forget_and_a_busy_coordinator_says_not_yet():
    """n3 is down after the decision, so n1 waits for its ack. n2 restarts meanwhile: its
    entry comes back and asks (MAY_FORGET); n1 is still at work, answers NOT_YET, and n2 stops
    asking. Once n3 is back and acks, LEARNED comes unasked and n2 forgets."""
    c = paxos()
    t, h = start_one(c)
    run_until(c, lambda: c.states().get(("n1", "coordinator", t)) == COMMITTING)
    c.crash("n3")
    c.crash("n2")
    c.restart("n2")
    start = len(c.trace)
    c.run()
    assert t in c.core("n2").coordinator.acceptor.txs  # kept: n1 has not ended it
    assert asked(c, t, start)[:2] == [("n2", "n1", MAY_FORGET), ("n1", "n2", NOT_YET)]
    assert not c.core("n2").coordinator.acceptor.parked.get("n1")  # it stopped asking
    c.restart("n3")
    c.run()
    assert h.committed and t not in c.core("n2").coordinator.acceptor.txs
    assert nothing_left(c) is None, nothing_left(c)


def test_a_participant_that_is_no_acceptor_forgets_its_own_ballots_promise():
    """4 nodes: n4 takes part, is no acceptor of n1's transaction, and takes over (promising
    its ballot on itself) while n1 is down; no LEARNED goes to n4, its leader's retirement
    drops the promise."""
    c = kvlab.Cluster(["n1", "n2", "n3", "n4"], seed=0, commit_protocol="paxos", paxos_f=1)
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 1)
    h = n1.commit_async(t)
    run_until(c, lambda: voted(c, t, ["n2", "n3", "n4"]))
    c.crash("n1")
    run_until(c, lambda: t in c.core("n4").coordinator.leaders)
    c.run()
    c.restart("n1")
    c.run()
    assert h.done and nothing_left(c) is None, nothing_left(c)


def test_memory_stays_flat_under_loss_and_crashes():
    """A conflicting workload on a lossy network with the coordinators crashing now and then:
    once every node is back and the run is quiet, no acceptor holds anything."""
    c = paxos(trace=False, loss=0.05)
    handles = []
    for i in range(60):
        for j in range(3):
            node = c[NODES[(i + j) % 3]]
            try:
                t = node.begin()
                node.put(t, f"k{(i + j) % 2}", j)
                handles.append(node.commit_async(t))
            except kvlab.errors.KvlabError:
                pass
        if i % 7 == 3:
            c.crash(NODES[i % 3])
        c.run()
        for n in NODES:
            c.restart(n)
    c.network.loss = 0
    c.run()
    assert sum(bool(h.committed) for h in handles) > 20
    assert nothing_left(c) is None, nothing_left(c)
