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
from kvlab.wal import decode

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
    from_n1 = [e.data["dst"] for e in sends(batched, BATCH) if e.data["src"] == "n1"]
    # n1 -> n2 and n3: the PREPAREs, then the COMMITs; n1 -> n1: the PREPAREs, the votes of
    # its own participant, the COMMITs and its acks (messages to itself are batched too)
    assert sorted(from_n1) == ["n1"] * 4 + ["n2"] * 2 + ["n3"] * 2
    def remote(events: list) -> list:
        return [e for e in sends(events) if e.data["src"] != e.data["dst"]]

    # PREPARE, vote, COMMIT and ack: 4 x 4 transactions x 2 peers, or 4 batches x 2 peers
    assert (len(remote(plain)), len(remote(batched))) == (32, 8)
    assert any(e.kind == "deliver" and e.data["kind"] == BATCH for e in batched)
    # n2 logs the four PREPAREs as one forced BATCH record, which one flush makes durable
    logged = [e for e in batched if e.kind == "wal" and e.node == "n2"]
    assert [(e.data["type"], e.data["force"]) for e in logged[:1]] == [(BATCH, True)]
    first = decode(c.wal("n2").disk.read_log())[0][0]
    assert [t for t, _ in first.data["records"]] == [PREPARE] * 4
    flushes = [e for e in batched if e.kind == "flush" and e.node == "n2"]
    assert flushes[0].data["records"] == 1
    plain_forced = [e for e in plain if e.kind == "wal" and e.data["force"]]
    batched_forced = [e for e in batched if e.kind == "wal" and e.data["force"]]
    # forced: 12 PREPAREs and 4 DECISIONs one by one; one per batch (3 PREPAREs, 1 DECISION)
    assert (len(plain_forced), len(batched_forced)) == (12 + 4 + 12, 3 + 1 + 3)


def overlapping_rounds(window: int | None) -> int:
    """Log flushes of 32 two-key read-modify-writes, 16 committing at once (bench figure 2)."""
    from kvlab.bench import _keys, _rmw_batches

    c = kvlab.Cluster(NODES, seed=2, batch_window=window, history=False)
    _rmw_batches(c, 32, 16, lambda i: _keys(i, 1000))
    return sum(1 for e in c.trace if e.kind == "flush")


def test_a_window_does_not_split_a_group_commit_round():
    # a node's messages to itself wait in a batch too: were they delivered at once, its own
    # participant's records would be flushed a window before its peers' arrive, in two fsyncs
    assert overlapping_rounds(1) == overlapping_rounds(2) == overlapping_rounds(0)


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


def test_a_batch_record_recovers_as_the_records_inside_it(tmp_path):
    # four PREPAREs logged as one BATCH record on each participant; every node crashes once
    # the PREPAREs are durable and before any DECISION is: all four are in doubt after the
    # restart (replay read each PREPARE out of the batch), and the coordinator's restart
    # aborts them (presumed abort); then four more commit and survive a restart of everyone
    c = kvlab.Cluster(NODES, seed=0, batch_window=0, data_dir=tmp_path)
    n1 = c["n1"]
    txs = [n1.begin() for _ in range(4)]
    for i, t in enumerate(txs):
        n1.put(t, f"k{i}", i)
    for t in txs:
        n1.commit_async(t)
    for _ in range(200):  # until both peers' PREPAREs are durable
        c.step()
        if all(c.wal(n).flushed_lsn > 0 for n in ("n2", "n3")):
            break
    assert [r.type for r in decode(c.wal("n2").disk.read_log())[0]] == [BATCH]
    for n in NODES:
        c.crash(n)
    for n in ("n2", "n3"):
        c.restart(n)
        assert sorted(t.id for t in c.core(n).participant.in_doubt()) == sorted(txs)
    c.restart("n1")
    c.run()
    assert all(n1.outcome(t).status == "aborted" for t in txs)
    more = [n1.begin() for _ in range(4)]
    for i, t in enumerate(more):
        n1.put(t, f"k{i}", 10 + i)
    handles = [n1.commit_async(t) for t in more]
    c.run()
    assert all(h.committed for h in handles)
    c.close()
    again = kvlab.Cluster(NODES, data_dir=tmp_path)
    for n in NODES:
        assert {k: again.core(n).store.chains[k][-1].value for k in ("k0", "k3")} == \
            {"k0": 10, "k3": 13}
    again.close()


@pytest.mark.parametrize("inner", [None, [], [["PREPARE"]], [["BATCH", {}]], [[1, {}]],
                                   [["PREPARE", []]]])
def test_a_damaged_batch_record_is_refused(inner):
    from kvlab.errors import CorruptLog
    from kvlab.node import unbatched
    from kvlab.wal import LogRecord

    ok = LogRecord(3, BATCH, {"records": [["END", {"tx": "T1"}], ["END", {"tx": "T2"}]]})
    assert [(r.lsn, r.type, r.data["tx"]) for r in unbatched([ok])] == [(3, "END", "T1"),
                                                                      (3, "END", "T2")]
    with pytest.raises(CorruptLog, match="LSN 3 .BATCH. does not list"):
        unbatched([LogRecord(3, BATCH, {} if inner is None else {"records": inner})])


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


# -- the oracle's requests (kvlab.batching: the oracle is a peer like the others) ------------
def oracle_sends(events: list) -> list:
    return [e for e in events if e.kind == "send" and "tso" in (e.data["src"], e.data["dst"])]


def test_a_nodes_commit_timestamps_of_one_tick_share_one_request_and_one_reply():
    _, plain, hs = four_commits(None)
    c, batched, hb = four_commits(0)
    assert all(h.committed for h in hs + hb)
    assert sorted(e.data["kind"] for e in oracle_sends(plain)) == ["TS_REPLY"] * 4 + \
        ["TS_REQUEST"] * 4
    assert [(e.data["src"], e.data["dst"], e.data["kind"]) for e in oracle_sends(batched)] == \
        [("n1", "tso", BATCH), ("tso", "n1", BATCH)]
    # consecutive timestamps, in the order the votes completed the transactions (T1 first)
    assert [h.commit_ts for h in hb] == [h.commit_ts for h in hs]
    ts = [h.commit_ts for h in hb]
    assert ts == list(range(ts[0], ts[0] + 4)) and ts[0] > max(int(h.tx[1:]) for h in hb)
    assert kvlab.check(c.history).ok


def begins(window: int, n: int) -> tuple[kvlab.Cluster, list[int]]:
    """n1 begins ``n`` transactions at one tick (the node's inputs, as an async client would)."""
    from kvlab.node import Begin

    c = kvlab.Cluster(NODES, seed=0, batch_window=window)
    c["n2"].rollback(c["n2"].begin())  # the oracle has handed out timestamp 1, now unused
    calls = []
    for _ in range(n):
        call = next(c._call_ids)
        c._apply("n1", c._cores["n1"].handle(Begin(call)))
        calls.append(call)
    return c, calls


def test_begins_of_one_window_travel_as_one_request_and_get_consecutive_timestamps():
    c, calls = begins(2, 3)
    t0, last = c.now, c.tso.last
    start = len(c.trace)
    while not oracle_sends(c.step()):  # held for the window: the oracle has issued nothing
        assert c.tso.last == last and not c._replies
    assert c.now - t0 == 2 and c.tso.last == last
    c.run()
    sent = oracle_sends(c.trace[start:])
    assert [e.data["kind"] for e in sent] == [BATCH, BATCH]  # one request, one reply
    got = [c._replies.pop(call).value for call in calls]
    assert got == [(f"T{ts}", ts) for ts in range(last + 1, last + 4)]  # strictly increasing
    assert c.tso.last == last + 3


def test_the_watermark_counts_every_snapshot_in_a_batched_reply_in_flight():
    c, calls = begins(0, 2)
    while not any(e.data["src"] == "tso" for e in oracle_sends(c.step())):
        pass
    (env,) = c.pending()
    assert env.msg.kind == BATCH and c.tso.last == 3
    assert c._watermark() == 2  # the first snapshot of the reply, not yet received
    c.run()
    assert [c._replies.pop(call).value[1] for call in calls] == [2, 3]


def two_commits_on_n1(**kw: Any) -> kvlab.Cluster:
    """Two nodes; n1 commits two transactions at one tick, each writing a key of n2: n2's votes
    come back in one BATCH, so n1's two commit timestamp requests share a batch too."""
    c = kvlab.Cluster(["n1", "n2"], seed=0, batch_window=0, placement="partitioned", **kw)
    n1 = c["n1"]
    owner = c._cores["n1"].owner
    keys = [k for k in (f"k{i}" for i in range(50)) if owner(k) == "n2"][:2]
    txs = [n1.begin(), n1.begin()]
    for t, k in zip(txs, keys, strict=True):
        n1.put(t, k, 1)
    for t in txs:
        n1.commit_async(t)
    return c


def test_the_explorer_setup_batches_the_oracle_requests():
    c = two_commits_on_n1()
    start = len(c.trace)
    c.run()
    assert [(e.data["src"], e.data["kind"]) for e in oracle_sends(c.trace[start:])] == \
        [("n1", BATCH), ("tso", BATCH)]


@pytest.mark.parametrize("faults", [dict(crashes=1),
                                    pytest.param(dict(crashes=1, duplicates=1),
                                                 marks=pytest.mark.slow),
                                    pytest.param(dict(crashes=1, drops=1),
                                                 marks=pytest.mark.slow)])
def test_explorer_batched_oracle_requests_stay_safe(faults):
    r = explore.search(two_commits_on_n1, progress=False, **faults)
    assert r.status == "exhausted" and r.violation is None, str(r)


def test_explorer_still_catches_a_broken_rule_with_batched_oracle_requests():
    r = explore.search(lambda: two_commits_on_n1(rules=kvlab.Rules(force_decision=False)),
                       crashes=1, progress=False)
    assert r.violation is not None


def test_the_wal_view_says_what_a_batch_record_holds():
    from kvlab.exercises.fastpath import batched_commits
    from kvlab.viz.walview import detail

    c, _, _ = batched_commits(0)
    assert [detail(r) for r in c.wal("n2").scan().records] == [
        "4 records: PREPARE T1, PREPARE T2, PREPARE T3, PREPARE T4",
        "4 records: COMMIT T1, COMMIT T2, COMMIT T3, COMMIT T4"]


def test_a_transactions_view_keeps_the_batches_it_rode_in():
    from kvlab.viz.sequence import select

    c, events, hs = four_commits(0)
    t2 = hs[1].tx
    mine = c.trace.filter(tx=t2)
    # n2's BATCH of four PREPAREs is sent, delivered and logged as one BATCH record: each of
    # the four transactions' views shows all three, and says who else was in the batch
    batch = [e for e in mine if e.data.get("kind") == BATCH or e.data.get("type") == BATCH]
    assert {e.kind for e in batch} == {"send", "deliver", "wal"}
    assert all(t2 in e.txs and e.tx is None for e in batch)
    logged = [e for e in batch if e.kind == "wal" and e.node == "n2"]
    assert [e.txs for e in logged] == [tuple(h.tx for h in hs)] * 2  # the PREPAREs, COMMITs
    assert str(logged[0]).endswith(f"lsn 1 BATCH ({' '.join(h.tx for h in hs)}) [force]")
    # the sequence diagram of one transaction draws them, and the flushes that follow
    drawn = select(c.trace, tx=t2)
    assert [e.data["lsn"] for e in drawn if e.kind == "wal" and e.node == "n2"] == [1, 2]
    assert [e.kind for e in drawn if e.node == "n2"].count("flush") == 2
    # a timer for a batch is keyed by the peer: it belongs to no transaction
    timers = [e for e in events if e.kind == "timer" and e.data["key"].startswith("batch")]
    assert timers and all(e.tx is None and e.txs == () for e in timers)


def test_a_trace_without_batches_names_no_batch_transactions():
    c, events, _ = four_commits(None)
    assert all("txs" not in e.data for e in c.trace)
    assert all(e.txs == ((e.tx,) if e.tx else ()) for e in events)
