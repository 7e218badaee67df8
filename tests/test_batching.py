"""Cluster(batch_window=w): a node's messages to one peer travel as one BATCH (kvlab.batching),
so overlapping commits share messages and fsyncs, and every schedule stays safe."""

from __future__ import annotations

from typing import Any

import pytest

import kvlab
from kvlab import explore
from kvlab.bench import two_commits
from kvlab.errors import ConfigurationError
from kvlab.messages import BATCH, PREPARE

NODES = ["n1", "n2", "n3"]


def four_commits(batch_window: int | None = 0, **kw: Any) -> tuple[kvlab.Cluster, list]:
    """n1 starts four commits at the same tick; every node stores every key."""
    c = kvlab.Cluster(NODES, seed=0, batch_window=batch_window, **kw)
    n1 = c["n1"]
    txs = [n1.begin() for _ in range(4)]
    for i, t in enumerate(txs):
        n1.put(t, f"k{i}", i)
    start = len(c.trace)
    handles = [n1.commit_async(t) for t in txs]
    c.run()
    return c, c.trace[start:], handles


def sends(events: list, kind: str | None = None) -> list:
    return [e for e in events if e.kind == "send" and "tso" not in (e.data["src"], e.data["dst"])
            and (kind is None or e.data["kind"] == kind)]


def test_one_batch_carries_every_prepare_to_each_participant():
    _, plain, hs = four_commits(None)
    c, batched, hb = four_commits(0)
    assert all(h.committed for h in hs + hb)
    assert len(sends(plain, PREPARE)) == 12  # 4 transactions x 3 participants
    remote = [e for e in sends(batched, BATCH) if e.data["src"] == "n1"]
    assert len(remote) == 4  # n1 -> n2 and n3: the PREPAREs, then the COMMITs
    def remote(events: list) -> list:
        return [e for e in sends(events) if e.data["src"] != e.data["dst"]]

    # PREPARE, vote, COMMIT and ack: 4 x 4 transactions x 2 peers, or 4 batches x 2 peers
    assert (len(remote(plain)), len(remote(batched))) == (32, 8)
    assert any(e.kind == "deliver" and e.data["kind"] == BATCH for e in batched)
    # n2 appends the four PREPARE records in one go: one flush makes them durable
    flushes = [e for e in batched if e.kind == "flush" and e.node == "n2"]
    assert flushes[0].data["records"] == 4


def test_the_window_delays_a_batch_by_at_most_its_ticks():
    c = kvlab.Cluster(NODES, seed=0, batch_window=3)
    t = c["n1"].begin()
    c["n1"].put(t, "x", 1)
    t0 = c.now
    h = c["n1"].commit_async(t)
    assert ("n1", ("batch", "n2")) in c._timers and ("n1", ("batch", "n3")) in c._timers
    while not any(e.kind == "send" and e.data["kind"] == PREPARE and e.data["dst"] == "n2"
                  for e in c.step()):
        pass
    assert c.now - t0 == 3  # held exactly the window, then sent (alone: not wrapped)
    assert h.wait()


def test_without_the_switch_nothing_is_batched_and_the_trace_is_unchanged():
    a, b = two_commits(), two_commits(batch_window=None)
    a.run()
    b.run()
    assert [str(e) for e in a.trace] == [str(e) for e in b.trace]
    assert not sends(list(a.trace), BATCH)


def test_a_crash_loses_the_open_batches_and_the_protocol_recovers():
    c = kvlab.Cluster(NODES, seed=0, batch_window=5)
    t = c["n1"].begin()
    c["n1"].put(t, "x", 1)
    h = c["n1"].commit_async(t)
    c.crash("n1")  # its PREPAREs were still in their batches
    c.run()
    assert h.done and h.committed is False
    assert not c.pending()
    c.restart("n1")
    assert kvlab.check(c.history).ok


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_a_bad_window_says_what_to_do(bad):
    with pytest.raises(ConfigurationError, match="batch_window"):
        kvlab.Cluster(NODES, batch_window=bad)


def one_commit(window: int, **kw: Any) -> kvlab.Cluster:
    c = kvlab.Cluster(NODES, seed=0, batch_window=window, **kw)
    t = c["n1"].begin()
    c["n1"].put(t, "x", 1)
    c["n1"].commit_async(t)
    return c


@pytest.mark.parametrize("window", [0, 2])
@pytest.mark.parametrize("faults", [dict(crashes=1), pytest.param(dict(crashes=1, drops=1),
                                                                  marks=pytest.mark.slow)])
def test_explorer_one_commit_stays_safe_with_batching(window, faults):
    r = explore.search(lambda: one_commit(window), progress=False, **faults)
    assert r.status == "exhausted" and r.violation is None, str(r)


@pytest.mark.slow
def test_explorer_two_commits_stay_safe_with_batching():
    r = explore.search(lambda: two_commits(batch_window=0), crashes=0, progress=False)
    assert r.status == "exhausted" and r.violation is None, str(r)


def test_explorer_still_catches_a_broken_rule_with_batching():
    r = explore.search(lambda: one_commit(0, rules=kvlab.Rules(force_decision=False)),
                       crashes=1, progress=False)
    assert r.violation is not None


def test_explorer_batching_with_one_phase_commit():
    def setup() -> kvlab.Cluster:
        c = kvlab.Cluster(NODES, seed=0, placement="partitioned", one_phase=True,
                          batch_window=0)
        owner = c._cores["n1"].owner
        keys = [k for k in (f"k{i}" for i in range(50)) if owner(k) == "n2"][:2]
        for k in keys:
            t = c["n1"].begin()
            c["n1"].put(t, k, 1)
            c["n1"].commit_async(t)
        return c

    r = explore.search(setup, crashes=1, duplicates=1, progress=False)
    assert r.status == "exhausted" and r.violation is None, str(r)
