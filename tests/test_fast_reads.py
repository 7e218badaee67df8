"""Cluster(fast_reads=True): a read skips a prepared lock that must commit above its snapshot."""

from __future__ import annotations

import pytest
from conftest import reader_races_a_commit

import kvlab
from kvlab import explore
from kvlab.exercises.fastpath import read_meets_prepared_lock
from kvlab.messages import PREPARE

NODES = ["n1", "n2", "n3"]


def reader_snapshot_before_prepare(fast_reads: bool = True,
                                   protocol: str = "2pc") -> kvlab.Cluster:
    """The writer begins first, the reader's snapshot is issued at n3, then the writer
    prepares on n3 and the reader reads x there: the writer must commit above the snapshot."""
    c, r = read_meets_prepared_lock(fast_reads, protocol)
    c.read = c["n3"].get_async(r, "x")  # type: ignore[attr-defined]
    return c


@pytest.mark.parametrize("protocol", ["2pc", "paxos"])
def test_the_read_waits_without_the_switch_and_not_with_it(protocol):
    waits = {}
    for fast in (False, True):
        c = reader_snapshot_before_prepare(fast, protocol)
        waits[fast] = len(c._cores["n3"].waiting)
        h = c.read
        c.run()
        assert h.done and h._value == 0  # the snapshot's version either way
    assert waits == {False: 1, True: 0}


def test_a_snapshot_newer_than_anything_the_participant_knew_still_waits():
    c = kvlab.Cluster(NODES, seed=0, fast_reads=True)
    n1, n3 = c["n1"], c["n3"]
    w = n1.begin()
    n1.put(w, "x", 1)
    n1.commit_async(w)
    while not any(e.kind == "deliver" and e.node == "n3" and e.data["kind"] == PREPARE
                  for e in c.step()):
        pass
    r = n3.begin()  # issued after n3 prepared: the commit may land at or below it
    h = n3.get_async(r, "x")
    assert len(c._cores["n3"].waiting) == 1
    c.run()
    committed_at = n1.outcome(w).commit_ts
    assert h.done and h._value == (1 if committed_at <= c._cores["n3"].coordinator.txs[r].start_ts
                                   else None)


def test_off_by_default_and_checked():
    c = kvlab.Cluster(NODES, seed=0)
    t = c["n1"].begin()
    c["n1"].put(t, "x", 1)
    c["n1"].commit(t)
    assert all(c._cores[n].store.seen == 0 for n in NODES)
    with pytest.raises(kvlab.ConfigurationError, match="fast_reads"):
        kvlab.Cluster(NODES, fast_reads="yes")


def racing(protocol: str = "2pc"):
    def setup() -> kvlab.Cluster:
        return reader_snapshot_before_prepare(True, protocol)
    return setup


@pytest.mark.parametrize("protocol,crashes", [("2pc", 0), ("2pc", 1), ("cooperative", 1)])
def test_the_explorer_finds_no_stale_read(protocol, crashes):
    r = explore.search(racing(protocol), crashes=crashes)
    assert r.status == "exhausted", r


def test_the_explorer_catches_a_floor_that_is_too_high(monkeypatch):
    from kvlab.node import NodeCore

    real = NodeCore._deliver

    def too_high(self, msg):
        if msg.kind == PREPARE:
            self.max_ts += 100  # pretend to know timestamps the oracle never issued
        return real(self, msg)

    monkeypatch.setattr(NodeCore, "_deliver", too_high)

    def setup() -> kvlab.Cluster:
        # T2 begins once T1's commit timestamp is assigned, while n3 still holds T1 prepared
        # (its COMMIT dropped): only a wrong floor lets T2's read skip the lock
        return reader_races_a_commit(fast_reads=True)

    monkeypatch.undo()
    assert explore.search(setup, crashes=0).status == "exhausted"
    monkeypatch.setattr(NodeCore, "_deliver", too_high)
    r = explore.search(setup, crashes=0)
    assert r.status == "violation" and "stale" in r.violation, r
