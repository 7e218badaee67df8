"""Crash recovery: every node crashed at every step of 2PC, on both disks; reopen; corrupt logs."""

from __future__ import annotations

import os
import sys
import warnings

import pytest

import kvlab
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]


def two_round_workload(c: kvlab.Cluster) -> list[str]:
    """Two overlapping 2PC rounds from different coordinators, one conflicting pair and one
    disjoint transaction, so the trace has prepare, vote-no, commit and abort paths in it."""
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    t1 = n1.begin()
    n1.put(t1, "x", 1)
    n1.put(t1, "y", 1)
    t2 = n2.begin()
    n2.put(t2, "y", 2)
    n2.put(t2, "z", 2)
    t3 = n3.begin()
    n3.put(t3, "w", 3)
    for node, tx in ((n1, t1), (n2, t2), (n3, t3)):
        node.commit_async(tx)
    return [t1, t2, t3]


def writers_on(c: kvlab.Cluster, node: str) -> set[str]:
    core = c.core(node)
    return {v.writer for chain in core.store.chains.values() for v in chain}


def check_agreement(c: kvlab.Cluster, txs: list[str], where: str) -> None:
    """Atomicity and durability, once every node is up and the cluster is quiet."""
    for tx in txs:
        status = c.history[tx].status
        assert status in ("committed", "aborted"), f"{where}: {tx} still {status}"
        present = {n: tx in writers_on(c, n) for n in NODES}
        if status == "committed":
            assert all(present.values()), f"{where}: committed {tx} missing on {present}"
        else:
            assert not any(present.values()), f"{where}: aborted {tx} applied on {present}"
    for n in NODES:
        core = c.core(n)
        assert not core.store.write_locks, f"{where}: locks left on {n}"
        assert not core.participant.in_doubt(), f"{where}: in-doubt left on {n}"


def reference_steps() -> int:
    c = kvlab.Cluster(NODES, seed=0)
    two_round_workload(c)
    return c.run()


STEPS = reference_steps()


def test_reference_run_exercises_commit_and_abort():
    c = kvlab.Cluster(NODES, seed=0)
    txs = two_round_workload(c)
    c.run()
    statuses = [c.history[t].status for t in txs]
    assert statuses == ["committed", "aborted", "committed"]
    check_agreement(c, txs, "reference")
    kinds = {e.data["kind"] for e in c.trace.filter("deliver")}
    assert {"PREPARE", "VOTE_YES", "VOTE_NO", "COMMIT", "ABORT", "ACK"} <= kinds


def crash_at(step: int, victim: str, torn: bool, data_dir=None, restart_first=False) -> None:
    c = kvlab.Cluster(NODES, seed=0, data_dir=data_dir)
    txs = two_round_workload(c)
    for _ in range(step):
        c.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        c.crash(victim, torn=torn)
        if not restart_first:
            c.run()  # the survivors time out, abort or park, as the protocol says
        c.restart(victim)
    c.run()
    check_agreement(c, txs, f"crash {victim} after step {step} (torn={torn})")
    # the recovered cluster still works: every key reads the same on every node
    reads = []
    for n in NODES:
        node = c[n]
        tx = node.begin()
        reads.append({k: node.get(tx, k) for k in "xyzw"})
        assert node.commit(tx)
    assert reads[0] == reads[1] == reads[2]
    c.close()


@pytest.mark.parametrize("victim", NODES)
@pytest.mark.parametrize("torn", [False, True])
def test_crash_every_node_at_every_step_memory(victim, torn):
    for step in range(STEPS + 1):
        crash_at(step, victim, torn)


@pytest.mark.parametrize("victim", NODES)
def test_crash_every_node_at_every_step_restart_at_once(victim):
    for step in range(STEPS + 1):
        crash_at(step, victim, torn=False, restart_first=True)


@pytest.mark.parametrize("victim", NODES)
def test_crash_every_node_at_every_step_file(victim, tmp_path):
    for step in range(STEPS + 1):
        for torn in (False, True):
            crash_at(step, victim, torn, data_dir=tmp_path / f"{step}-{torn}")


def test_committed_reply_means_durable_even_if_coordinator_crashes_right_after():
    c = kvlab.Cluster(NODES)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "k", "v")
    h = n1.commit_async(tx)
    while not h.done:
        c.step()
    assert h.committed
    c.crash("n1")
    c.run()
    c.restart("n1")
    c.run()
    for n in NODES:
        r = c[n].begin()
        assert c[n].get(r, "k") == "v"


def test_coordinator_crash_blocks_prepared_participants_until_restart():
    """The blocking problem of 2PC: a participant that voted yes can neither commit nor abort
    on its own; it stays in doubt (parked, not spinning) until the coordinator is back."""
    c = kvlab.Cluster(NODES)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "k", 1)
    n1.commit_async(tx)
    # run until every participant's VOTE_YES is on the wire, then crash the coordinator
    while len([e for e in c.trace.filter("send") if e.data["kind"] == "VOTE_YES"]) < 3:
        c.step()
    c.crash("n1")
    c.run()  # returns: retries toward the dead coordinator are bounded, then parked
    for n in ("n2", "n3"):
        assert [t.id for t in c.core(n).participant.in_doubt()] == [tx]
        assert c.core(n).store.write_locks["k"].tx == tx
    parked = [e for e in c.trace.filter("state") if e.data.get("event") == "parked"]
    assert {e.node for e in parked} == {"n2", "n3"}
    # a reader with a later snapshot must wait for the in-doubt write, and says why
    r = c["n2"].begin()
    with pytest.raises(kvlab.SimulationTimeout, match=tx):
        c["n2"].get(r, "k")
    c.restart("n1")
    c.run()
    assert c.history[tx].status == "aborted"  # no durable decision: presumed abort
    for n in NODES:
        assert not c.core(n).store.write_locks
    assert c["n2"].get(c["n2"].begin(), "k") is None


def test_participant_crash_after_decision_gets_commit_on_restart():
    c = kvlab.Cluster(NODES)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "k", 1)
    h = n1.commit_async(tx)
    while not h.done:
        c.step()
    c.crash("n3")
    c.run()
    assert c.core("n1").coordinator.txs[tx].state == "COMMITTING"  # waiting for n3's ACK
    c.restart("n3")
    c.run()
    assert c.core("n1").coordinator.txs[tx].state == "COMMITTED"
    assert c["n3"].versions("k")[-1].value == 1


def test_partition_then_heal_resolves_in_doubt():
    c = kvlab.Cluster(NODES)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "k", 1)
    h = n1.commit_async(tx)
    while not h.done:
        c.step()
    c.partition({"n1"}, {"n2", "n3"})
    c.run()
    assert c.core("n2").store.write_locks  # COMMIT could not cross: still prepared
    c.heal()
    c.run()
    for n in NODES:
        assert c[n].versions("k")[-1].writer == tx
        assert not c.core(n).store.write_locks


# -- reopening from a data directory ---------------------------------------------------------
def test_reopen_recovers_committed_data(tmp_path):
    with kvlab.Cluster(NODES, data_dir=tmp_path) as c:
        n2 = c["n2"]
        for i in range(20):
            tx = n2.begin()
            n2.put(tx, f"k{i % 5}", i)
            assert n2.commit(tx)
        last_ts = c.tso.last
    with kvlab.Cluster(NODES, data_dir=tmp_path) as c2:
        assert c2.tso.last >= last_ts  # timestamps never go back
        n3 = c2["n3"]
        tx = n3.begin()
        assert [n3.get(tx, f"k{i}") for i in range(5)] == [15, 16, 17, 18, 19]
        assert int(tx[1:]) > last_ts


def test_reopen_resolves_in_doubt_transactions(tmp_path):
    c = kvlab.Cluster(NODES, data_dir=tmp_path)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "k", "v")
    h = n1.commit_async(tx)
    while not h.done:  # decision durable at n1, COMMITs still in flight
        c.step()
    c.close()  # the whole cluster stops here
    c2 = kvlab.Cluster(NODES, data_dir=tmp_path)
    restarts = c2.trace.filter("restart")
    assert {e.node for e in restarts} == set(NODES)
    assert any(e.data["in_doubt"] == [tx] for e in restarts)
    c2.run()
    for n in NODES:
        assert c2[n].versions("k")[-1].value == "v"
        assert not c2.core(n).participant.in_doubt()
    c2.close()


def test_checkpoint_truncates_log_and_recovery_uses_it(tmp_path):
    c = kvlab.Cluster(NODES, data_dir=tmp_path, checkpoint_every=50)
    n1 = c["n1"]
    for i in range(60):
        tx = n1.begin()
        n1.put(tx, "x", i)
        assert n1.commit(tx)
    assert c.trace.filter("checkpoint")
    assert (tmp_path / "n2" / "checkpoint.json").exists()
    log_size = (tmp_path / "n2" / "wal.log").stat().st_size
    assert log_size < 50 * 100  # bounded by the checkpoint interval, not by history
    c.close()
    c2 = kvlab.Cluster(NODES, data_dir=tmp_path)
    tx = c2["n2"].begin()
    assert c2["n2"].get(tx, "x") == 59
    assert c2.trace.filter("restart")[1].data["checkpoint"] is True


# -- damaged logs ----------------------------------------------------------------------------
def _committed_cluster(tmp_path, n=5):
    c = kvlab.Cluster(NODES, data_dir=tmp_path)
    for i in range(n):
        tx = c["n1"].begin()
        c["n1"].put(tx, "x", i)
        c["n1"].commit(tx)
    c.run()
    c.close()
    return tmp_path / "n2" / "wal.log"


def test_torn_tail_is_cut_with_a_warning(tmp_path):
    log = _committed_cluster(tmp_path)
    good = log.read_bytes()
    log.write_bytes(good + good[:11])  # half a frame: a write interrupted by power loss
    with pytest.warns(TornTailWarning, match="torn tail of 11 bytes"):
        c = kvlab.Cluster(NODES, data_dir=tmp_path)
    assert log.stat().st_size == len(good)  # cut off for good
    tx = c["n2"].begin()
    assert c["n2"].get(tx, "x") == 4
    assert c.trace.filter("torn")


def test_a_torn_tail_warning_points_at_the_line_that_opened_or_restarted_the_node(tmp_path):
    log = _committed_cluster(tmp_path)
    good = log.read_bytes()
    log.write_bytes(good + good[:11])
    with pytest.warns(TornTailWarning) as opened:
        line = sys._getframe().f_lineno + 1
        c = kvlab.Cluster(NODES, data_dir=tmp_path)
    c.crash("n2")
    with log.open("ab") as f:
        f.write(good[:7])
    with pytest.warns(TornTailWarning) as restarted:
        line2 = sys._getframe().f_lineno + 1
        c.restart("n2")
    assert [(w.filename, w.lineno) for w in opened] == [(__file__, line)]
    assert [(w.filename, w.lineno) for w in restarted] == [(__file__, line2)]
    c.close()


def test_a_torn_tail_warning_skips_only_kvlabs_own_files(tmp_path):
    # a learner's script beside the package (kvlab_demo.py next to kvlab/) is not kvlab: its
    # name starts with the package's path, but the warning must point at its line all the same
    log = _committed_cluster(tmp_path)
    log.write_bytes(log.read_bytes() + b"\x05\x00\x00")
    script = os.path.dirname(os.path.abspath(kvlab.__file__)) + "_demo.py"

    def opener():
        kvlab.Cluster(NODES, data_dir=tmp_path).close()

    opener.__code__ = opener.__code__.replace(co_filename=script)
    with pytest.warns(TornTailWarning) as caught:
        opener()
    assert [(w.filename, w.lineno) for w in caught] == [(script,
                                                          opener.__code__.co_firstlineno + 1)]


def test_damaged_complete_last_record_raises_instead_of_being_cut(tmp_path):
    # a whole frame was fsynced (and acknowledged); a flipped byte in it is damage, not a
    # torn write, so cutting it off with a warning could lose a committed transaction
    log = _committed_cluster(tmp_path)
    data = bytearray(log.read_bytes())
    data[-3] ^= 0xFF  # a flipped byte inside the last record
    log.write_bytes(bytes(data))
    with pytest.raises(kvlab.CorruptLog, match="complete but fails its checksum"):
        kvlab.Cluster(NODES, data_dir=tmp_path)


def test_partial_last_record_is_cut_as_a_torn_tail(tmp_path):
    log = _committed_cluster(tmp_path)
    data = log.read_bytes()
    log.write_bytes(data[:-5])  # the last frame lost its end: a write a crash interrupted
    with pytest.warns(TornTailWarning, match="partial frame"):
        c = kvlab.Cluster(NODES, data_dir=tmp_path)
    assert log.read_bytes() == data[:len(log.read_bytes())] and len(log.read_bytes()) < \
        len(data) - 5
    c.close()


def test_corruption_before_the_tail_raises(tmp_path):
    log = _committed_cluster(tmp_path)
    data = bytearray(log.read_bytes())
    data[20] ^= 0x01  # inside the first record; intact records follow
    log.write_bytes(bytes(data))
    with pytest.raises(kvlab.CorruptLog, match="intact records follow"):
        kvlab.Cluster(NODES, data_dir=tmp_path)


def test_corrupt_checkpoint_raises(tmp_path):
    c = kvlab.Cluster(NODES, data_dir=tmp_path)
    tx = c["n1"].begin()
    c["n1"].put(tx, "x", 1)
    c["n1"].commit(tx)
    c.run()
    c.checkpoint()
    c.close()
    ck = tmp_path / "n3" / "checkpoint.json"
    data = bytearray(ck.read_bytes())
    data[-2] ^= 0x01
    ck.write_bytes(bytes(data))
    with pytest.raises(kvlab.CorruptLog, match="checkpoint"):
        kvlab.Cluster(NODES, data_dir=tmp_path)


def test_log_is_json_never_pickle(tmp_path):
    log = _committed_cluster(tmp_path)
    records, end = kvlab.wal.decode(log.read_bytes())
    assert end == log.stat().st_size
    assert [r.type for r in records][:2] == ["PREPARE", "COMMIT"]
    assert b"\x80\x04" not in log.read_bytes()  # no pickle protocol header anywhere


# -- the tests above can fail: switch off each force-log rule and they must catch it ------------
@pytest.mark.parametrize("rule", ["force_prepare", "force_decision", "force_commit"])
def test_exhaustive_crash_search_catches_each_missing_force(rule, monkeypatch):
    broken = kvlab.Rules(**{rule: False})
    original = kvlab.Cluster.__init__

    def unsafe_init(self, *args, **kwargs):
        original(self, *args, rules=broken, **kwargs)

    monkeypatch.setattr(kvlab.Cluster, "__init__", unsafe_init)
    failures = []
    for victim in NODES:
        for step in range(STEPS + 1):
            try:
                crash_at(step, victim, torn=False)
            except (AssertionError, kvlab.ProtocolError) as e:
                failures.append((victim, step, str(e).splitlines()[0]))
    assert failures, f"no crash point exposes the missing {rule}"
