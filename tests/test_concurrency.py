"""Concurrency: interleavings, overlapping 2PC rounds, conflicts, determinism, and a
hypothesis search over random interleavings checked against a reference model."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NODES, bad_transitions, key_owned_by, pending, read, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvlab


# -- API-level interleavings ------------------------------------------------------------------
def run_interleaving(order: list[int], programs: list[tuple[str, str, str]],
                     increment: bool) -> tuple[kvlab.Cluster, dict[int, bool], dict[int, str]]:
    """programs[i] = (node, read key, write key); every program is begin, get, put, commit.

    ``order`` lists program indexes, each appearing four times (one per step)."""
    c = kvlab.Cluster(NODES, seed=0)
    write(c, "n1", **{k: 0 for _, r, w in programs for k in (r, w)})
    pc = [0] * len(programs)
    tx: dict[int, str] = {}
    seen: dict[int, int] = {}
    result: dict[int, bool] = {}
    for i in order:
        node_id, rkey, wkey = programs[i]
        node = c.node(node_id)
        step = pc[i]
        pc[i] += 1
        if step == 0:
            tx[i] = node.begin()
        elif step == 1:
            seen[i] = node.get(tx[i], rkey)
        elif step == 2:
            node.put(tx[i], wkey, seen[i] + 1 if increment else f"p{i}")
        else:
            result[i] = node.commit(tx[i])
    return c, result, tx


def interleavings(n_programs: int, steps: int = 4) -> list[list[int]]:
    slots = [i for i in range(n_programs) for _ in range(steps)]
    return sorted(set(itertools.permutations(slots)))


def expected_counter(order: list[int]) -> dict[int, bool]:
    """First committer wins with synchronous commits: a commit succeeds unless another program
    committed after this one began."""
    pc: dict[int, int] = {}
    began: dict[int, int] = {}
    committed_at: dict[int, int] = {}
    result: dict[int, bool] = {}
    for pos, i in enumerate(order):
        pc[i] = pc.get(i, 0) + 1
        if pc[i] == 1:
            began[i] = pos
        elif pc[i] == 4:
            ok = not any(began[i] < t for t in committed_at.values())
            result[i] = ok
            if ok:
                committed_at[i] = pos
    return result


TWO_PROGRAM_ORDERS = interleavings(2)


def order_id(order) -> str:
    return "".join(map(str, order))


@pytest.mark.parametrize("order", TWO_PROGRAM_ORDERS, ids=order_id)
def test_two_increments_in_every_interleaving(order):
    c, result, tx = run_interleaving(order, [("n1", "x", "x"), ("n2", "x", "x")],
                                     increment=True)
    assert result == expected_counter(order)
    assert read(c, "n3", "x") == sum(result.values())
    if not all(result.values()):
        loser = [i for i, ok in result.items() if not ok][0]
        out = str(c.node(f"n{loser + 1}").outcome(tx[loser]))
        assert "'x'" in out and tx[1 - loser] in out, out


@pytest.mark.parametrize("order", TWO_PROGRAM_ORDERS[::3], ids=order_id)
def test_disjoint_writes_commit_in_every_interleaving(order):
    # each reads the key the other writes (write skew shape): snapshot isolation commits both
    c, result, _ = run_interleaving(order, [("n1", "b", "a"), ("n3", "a", "b")],
                                    increment=False)
    assert result == {0: True, 1: True}
    assert read(c, "n2", "a") == "p0" and read(c, "n2", "b") == "p1"


def test_three_increments_on_three_nodes_in_sampled_interleavings():
    rng = random.Random(1234)
    slots = [i for i in range(3) for _ in range(4)]
    programs = [("n1", "x", "x"), ("n2", "x", "x"), ("n3", "x", "x")]
    outcomes = set()
    for _ in range(40):
        order = slots[:]
        rng.shuffle(order)
        c, result, _ = run_interleaving(order, programs, increment=True)
        assert result == expected_counter(order), order
        assert read(c, "n1", "x") == sum(result.values()), order
        outcomes.add(sum(result.values()))
    assert outcomes >= {1, 2}  # the sample covers both contended and serial schedules


# -- overlapping 2PC rounds -------------------------------------------------------------------
def test_many_commit_rounds_in_flight_at_once(cluster):
    txs = [(cluster.node(NODES[i % 3]), cluster.node(NODES[i % 3]).begin()) for i in range(6)]
    for i, (node, t) in enumerate(txs):
        node.put(t, f"k{i}", i)
        node.put(t, f"free-{i}", [i])
    handles = [node.commit_async(t) for node, t in txs]  # no call in between runs the cluster
    assert not any(h.done for h in handles)
    assert len(pending(cluster, "PREPARE")) == 6 * 3
    cluster.run()
    assert all(h.done and h.committed for h in handles)
    for n in NODES:
        for i in range(6):
            assert read(cluster, n, f"k{i}") == i
    assert all(not cluster.core(n).store.write_locks for n in NODES)


def test_overlapping_rounds_with_shared_keys(cluster):
    plans = [("n1", {"x": 1, "y": 1}), ("n2", {"y": 2, "z": 2}), ("n3", {"z": 3}),
             ("n1", {"w": 4})]
    txs = [(cluster.node(node_id), cluster.node(node_id).begin()) for node_id, _ in plans]
    for (node, t), (_, writes) in zip(txs, plans, strict=True):
        for k, v in writes.items():
            node.put(t, k, v)
    handles = [node.commit_async(t) for node, t in txs]
    cluster.run()
    results = [h.committed for h in handles]
    # FIFO delivery at latency 1: the first PREPAREs lock y everywhere, the second round hits
    # that lock and takes no lock of its own, so the third round is free
    assert results == [True, False, True, True]
    loser = cluster.node("n2").outcome(handles[1].tx)
    assert "'y'" in str(loser) and handles[0].tx in str(loser)
    assert [read(cluster, "n2", k) for k in "xyzw"] == [1, 1, 3, 4]


def test_sync_calls_run_other_rounds_to_completion(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    t1 = n1.begin()
    n1.put(t1, "x", 1)
    h = n1.commit_async(t1)
    t2 = n2.begin()
    n2.put(t2, "y", 2)
    assert n2.commit(t2)
    assert h.wait()
    assert read(cluster, "n3", "x") == 1 and read(cluster, "n3", "y") == 2


# -- conflicts --------------------------------------------------------------------------------
@pytest.mark.parametrize("first", [0, 1])
def test_lost_update_prevented_in_both_commit_orders(cluster, first):
    write(cluster, "n1", balance=100)
    nodes = [cluster.node("n1"), cluster.node("n2")]
    txs = [n.begin() for n in nodes]
    for n, t, delta in zip(nodes, txs, (10, -30), strict=True):
        n.put(t, "balance", n.get(t, "balance") + delta)
    second = 1 - first
    assert nodes[first].commit(txs[first]) is True
    assert nodes[second].commit(txs[second]) is False
    out = nodes[second].outcome(txs[second])
    assert out.status == "aborted"
    assert "'balance'" in str(out) and txs[first] in str(out)
    assert "first committer wins" in str(out)
    assert read(cluster, "n3", "balance") == 100 + (10, -30)[first]


def test_conflict_on_delete_is_detected(cluster):
    write(cluster, "n1", x=1)
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a, b = n1.begin(), n2.begin()
    n1.delete(a, "x")
    n2.put(b, "x", 2)
    assert n1.commit(a)
    assert n2.commit(b) is False
    assert a in str(n2.outcome(b))
    assert read(cluster, "n3", "x") is None


def test_concurrent_disjoint_writes_both_commit(cluster):
    n1, n3 = cluster.node("n1"), cluster.node("n3")
    a, b = n1.begin(), n3.begin()
    n1.put(a, "x", n1.get(a, "y") or 1)
    n3.put(b, "y", n3.get(b, "x") or 2)
    ha, hb = n1.commit_async(a), n3.commit_async(b)
    cluster.run()
    assert ha.committed and hb.committed
    assert (read(cluster, "n2", "x"), read(cluster, "n2", "y")) == (1, 2)


def test_concurrent_prepares_meet_each_others_locks(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a, b = n1.begin(), n2.begin()
    n1.put(a, "x", "a")
    n2.put(b, "x", "b")
    ha, hb = n1.commit_async(a), n2.commit_async(b)
    # a locks x on n1 and n3 first, b locks it on n2 first: nobody may wait, so both lose
    for env in pending(cluster, "PREPARE", a, "n1") + pending(cluster, "PREPARE", a, "n3") + \
            pending(cluster, "PREPARE", b, "n2"):
        cluster.deliver(env.id)
    cluster.run()
    assert ha.committed is False and hb.committed is False
    ra, rb = str(n1.outcome(a)), str(n2.outcome(b))
    assert "'x'" in ra and b in ra and "locked" in ra
    assert "'x'" in rb and a in rb and "locked" in rb
    assert all(not cluster.core(n).store.write_locks for n in NODES)
    assert read(cluster, "n3", "x") is None
    write(cluster, "n3", x="after")  # the locks are really gone
    assert read(cluster, "n1", "x") == "after"


def test_concurrent_prepares_one_wins_when_its_prepares_arrive_first(cluster):
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    a, b = n1.begin(), n2.begin()
    n1.put(a, "x", "a")
    n2.put(b, "x", "b")
    ha, hb = n1.commit_async(a), n2.commit_async(b)
    for env in pending(cluster, "PREPARE", b):
        cluster.deliver(env.id)
    cluster.run()
    assert (ha.committed, hb.committed) == (False, True)
    assert b in str(n1.outcome(a)) and "'x'" in str(n1.outcome(a))
    assert read(cluster, "n1", "x") == "b"


def test_gc_does_not_hide_a_concurrent_delete_from_first_committer_wins(cluster):
    write(cluster, "n1", x=1)
    cluster.run()
    n1, n2 = cluster.node("n1"), cluster.node("n2")
    writer = n1.begin()
    deleter = n2.begin()
    n2.delete(deleter, "x")
    assert n2.commit(deleter)
    cluster.run()  # the tombstone is on every node
    n1.put(writer, "x", "lost update")
    h = n1.commit_async(writer)  # PREPAREs in flight
    cluster.gc()
    cluster.run()
    hist = cluster.history
    assert hist[writer].start_ts < hist[deleter].commit_ts  # they were concurrent
    assert h.committed is False, (
        f"both committed: {deleter} deleted x at ts {hist[deleter].commit_ts} and {writer} "
        f"(snapshot {hist[writer].start_ts}) overwrote it at ts {hist[writer].commit_ts}")


# -- read-only transactions -------------------------------------------------------------------
@pytest.mark.parametrize("isolation", ["snapshot", "serializable", "read_committed"])
@pytest.mark.parametrize("placement", ["all", "partitioned"])
def test_read_only_commit_sends_no_prepare(isolation, placement):
    c = kvlab.Cluster(NODES, seed=0, placement=placement)
    write(c, "n1", **{key_owned_by(n): n for n in NODES})
    c.run()
    n2 = c.node("n2")
    t = n2.begin(isolation=isolation)
    for n in NODES:
        assert n2.get(t, key_owned_by(n)) == n
    before = len(c.trace)
    assert n2.commit(t) is True
    assert c.trace[before:].filter(kind=("send", "deliver", "wal")) == []
    assert not [e for e in c.trace.filter(tx=t) if e.data.get("kind") in
                ("PREPARE", "VOTE_YES", "VOTE_NO", "COMMIT", "ACK")]
    assert c.pending() == []
    assert "read-only" in n2.outcome(t).reason


# -- determinism ------------------------------------------------------------------------------
def scenario(seed: int, latency: tuple[int, int] = (1, 1), loss: float = 0.0,
             placement: str = "all") -> tuple[str, list[str], list]:
    """A busy workload: concurrent rounds, hand-picked deliveries, a crash and a partition."""
    c = kvlab.Cluster(NODES, seed=seed, latency=latency, loss=loss, placement=placement)
    results: list = []

    def attempt(fn, *args):
        try:
            results.append(fn(*args))
        except kvlab.KvlabError as e:
            results.append(type(e).__name__)

    handles = []
    for i in range(6):
        node = c.node(NODES[i % 3])
        try:
            t = node.begin()
            node.put(t, f"k{i % 4}", i)
            attempt(node.get, t, f"k{(i + 1) % 4}")
            handles.append(node.commit_async(t))
        except kvlab.KvlabError as e:
            results.append(type(e).__name__)
        for _ in range(i):
            c.step()
        env = c.pending()
        if env:
            c.deliver(env[-1].id)
    c.crash("n3")
    for _ in range(10):
        c.step()
    c.restart("n3")
    c.partition({"n1"}, {"n2", "n3"})
    n2 = c.node("n2")
    try:
        t = n2.begin()
        n2.put(t, "p", 1)
        attempt(n2.commit, t)  # all placement: n1 cannot vote, so this aborts
    except kvlab.KvlabError as e:
        results.append(type(e).__name__)
    c.heal()
    c.run()
    results += [h.committed for h in handles]
    for n in NODES:
        node = c.node(n)
        try:
            t = node.begin()
            attempt(node.get, t, "k1")
        except kvlab.KvlabError as e:
            results.append(type(e).__name__)
    return c.trace.digest(), c.trace.lines(), results


@pytest.mark.parametrize("kwargs", [{}, {"latency": (1, 10)}, {"latency": (1, 10), "loss": 0.2},
                                    {"latency": (2, 7), "loss": 0.1, "placement": "partitioned"}],
                         ids=["fixed", "latency", "latency-loss", "partitioned-loss"])
def test_same_seed_same_calls_same_trace(kwargs):
    d1, lines1, r1 = scenario(7, **kwargs)
    d2, lines2, r2 = scenario(7, **kwargs)
    assert lines1 == lines2
    assert d1 == d2
    assert r1 == r2
    assert len(lines1) > 100


def test_loss_really_drops_messages():
    _, lines, _ = scenario(7, latency=(1, 10), loss=0.2)
    assert any("(lost)" in line for line in lines)


def test_different_seeds_with_latency_ranges_give_different_traces():
    digests = {scenario(seed, latency=(1, 10))[0] for seed in range(4)}
    assert len(digests) == 4


def test_trace_does_not_depend_on_python_hash_seed():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import test_concurrency as t; "
        "print(t.scenario(3, latency=(1, 6), loss=0.1, placement='partitioned')[0])")
    here = Path(__file__).parent
    env = dict(os.environ)
    outs = []
    for hash_seed in ("1", "2"):
        env["PYTHONHASHSEED"] = hash_seed
        proc = subprocess.run([sys.executable, "-c", code, str(here)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout.strip())
    assert outs[0] == outs[1]
    assert outs[0] == scenario(3, latency=(1, 6), loss=0.1, placement="partitioned")[0]


# -- hypothesis: random interleavings against a reference model -------------------------------
KEYS = ["a", "b", "c"]

OPS = ["get", "get", "put", "put", "delete"]


@st.composite
def workloads(draw, ops: list[str] = OPS):
    """Each transaction: begin, 1-4 reads/writes, then commit_async, commit or rollback.
    A random interleaving of all those steps, each followed by a random network choice
    (nothing, one step(), or delivering one chosen in-flight message ahead of its turn)."""
    n_tx = draw(st.integers(2, 4))
    op_strategy = st.tuples(st.sampled_from(ops), st.sampled_from(KEYS))
    programs = [draw(st.lists(op_strategy, min_size=1, max_size=4)) for _ in range(n_tx)]
    slots = [i for i, prog in enumerate(programs) for _ in range(len(prog) + 2)]
    order = draw(st.permutations(slots))
    return {
        "placement": draw(st.sampled_from(["all", "partitioned"])),
        "latency": draw(st.sampled_from([(1, 1), (1, 5)])),
        "seed": draw(st.integers(0, 1000)),
        "nodes": [draw(st.sampled_from(NODES)) for _ in range(n_tx)],
        "isolation": [draw(st.sampled_from(["snapshot", "snapshot", "serializable"]))
                      for _ in range(n_tx)],
        "programs": programs,
        "end": [draw(st.sampled_from(["commit_async", "commit_async", "commit", "rollback"]))
                for _ in range(n_tx)],
        "order": order,
        "network": draw(st.lists(st.integers(0, 12), min_size=len(order),
                                 max_size=len(order))),
    }


def execute(w: dict, **options) -> kvlab.Cluster:
    c = kvlab.Cluster(NODES, seed=w["seed"], latency=w["latency"], placement=w["placement"],
                      **options)
    pc = [0] * len(w["programs"])
    tx: dict[int, str] = {}
    counter = itertools.count(1)
    for i, net in zip(w["order"], w["network"], strict=True):
        node = c.node(w["nodes"][i])
        step = pc[i]
        pc[i] += 1
        prog = w["programs"][i]
        if step == 0:
            tx[i] = node.begin(isolation=w["isolation"][i])
        elif step <= len(prog):
            kind, key = prog[step - 1]
            if kind == "get":
                node.get(tx[i], key)
            elif kind == "put":
                node.put(tx[i], key, f"{tx[i]}.{next(counter)}")
            else:
                node.delete(tx[i], key)
        else:
            getattr(node, w["end"][i])(tx[i])
        if net == 1:
            c.step()
        elif net >= 2:
            env = c.pending()
            if env:
                c.deliver(env[net % len(env)].id)
    c.run()
    return c


def final_writes(txn) -> dict[str, tuple[object, bool]]:
    out: dict[str, tuple[object, bool]] = {}
    for op in txn.writes:
        out[op.key] = (op.value, op.deleted)
    return out


def check_history(c: kvlab.Cluster) -> None:
    hist = list(c.history)
    assert all(t.status in ("committed", "aborted") for t in hist), hist
    committed = [t for t in hist if t.status == "committed"]
    writers = sorted((t for t in committed if t.writes), key=lambda t: t.commit_ts)
    stamps = [t.commit_ts for t in writers]
    assert len(set(stamps)) == len(stamps)
    for t in writers:
        assert t.commit_ts > t.start_ts

    def state_at(ts: float) -> dict[str, tuple[object, str]]:
        state: dict[str, tuple[object, str]] = {}
        for t in writers:
            if t.commit_ts > ts:
                break
            for k, (v, deleted) in final_writes(t).items():
                state[k] = (None if deleted else v, t.id)
        return state

    # every transaction (committed or not) read its snapshot, with its own writes applied
    for t in hist:
        snap = state_at(t.start_ts)
        own: dict[str, object] = {}
        for op in t.ops:
            if op.kind == "w":
                own[op.key] = None if op.deleted else op.value
                continue
            if op.key in own:
                assert (op.value, op.writer) == (own[op.key], t.id), (t, op)
            else:
                value, writer = snap.get(op.key, (None, None))
                assert op.value == value, (t.id, op, "expected", value, "from", writer)
                if value is not None:
                    assert op.writer == writer, (t.id, op, writer)

    # first committer wins: committed concurrent transactions never wrote the same key
    for a, b in itertools.combinations(writers, 2):
        concurrent = a.start_ts < b.commit_ts and b.start_ts < a.commit_ts
        common = set(final_writes(a)) & set(final_writes(b))
        assert not (concurrent and common), (a.id, b.id, common)

    # every node agrees with the model about the final state, and nothing is left behind
    final = state_at(float("inf"))
    for n in NODES:
        core = c.core(n)
        assert core.store.write_locks == {} and core.store.read_locks == {}
        for k in KEYS:
            if c.placement == "all" or core.owner(k) == n:
                v = core.store.latest(k)
                got = None if v is None or v.deleted else v.value
                assert got == final.get(k, (None, None))[0], (n, k)
    assert c.pending() == []
    if c.placement == "all" and not c.trace.filter(kind="gc"):
        chains = [{k: [(v.commit_ts, v.writer) for v in c.core(n).store.chains.get(k, [])]
                   for k in KEYS} for n in NODES]
        assert chains[0] == chains[1] == chains[2]

    # every state change the run made is in kvlab.twopc's tables
    notes = [e.data for e in c.trace.filter(kind="state")]
    assert bad_transitions(notes) == []
    check_force_rules(c.trace)


# a message of this kind from a node needs this record of the same transaction durable there
NEEDS_DURABLE = {"VOTE_YES": "PREPARE", "COMMIT": "DECISION", "ACK": "COMMIT"}


def check_force_rules(trace) -> None:
    """Write-ahead: no vote yes, commit decision or ack leaves before its record is flushed."""
    logged: dict[tuple[str, str, str], int] = {}  # (node, type, tx) -> lsn
    flushed: dict[str, int] = {}
    for e in trace:
        if e.kind == "wal":
            logged.setdefault((e.node, e.data["type"], e.data["tx"]), e.data["lsn"])
        elif e.kind == "flush":
            flushed[e.node] = e.data["lsn"]
        elif e.kind == "send" and e.data["kind"] in NEEDS_DURABLE:
            src, tx = e.data["src"], e.data["tx"]
            lsn = logged.get((src, NEEDS_DURABLE[e.data["kind"]], tx))
            assert lsn is not None and lsn <= flushed.get(src, 0), (str(e), lsn, flushed)


HYPOTHESIS = dict(deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@settings(max_examples=300, **HYPOTHESIS)
@given(workloads())
def test_random_interleavings_keep_snapshot_isolation(w):
    check_history(execute(w))


@settings(max_examples=100, **HYPOTHESIS)
@given(workloads())
def test_random_interleavings_with_aggressive_gc(w):
    # GC after every third event must never take a version a snapshot still reads, nor a
    # tombstone that a transaction still committing must conflict with.
    c = execute(w, gc_every=3)
    assert c.trace.filter(kind="gc")
    check_history(c)


@settings(max_examples=40, **HYPOTHESIS)
@given(workloads())
def test_random_interleavings_are_deterministic(w):
    a, b = execute(w), execute(w)
    assert a.trace.lines() == b.trace.lines()
    assert a.trace.digest() == b.trace.digest()
    assert [(t.id, t.status, t.commit_ts) for t in a.history] == \
        [(t.id, t.status, t.commit_ts) for t in b.history]
