"""Cluster(one_phase=True): a transaction with a single participant skips the PREPARE round
(kvlab.onephase), and stays atomic and durable under every schedule the explorer tries."""

from __future__ import annotations

from typing import Any

import pytest

import kvlab
from kvlab import explore
from kvlab.errors import ConfigurationError
from kvlab.messages import ONE_PHASE, PREPARE, RESOLVE
from kvlab.twopc import ABORTED

NODES = ["n1", "n2", "n3"]


def keys_on(c: kvlab.Cluster, node: str, n: int = 2) -> list[str]:
    core = c._cores[node]
    return [k for k in (f"k{i}" for i in range(100)) if core.owner(k) == node][:n]


def records(c: kvlab.Cluster, node: str) -> list[Any]:
    return c._wals[node].scan().records


def cluster(one_phase: bool = True, **kw: Any) -> kvlab.Cluster:
    return kvlab.Cluster(NODES, seed=0, placement="partitioned", one_phase=one_phase, **kw)


def remote_commit(one_phase: bool = True, **kw: Any) -> kvlab.Cluster:
    """n1 commits two writes that both live on n2: one participant, not the coordinator."""
    c = cluster(one_phase, **kw)
    a, b = keys_on(c, "n2")
    t = c["n1"].begin()
    c["n1"].put(t, a, 1)
    c["n1"].put(t, b, 1)
    c.handle = c["n1"].commit_async(t)  # type: ignore[attr-defined]
    return c


def local_commit(one_phase: bool = True, **kw: Any) -> kvlab.Cluster:
    """n2 commits writes that live on n2: coordinator and participant are one node."""
    c = cluster(one_phase, **kw)
    t = c["n2"].begin()
    for k in keys_on(c, "n2"):
        c["n2"].put(t, k, 1)
    c.handle = c["n2"].commit_async(t)  # type: ignore[attr-defined]
    return c


def two_on_one(one_phase: bool = True, **kw: Any) -> kvlab.Cluster:
    """Two conflicting single-participant commits from two coordinators, both to n2."""
    c = cluster(one_phase, **kw)
    x, y = keys_on(c, "n2")
    t1, t2 = c["n1"].begin(), c["n3"].begin()
    c["n1"].put(t1, x, 1)
    c["n3"].put(t2, x, 2)
    c["n3"].put(t2, y, 2)
    c["n1"].commit_async(t1)
    c["n3"].commit_async(t2)
    return c


def counts(c: kvlab.Cluster, start: int) -> tuple[int, int, int]:
    """(messages between nodes, forced records, ticks until the handle settled)."""
    t0, h = c.now, c.handle  # type: ignore[attr-defined]
    while not h.done:
        c.step()
    ticks = c.now - t0
    c.run()
    events = c.trace[start:]
    msgs = sum(1 for e in events if e.kind == "send" and "tso" not in (e.data["src"],
                                                                        e.data["dst"]))
    forced = sum(1 for e in events if e.kind == "wal" and e.data["force"])
    return msgs, forced, ticks


def test_one_participant_commits_in_one_round_with_one_forced_record():
    two = remote_commit(one_phase=False)
    one = remote_commit(one_phase=True)
    assert counts(two, 0) == (4, 3, 6)  # PREPARE, VOTE, COMMIT, ACK; PREPARE/DECISION/COMMIT
    assert counts(one, 0) == (2, 1, 4)  # ONE_PHASE, ACK; the participant's COMMIT
    kinds = {e.data["kind"] for e in one.trace if e.kind == "send"}
    assert ONE_PHASE in kinds and PREPARE not in kinds
    assert one.handle.committed and "one-phase" in one.handle.reason
    wal = [r for r in records(one, "n2") if r.type == "COMMIT"]
    assert len(wal) == 1 and len(wal[0].data["writes"]) == 2  # the record carries the writes
    t = one["n1"].begin()
    assert [one["n1"].get(t, k) for k in keys_on(one, "n2")] == [1, 1]


def test_two_participants_still_run_two_phase_commit():
    c = cluster()
    t = c["n1"].begin()
    c["n1"].put(t, keys_on(c, "n2", 1)[0], 1)
    c["n1"].put(t, keys_on(c, "n3", 1)[0], 1)
    assert c["n1"].commit(t)
    kinds = {e.data["kind"] for e in c.trace if e.kind == "send"}
    assert PREPARE in kinds and ONE_PHASE not in kinds


def test_the_loser_of_a_conflict_aborts_for_good_and_its_no_is_forced():
    c = two_on_one()
    c.run()
    outcomes = {tx: c[n].outcome(tx).committed for n in ("n1", "n3")
                for tx in c._cores[n].coordinator.txs}
    assert sorted(outcomes.values()) == [False, True]  # first committer wins
    loser = next(tx for tx, ok in outcomes.items() if not ok)
    aborts = [r for r in records(c, "n2") if r.type == "ABORT" and r.data["tx"] == loser]
    assert aborts and "start_ts" in aborts[0].data  # forced, so recovery remembers it
    assert any(e.kind == "wal" and e.data["tx"] == loser and e.data["force"] for e in c.trace)


def test_a_coordinator_crash_leaves_the_outcome_to_the_participant():
    c = remote_commit()
    h = c.handle
    while not any(e.kind == "deliver" and e.data["kind"] == ONE_PHASE for e in c.step()):
        pass
    c.crash("n1")
    assert not h.done  # 2PC would presume abort here; the participant decides instead
    c.run()
    assert h.done and h.committed
    c.restart("n1")
    c.run()
    assert h.committed and not any(e.kind == "send" and e.data["kind"] == RESOLVE
                                   for e in c.trace)  # settled: nothing to ask


def test_a_restarted_coordinator_asks_and_a_lost_commit_aborts_for_good():
    c = remote_commit()
    h = c.handle
    env = next(e for e in c.pending() if e.msg.kind == ONE_PHASE)
    c.crash("n1")
    c.drop(env)  # the request died with its sender
    assert not h.done
    c.restart("n1")
    c.run()
    assert h.done and h.committed is False  # RESOLVE: n2 never heard of it, and aborts it
    assert any(e.kind == "send" and e.data["kind"] == RESOLVE for e in c.trace)
    assert c._cores["n2"].participant.txs[h.tx].state == ABORTED
    # forced: a copy of the request that turns up after a crash of n2 still finds it aborted
    assert any(r.type == "ABORT" and r.data["tx"] == h.tx for r in records(c, "n2"))


def test_the_participant_recovers_a_one_phase_commit_from_its_log(tmp_path):
    c = remote_commit(data_dir=tmp_path)
    c.handle.wait()
    c.crash("n2")
    c.restart("n2")
    t = c["n1"].begin()
    assert [c["n1"].get(t, k) for k in keys_on(c, "n2")] == [1, 1]


def test_a_retry_after_the_participant_crashed_commits_once():
    c = remote_commit()
    while not any(e.kind == "deliver" and e.data["kind"] == ONE_PHASE for e in c.step()):
        pass
    c.crash("n2")  # locked, nothing durable: it forgets the request
    c.restart("n2")
    assert c.handle.wait()  # the coordinator resends and never aborts on its own
    assert sum(1 for r in records(c, "n2") if r.type == "COMMIT") == 1


@pytest.mark.parametrize("bad", [dict(one_phase=1),
                                 dict(one_phase=True, commit_protocol="paxos")])
def test_bad_switches_say_what_to_do(bad):
    with pytest.raises(ConfigurationError, match="one_phase"):
        kvlab.Cluster(NODES, placement="partitioned", **bad)


# -- the explorer (its safety invariant checks told-aborted too, its end check DELEGATED) ----
def search(setup: Any, **kw: Any) -> explore.Result:
    return explore.search(setup, progress=False, **kw)


@pytest.mark.parametrize("setup", [remote_commit, local_commit])
@pytest.mark.parametrize("faults", [dict(crashes=1), dict(crashes=1, drops=1),
                                    dict(crashes=1, duplicates=1), dict(crashes=2),
                                    dict(crashes=1, timeouts=1)])
def test_explorer_one_commit_is_atomic_and_durable_under_every_schedule(setup, faults):
    r = search(setup, **faults)
    assert r.status == "exhausted" and r.violation is None, str(r)


@pytest.mark.parametrize("faults", [
    dict(crashes=1), dict(crashes=1, duplicates=1),
    pytest.param(dict(crashes=1, duplicates=1, timeouts=1), marks=pytest.mark.slow)])
def test_explorer_two_conflicting_one_phase_commits(faults):
    r = search(two_on_one, **faults)
    assert r.status == "exhausted" and r.violation is None, str(r)


def test_explorer_catches_an_unforced_commit_record():
    r = search(lambda: remote_commit(rules=kvlab.Rules(force_commit=False)), crashes=1)
    assert r.violation is not None and "durability" in r.violation, str(r)
    assert "crash" in str(r.schedule)


def test_explorer_catches_an_unforced_no(monkeypatch):
    from kvlab import onephase

    real = onephase.OnePhaseParticipant._abort_1pc

    def unforced(self, out, tx, event, reason, **why):
        real(self, out, tx, event, reason, **why)
        out.records[-1].force = False
        return out

    monkeypatch.setattr(onephase.OnePhaseParticipant, "_abort_1pc", unforced)
    # a copy of the refused request, still in flight while n2 crashes and restarts ("early")
    r = search(two_on_one, crashes=1, duplicates=1, timeouts=1)
    assert r.violation is not None and "aborted" in r.violation, str(r)


def test_the_fast_path_table_shows_what_one_phase_commit_saves():
    from kvlab.bench_fastpath import fastpath_table, report

    rows = {r["setting"]: r for r in fastpath_table(n=48, concurrency=8, colocated=True)}
    base, one = rows["2PC (the lessons' default)"], rows["+ one-phase commit"]
    assert base["committed"] == one["committed"] > 0
    assert base["forced"] == pytest.approx(3.0) and one["forced"] == pytest.approx(1.0)
    assert one["messages"] == pytest.approx(base["messages"] - 2)  # no VOTE, no COMMIT
    assert one["latency"] < base["latency"]
    assert len(report(list(rows.values()))) == len(rows) + 1
