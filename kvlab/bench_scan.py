"""Range-scan benchmark: scan throughput over 10k keys, as ratios to a plain sorted-list slice
measured in the same run (``scan_bench()``; ``python -m kvlab.bench`` prints its figures).

Three levels are timed on the same 10k keys and the same random 100-key windows:

* the reference: a plain sorted list of ``(key, value)`` pairs, two ``bisect`` calls and a
  slice: the least any ordered in-memory index can do;
* ``Store.scan``, the engine's data structure: the same two binary searches over its sorted
  key list, then a snapshot lookup per key (``bisect`` over the key's commit timestamps) and
  tombstones skipped;
* ``node.scan`` through the classic API on a 3-node cluster (history on, trace off): argument
  checks, the driver, the sans-I/O node, the own-writes merge and the history record.

It also measures the choice of sorted index: ``bisect.insort`` into a plain list against
``sortedcontainers.SortedList`` (when it is installed), for building the index, scanning it and
copying it (``Store.clone``, which kvlab.explore calls for every state it stores).
"""

from __future__ import annotations

import gc
import random
import time
from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Any

from kvlab.cluster import Cluster
from kvlab.mvcc import Store

NODES = ["n1", "n2", "n3"]


def _per_second(n: int, fn: Callable[[], Any]) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _windows(keys: list[str], width: int, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` random ranges that each hold ``width`` keys of ``keys`` (sorted)."""
    out = []
    for _ in range(n):
        i = rng.randrange(len(keys) - width)
        out.append((keys[i], keys[i + width]))
    return out


def scan_bench(nkeys: int = 10_000, width: int = 100, scans: int = 2_000,
               api_scans: int = 300, seed: int = 5) -> dict[str, float]:
    """Scans per second at each level and their ratios to the reference (see the module doc).

    Returns ``ref_scans_per_s``, ``store_scans_per_s``, ``api_scans_per_s``, ``store_ratio``,
    ``api_ratio``, ``full_scan_ms`` (every key through the API), and the index measurements
    ``insort_build_ms``, ``list_scan_per_s``, ``list_copy_us`` and, with sortedcontainers,
    ``sortedlist_build_ms``, ``sortedlist_scan_per_s``, ``sortedlist_copy_us``."""
    rng = random.Random(seed)
    keys = sorted({f"user/{rng.randrange(10**9):09d}" for _ in range(nkeys * 2)})[:nkeys]
    shuffled = keys[:]
    rng.shuffle(shuffled)
    windows = _windows(keys, width, scans, rng)
    figures: dict[str, float] = {}

    # the reference: a sorted list of pairs, bisect, slice
    pairs = [(k, i) for i, k in enumerate(keys)]
    just_keys = [k for k, _ in pairs]

    def reference() -> None:
        for lo, hi in windows:
            pairs[bisect_left(just_keys, lo):bisect_left(just_keys, hi)]

    figures["ref_scans_per_s"] = _per_second(scans, reference)

    # the engine's store: committed in batches, one version per key, plus some overwrites
    store = Store()
    for ts, start in enumerate(range(0, nkeys, 500), start=1):
        store.apply(f"T{ts}", ts, {k: (i, False) for i, k in
                                   enumerate(shuffled[start:start + 500], start)})
    snapshot = nkeys  # above every commit

    def engine() -> None:
        for lo, hi in windows:
            store.scan((lo, hi), snapshot)

    assert len(store.scan(windows[0], snapshot)) == width
    figures["store_scans_per_s"] = _per_second(scans, engine)

    # the classic API on a cluster
    c = Cluster(NODES, seed=seed, trace=False)
    n1 = c["n1"]
    t = n1.begin()
    for i, k in enumerate(shuffled):
        n1.put(t, k, i)
    assert n1.commit(t)
    reader = c["n2"]
    r = reader.begin()
    api_windows = windows[:api_scans]

    def api() -> None:
        for lo, hi in api_windows:
            reader.scan(r, lo, hi)

    assert len(reader.scan(r, *api_windows[0])) == width
    figures["api_scans_per_s"] = _per_second(len(api_windows), api)
    t0 = time.perf_counter()
    assert len(reader.scan(r)) == nkeys
    figures["full_scan_ms"] = (time.perf_counter() - t0) * 1000
    c.close()
    figures["store_ratio"] = figures["store_scans_per_s"] / figures["ref_scans_per_s"]
    figures["api_ratio"] = figures["api_scans_per_s"] / figures["ref_scans_per_s"]

    # the index choice: a plain list kept sorted with insort, or SortedList
    figures.update(_index_choice(shuffled, windows))
    return figures


def _index_choice(shuffled: list[str], windows: list[tuple[str, str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    gc.collect()
    t = time.perf_counter()
    plain: list[str] = []
    for k in shuffled:
        insort(plain, k)
    out["insort_build_ms"] = (time.perf_counter() - t) * 1000

    def list_scan() -> None:
        for lo, hi in windows:
            plain[bisect_left(plain, lo):bisect_left(plain, hi)]

    out["list_scan_per_s"] = _per_second(len(windows), list_scan)
    out["list_copy_us"] = 1e6 / _per_second(200, lambda: [list(plain) for _ in range(200)])
    try:
        from sortedcontainers import SortedList
    except ImportError:  # not a kvlab dependency: the comparison is skipped
        return out
    gc.collect()
    t = time.perf_counter()
    sl = SortedList()
    for k in shuffled:
        sl.add(k)
    out["sortedlist_build_ms"] = (time.perf_counter() - t) * 1000

    def sorted_scan() -> None:
        for lo, hi in windows:
            list(sl.irange(lo, hi, inclusive=(True, False)))

    out["sortedlist_scan_per_s"] = _per_second(len(windows), sorted_scan)
    out["sortedlist_copy_us"] = 1e6 / _per_second(200, lambda: [sl.copy() for _ in range(200)])
    return out


def report(figures: dict[str, float]) -> list[str]:
    """The figures as lines of text (for the lead's ``python -m kvlab.bench``)."""
    f = figures
    lines = [
        f"scan, 100-key windows over 10k keys: node.scan {f['api_scans_per_s']:,.0f} scans/s "
        f"(ratio {f['api_ratio']:.3f}), Store.scan {f['store_scans_per_s']:,.0f} scans/s "
        f"(ratio {f['store_ratio']:.3f}), reference sorted-list slice "
        f"{f['ref_scans_per_s']:,.0f} scans/s; every key through node.scan "
        f"{f['full_scan_ms']:.1f} ms",
        f"sorted index: bisect list build {f['insort_build_ms']:.1f} ms, "
        f"{f['list_scan_per_s']:,.0f} scans/s, copy {f['list_copy_us']:.0f} us",
    ]
    if "sortedlist_build_ms" in f:
        lines.append(f"              SortedList build {f['sortedlist_build_ms']:.1f} ms, "
                     f"{f['sortedlist_scan_per_s']:,.0f} scans/s, copy "
                     f"{f['sortedlist_copy_us']:.0f} us")
    return lines


__all__ = ["scan_bench", "report"]
