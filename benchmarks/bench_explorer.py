"""How long does one Step take in the ClusterExplorer?  Run: python benchmarks/bench_explorer.py

A 3-node cluster gets 10 concurrent transactions from the explorer's form (each writes its own
key and one shared key, so some abort), then the Step button is clicked until the cluster is
quiet. Each click is one ``cluster.step()`` plus the redraw of every panel that changed. Printed:
the median and 90th percentile click time (target: median <= 100 ms), and, as references
measured in the same process, one bare ``cluster.step()`` of the same run and one PNG render of
an empty figure the size of the panels, each as a ratio.

Then the history: Back and the History slider rebuild an earlier moment by replaying the
journal, so their cost is a replay plus a redraw. Measured on histories of about 100 and 1000
steps (``--long`` adds 5000): Back clicked repeatedly from the end (a replay from the start
each time), the slider moved to random moments (sometimes forward from a kept moment), and the
bare replay of the whole journal.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable

import matplotlib

from kvlab.cluster import Cluster
from kvlab.viz.common import new_figure, png_bytes
from kvlab.widgets import ClusterExplorer

matplotlib.use("Agg")

NODES = ["n1", "n2", "n3"]
TXS = 10
TARGET_MS = 100.0


def load(start: Callable[[str, dict[str, int]], object]) -> None:
    for i in range(TXS):
        start(NODES[i % 3], {f"k{i}": i, "shared": i})


def explorer_clicks() -> list[float]:
    ex = ClusterExplorer(Cluster(NODES, seed=0))
    load(lambda node, writes: ex.start_transaction(node=node, reads="", writes=writes))
    times = []
    while True:
        before = len(ex.cluster.trace)
        t = time.perf_counter()
        ex.step_button.click()
        dt = time.perf_counter() - t
        if len(ex.cluster.trace) == before:
            return times
        times.append(dt)


def bare_steps() -> list[float]:
    c = Cluster(NODES, seed=0)

    def start(node: str, writes: dict[str, int]) -> None:
        n = c.node(node)
        tx = n.begin()
        for k, v in writes.items():
            n.put(tx, k, v)
        n.commit_async(tx)

    load(start)
    times = []
    while True:
        before = len(c.trace)
        t = time.perf_counter()
        c.step()
        dt = time.perf_counter() - t
        if len(c.trace) == before:
            return times
        times.append(dt)


def empty_png() -> float:
    fig = new_figure(6.6, 5.6, dpi=72)
    fig.add_subplot()
    times = []
    for _ in range(20):
        t = time.perf_counter()
        png_bytes(fig)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def history(txs: int) -> ClusterExplorer:
    """An explorer whose history is ``txs`` transactions and every step until quiet."""
    ex = ClusterExplorer(Cluster(NODES, seed=0))
    for i in range(txs):
        ex.start_transaction(node=NODES[i % 3], reads="", writes={f"k{i}": i, "shared": i})
        for _ in range(3):
            ex.step()
    ex.run()
    return ex


def timed(action: Callable[[], object]) -> float:
    t = time.perf_counter()
    action()
    return time.perf_counter() - t


def history_costs(txs: int, backs: int = 8, scrubs: int = 12) -> None:
    ex = history(txs)
    n = len(ex.steps)
    journal = ex.cluster.journal
    bare = statistics.median(timed(lambda: Cluster.replay(ex.cluster.options, journal))
                             for _ in range(3))
    back = [timed(ex.back_button.click) for _ in range(backs)]
    ex.history.value = n
    rng = random.Random(1)
    scrub = [timed(lambda: setattr(ex.history, "value", rng.randrange(n))) for _ in range(scrubs)]
    home = timed(lambda: setattr(ex.history, "value", n))
    print(f"history of {n} steps ({len(ex.cluster.trace)} trace events, {len(journal)} journal "
          f"entries):")
    print(f"  replay of the whole journal  {bare * 1e3:7.1f} ms")
    print(f"  Back click                   median {statistics.median(back) * 1e3:7.1f} ms   "
          f"max {max(back) * 1e3:7.1f} ms")
    print(f"  History slider, random k    median {statistics.median(scrub) * 1e3:7.1f} ms   "
          f"max {max(scrub) * 1e3:7.1f} ms")
    print(f"  History slider to the end    {home * 1e3:7.1f} ms (the present is kept)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of the whole scenario")
    parser.add_argument("--long", action="store_true", help="also a 5000-step history")
    args = parser.parse_args()
    clicks: list[float] = []
    bare: list[float] = []
    for _ in range(args.rounds):
        gc.collect()
        clicks += explorer_clicks()
        bare += bare_steps()
    med = statistics.median(clicks)
    p90 = statistics.quantiles(clicks, n=10)[-1]
    step = statistics.median(bare)
    png = empty_png()
    print(f"explorer Step, 3 nodes, {TXS} transactions: {len(clicks)} clicks over "
          f"{args.rounds} round(s)")
    print(f"  median {med * 1e3:7.1f} ms   p90 {p90 * 1e3:7.1f} ms   "
          f"target <= {TARGET_MS:.0f} ms: {'OK' if med * 1e3 <= TARGET_MS else 'MISSED'}")
    print(f"  bare cluster.step()       {step * 1e6:7.1f} us   ratio {med / step:8.0f}x")
    print(f"  empty panel-size PNG      {png * 1e3:7.1f} ms   ratio {med / png:8.1f}x")
    for txs in (10, 100) + ((500,) if args.long else ()):
        gc.collect()
        history_costs(txs)


if __name__ == "__main__":
    main()
