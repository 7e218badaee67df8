"""How fast is kvlab.check, and does it stay linear?  Run: python benchmarks/bench_checker.py

Generates seeded snapshot-isolation histories (each transaction misses the last few commits, so
rw edges point backwards and write skew forms real cycles), checks them at "serializable" and
prints transactions per second for each size (best of ``--repeat`` runs, as timings on a shared
machine are noisy), plus the ratio of the largest size's rate to the smallest's: near 1.0 means
linear.  "graph" is how long loading report.graph's nodes and edges into a fresh networkx
MultiDiGraph takes, i.e. the share of the check spent building the graph it reports.
"""

from __future__ import annotations

import argparse
import random
import time

import networkx as nx

from kvlab.checker import check
from kvlab.history import History, Op, Txn


def si_history(n: int, seed: int = 0, keys: int = 200, max_lag: int = 8) -> History:
    """``n`` transactions under snapshot isolation with first-committer-wins, in commit order.

    The key count is fixed, not scaled with ``n``, so contention (and so the density of edges
    and cycles per transaction) is the same at every size.
    """
    rng = random.Random(seed)
    versions: dict[str, list[tuple[int, str, str]]] = {}  # key -> [(commit_ts, writer, value)]
    history = History()
    now = 0
    for i in range(n):
        tid, start = f"T{i}", max(0, now - rng.randint(0, max_lag))
        txn = history.add(Txn(tid, start_ts=start))
        own: dict[str, str] = {}
        read_only = rng.random() < 0.2
        for j in range(rng.randint(2, 5)):
            key = f"k{rng.randrange(keys)}"
            if read_only or rng.random() < 0.6:
                ts, writer, value = next((v for v in reversed(versions.get(key, []))
                                          if v[0] <= start), (None, None, None))
                if key in own:
                    ts, writer, value = None, tid, own[key]
                txn.ops.append(Op("r", key, value, writer, ts))
            else:
                own[key] = f"{tid}.{j}"
                txn.ops.append(Op("w", key, own[key], tid))
        if any(versions.get(k) and versions[k][-1][0] > start for k in own):
            txn.status = "aborted"
            continue
        if not own:  # like kvlab's engine: read-only commits get no commit_ts
            txn.status = "committed"
            continue
        now += 1
        txn.status, txn.commit_ts = "committed", now
        for key, value in own.items():
            versions.setdefault(key, []).append((now, tid, value))
    return history


def measure(n: int, seed: int, repeat: int) -> float:
    history = si_history(n, seed)
    seconds = build = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        report = check(history, "serializable")
        seconds = min(seconds, time.perf_counter() - began)
        nodes = list(report.graph.nodes(data=True))
        edges = list(report.graph.edges(keys=True, data=True))
        began = time.perf_counter()
        nx.MultiDiGraph().update(edges, nodes)
        build = min(build, time.perf_counter() - began)
    kinds = sorted({a.name for a in report.anomalies})
    print(f"{n:>8,} txns  {seconds:6.2f} s  {n / seconds:>9,.0f} txns/s  "
          f"{report.stats['edges']:>8,} edges  graph {build:5.2f} s  "
          f"{len(report.anomalies):>5} anomalies {kinds}")
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    args = parser.parse_args()
    rates = [measure(n, args.seed, args.repeat) for n in args.sizes]
    if len(rates) > 1:
        print(f"rate ratio {args.sizes[-1]:,} / {args.sizes[0]:,}: {rates[-1] / rates[0]:.2f} "
              "(1.0 = linear)")


if __name__ == "__main__":
    main()
