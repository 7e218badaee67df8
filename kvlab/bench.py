"""Benchmarks: ``python -m kvlab.bench`` prints each figure as a ratio to a reference run in the
same process, so the numbers mean something on any machine.

1. simulated 3-node 2PC throughput (2-key read-modify-write, trace on) vs a minimal pure-Python
   2PC loop (the same protocol steps with no simulation, no trace, no log): target >= 0.10;
2. durable 3-node throughput (file WAL, fsync, group commit, 16 and 64 concurrent transactions)
   vs sqlite3 in WAL mode with synchronous=FULL doing the same 2-key transactions: target >= 1.0,
   with fsyncs per transaction, for the default cluster and for the fast path (batching,
   :data:`DURABLE_SETTINGS`), against the same sqlite run; then the group-commit window
   (``fsync_latency``: how long a flush waits for company) against fsyncs per transaction,
   simulated commit latency and throughput;
3. recovery: reopening a data directory replays every node's WAL; records/s, target >= 100k
4. explorer: distinct states/s of kvlab.explore.search on the two-transaction configuration,
   vs the naive alternative (copy.deepcopy of a mid-commit cluster per state): >= 5,000 states/s;
   and BFS with crashes=0 (the explorer issue's configuration) against its first figure,
   ~5,400 states/s (the fast-path issue's target: doubled)
5. memory: bytes each transaction leaves behind with the trace and the history off, measured
   between N and 2N transactions after a warm-up (target: about 0, memory flat)

Then 6. range scans (kvlab.bench_scan), 7. the cost of one commit per commit protocol
(kvlab.bench_commit) and 8. what each fast-path switch saves (kvlab.bench_fastpath).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sqlite3
import tempfile
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from kvlab.cluster import Cluster
from kvlab.wal import decode

NODES = ["n1", "n2", "n3"]


def _rate(n: int, fn: Callable[[], int]) -> float:
    gc.collect()  # don't charge one phase's garbage to the next
    t = time.perf_counter()
    done = fn()
    return (done or n) / (time.perf_counter() - t)


# -- 1. simulated throughput -----------------------------------------------------------------
def _keys(i: int, nkeys: int) -> tuple[str, str]:
    a = i % nkeys
    return f"k{a}", f"k{(a * 7 + 1 + i // nkeys) % nkeys or 1}"


def _rmw_batches(c: Cluster, n: int, concurrency: int, pick: Callable[[int], tuple[str, str]],
                 latencies: list[int] | None = None) -> int:
    """2-key read-modify-write transactions, ``concurrency`` at a time: all begun, then all
    read and written, then all committed together so their 2PC rounds overlap.

    ``latencies``: collect each commit's simulated latency (ticks from ``commit_async`` to the
    client's answer), stepping event by event instead of ``run()``."""
    nodes = c.nodes
    committed = 0
    for start in range(0, n, concurrency):
        batch = []
        for i in range(start, min(n, start + concurrency)):
            node = nodes[i % len(nodes)]
            batch.append((node, node.begin(), pick(i)))
        for node, tx, (a, b) in batch:
            node.put(tx, a, (node.get(tx, a) or 0) + 1)
            node.put(tx, b, (node.get(tx, b) or 0) - 1)
        # committed together, after every read (a read runs the cluster: had it come between
        # two commit_async calls, the first commit's latency would be counted from the second)
        handles = [node.commit_async(tx) for node, tx, _ in batch]
        if latencies is None:
            c.run()
        else:
            t0, waiting = c.now, handles
            while c._step():
                if waiting and any(h.done for h in waiting):
                    latencies += [c.now - t0 for h in waiting if h.done]
                    waiting = [h for h in waiting if not h.done]
        committed += sum(1 for h in handles if h.committed)
    return committed


def simulated(n: int, concurrency: int = 16, nkeys: int = 1000) -> int:
    c = Cluster(NODES, seed=1)
    return _rmw_batches(c, n, concurrency, lambda i: _keys(i, nkeys))


def minimal_2pc(n: int, nkeys: int = 1000) -> int:
    """The reference: the same protocol steps as the engine, as plainly as Python allows.

    Every message the engine sends is sent here too (start timestamp, PREPARE and VOTE to and
    from each of three nodes, commit timestamp, COMMIT and ACK), as tuples on one FIFO queue
    with a dispatch on the kind; snapshot reads, first-committer-wins and locks on dict stores;
    log records appended to in-memory lists. No simulation clock, trace, timers or encoding.
    """
    stores: list[dict[str, list[tuple[int, int]]]] = [{} for _ in NODES]
    locks: list[dict[str, int]] = [{} for _ in NODES]
    logs: list[list[tuple]] = [[] for _ in NODES]
    clock = [0]
    queue: deque = deque()
    put = queue.append

    def read(p: int, k: str, ts: int) -> int:
        for cts, val in reversed(stores[p].get(k, ())):
            if cts <= ts:
                return val
        return 0

    for i in range(n):
        home = i % 3
        a, b = _keys(i, nkeys)
        state: dict = {"votes": 0, "acks": 0}
        put(("TS_REQUEST", home, "begin"))
        while queue:
            msg = queue.popleft()
            kind, p = msg[0], msg[1]
            if kind == "TS_REQUEST":
                clock[0] += 1
                put(("TS_REPLY", p, msg[2], clock[0]))
            elif kind == "TS_REPLY" and msg[2] == "begin":
                start = state["start"] = msg[3]
                w = state["writes"] = {a: read(p, a, start) + 1, b: read(p, b, start) - 1}
                for q in range(3):
                    put(("PREPARE", q, w, start))
            elif kind == "PREPARE":
                w, start = msg[2], msg[3]
                ok = all((not stores[p].get(k) or stores[p][k][-1][0] <= start)
                         and k not in locks[p] for k in w)
                if ok:
                    for k in w:
                        locks[p][k] = i
                    logs[p].append(("PREPARE", i, w))
                put(("VOTE", home, ok))
            elif kind == "VOTE":
                state["votes"] += msg[2]
                if state["votes"] == 3:
                    put(("TS_REQUEST", home, "commit"))
            elif kind == "TS_REPLY":
                logs[home].append(("DECISION", i, msg[3]))
                for q in range(3):
                    put(("COMMIT", q, msg[3]))
            elif kind == "COMMIT":
                for k, v in state["writes"].items():
                    stores[p].setdefault(k, []).append((msg[2], v))
                    del locks[p][k]
                logs[p].append(("COMMIT", i, msg[2]))
                put(("ACK", home))
            elif kind == "ACK":
                state["acks"] += 1
                if state["acks"] == 3:
                    logs[home].append(("END", i))
        assert state["acks"] == 3
    return n


# -- 2. durable throughput -------------------------------------------------------------------
def durable(n: int, concurrency: int, directory: str | None, nkeys: int = 10_000,
            latencies: list[int] | None = None, **options: object) -> int:
    """``directory`` None: memory disks (for the simulated latencies, which do not depend on
    the disk)."""
    c = Cluster(NODES, seed=2, data_dir=directory, trace=False, **options)  # type: ignore[arg-type]
    rng = random.Random(7)
    committed = _rmw_batches(c, n, concurrency,
                             lambda i: tuple(f"k{k}" for k in rng.sample(range(nkeys), 2)),
                             latencies)
    durable.fsyncs = sum(c.wal(x).disk.fsyncs for x in NODES)  # type: ignore[attr-defined]
    c.close()
    return committed


# figure 2's settings: the default Cluster (2PC, every node a participant of every transaction,
# nothing batched), then the fast path this workload can use: batching with a window of 0 (what
# a node says at one tick to a peer, itself or the oracle travels as one message; the records
# one batch makes share a flush). One-phase commit needs a single participant, never the case
# with placement "all"; fast reads change nothing here (no read meets a prepared lock).
DURABLE_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("2PC (the default)", {}),
    ("fast path (batch_window=0)", {"batch_window": 0}),
]


def durable_figure(n: int, concurrencies: list[int], directory: str) -> list[str]:
    """Figure 2's lines: for each concurrency, sqlite once, then each of
    :data:`DURABLE_SETTINGS` right after it, each with its ratio to that sqlite run."""
    lines = []
    for conc in concurrencies:
        d1 = os.path.join(directory, f"durable{conc}")
        sq = _rate(n, lambda: sqlite_ref(n, d1 + "-sqlite"))  # noqa: B023
        for k, (name, options) in enumerate(DURABLE_SETTINGS):
            d2 = f"{d1}-{k}"
            du = _rate(n, lambda: durable(n, conc, d2, **options))  # noqa: B023
            fs = durable.fsyncs  # type: ignore[attr-defined]
            lines.append(f"durable, file WAL, {conc:2} concurrent, {name:<26}: {du:8,.0f} tx/s"
                         f"   sqlite3 WAL synchronous=FULL {sq:8,.0f} tx/s   ratio "
                         f"{du / sq:.2f}  (target >= 1.0; {fs / n:.3f} fsyncs per tx, sqlite: "
                         f"1 per tx)")
    return lines


def group_commit(n: int, concurrency: int, waits: list[int], directory: str
                 ) -> list[tuple[int, float, float, float, float]]:
    """For each group-commit window (``fsync_latency`` ticks a flush waits for company, on a
    network with latency 1-4 ticks, so arrivals spread): (window, fsyncs per transaction,
    mean and max simulated commit latency in ticks, file-WAL transactions per second)."""
    rows = []
    for w in waits:
        lat: list[int] = []
        durable(n, concurrency, None, latencies=lat, fsync_latency=w, latency=(1, 4))
        per = durable.fsyncs / n  # type: ignore[attr-defined]
        d = os.path.join(directory, f"gc{w}")
        rate = _rate(n, lambda: durable(n, concurrency, d, fsync_latency=w,  # noqa: B023
                                        latency=(1, 4)))
        rows.append((w, per, sum(lat) / len(lat), max(lat), rate))
    return rows


def sqlite_ref(n: int, directory: str, nkeys: int = 10_000) -> int:
    os.makedirs(directory, exist_ok=True)
    con = sqlite3.connect(os.path.join(directory, "ref.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
    rng = random.Random(7)
    for _ in range(n):
        a, b = rng.sample(range(nkeys), 2)
        con.execute("BEGIN IMMEDIATE")
        for k, d in ((f"k{a}", 1), (f"k{b}", -1)):
            row = con.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
            v = int(row[0]) if row else 0
            con.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, str(v + d)))
        con.execute("COMMIT")
    con.close()
    return n


# -- 3. recovery replay ------------------------------------------------------------------------
def replay(directory: str) -> tuple[int, float]:
    c = Cluster(NODES, seed=3, data_dir=directory, trace=False, checkpoint_every=10**9)
    nodes = c.nodes
    for start in range(0, 6000, 32):
        hs = []
        for i in range(start, start + 32):
            node = nodes[i % 3]
            tx = node.begin()
            node.put(tx, f"k{i % 5000}", i)
            hs.append(node.commit_async(tx))
        c.run()
    c.close()
    records = sum(len(decode(c.wal(n).disk.read_log())[0]) for n in NODES)
    del c, nodes
    gc.collect()
    t = time.perf_counter()
    reopened = Cluster(NODES, data_dir=directory, trace=False)  # recovers every node's log
    secs = time.perf_counter() - t
    reopened.close()
    return records, secs


# -- 4. explorer --------------------------------------------------------------------------------
def two_commits(**options: Any) -> Cluster:
    """kvlab.explore's reference configuration: two conflicting commits from two nodes
    (``options``: more Cluster settings, e.g. ``commit_protocol``)."""
    c = Cluster(NODES, seed=0, **options)
    a, b = c["n1"], c["n2"]
    t1, t2 = a.begin(), b.begin()
    a.put(t1, "x", 1)
    a.put(t1, "y", 1)
    b.put(t2, "y", 2)
    b.put(t2, "z", 2)
    a.commit_async(t1)
    b.commit_async(t2)
    return c


FIRST_EXPLORER_RATE = 5_400  # states/s, BFS, crashes=0: the explorer issue's first figure


def explorer_bfs(states: int) -> float:
    """States/s of a BFS over :func:`two_commits` with crashes=0 (the explorer issue's
    configuration), to compare with :data:`FIRST_EXPLORER_RATE`."""
    from kvlab import explore

    gc.collect()
    return explore.search(two_commits, crashes=0, max_states=states, strategy="bfs",
                          progress=False).rate


def explorer(states: int) -> tuple[float, float]:
    """(states/s of the search, states/s a deepcopy per state would allow at best)."""
    import copy

    from kvlab import explore

    r = explore.search(two_commits, crashes=1, max_states=states, progress=False)
    c = two_commits()
    for _ in range(12):  # mid-commit: prepares delivered, votes and flushes in flight
        c.step()
    gc.collect()
    n = 50
    t = time.perf_counter()
    for _ in range(n):
        copy.deepcopy(c, {id(c.lock): c.lock})  # (a lock cannot be copied; share it)
    per = (time.perf_counter() - t) / n
    return r.rate, 1 / per


# -- 5. memory ---------------------------------------------------------------------------------
def _rss() -> int:
    """Resident set size in bytes (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def retained(n: int) -> tuple[float, int, int]:
    """Bytes per transaction retained between ``n`` and ``2n`` transactions, after ``n`` of
    warm-up (the newest Timing.keep_outcomes outcomes per node are kept on purpose)."""
    c = Cluster(NODES, seed=4, trace=False, history=False)
    done = 0

    def more(k: int) -> int:
        nonlocal done
        _rmw_batches(c, k, 16, lambda i: _keys(i + done, 1000))
        done += k
        gc.collect()
        return _rss()

    more(n)
    a = more(n)
    b = more(n)
    return (b - a) / n, a, b


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m kvlab.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--tx", type=int, default=3000, help="transactions per throughput run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--durable-concurrency", default="16,64",
                    help="concurrent transactions of the durable runs (comma-separated)")
    ap.add_argument("--group-commit", default="0,1,2,4,8",
                    help="group-commit windows (fsync_latency ticks) to sweep ('': skip)")
    ap.add_argument("--dir", default=None, help="where to put the WAL files (default: a temp dir)")
    ap.add_argument("--explore-states", type=int, default=50_000,
                    help="states for the explorer figure (0: skip it)")
    ap.add_argument("--memory-tx", type=int, default=40_000,
                    help="transactions per memory phase (0: skip the memory figure)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="kvlab-bench-", dir=args.dir)
    try:
        print(f"kvlab benchmark: 3 nodes, {args.tx} transactions per run, "
              f"{os.cpu_count()} CPUs")
        ref = _rate(args.tx, lambda: minimal_2pc(args.tx))
        sim = _rate(args.tx, lambda: simulated(args.tx, args.concurrency))
        print(f"1. simulated 2PC (trace on, {args.concurrency} concurrent): {sim:8,.0f} tx/s   "
              f"reference minimal 2PC loop "
              f"{ref:10,.0f} tx/s   ratio {sim / ref:.3f}  (target >= 0.10)")
        concurrencies = [int(x) for x in args.durable_concurrency.split(",")]
        for i, line in enumerate(durable_figure(args.tx, concurrencies, tmp)):
            print(("2. " if i == 0 else "   ") + line)
        if args.group_commit:
            waits = [int(x) for x in args.group_commit.split(",")]
            conc = args.concurrency
            print(f"   group commit, {conc} concurrent, network latency 1-4 ticks: window = "
                  f"fsync_latency, the ticks a flush waits for company")
            print("   window  fsyncs/tx  commit latency mean / max (ticks)  file WAL tx/s")
            for w, per, mean, worst, rate in group_commit(min(args.tx, 1000), conc, waits,
                                                          tmp):
                print(f"   {w:6}  {per:9.3f}  {mean:17.1f} / {worst:<4}             "
                      f"{rate:8,.0f}")
        n, secs = replay(os.path.join(tmp, "replay"))
        print(f"3. recovery replay: {n:,} records in {secs * 1000:.0f} ms = {n / secs:,.0f} "
              f"records/s  (target >= 100,000)")
        if args.explore_states:
            rate, naive = explorer(args.explore_states)
            print(f"4. explorer, 2 commits on 3 nodes, crashes=1: {rate:8,.0f} states/s   naive "
                  f"deepcopy per state at best {naive:8,.0f} states/s   ratio {rate / naive:.1f}  "
                  f"(target >= 5,000 states/s)")
            bfs = explorer_bfs(args.explore_states)
            print(f"   explorer, BFS, crashes=0: {bfs:8,.0f} states/s   first figure "
                  f"{FIRST_EXPLORER_RATE:,} states/s   ratio {bfs / FIRST_EXPLORER_RATE:.2f}  "
                  f"(target >= 2.0; the first figure is a constant from another run)")
        if args.memory_tx:
            per, a, b = retained(args.memory_tx)
            print(f"5. memory, trace and history off: {per:,.1f} bytes retained per transaction "
                  f"(RSS {a / 2**20:.1f} MB after {2 * args.memory_tx:,} tx, "
                  f"{b / 2**20:.1f} MB after {3 * args.memory_tx:,}; ratio {b / a:.3f}, "
                  f"target <= 1.10)")
        from kvlab.bench_commit import commit_costs
        from kvlab.bench_commit import report as commit_report
        for i, line in enumerate(commit_report(commit_costs())):
            print(("7. one replicated commit, fault-free, 3 nodes (paxos F=1):\n   "
                   if i == 0 else "   ") + line)
        from kvlab.bench_scan import report, scan_bench
        for i, line in enumerate(report(scan_bench())):
            print(("6. " if i == 0 else "   ") + line)
        from kvlab.bench_fastpath import fastpath_table
        from kvlab.bench_fastpath import report as fastpath_report
        for colocated in (True, False):
            print(f"8. the fast-path switches, {'co-located' if colocated else 'spread'} keys "
                  f"(per committed transaction, 16 concurrent, partitioned):")
            for line in fastpath_report(fastpath_table(colocated=colocated)):
                print("   " + line)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
