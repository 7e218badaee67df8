"""Snapshot isolation through the public API: what each transaction can and cannot see."""

from __future__ import annotations

import pytest
from conftest import NODES, key_owned_by, pending, read, step_until, write

import kvlab


@pytest.fixture(params=["all", "partitioned"])
def any_cluster(request):
    c = kvlab.Cluster(NODES, seed=0, placement=request.param)
    yield c
    c.close()


def test_own_writes_are_visible_only_to_their_transaction(any_cluster):
    cluster = any_cluster
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    t1 = n1.begin()
    t2 = n2.begin()
    n1.put(t1, "x", "mine")
    assert n1.get(t1, "x") == "mine"
    assert n2.get(t2, "x") is None
    assert n1.commit(t1)
    assert n2.get(t2, "x") is None  # t2's snapshot is older than t1's commit
    assert read(cluster, "n3", "x") == "mine"


@pytest.mark.parametrize("reader", NODES)
def test_uncommitted_writes_are_never_visible(any_cluster, reader):
    cluster = any_cluster
    write(cluster, "n1", x="old")
    n2 = cluster.node("n2")
    t = n2.begin()
    n2.put(t, "x", "uncommitted")
    n2.put(t, "fresh", 1)
    assert read(cluster, reader, "x") == "old"
    assert read(cluster, reader, "fresh") is None
    n2.rollback(t)
    assert read(cluster, reader, "x") == "old"


def test_writes_of_an_aborted_transaction_are_never_visible(any_cluster):
    cluster = any_cluster
    write(cluster, "n1", x=0, y=0)
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    loser = n1.begin()
    n1.put(loser, "x", "never")
    n1.put(loser, "y", "never")
    write(cluster, "n2", y=1)  # makes the loser fail on y
    assert n1.commit(loser) is False
    cluster.run()
    for n in NODES:
        assert read(cluster, n, "x") == 0
        assert read(cluster, n, "y") == 1
        assert all(v.writer != loser for v in cluster.node(n).versions("x"))
    t = n2.begin()
    assert n2.get(t, "x") == 0


def test_snapshot_is_stable_while_others_commit(any_cluster):
    cluster = any_cluster
    write(cluster, "n1", x=0, y=0)
    n3 = cluster.node("n3")
    r = n3.begin()
    assert n3.get(r, "x") == 0
    for i in range(1, 7):
        write(cluster, NODES[i % 3], x=i, y=-i, z=i)
        assert n3.get(r, "x") == 0
        assert n3.get(r, "y") == 0
        assert n3.get(r, "z") is None  # created after the snapshot
    cluster.run()
    assert n3.get(r, "x") == 0
    assert n3.commit(r)
    assert read(cluster, "n3", "x") == 6


def test_snapshot_sees_exactly_the_transactions_committed_before_it_began(any_cluster):
    cluster = any_cluster
    writers, readers = [], []
    for i in range(6):
        writers.append(write(cluster, NODES[i % 3], **{f"k{i}": i, "last": i}))
        node = cluster.node(NODES[(i + 1) % 3])
        readers.append((node, node.begin()))
    for i, (node, r) in enumerate(readers):
        seen = [node.get(r, f"k{j}") for j in range(6)]
        assert seen == [j if j <= i else None for j in range(6)]
        assert node.get(r, "last") == i
    h = cluster.history
    for i, (_node, r) in enumerate(readers):
        before = {w for w in writers if h[w].commit_ts < h[r].start_ts}
        assert before == set(writers[:i + 1])


def test_snapshot_does_not_mix_two_commits(any_cluster):
    cluster = any_cluster
    """Two keys always written together are always read together (no fractured reads)."""
    write(cluster, "n1", a=0, b=0)
    n2 = cluster.node("n2")
    snapshots = []
    for i in range(1, 6):
        snapshots.append(n2.begin())
        write(cluster, NODES[i % 3], a=i, b=i)
    for i, r in enumerate(snapshots):
        assert n2.get(r, "a") == n2.get(r, "b") == i


def test_deleted_key_reads_none_but_older_snapshots_still_see_it(any_cluster):
    cluster = any_cluster
    write(cluster, "n1", x="here")
    n2 = cluster.node("n2")
    old = n2.begin()
    n3 = cluster.node("n3")
    d = n3.begin()
    n3.delete(d, "x")
    assert n3.get(d, "x") is None
    assert n3.commit(d)
    assert n2.get(old, "x") == "here"
    assert read(cluster, "n1", "x") is None
    assert read(cluster, "n2", "x") is None


# -- the in-doubt read ------------------------------------------------------------------------
def _prepared_commit(cluster, key="x", value="new"):
    write(cluster, "n1", **{key: "old"})
    cluster.run()
    n1 = cluster.node("n1")
    t1 = n1.begin()
    n1.put(t1, key, value)
    return t1, n1.commit_async(t1)


def test_read_waits_for_an_in_doubt_commit_and_returns_it_after_the_commit_arrives(cluster):
    t1, h = _prepared_commit(cluster)
    # run until the decision is durable and the COMMITs are on the wire; lose the one to n2
    step_until(cluster, lambda: pending(cluster, "COMMIT", t1, "n2"))
    assert h.committed is True
    [lost] = pending(cluster, "COMMIT", t1, "n2")
    cluster.drop(lost.id)
    n2 = cluster.node("n2")
    t2 = n2.begin()
    assert cluster.history[t2].start_ts > cluster.history[t1].commit_ts
    assert cluster.states()[("n2", "participant", t1)] == "PREPARED"
    assert n2.get(t2, "x") == "new"
    trace = cluster.trace
    waits = [e.seq for e in trace.filter(kind="state", node="n2")
             if e.data.get("event") == "read waits" and e.data.get("tx") == t2]
    commit = [e.seq for e in trace.filter(kind="deliver", node="n2", tx=t1)
              if e.data["kind"] == "COMMIT"]
    answer = [e.seq for e in trace.filter(kind="call", node="n2", tx=t2)
              if e.data["op"] == "get"]
    assert len(waits) == 1 and len(commit) == 1 and len(answer) == 1
    assert waits[0] < commit[0] < answer[0]
    assert [e.data["blocked_by"] for e in trace.filter(kind="state", node="n2")
            if e.data.get("event") == "read waits"] == [t1]


def test_read_waiting_on_a_prepared_writer_returns_what_its_snapshot_allows(cluster):
    t1, h = _prepared_commit(cluster)
    step_until(cluster, lambda: all(cluster.states().get((n, "participant", t1)) == "PREPARED"
                                    for n in NODES))
    assert h.done is False
    n3 = cluster.node("n3")
    t2 = n3.begin()  # starts after t1, so its read must wait for t1's outcome
    got = n3.get(t2, "x")
    assert h.done and h.committed
    hist = cluster.history
    assert hist[t1].start_ts < hist[t2].start_ts
    expected = "new" if hist[t1].commit_ts < hist[t2].start_ts else "old"
    assert got == expected


def test_read_does_not_wait_for_a_writer_younger_than_its_snapshot(cluster):
    write(cluster, "n1", x="old")
    n2 = cluster.node("n2")
    t2 = n2.begin()
    t1, h = _prepared_commit(cluster, key="y")
    step_until(cluster, lambda: cluster.states().get(("n2", "participant", t1)) == "PREPARED")
    before = len(cluster.trace)
    assert n2.get(t2, "y") is None
    assert not any(e.data.get("event") == "read waits" for e in cluster.trace[before:])
    assert h.done is False  # the read did not need to run the cluster at all


def test_read_behind_a_crashed_coordinator_times_out_naming_the_blocker(cluster):
    t1, h = _prepared_commit(cluster)
    step_until(cluster, lambda: cluster.states().get(("n2", "participant", t1)) == "PREPARED")
    cluster.crash("n1")
    n2 = cluster.node("n2")
    t2 = n2.begin()
    with pytest.raises(kvlab.SimulationTimeout) as e:
        n2.get(t2, "x")
    msg = str(e.value)
    assert t1 in msg and "'x'" in msg and "n1" in msg
    assert "prepared" in msg
    # the coordinator comes back, presumes abort, and the read goes through
    cluster.restart("n1")
    assert n2.get(t2, "x") == "old"
    cluster.run()
    assert h.committed is False
    assert read(cluster, "n3", "x") == "old"


def test_read_behind_a_crashed_coordinator_that_had_decided_sees_the_commit(cluster):
    t1, h = _prepared_commit(cluster)
    step_until(cluster, lambda: pending(cluster, "COMMIT", t1))
    assert h.committed is True
    for env in pending(cluster, "COMMIT", t1):
        cluster.drop(env.id)
    cluster.crash("n1")
    n2 = cluster.node("n2")
    t2 = n2.begin()
    with pytest.raises(kvlab.SimulationTimeout, match=t1):
        n2.get(t2, "x")
    cluster.restart("n1")  # the durable decision is resent
    assert n2.get(t2, "x") == "new"
    assert read(cluster, "n3", "x") == "new"


def test_partitioned_remote_read_waits_at_the_owner_for_the_commit(pcluster):
    key = key_owned_by("n3")
    write(pcluster, "n3", **{key: "old"})
    n1 = pcluster.node("n1")
    t1 = n1.begin()
    n1.put(t1, key, "new")
    h = n1.commit_async(t1)
    step_until(pcluster, lambda: pending(pcluster, "COMMIT", t1, "n3"))
    assert h.committed is True
    [lost] = pending(pcluster, "COMMIT", t1, "n3")
    pcluster.drop(lost.id)
    n2 = pcluster.node("n2")
    t2 = n2.begin()
    assert n2.get(t2, key) == "new"
    trace = pcluster.trace
    waits = [e.seq for e in trace.filter(kind="state", node="n3")
             if e.data.get("event") == "read waits" and e.data.get("tx") == t2]
    commit = [e.seq for e in trace.filter(kind="deliver", node="n3", tx=t1)
              if e.data["kind"] == "COMMIT"]
    reply = [e.seq for e in trace.filter(kind="deliver", node="n2", tx=t2)
             if e.data["kind"] == "READ_REPLY"]
    assert waits and commit and reply
    assert waits[0] < commit[0] < reply[0]
    assert pcluster.core("n3").waiting == []


def test_partitioned_read_behind_a_crashed_coordinator_names_the_blocker(pcluster):
    key = key_owned_by("n3")
    n1 = pcluster.node("n1")
    t1 = n1.begin()
    n1.put(t1, key, "new")
    n1.commit_async(t1)
    step_until(pcluster, lambda: pcluster.states().get(("n3", "participant", t1)) == "PREPARED")
    pcluster.crash("n1")
    n2 = pcluster.node("n2")
    t2 = n2.begin()
    with pytest.raises(kvlab.SimulationTimeout) as e:
        n2.get(t2, key)
    assert t1 in str(e.value), str(e.value)


# -- isolation levels -------------------------------------------------------------------------
def _write_skew(cluster, isolation):
    write(cluster, "n1", a=1, b=1)
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    t1, t2 = n1.begin(isolation=isolation), n2.begin(isolation=isolation)
    # each checks a + b >= 1 and then zeroes a different key
    assert n1.get(t1, "a") + n1.get(t1, "b") == 2
    assert n2.get(t2, "a") + n2.get(t2, "b") == 2
    n1.put(t1, "a", 0)
    n2.put(t2, "b", 0)
    return n1.commit(t1), n2.commit(t2), n2.outcome(t2)


def test_snapshot_isolation_allows_write_skew(cluster):
    assert _write_skew(cluster, "snapshot")[:2] == (True, True)
    assert read(cluster, "n3", "a") == read(cluster, "n3", "b") == 0


def test_serializable_prevents_write_skew(cluster):
    first, second, out = _write_skew(cluster, "serializable")
    assert (first, second) == (True, False)
    assert "'a'" in str(out)
    assert read(cluster, "n3", "a") + read(cluster, "n3", "b") == 1


def test_read_committed_sees_each_new_commit(cluster):
    write(cluster, "n1", x=0)
    n2 = cluster.node("n2")
    t = n2.begin(isolation="read_committed")
    assert n2.get(t, "x") == 0
    write(cluster, "n3", x=1)
    assert n2.get(t, "x") == 1
    n2.put(t, "x", 2)
    assert n2.get(t, "x") == 2
    assert n2.commit(t)


def test_snapshot_repeatable_read_where_read_committed_is_not(cluster):
    write(cluster, "n1", x=0)
    n2 = cluster.node("n2")
    si, rc = n2.begin(), n2.begin(isolation="read_committed")
    assert n2.get(si, "x") == n2.get(rc, "x") == 0
    write(cluster, "n3", x=1)
    assert n2.get(si, "x") == 0
    assert n2.get(rc, "x") == 1


# -- garbage collection -----------------------------------------------------------------------
def _versions(cluster):
    return sum(c.store.version_count() for c in (cluster.core(n) for n in NODES))


def test_gc_keeps_memory_flat_over_many_overwrites(cluster):
    sizes = []
    for i in range(240):
        write(cluster, NODES[i % 3], x=i, y=[i], **{f"k{i % 4}": i})
        if i % 40 == 39:
            cluster.run()
            cluster.gc()
            sizes.append(_versions(cluster))
    assert len(set(sizes)) == 1, sizes
    assert sizes[0] == 3 * 6  # x, y and k0..k3: one version each on three nodes
    assert read(cluster, "n2", "x") == 239


def test_automatic_gc_bounds_memory_without_explicit_calls():
    c = kvlab.Cluster(NODES, seed=0, gc_every=50)
    for i in range(200):
        write(c, NODES[i % 3], x=i)
    c.run()
    assert _versions(c) <= 3 * 5
    assert any(e.kind == "gc" for e in c.trace)
    assert read(c, "n1", "x") == 199


def test_gc_never_removes_a_version_an_active_snapshot_needs(cluster):
    write(cluster, "n1", x="v0", d="doomed")
    n3 = cluster.node("n3")
    r = n3.begin()
    assert n3.get(r, "x") == "v0"
    for i in range(1, 30):
        write(cluster, NODES[i % 3], x=f"v{i}")
    t = cluster.node("n1").begin()
    cluster.node("n1").delete(t, "d")
    assert cluster.node("n1").commit(t)
    cluster.run()
    watermark = cluster.gc()
    assert watermark <= cluster.history[r].start_ts
    assert n3.get(r, "x") == "v0"
    assert n3.get(r, "d") == "doomed"
    for n in NODES:
        assert cluster.node(n).versions("x")[0].value == "v0"
    assert read(cluster, "n2", "x") == "v29"
    assert read(cluster, "n2", "d") is None
    assert n3.commit(r)
    assert cluster.gc() > watermark
    for n in NODES:
        assert [v.value for v in cluster.node(n).versions("x")] == ["v29"]
        [tomb] = cluster.node(n).versions("d")  # only the tombstone: reads name the deleter
        assert tomb.deleted and tomb.writer == t


def test_gc_watermark_follows_the_oldest_active_snapshot(cluster):
    write(cluster, "n1", x=1)
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a = n1.begin()
    b = n2.begin()
    write(cluster, "n3", x=2)
    assert cluster.gc() == cluster.history[a].start_ts
    n1.rollback(a)
    assert cluster.gc() == cluster.history[b].start_ts
    assert n2.get(b, "x") == 1
    assert n2.commit(b)
    assert cluster.gc() > cluster.history[b].start_ts
