"""Cooperative termination (commit_protocol="cooperative"): in-doubt participants ask each other."""

from __future__ import annotations

import pytest

import kvlab
from kvlab import bench, explore
from kvlab.messages import DECISION_REPLY, DECISION_REQ, PREPARE
from kvlab.twopc import ABORTED, COMMITTED, IN_DOUBT

NODES = ["n1", "n2", "n3"]


def one_commit(protocol: str = "cooperative", **kw) -> tuple[kvlab.Cluster, str, object]:
    c = kvlab.Cluster(NODES, seed=0, commit_protocol=protocol, **kw)
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 1)
    return c, t, n1.commit_async(t)


def setup_for(protocol: str):
    def setup() -> kvlab.Cluster:
        return one_commit(protocol)[0]
    return setup


def state(c: kvlab.Cluster, node: str, tx: str) -> str | None:
    t = c._cores[node].participant.txs.get(tx)
    return None if t is None else t.state


def kinds(c: kvlab.Cluster) -> list[str]:
    return [e.data["kind"] for e in c.trace if e.kind == "send"]


def test_without_failures_it_is_two_phase_commit_message_for_message():
    runs = {}
    for protocol in ("2pc", "cooperative"):
        c, t, h = one_commit(protocol)
        c.run()
        assert h.committed
        runs[protocol] = kinds(c)
    assert runs["2pc"] == runs["cooperative"]
    assert DECISION_REQ not in runs["cooperative"]


def _crash_with_prepare_to_n3_lost(protocol: str):
    c, t, h = one_commit(protocol)
    while not any(e.kind == "deliver" and e.node == "n2" and e.data["kind"] == PREPARE
                  for e in c.step()):
        pass
    c.crash("n1")
    for env in [e for e in c.pending() if e.msg.src == "n1"]:
        c.drop(env)  # the PREPARE to n3 died with n1
    c.run()
    return c, t, h


def test_a_participant_that_never_voted_aborts_and_frees_the_one_in_doubt():
    c, t, h = _crash_with_prepare_to_n3_lost("cooperative")
    assert state(c, "n3", t) == ABORTED and state(c, "n2", t) == ABORTED
    assert not c._cores["n2"].store.write_locks
    assert DECISION_REQ in kinds(c) and DECISION_REPLY in kinds(c)
    assert explore.nonblocking(c) is None
    # the same crash under 2PC leaves n2 holding its lock until n1 comes back
    c2, t2, _ = _crash_with_prepare_to_n3_lost("2pc")
    assert state(c2, "n2", t2) == IN_DOUBT
    assert "blocked" in explore.nonblocking(c2)
    c2.restart("n1")
    c2.run()
    assert state(c2, "n2", t2) == ABORTED


def test_a_unilateral_abort_is_forced_and_later_refuses_the_prepare(tmp_path):
    c = kvlab.Cluster(NODES, seed=0, commit_protocol="cooperative", data_dir=tmp_path)
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 1)
    h = n1.commit_async(t)
    while not any(e.kind == "deliver" and e.node == "n2" and e.data["kind"] == PREPARE
                  for e in c.step()):
        pass
    late = next(e for e in c.pending() if e.msg.dst == "n3" and e.msg.kind == PREPARE)
    c.crash("n1")
    saved = late.msg
    c.drop(late)
    c.run()
    assert state(c, "n3", t) == ABORTED
    aborts = [e for e in c.trace if e.kind == "wal" and e.node == "n3" and "ABORT" in str(e)]
    assert aborts and "force" in str(aborts[0])
    c.crash("n3")
    c.restart("n3")  # the unilateral abort is replayed from the log
    assert state(c, "n3", t) == ABORTED
    out = c._cores["n3"].handle(kvlab.node.Deliver(saved))
    assert [m.kind for m in out.messages] == ["VOTE_NO"]
    assert out.messages[0].dst == "n1"
    c.restart("n1")
    c.run()
    assert not h.committed and n1.outcome(t).status == "aborted"
    c.close()


def test_a_participant_that_committed_tells_the_one_whose_commit_was_lost():
    c, t, h = one_commit()
    while not any(e.kind == "deliver" and e.node == "n2" and e.data["kind"] == "COMMIT"
                  for e in c.step()):
        pass
    c.crash("n1")
    for env in [e for e in c.pending() if e.msg.src == "n1"]:
        c.drop(env)
    c.run()
    assert state(c, "n3", t) == COMMITTED
    ts = {c._cores[n].participant.txs[t].commit_ts for n in ("n2", "n3")}
    assert len(ts) == 1 and c["n3"].begin() and h.committed
    assert explore.nonblocking(c) is None


def test_when_every_live_participant_is_in_doubt_it_still_blocks_and_run_returns():
    c, t, h = one_commit()
    while sum(e.kind == "send" and e.data["kind"] == "VOTE_YES"
              for e in c.trace) < 3:
        c.step()
    c.crash("n1")
    c.run()  # returns: peers that answered "in doubt too" are not watched
    assert c.quiet
    assert state(c, "n2", t) == IN_DOUBT and state(c, "n3", t) == IN_DOUBT
    assert "blocked" in explore.nonblocking(c)
    replies = [e for e in c.trace if e.kind == "send" and e.data["kind"] == DECISION_REPLY]
    assert replies
    c.restart("n1")
    c.run()
    assert state(c, "n2", t) == state(c, "n3", t) == ABORTED  # presumed abort, as in 2PC


def test_cooperative_blocks_at_fewer_crash_points_than_2pc():
    blocked = {p: {k for k, _, why in explore.crash_points(setup_for(p), "n1") if why}
               for p in ("2pc", "cooperative")}
    assert blocked["cooperative"] < blocked["2pc"]
    assert blocked["cooperative"]  # all prepared, all in doubt: still blocks


@pytest.mark.parametrize("budget", [
    {},  # 29,792 states, about 9 s
    pytest.param({"drops": 1}, marks=pytest.mark.slow),  # 1,613,350 states, about 9 minutes
    pytest.param({"timeouts": 1}, marks=pytest.mark.slow),
])
def test_the_explorer_finds_no_violation_under_cooperative(budget):
    r = explore.search(setup_for("cooperative"), crashes=1, **budget)
    assert r.status == "exhausted", r
    assert r.states > 1_000


def test_the_explorer_finds_the_blocking_schedule_of_2pc_and_of_cooperative():
    for p in ("2pc", "cooperative"):
        r = explore.search(setup_for(p), crashes=1, invariants=[explore.nonblocking])
        assert r.status == "violation" and "blocked" in r.violation, r
        c = r.replay()
        assert explore.nonblocking(c) == r.violation


@pytest.mark.slow  # about 2 minutes
def test_two_conflicting_commits_are_exhausted_under_cooperative():
    r = explore.search(lambda: bench.two_commits(commit_protocol="cooperative"), crashes=0)
    assert r.status == "exhausted", r


@pytest.mark.slow  # 2,205,027 states, about 11 minutes (1.4 GB), depth-first
def test_two_conflicting_commits_are_exhausted_under_cooperative_with_a_crash():
    r = explore.search(lambda: bench.two_commits(commit_protocol="cooperative"), crashes=1,
                       strategy="dfs")
    assert r.status == "exhausted", r
    assert r.states > 2_000_000


def test_bad_protocol_settings_are_typed_errors():
    with pytest.raises(kvlab.ConfigurationError, match="commit_protocol"):
        kvlab.Cluster(NODES, commit_protocol="3pc")
    with pytest.raises(kvlab.ConfigurationError, match="paxos_f"):
        kvlab.Cluster(NODES, commit_protocol="paxos", paxos_f=2)
    with pytest.raises(kvlab.ConfigurationError, match="paxos_f"):
        kvlab.Cluster(NODES, paxos_f=-1)
