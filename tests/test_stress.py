"""Stress: 10,000+ bank transfers with many commits in flight, reordering, loss and crashes.

The bank invariant (the total never changes) is checked on every snapshot two ways: live, by
audit transactions that read every account, and afterwards, by replaying the recorded history in
timestamp order and checking that every transaction read exactly the snapshot it was promised.
"""

from __future__ import annotations

import random
import warnings

import pytest

import kvlab
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]
ACCOUNTS = [f"acct{i:02d}" for i in range(20)]
TOTAL = 100 * len(ACCOUNTS)


def replay_history(history: kvlab.History) -> int:
    """Sweep commits and snapshots in timestamp order; return how many snapshots were checked."""
    commits = sorted((t.commit_ts, t) for t in history if t.status == "committed"
                     and t.commit_ts is not None)
    readers = sorted((t.start_ts, t.id, t) for t in history if t.start_ts is not None)
    state: dict[str, object] = {}
    i = checked = 0
    for start_ts, _, reader in readers:
        while i < len(commits) and commits[i][0] <= start_ts:
            for op in commits[i][1].writes:
                state[op.key] = None if op.deleted else op.value
            assert sum(v for k, v in state.items() if k in ACCOUNTS) in (0, TOTAL), \
                f"money created or destroyed by {commits[i][1].id}"
            i += 1
        own: dict[str, object] = {}
        for op in reader.ops:
            if op.kind == "w":
                own[op.key] = op.value
            elif op.key in own:
                assert op.value == own[op.key]
            else:
                assert op.value == state.get(op.key), (
                    f"{reader.id} read {op.key}={op.value} but its snapshot at ts {start_ts} "
                    f"holds {state.get(op.key)}")
        checked += 1
    return checked


def bank(seed: int, transfers: int, loss: float, crash_rate: float, placement: str = "all"):
    rng = random.Random(seed)
    c = kvlab.Cluster(NODES, seed=seed, latency=(1, 8), loss=loss, placement=placement,
                      call_timeout=400, gc_every=500)
    setup = c["n1"].begin()
    for a in ACCOUNTS:
        c["n1"].put(setup, a, 100)
    assert c["n1"].commit(setup)
    handles: list[kvlab.CommitHandle] = []
    down: dict[str, int] = {}
    audits = timeouts = peak = 0
    for i in range(transfers):
        if i % 100 == 0:
            peak = max([peak] + [c.core(n).store.version_count() for n in NODES if n not in down])
        for n, since in list(down.items()):  # restart crashed nodes after a while
            if i - since > 40:
                c.restart(n)
                del down[n]
        if rng.random() < crash_rate and not down:
            victim = rng.choice(NODES)
            c.crash(victim, torn=rng.random() < 0.5)
            down[victim] = i
        live = [n for n in NODES if n not in down]
        node = c[rng.choice(live)]
        tx = node.begin()
        try:
            a, b = rng.sample(ACCOUNTS, 2)
            amount = rng.randint(1, 10)
            va, vb = node.get(tx, a), node.get(tx, b)
            node.put(tx, a, va - amount)
            node.put(tx, b, vb + amount)
            handles.append(node.commit_async(tx))
        except kvlab.SimulationTimeout:
            timeouts += 1  # blocked behind an in-doubt write whose coordinator is down
            node.rollback(tx)
        for _ in range(rng.randint(0, 6)):
            c.step()
        if i % 25 == 0:
            auditor = c[rng.choice(live)]
            r = auditor.begin()
            try:
                assert sum(auditor.get(r, a) for a in ACCOUNTS) == TOTAL
                assert auditor.commit(r)
                audits += 1
            except kvlab.SimulationTimeout:
                timeouts += 1
                auditor.rollback(r)
    for n in list(down):
        c.restart(n)
    c.run()
    bank.peak_versions = peak  # type: ignore[attr-defined]
    return c, handles, audits, timeouts


@pytest.mark.slow
def test_ten_thousand_transfers_with_reordering_loss_and_crashes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        c, handles, audits, timeouts = bank(seed=7, transfers=10_000, loss=0.01,
                                            crash_rate=0.002)
    committed = sum(1 for h in handles if h.committed)
    aborted = sum(1 for h in handles if h.done and not h.committed)
    assert committed + aborted == len(handles)  # every commit reached an outcome
    assert committed > 5_000 and aborted > 0 and audits > 300
    assert len(c.trace.filter("crash")) >= 10
    assert c.trace.filter("drop")
    # every node ends with the same balances, summing to the total, and nothing locked
    finals = []
    for n in NODES:
        core = c.core(n)
        assert not core.store.write_locks and not core.participant.in_doubt()
        r = c[n].begin()
        finals.append([c[n].get(r, a) for a in ACCOUNTS])
    assert finals[0] == finals[1] == finals[2]
    assert sum(finals[0]) == TOTAL
    # memory stays flat: with no snapshot open, one version per account is all that is left
    assert max(e.data["removed"] for e in c.trace.filter("gc")) > 0
    assert bank.peak_versions < 5 * len(ACCOUNTS)  # flat over 10,000 transfers
    c.gc()
    assert c.core("n1").store.version_count() == len(ACCOUNTS)
    assert replay_history(c.history) > 10_000


def test_partitioned_placement_bank_with_faults():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        c, handles, audits, _ = bank(seed=3, transfers=1_500, loss=0.02, crash_rate=0.005,
                                     placement="partitioned")
    assert sum(1 for h in handles if h.committed) > 500
    assert any(e.data["kind"] == "READ" for e in c.trace.filter("send"))
    assert replay_history(c.history) > 1_500


def test_history_replay_catches_a_wrong_read():
    c = kvlab.Cluster(NODES)
    n1 = c["n1"]
    tx = n1.begin()
    for a in ACCOUNTS:
        n1.put(tx, a, 100)
    n1.commit(tx)
    r = n1.begin()
    n1.get(r, ACCOUNTS[0])
    c.history[r].ops[0].value = 999  # a read the snapshot never held
    with pytest.raises(AssertionError, match="snapshot"):
        replay_history(c.history)
