"""What each fast-path switch buys: messages, forced writes, fsyncs, latency and throughput.

``fastpath_table()`` runs the same workload under each switch on a fault-free simulated cluster
with partitioned placement (so some transactions have one participant and some two): 2-key
read-modify-writes, ``concurrency`` at a time so their rounds overlap, network latency 1-4
ticks. It counts what the trace shows, per committed transaction. ``python -m kvlab.bench``
prints it as figure 8, and the README copies it.

The switches: ``one_phase`` (a single participant commits without a PREPARE round,
kvlab.onephase), ``fast_reads`` (a read skips a prepared lock that must commit above its
snapshot), the group-commit window ``fsync_latency`` (how long a flush waits for company) and
``batch_window`` (what a node says to a peer, to the oracle or to itself travels as one BATCH,
kvlab.batching).
"""

from __future__ import annotations

import time
from typing import Any

from kvlab.bench import NODES, _keys
from kvlab.cluster import Cluster
from kvlab.messages import TSO

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("2PC (the lessons' default)", {}),
    ("+ one-phase commit", {"one_phase": True}),
    ("+ fast reads", {"fast_reads": True}),
    ("+ group-commit window 2", {"fsync_latency": 2}),
    ("+ batching (window 0)", {"batch_window": 0}),
    ("all of them", {"one_phase": True, "fast_reads": True, "fsync_latency": 2,
                     "batch_window": 0}),
]


def _pair(c: Cluster, i: int, nkeys: int, colocated: bool) -> tuple[str, str]:
    a, b = _keys(i, nkeys)
    if colocated:  # the second key moves to the first one's node, as a sharding key would
        owner = c._cores[c.ids[0]].owner
        j = 0
        while owner(b) != owner(a) or b == a:
            j += 1
            b = f"{b.split('.')[0]}.{j}"
    return a, b


def _batches(c: Cluster, n: int, concurrency: int, nkeys: int, latencies: list[int],
             colocated: bool) -> int:
    """``concurrency`` transactions read and write, then all commit at the same tick; each
    commit's latency is the ticks until its client heard."""
    nodes, committed = c.nodes, 0
    for start in range(0, n, concurrency):
        batch = []
        for i in range(start, min(n, start + concurrency)):
            node = nodes[i % len(nodes)]
            tx = node.begin()
            for k, d in zip(_pair(c, i, nkeys, colocated), (1, -1), strict=True):
                node.put(tx, k, (node.get(tx, k) or 0) + d)
            batch.append((node, tx))
        t0 = c.now
        waiting = [node.commit_async(tx) for node, tx in batch]
        while waiting:
            done = [h for h in waiting if h.done]
            latencies += [c.now - t0] * len(done)
            committed += sum(1 for h in done if h.committed)
            waiting = [h for h in waiting if not h.done]
            if waiting and not c._step():
                break
        c.run()
    return committed


def measure(options: dict[str, Any], n: int = 600, concurrency: int = 16, nkeys: int = 1000,
            colocated: bool = False) -> dict[str, Any]:
    """What a committed transaction costs on average under one setting (``Cluster`` options):
    the workload of :func:`fastpath_table`. Every figure but ``wall`` is simulated, so the
    same arguments give the same numbers."""
    c = Cluster(NODES, seed=1, placement="partitioned", latency=(1, 4), **options)
    start = len(c.trace)
    t0, w0 = c.now, time.perf_counter()
    latencies: list[int] = []
    committed = _batches(c, n, concurrency, nkeys, latencies, colocated)
    wall = time.perf_counter() - w0
    events = c.trace[start:]
    sends = [e for e in events if e.kind == "send"]
    per = max(committed, 1)
    row = {
        "committed": committed,
        "messages": sum(1 for e in sends if TSO not in (e.data["src"], e.data["dst"])) / per,
        "oracle": sum(1 for e in sends if TSO in (e.data["src"], e.data["dst"])) / per,
        "forced": sum(1 for e in events if e.kind == "wal" and e.data["force"]) / per,
        "fsyncs": sum(1 for e in events if e.kind == "flush") / per,
        "latency": sum(latencies) / max(len(latencies), 1),
        "per_kilotick": committed * 1000 / max(c.now - t0, 1),
        "wall": committed / wall,
    }
    c.close()
    return row


def fastpath_table(n: int = 600, concurrency: int = 16, nkeys: int = 1000,
                   colocated: bool = False) -> list[dict[str, Any]]:
    """One row per setting: what a committed transaction costs on average. ``colocated``: both
    keys of a transaction live on one node (every commit has a single participant); else
    they are spread, and about a third do."""
    return [{"setting": name, **measure(options, n, concurrency, nkeys, colocated)}
            for name, options in SETTINGS]


def report(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as text lines (figure 8 of ``python -m kvlab.bench``)."""
    lines = ["setting                     committed  msgs/tx  +oracle  forced/tx  fsyncs/tx  "
             "latency (ticks)  tx per 1000 ticks  tx/s (wall)"]
    for r in rows:
        lines.append(f"{r['setting']:<26}  {r['committed']:>9}  {r['messages']:>7.2f}  "
                     f"{r['oracle']:>7.2f}  {r['forced']:>9.2f}  {r['fsyncs']:>9.2f}  "
                     f"{r['latency']:>15.1f}  {r['per_kilotick']:>17.1f}  {r['wall']:>11,.0f}")
    return lines


__all__ = ["fastpath_table", "measure", "report", "SETTINGS"]
