"""Every public call is safe from any thread: the obvious ThreadPoolExecutor stress test."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import kvlab
from kvlab.classic import begin, commit, get, initialize, put, rollback

NODES = ["n1", "n2", "n3"]
ACCOUNTS = [f"acct{i}" for i in range(8)]
THREADS = 16
TRANSFERS = 2000  # per thread


def test_sixteen_threads_of_bank_transfers_keep_every_total():
    cluster = kvlab.Cluster(NODES, seed=0, trace=False)
    setup = cluster["n1"].begin()
    for a in ACCOUNTS:
        cluster["n1"].put(setup, a, 100)
    assert cluster["n1"].commit(setup)
    total = 100 * len(ACCOUNTS)
    unexpected: list[BaseException] = []
    stats = {"committed": 0, "aborted": 0, "typed": 0}
    guard = threading.Lock()

    def worker(w: int) -> None:
        rng = random.Random(w)
        node = cluster[NODES[w % 3]]
        for i in range(TRANSFERS):
            try:
                tx = node.begin()
                a, b = rng.sample(ACCOUNTS, 2)
                amount = rng.randint(1, 5)
                va, vb = node.get(tx, a), node.get(tx, b)
                node.put(tx, a, va - amount)
                if i % 50 == 0:
                    time.sleep(0)  # let another thread in mid-transaction
                node.put(tx, b, vb + amount)
                ok = node.commit(tx)
                with guard:
                    stats["committed" if ok else "aborted"] += 1
            except kvlab.KvlabError:
                with guard:
                    stats["typed"] += 1
            except BaseException as e:  # anything else is a bug
                unexpected.append(e)
                return

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    assert not unexpected, unexpected[:3]
    assert stats["committed"] + stats["aborted"] + stats["typed"] == THREADS * TRANSFERS
    assert stats["committed"] > THREADS * TRANSFERS // 10, stats
    cluster.run()
    for n in NODES:
        node = cluster[n]
        tx = node.begin()
        assert sum(node.get(tx, a) for a in ACCOUNTS) == total, n
        node.commit(tx)
        assert not cluster.core(n).store.write_locks
    assert kvlab.audit.audit(cluster)
    assert kvlab.check(cluster.history, level="snapshot").ok


def test_classic_functions_from_many_threads():
    kvlab.reset_default()
    initialize("n1", NODES)
    tx = begin()
    put(tx, "counter", 0)
    assert commit(tx)
    errors: list[BaseException] = []

    def bump(_: int) -> int:
        done = 0
        for _ in range(50):
            try:
                tx = begin()
                v = get(tx, "counter")
                put(tx, "counter", v + 1)
                done += commit(tx)
            except BaseException as e:  # every call here is valid: nothing may raise
                errors.append(e)
        return done

    with ThreadPoolExecutor(8) as pool:
        committed = sum(pool.map(bump, range(8)))
    assert not errors, errors[:3]
    tx = begin()
    assert get(tx, "counter") == committed  # no lost update: first committer wins
    rollback(tx)
    kvlab.reset_default()
