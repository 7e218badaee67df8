"""Real processes next to the simulator: throughput and commit latency on this machine.

:func:`processes` runs the same 2-key read-modify-write transactions (as ``kvlab.bench``'s
figures 1 and 2) on a 3-process :class:`kvlab.ProcessCluster` (file WAL, real fsync, TCP on
127.0.0.1) with 1 and N client threads, and on the simulator, and returns the figures;
:func:`report` prints them. Simulated latency is in simulated ticks (the simulator's clock is
not the wall clock: one message hop and one fsync are one tick each by default), real latency
in milliseconds: the two say different things, which is the point of putting them side by side.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any

NODES = ["n1", "n2", "n3"]


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _process_run(transactions: int, threads: int, directory: str, nkeys: int) -> dict[str, Any]:
    from kvlab.errors import KvlabError
    from kvlab.proc import ProcessCluster

    pc = ProcessCluster(NODES, data_dir=directory, trace=False, history=False,
                        call_timeout=60.0)
    commit_ms: list[float] = []
    tx_ms: list[float] = []
    committed = [0]
    guard = threading.Lock()
    per = transactions // threads

    def worker(w: int) -> None:
        rng = random.Random(w)
        node = pc[NODES[w % len(NODES)]]
        for _ in range(per):
            a, b = (f"k{k}" for k in rng.sample(range(nkeys), 2))
            t0 = time.perf_counter()
            try:
                tx = node.begin()
                node.put(tx, a, (node.get(tx, a) or 0) + 1)
                node.put(tx, b, (node.get(tx, b) or 0) - 1)
                t1 = time.perf_counter()
                ok = node.commit(tx)
            except KvlabError:
                continue
            t2 = time.perf_counter()
            with guard:
                commit_ms.append((t2 - t1) * 1000)
                tx_ms.append((t2 - t0) * 1000)
                committed[0] += ok

    try:
        pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        secs = time.perf_counter() - start
        fsyncs = sum(pc.status(n)["fsyncs"] for n in NODES)
    finally:
        pc.close()
    return {"threads": threads, "transactions": len(tx_ms), "committed": committed[0],
            "tx_per_s": len(tx_ms) / secs, "commit_p50_ms": _pct(commit_ms, 0.5),
            "commit_p90_ms": _pct(commit_ms, 0.9), "tx_p50_ms": _pct(tx_ms, 0.5),
            "tx_p90_ms": _pct(tx_ms, 0.9), "fsyncs": fsyncs}


def _simulated(transactions: int, concurrency: int, nkeys: int,
               data_dir: str | None = None) -> dict[str, Any]:
    """The simulator on the same transactions, ``concurrency`` at a time; commit latency in
    simulated ticks (from commit_async to the settled handle)."""
    from kvlab.cluster import Cluster

    c = Cluster(NODES, seed=1, data_dir=data_dir, trace=False, history=False)
    rng = random.Random(7)
    ticks: list[int] = []
    start = time.perf_counter()
    nodes = c.nodes
    for first in range(0, transactions, concurrency):
        batch = []
        for i in range(first, min(transactions, first + concurrency)):
            node = nodes[i % len(nodes)]
            tx = node.begin()
            a, b = (f"k{k}" for k in rng.sample(range(nkeys), 2))
            node.put(tx, a, (node.get(tx, a) or 0) + 1)
            node.put(tx, b, (node.get(tx, b) or 0) - 1)
            batch.append((node, tx))
        pending = [(node.commit_async(tx), c.now) for node, tx in batch]
        while pending and not c.quiet:
            c.step()
            still = []
            for h, t0 in pending:
                if h.done:
                    ticks.append(c.now - t0)
                else:
                    still.append((h, t0))
            pending = still
        c.run()
    secs = time.perf_counter() - start
    c.close()
    return {"concurrency": concurrency, "tx_per_s": transactions / secs,
            "commit_p50_ticks": _pct(ticks, 0.5), "commit_p90_ticks": _pct(ticks, 0.9),
            "durable": data_dir is not None}


def processes(transactions: int = 600, threads: tuple[int, ...] = (1, 4),
              nkeys: int = 10_000, directory: str | None = None) -> dict[str, Any]:
    """Real throughput (tx/s) and latency (commit and whole transaction, p50/p90, ms) of a
    3-process cluster with each client thread count in ``threads``, next to the simulator's
    (tx/s of wall-clock time, commit latency in simulated ticks; in memory and with file WALs).
    """
    tmp = tempfile.mkdtemp(prefix="kvlab-bench-proc-", dir=directory)
    try:
        real = [_process_run(transactions, n, f"{tmp}/p{n}", nkeys) for n in threads]
        sim = _simulated(transactions, 16, nkeys)
        sim_durable = _simulated(transactions, 16, nkeys, data_dir=f"{tmp}/sim")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"processes": real, "simulated": sim, "simulated_durable": sim_durable,
            "fsync_ms": _fsync_ms(directory)}


def _fsync_ms(directory: str | None, n: int = 50) -> float:
    import os

    tmp = tempfile.mkdtemp(prefix="kvlab-fsync-", dir=directory)
    fd = os.open(f"{tmp}/f", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * 128)
            os.fsync(fd)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
    return statistics.median(times)


def report(figures: dict[str, Any]) -> str:
    """The figures as the lines ``python -m kvlab.bench_process`` prints."""
    lines = []
    for r in figures["processes"]:
        lines.append(
            f"processes, {r['threads']} client thread{'s' if r['threads'] > 1 else ''}: "
            f"{r['tx_per_s']:7,.0f} tx/s   commit p50 {r['commit_p50_ms']:.1f} ms  p90 "
            f"{r['commit_p90_ms']:.1f} ms   whole tx p50 {r['tx_p50_ms']:.1f} ms  "
            f"({r['committed']}/{r['transactions']} committed, {r['fsyncs']} fsyncs)")
    for key, what in (("simulated", "simulator, memory disks"),
                      ("simulated_durable", "simulator, file WAL")):
        s = figures[key]
        lines.append(f"{what}, {s['concurrency']} concurrent: {s['tx_per_s']:7,.0f} tx/s   "
                     f"commit p50 {s['commit_p50_ticks']} ticks  p90 "
                     f"{s['commit_p90_ticks']} ticks (simulated time)")
    lines.append(f"fsync on this disk: {figures['fsync_ms']:.2f} ms (median)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(processes()))
