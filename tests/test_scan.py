"""Range reads: node.scan, its snapshot semantics, waits, serializable range validation and
range locks, the PREPARE record that carries the ranges, recovery, and explore's copies."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import NODES, key_owned_by, pending, step_until, write
from hypothesis import given, settings
from hypothesis import strategies as st

import kvlab
from kvlab.errors import CorruptLog
from kvlab.messages import COMMIT, PREPARE, SCAN, SCAN_REPLY, TS_REPLY, TSO, Message
from kvlab.mvcc import Store, prefix_end
from kvlab.node import (
    Abandon,
    Begin,
    Deliver,
    NodeConfig,
    NodeCore,
    Recover,
    Scan,
    check_record,
)
from kvlab.wal import LogRecord, decode

LEVELS = ("read_committed", "snapshot", "serializable")


def fill(c: kvlab.Cluster, /, **values: Any) -> str:
    """Commit ``values`` from n1 (keys may be any name, "c" too)."""
    n1 = c["n1"]
    t = n1.begin()
    for k, v in values.items():
        n1.put(t, k, v)
    assert n1.commit(t)
    return t


# -- the API ------------------------------------------------------------------------------------
def test_scan_returns_sorted_rows_in_a_half_open_range(cluster):
    fill(cluster, b=2, a=1, d=4, c=3, e=5)
    n2 = cluster["n2"]
    t = n2.begin()
    assert n2.scan(t) == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)]
    assert n2.scan(t, "b", "d") == [("b", 2), ("c", 3)]  # start <= key < end
    assert n2.scan(t, "bb") == [("c", 3), ("d", 4), ("e", 5)]
    assert n2.scan(t, end="b") == [("a", 1)]
    assert n2.scan(t, "c", "c") == []


def test_prefix_scan(cluster):
    fill(cluster, **{"user/1": "ann", "user/2": "bob", "user0": "no", "use": "no", "x": 0})
    n3 = cluster["n3"]
    t = n3.begin()
    assert n3.scan(t, prefix="user/") == [("user/1", "ann"), ("user/2", "bob")]
    assert n3.scan(t, prefix="") == n3.scan(t)


def test_prefix_end_is_the_first_string_after_the_prefix():
    assert prefix_end("user/") == "user0"
    assert prefix_end("a\U0010ffff") == "b"
    assert prefix_end("\U0010ffff") is None
    assert prefix_end("") is None


def test_scan_merges_own_writes_and_deletes_and_hides_tombstones(cluster):
    fill(cluster, a=1, b=2, c=3)
    n1 = cluster["n1"]
    d = n1.begin()
    n1.delete(d, "b")
    assert n1.commit(d)
    t = n1.begin()
    assert n1.scan(t) == [("a", 1), ("c", 3)]  # the tombstone of b is hidden
    n1.put(t, "bb", 22)
    n1.put(t, "a", 11)
    n1.delete(t, "c")
    n1.put(t, "zz", 0)
    assert n1.scan(t, "a", "z") == [("a", 11), ("bb", 22)]
    n1.rollback(t)


def test_scan_reads_the_snapshot_and_read_committed_takes_a_fresh_one(cluster):
    fill(cluster, a=1)
    n2 = cluster["n2"]
    txs = {level: n2.begin(level) for level in LEVELS}
    assert all(n2.scan(t) == [("a", 1)] for t in txs.values())
    write(cluster, "n3", a=2, b=3)
    assert n2.scan(txs["read_committed"]) == [("a", 2), ("b", 3)]
    assert n2.scan(txs["snapshot"]) == [("a", 1)]
    assert n2.scan(txs["serializable"]) == [("a", 1)]


def test_returned_values_are_copies(cluster):
    fill(cluster, a=[1, 2])
    n1 = cluster["n1"]
    t = n1.begin()
    n1.scan(t)[0][1].append(3)
    assert n1.scan(t) == [("a", [1, 2])]


def test_scan_is_recorded_in_the_history(cluster):
    w = fill(cluster, a=1, b=2)
    n2 = cluster["n2"]
    t = n2.begin()
    n2.put(t, "c", 3)
    n2.scan(t, "a", "d")
    [op] = cluster.history[t].scans
    assert (op.kind, op.key, op.end, op.version_ts) == ("scan", "a", "d",
                                                        cluster.history[t].start_ts)
    assert [(r.key, r.value, r.writer) for r in op.value] == [("a", 1, w), ("b", 2, w),
                                                               ("c", 3, t)]
    calls = [e.data for e in cluster.trace.filter("call") if e.data["op"] == "scan"]
    assert calls == [{"op": "scan", "tx": t, "start": "a", "end": "d", "rows": 3}]


@pytest.mark.parametrize("args, kwargs, match", [
    (("a",), {"prefix": "u"}, "prefix or start/end bounds, not both"),
    ((), {"end": "b", "prefix": "u"}, "not both"),
    ((1,), {}, "scan bounds are key strings"),
    (("a", 5), {}, "got end=5"),
    (("z", "a"), {}, r"after its end 'a'.*scan\(tx, 'a', 'z'\)"),
    ((), {"prefix": 3}, "a scan prefix is a string"),
])
def test_misuse_raises_invalid_key_before_anything_happens(cluster, args, kwargs, match):
    n1 = cluster["n1"]
    t = n1.begin()
    before = len(cluster.trace)
    with pytest.raises(kvlab.InvalidKey, match=match):
        n1.scan(t, *args, **kwargs)
    assert len(cluster.trace) == before
    assert cluster.history[t].ops == []


def test_scan_needs_a_live_transaction(cluster):
    n1 = cluster["n1"]
    with pytest.raises(kvlab.TransactionNotFound):
        n1.scan("T99")
    t = n1.begin()
    n1.rollback(t)
    with pytest.raises(kvlab.TransactionClosed):
        n1.scan(t)


# -- a model: a dict of version lists ---------------------------------------------------------
KEYS = ["a", "ab", "b", "ba", "bz", "c", "user/1", "user/2", "\u00e9", "z"]
BOUNDS = st.sampled_from([None, "", "a", "aa", "b", "bb", "c", "user/", "user0", "\u00ff", "z"])


def model_scan(versions: dict[str, list[tuple[int, Any, bool]]], ts: int,
               start: str | None, end: str | None) -> list[tuple[str, Any]]:
    rows = []
    for key in sorted(versions):
        if (start or "") <= key and (end is None or key < end):
            seen = [v for v in versions[key] if v[0] <= ts]
            if seen and not seen[-1][2]:
                rows.append((key, seen[-1][1]))
    return rows


def bounds(data: Any) -> tuple[str | None, str | None]:
    start, end = data.draw(BOUNDS), data.draw(BOUNDS)
    if start is not None and end is not None and start > end:
        start, end = end, start
    return start, end


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 99), st.booleans()),
                    max_size=40),
       data=st.data())
def test_store_scan_matches_a_dict_of_versions(ops, data):
    """Random puts and deletes, some out of commit order (as COMMITs may arrive), GC at a random
    watermark, then scans at random snapshots above it: the store agrees with the model."""
    store, versions = Store(), {}
    stamps = data.draw(st.permutations(range(1, len(ops) + 1)))
    for ts, (key, value, deleted) in zip(stamps, ops, strict=True):
        store.apply(f"T{ts}", ts, {key: (None if deleted else value, deleted)})
        versions.setdefault(key, []).append((ts, None if deleted else value, deleted))
        versions[key].sort()
    watermark = data.draw(st.integers(0, len(ops) + 1))
    store.gc(watermark)
    assert store._keys == sorted(store.chains)
    for _ in range(5):
        ts = data.draw(st.integers(watermark, len(ops) + 2))
        start, end = bounds(data)
        got = [(k, v.value) for k, v in store.scan((start or "", end), ts)]
        assert got == model_scan(versions, ts, start, end)


@settings(max_examples=25, deadline=None)
@given(placement=st.sampled_from(["all", "partitioned"]),
       script=st.lists(st.one_of(
           st.tuples(st.just("commit"), st.integers(0, 2),
                     st.lists(st.tuples(st.sampled_from(KEYS), st.integers(0, 99) | st.none()),
                              min_size=1, max_size=3)),
           st.tuples(st.just("open"), st.integers(0, 2), st.sampled_from(LEVELS))),
           max_size=12),
       data=st.data())
def test_cluster_scans_match_the_model_at_every_snapshot(placement, script, data):
    """Commits on random nodes (None deletes) and readers opened in between; each reader then
    adds writes of its own and scans random ranges: what it sees is the model at its snapshot
    (read committed: now), with its own writes merged in."""
    c = kvlab.Cluster(NODES, seed=0, placement=placement, gc_every=5)
    versions: dict[str, list[tuple[int, Any, bool]]] = {}
    readers = []
    for step in script:
        node = c[NODES[step[1]]]
        if step[0] == "open":
            readers.append((node, node.begin(step[2]), step[2]))
            continue
        t = node.begin()
        for key, value in step[2]:
            node.delete(t, key) if value is None else node.put(t, key, value)
        assert node.commit(t)
        ts = node.outcome(t).commit_ts
        for key, value in dict(step[2]).items():
            versions.setdefault(key, []).append((ts, value, value is None))
    now = c.tso.last + 1
    for node, t, level in readers:
        own = dict(data.draw(st.lists(st.tuples(st.sampled_from(KEYS),
                                                st.integers(100, 199) | st.none()),
                                      max_size=3)))
        for key, value in own.items():
            node.delete(t, key) if value is None else node.put(t, key, value)
        start, end = bounds(data)
        expected = dict(model_scan(versions, now if level == "read_committed"
                                   else c.history[t].start_ts, start, end))
        for key, value in own.items():
            if (start or "") <= key and (end is None or key < end):
                expected.pop(key, None) if value is None else expected.update({key: value})
        assert node.scan(t, start, end) == sorted(expected.items())
        node.rollback(t)
    c.close()


# -- waits ---------------------------------------------------------------------------------------
def _decided_but_commit_lost(c: kvlab.Cluster, at: str, **writes: Any) -> str:
    """A committed transaction whose COMMIT to ``at`` is lost: prepared there until resent."""
    n1 = c["n1"]
    t = n1.begin()
    for k, v in writes.items():
        n1.put(t, k, v)
    h = n1.commit_async(t)
    step_until(c, lambda: pending(c, "COMMIT", t, at))
    assert h.committed
    [lost] = pending(c, "COMMIT", t, at)
    c.drop(lost.id)
    return t


def _waits(c: kvlab.Cluster, tx: str) -> list[dict]:
    return [e.data for e in c.trace.filter("state") if e.data.get("event") == "scan waits"
            and e.data.get("tx") == tx]


def test_scan_waits_for_a_phantom_insert_prepared_below_its_snapshot(cluster):
    fill(cluster, a=1, c=3)
    w = _decided_but_commit_lost(cluster, "n2", b=2)  # b has no version anywhere yet
    n2 = cluster["n2"]
    t = n2.begin()
    assert cluster.history[t].start_ts > cluster.history[w].commit_ts
    assert n2.scan(t, "a", "z") == [("a", 1), ("b", 2), ("c", 3)]
    [wait] = _waits(cluster, t)
    assert wait["blocked_by"] == w and wait["key"] == "b"
    assert cluster.core("n2").waiting == []


def test_scan_does_not_wait_for_a_prepared_write_outside_its_range(cluster):
    fill(cluster, a=1)
    _decided_but_commit_lost(cluster, "n2", m=2)
    n2 = cluster["n2"]
    t = n2.begin()
    assert n2.scan(t, "a", "b") == [("a", 1)]
    assert _waits(cluster, t) == []


def test_scan_behind_a_crashed_coordinator_times_out_naming_it_and_forgets_the_wait(cluster):
    fill(cluster, a=1)
    n1 = cluster["n1"]
    w = n1.begin()
    n1.put(w, "b", 2)
    h = n1.commit_async(w)
    step_until(cluster, lambda: cluster.states().get(("n2", "participant", w)) == "PREPARED")
    cluster.crash("n1")
    n2 = cluster["n2"]
    t = n2.begin()
    with pytest.raises(kvlab.SimulationTimeout, match=rf"scan of keys >= 'a'.*{w}.*n1"):
        n2.scan(t, "a")
    assert cluster.core("n2").waiting == []
    cluster.restart("n1")
    assert n2.scan(t, "a") == [("a", 1)]  # presumed abort released the lock
    cluster.run()
    assert h.committed is False


def test_partitioned_scan_fans_out_and_merges(pcluster):
    keys = {n: key_owned_by(n) for n in NODES}
    fill(pcluster, **{k: n for n, k in keys.items()})
    n1 = pcluster["n1"]
    t = n1.begin()
    before = len(pcluster.trace)
    assert n1.scan(t) == sorted((k, n) for n, k in keys.items())
    new = pcluster.trace[before:]
    sent = sorted((e.data["kind"], e.data["dst"]) for e in new
                  if e.kind == "send" and e.data["kind"] in (SCAN, SCAN_REPLY))
    assert sent == [(SCAN, "n2"), (SCAN, "n3"), (SCAN_REPLY, "n1"), (SCAN_REPLY, "n1")]
    [fan] = [e.data for e in new if e.data.get("event") == "scan fan-out"]
    assert fan["owners"] == NODES and fan["range"] == "every key"


def test_partitioned_scan_waits_at_the_remote_owner(pcluster):
    key = key_owned_by("n3")
    w = _decided_but_commit_lost(pcluster, "n3", **{key: "new"})
    n2 = pcluster["n2"]
    t = n2.begin()
    assert n2.scan(t) == [(key, "new")]
    assert [e.node for e in pcluster.trace.filter("state")
            if e.data.get("event") == "scan waits" and e.data["tx"] == t] == ["n3"]
    assert all(pcluster.core(n).waiting == [] for n in NODES)
    assert w in {v.writer for v in pcluster["n3"].versions(key)}


def test_partitioned_scan_survives_a_lost_reply(pcluster):
    keys = [key_owned_by(n) for n in NODES]
    fill(pcluster, **{k: i for i, k in enumerate(keys)})
    n1 = pcluster["n1"]
    t = n1.begin()
    pcluster.partition({"n1", "n2"}, {"n3"})
    with pytest.raises(kvlab.SimulationTimeout, match="waiting for rows from n3"):
        n1.scan(t)
    pcluster.heal()
    assert n1.scan(t) == sorted((k, i) for i, k in enumerate(keys))


def test_scan_traces_are_deterministic():
    def run() -> str:
        c = kvlab.Cluster(NODES, seed=3, placement="partitioned", loss=0.2)
        for i in range(4):
            n = c[NODES[i % 3]]
            t = n.begin("serializable")
            n.scan(t, prefix="k")
            n.put(t, f"k{i}", i)
            n.commit(t)
        return c.trace.digest()
    assert run() == run()


# -- serializable: range validation and range locks ---------------------------------------------
def _scanner(c: kvlab.Cluster, level: str = "serializable", start: str = "a",
             end: str | None = "m") -> tuple[kvlab.Node, str]:
    n1 = c["n1"]
    t = n1.begin(level)
    n1.scan(t, start, end)
    n1.put(t, "zz", "written")  # an update transaction: it validates at commit
    return n1, t


@pytest.mark.parametrize("change, how", [
    ({"b": 2}, "inserted 'b'"),  # a phantom
    ({"a": 9}, "changed 'a'"),
    ({"a": None}, "changed 'a'"),  # a delete
])
def test_a_change_in_a_scanned_range_aborts_a_serializable_transaction(cluster, change, how):
    fill(cluster, a=1)
    n1, t = _scanner(cluster)
    n2 = cluster["n2"]
    u = n2.begin()
    for k, v in change.items():
        n2.delete(u, k) if v is None else n2.put(u, k, v)
    assert n2.commit(u)
    assert n1.commit(t) is False
    reason = n1.outcome(t).reason
    assert how in reason and "keys in ['a', 'm')" in reason and u in reason
    assert ("phantom" in reason) == (how == "inserted 'b'")


def test_changes_outside_the_range_do_not_abort(cluster):
    fill(cluster, a=1)
    n1, t = _scanner(cluster)
    write(cluster, "n2", m=1, z=2)  # m is the excluded end
    assert n1.commit(t)


def test_snapshot_isolation_lets_the_phantom_through(cluster):
    fill(cluster, a=1)
    n1, t = _scanner(cluster, level="snapshot")
    write(cluster, "n2", b=2)
    assert n1.commit(t)


def test_read_only_serializable_scans_never_validate(cluster):
    n1 = cluster["n1"]
    t = n1.begin("serializable")
    assert n1.scan(t) == []
    write(cluster, "n2", b=2)
    assert n1.commit(t)
    assert "read-only" in n1.outcome(t).reason


def _prepared_scanner(c: kvlab.Cluster, start: str = "a", end: str | None = "m") -> tuple:
    n1, t = _scanner(c, start=start, end=end)
    h = n1.commit_async(t)
    step_until(c, lambda: all(c.core(n).store.range_locks for n in NODES))
    return n1, t, h


@pytest.mark.parametrize("level", LEVELS)
def test_a_range_lock_refuses_a_phantom_insert_at_every_level(cluster, level):
    fill(cluster, a=1)
    n1, t, h = _prepared_scanner(cluster)
    assert {n: cluster.core(n).store.range_locks for n in NODES} == \
        {n: {t: (("a", "m"),)} for n in NODES}
    n2 = cluster["n2"]
    u = n2.begin(level)
    n2.put(u, "c", 3)  # c does not exist: locking the keys found could not stop this
    assert n2.commit(u) is False
    reason = n2.outcome(u).reason
    assert "'c' is in the range (keys in ['a', 'm')) scanned" in reason and t in reason
    assert h.wait() is True
    cluster.run()
    assert all(not cluster.core(n).store.range_locks for n in NODES)


def test_a_range_lock_lets_writers_outside_the_range_through(cluster):
    n1, t, h = _prepared_scanner(cluster)
    n2 = cluster["n2"]
    u = n2.begin()
    n2.put(u, "m", 3)
    assert n2.commit(u)
    assert h.wait()


def test_a_scan_meeting_a_prepared_writer_in_its_range_votes_no(cluster):
    n2 = cluster["n2"]
    u = n2.begin()
    n2.put(u, "c", 3)
    n1, t = _scanner(cluster)
    hu = n2.commit_async(u)
    step_until(cluster, lambda: all(cluster.core(n).store.write_locks for n in NODES))
    assert n1.commit(t) is False
    assert "'c', in the range scanned (keys in ['a', 'm')), is locked by prepared " \
           f"transaction {u}" in n1.outcome(t).reason
    assert hu.wait()


def test_partitioned_range_validation_runs_on_every_node(pcluster):
    n1 = pcluster["n1"]
    t = n1.begin("serializable")
    n1.scan(t)
    n1.put(t, key_owned_by("n1"), 1)
    h = n1.commit_async(t)
    prepares = pending(pcluster, PREPARE, t)
    assert sorted(e.dst for e in prepares) == NODES
    assert all(e.msg.body["ranges"] == [["", None]] for e in prepares)
    assert h.wait()


def test_the_prepare_record_carries_the_ranges_and_plain_ones_do_not(cluster):
    n1, t, h = _prepared_scanner(cluster)
    h.wait()
    n2 = cluster["n2"]
    u = n2.begin("serializable")
    n2.get(u, "x")
    n2.put(u, "y", 1)
    assert n2.commit(u)
    cluster.run()
    log = decode(cluster.wal("n3").disk.read_log())[0]
    records = {r.data["tx"]: r.data for r in log if r.type == "PREPARE"}
    assert records[t]["ranges"] == [["a", "m"]]
    assert "ranges" not in records[u]


# -- the log: optional field, checks, recovery ------------------------------------------------
def _prepare(ranges: Any = None, **extra: Any) -> LogRecord:
    data = {"tx": "T5", "coordinator": "n1", "start_ts": 5, "writes": {"x": [1, False]},
            "reads": [], **extra}
    if ranges is not None:
        data["ranges"] = ranges
    return LogRecord(1, "PREPARE", data)


def test_recovery_retakes_range_locks_and_old_records_still_replay():
    for rec, locks in ((_prepare([["a", "m"], ["p", None]]), {"T5": (("a", "m"), ("p", None))}),
                       (_prepare(), {})):
        core = NodeCore("n2", NodeConfig(list(NODES)))
        core.handle(Recover(None, [rec]))
        assert core.store.range_locks == locks
        assert core.store.write_locks["x"].tx == "T5"


@pytest.mark.parametrize("ranges", [[["b", "a"]], [["a"]], ["a"], [[1, None]], "a..m",
                                    [["a", 3]]])
def test_malformed_ranges_are_corrupt(ranges):
    with pytest.raises(CorruptLog, match="ranges|'ranges'"):
        check_record(_prepare(ranges))


def _crashed_in_doubt_scanner(c: kvlab.Cluster) -> str:
    """A serializable scanner prepared everywhere whose coordinator n1 crashed, then n3
    crashed too (so n3 must rebuild its range lock from its log)."""
    fill(c, a=1)
    n1, t, h = _prepared_scanner(c)
    c.flush("n3")
    c.crash("n1")
    c.crash("n3")
    return t


@pytest.mark.parametrize("checkpoint", [False, True])
def test_an_in_doubt_participant_retakes_its_range_lock_after_a_crash(checkpoint, tmp_path):
    c = kvlab.Cluster(NODES, seed=0, data_dir=tmp_path / "d")
    t = _crashed_in_doubt_scanner(c)
    if checkpoint:  # a checkpoint taken while in doubt must keep the range
        c.restart("n3")
        c.checkpoint("n3")
        assert c.core("n3").checkpoint_state()["prepared"][t]["ranges"] == [["a", "m"]]
        c.crash("n3")
    c.restart("n3")
    assert c.core("n3").store.range_locks == {t: (("a", "m"),)}
    n3 = c["n3"]
    u = n3.begin()
    n3.put(u, "b", 2)  # a phantom insert while the scanner is in doubt: refused everywhere
    assert n3.commit(u) is False
    assert "scanned by prepared serializable transaction" in n3.outcome(u).reason
    c.restart("n1")  # no decision on record: presumed abort releases the ranges
    c.run()
    assert all(not c.core(n).store.range_locks for n in NODES)
    c.close()


@pytest.mark.parametrize("checkpoint", [False, True])
def test_scans_after_replay_and_after_a_checkpoint(checkpoint, tmp_path):
    with kvlab.Cluster(NODES, seed=0, data_dir=tmp_path) as c:
        for i in range(12):
            write(c, NODES[i % 3], **{f"k{i % 7:02d}": i})
        d = c["n2"].begin()
        c["n2"].delete(d, "k03")
        assert c["n2"].commit(d)
        if checkpoint:
            c.checkpoint()
        expected = c["n1"].scan(c["n1"].begin(), "k01", "k06")
    assert [k for k, _ in expected] == ["k01", "k02", "k04", "k05"]
    with kvlab.Cluster(NODES, data_dir=tmp_path) as c2:
        assert any(e.data["checkpoint"] for e in c2.trace.filter("restart")) == checkpoint
        for n in NODES:
            node = c2[n]
            assert node.scan(node.begin(), "k01", "k06") == expected
            assert c2.core(n).store._keys == sorted(c2.core(n).store.chains)


# -- explore's copies and fingerprints ------------------------------------------------------------
def test_clone_copies_and_fingerprint_covers_scans_and_range_locks(cluster):
    fill(cluster, a=1)
    n1, t, h = _prepared_scanner(cluster)
    core = cluster.core("n2")
    copy = core.clone()
    assert copy.fingerprint() == core.fingerprint()
    assert copy.store.range_locks == {t: (("a", "m"),)}
    assert copy.participant.txs[t].ranges == (("a", "m"),)
    store, s2 = core.store, core.store.clone()
    store.lock("T99", 99, [], [], [("a", "b")])
    assert "T99" not in s2.range_locks and s2.fingerprint() != store.fingerprint()
    store.unlock("T99", [])
    assert store.fingerprint() == s2.fingerprint()
    store.apply("T100", 100, {"aaa": (1, False)})
    assert "aaa" not in s2._keys and s2.fingerprint() != store.fingerprint()
    assert h.wait()
    coord = cluster.core("n1")
    u = cluster["n1"].begin("serializable")
    cluster["n1"].scan(u, "q")
    c2 = coord.clone()
    assert c2.coordinator.txs[u].scans == {("q", None): None}
    assert c2.fingerprint() == coord.fingerprint()
    coord.coordinator.txs[u].scans[("x", None)] = None
    assert ("x", None) not in c2.coordinator.txs[u].scans
    assert c2.fingerprint() != coord.clone().fingerprint()


def _begun(core: NodeCore, call: int, ts: int, level: str = "snapshot") -> str:
    core.handle(Begin(call, level))
    out = core.handle(Deliver(Message(TSO, core.id, TS_REPLY, None,
                                      {"purpose": "begin", "call": call, "ts": ts})))
    return out.replies[0].value[0]


def test_pending_and_waiting_scans_are_copied_and_fingerprinted():
    """Sans-I/O: a partitioned node's scan waits for its owners' rows and, locally, behind a
    prepared insert; a copy keeps both while the original moves on."""
    core = NodeCore("n1", NodeConfig(list(NODES), "partitioned"))
    body = {"start_ts": 5, "isolation": "snapshot", "coordinator": "n2",
            "participants": ["n1"], "writes": {"b": [2, False]}, "reads": []}
    core.handle(Deliver(Message("n2", "n1", PREPARE, "T5", body)))
    t = _begun(core, 1, 10)
    out = core.handle(Scan(2, t, "a", None))
    assert sorted(m.dst for m in out.messages if m.kind == SCAN) == ["n2", "n3"]
    assert [(w.span, w.blocked_by) for w in core.waiting] == [(("a", None), "T5")]
    copy = core.clone()
    assert copy.fingerprint() == core.fingerprint()
    rows = [["c", 3, "T1", 1]]
    core.handle(Deliver(Message("n2", "n1", SCAN_REPLY, t, {"req": 2, "rows": rows})))
    assert copy._scans[2].parts == {} and copy.fingerprint() != core.fingerprint()
    core.handle(Deliver(Message("n3", "n1", SCAN_REPLY, t, {"req": 2, "rows": []})))
    out = core.handle(Deliver(Message("n2", "n1", COMMIT, "T5", {"commit_ts": 8})))
    [reply] = out.replies
    assert [(r.key, r.value) for r in reply.value.rows] == [("b", 2), ("c", 3)]
    assert core.waiting == [] and core._scans == {}
    assert len(copy.waiting) == 1 and 2 in copy._scans
    assert copy.why_waiting(2).startswith("the scan of keys >= 'a' (on n1) by T10 is waiting "
                                          "for prepared transaction T5")


def test_an_abandoned_remote_scan_is_forgotten_by_its_owner():
    core = NodeCore("n3", NodeConfig(list(NODES), "partitioned"))
    body = {"start_ts": 5, "isolation": "snapshot", "coordinator": "n2",
            "participants": ["n3"], "writes": {"b": [2, False]}, "reads": []}
    core.handle(Deliver(Message("n2", "n3", PREPARE, "T5", body)))
    scan = Message("n1", "n3", SCAN, "T10", {"start": "", "end": None, "ts": 10, "req": 4})
    assert core.handle(Deliver(scan)).messages == []
    core.handle(Deliver(scan))  # a retry of the same SCAN parks once
    assert len(core.waiting) == 1
    assert "scan of every key (on n3) by T10" in core.why_waiting(4, requester="n1")
    core.handle(Abandon(4, requester="n1"))
    assert core.waiting == []
