"""Seeded workloads that produce histories for the checker and load for the benchmarks.

Three kinds, each a classic of transaction testing:

* ``bank``: transfers between accounts; the invariant is that the total never changes, on every
  snapshot (audits are read-only transactions that read every account);
* ``register``: random reads and writes of single values (each written value is unique, so a read
  names its writer);
* ``list-append``: each write appends a unique element to a list (Elle's trick: a read of the
  whole list reveals the order in which versions were installed).

Knobs: how many transactions run concurrently, how many keys, key skew (uniform or zipf), the share
of read-only transactions, the isolation level, and faults (message loss, reordering, crashes).
Concurrency is real: a batch of transactions is begun, their operations are interleaved, and their
commits race through two-phase commit together.
"""

from __future__ import annotations

import bisect
import itertools
import random
import warnings
from dataclasses import dataclass, field
from typing import Any

from kvlab.cluster import Cluster
from kvlab.errors import ConfigurationError, KvlabError, SimulationTimeout
from kvlab.history import History
from kvlab.wal import TornTailWarning

KINDS = ("bank", "register", "list-append")


@dataclass
class Faults:
    """Fault injection between operations: seeded, so a run is reproducible."""

    crash_rate: float = 0.0  # chance per batch of crashing one node (restarted next batch)
    loss: float = 0.0  # message loss rate of the network
    latency: tuple[int, int] = (1, 1)  # wider ranges reorder messages


@dataclass
class WorkloadResult:
    kind: str
    history: History
    cluster: Cluster
    committed: int = 0
    aborted: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def abort_rate(self) -> float:
        done = self.committed + self.aborted
        return self.aborted / done if done else 0.0

    def __repr__(self) -> str:
        return (f"<WorkloadResult {self.kind}: {self.committed} committed, {self.aborted} aborted "
                f"({self.abort_rate:.0%})>")


class _Keys:
    """Key chooser: uniform, or zipf (a few hot keys take most of the traffic)."""

    def __init__(self, n: int, skew: str, rng: random.Random, theta: float = 1.1) -> None:
        if skew not in ("uniform", "zipf"):
            raise ConfigurationError(f"skew must be 'uniform' or 'zipf', got {skew!r}")
        self.names = [f"k{i}" for i in range(n)]
        self.rng = rng
        self.cdf = list(itertools.accumulate(1 / (i + 1) ** theta for i in range(n))) \
            if skew == "zipf" else None

    def pick(self, k: int = 1) -> list[str]:
        if self.cdf is None:
            return self.rng.sample(self.names, k)
        out: list[str] = []
        while len(out) < k:
            x = self.rng.random() * self.cdf[-1]
            name = self.names[min(bisect.bisect_left(self.cdf, x), len(self.names) - 1)]
            if name not in out:
                out.append(name)
        return out


def run(kind: str = "bank", transactions: int = 1000, concurrency: int = 8, keys: int = 10,
        skew: str = "uniform", read_only: float = 0.2, isolation: str = "snapshot",
        ops_per_tx: int = 2, seed: int = 0, nodes: tuple[str, ...] = ("n1", "n2", "n3"),
        faults: Faults | None = None, progress: bool = False,
        placement: str = "all") -> WorkloadResult:
    """Run a workload on a fresh cluster and return its history (and the cluster)."""
    if kind not in KINDS:
        raise ConfigurationError(f"kind must be one of {KINDS}, got {kind!r}")
    if keys < ops_per_tx or keys < 2:
        raise ConfigurationError(f"need at least {max(2, ops_per_tx)} keys for {ops_per_tx} ops "
                                 f"per tx")
    faults = faults or Faults()
    rng = random.Random(seed)
    cluster = Cluster(list(nodes), seed=seed, latency=faults.latency, loss=faults.loss,
                      placement=placement, call_timeout=400)
    chooser = _Keys(keys, skew, rng)
    result = WorkloadResult(kind, cluster.history, cluster)
    unique = itertools.count(1)
    # initial state, one committed transaction
    home = cluster[nodes[0]]
    for _ in range(50):  # message loss can abort even this one: try again
        t0 = home.begin()
        for k in chooser.names:
            home.put(t0, k, 100 if kind == "bank" else [] if kind == "list-append" else 0)
        if home.commit(t0):
            break
    else:
        raise KvlabError("could not commit the initial data in 50 attempts: lower the loss rate")
    bar = None
    if progress:
        from kvlab.progress import Progress
        bar = Progress(transactions, f"{kind} workload")
    down: list[str] = []
    done = 0
    timeouts = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        while done < transactions:
            for n in down:
                cluster.restart(n)
            down.clear()
            if faults.crash_rate and rng.random() < faults.crash_rate:
                victim = rng.choice(list(nodes))
                cluster.crash(victim, torn=rng.random() < 0.5)
                down.append(victim)
            live = [n for n in nodes if n not in down]
            batch = []
            for _ in range(min(concurrency, transactions - done)):
                node = cluster[rng.choice(live)]
                ro = rng.random() < read_only
                ks = chooser.names if ro and kind == "bank" else chooser.pick(ops_per_tx)
                try:
                    batch.append([node, node.begin(isolation), ro, ks, 0])
                except SimulationTimeout:  # every request for a start timestamp was lost
                    timeouts += 1
            done += min(concurrency, transactions - done)
            # interleave the batch: operations, commits and message deliveries mix freely
            handles = []
            pending = list(range(len(batch)))
            while pending:
                i = rng.choice(pending)
                node, tx, ro, ks, pos = batch[i]
                try:
                    _op(kind, node, tx, ro, ks, pos, rng, unique)
                except SimulationTimeout:
                    timeouts += 1
                    node.rollback(tx)
                    pending.remove(i)
                    continue
                batch[i][4] += 1
                if batch[i][4] >= (1 if kind == "bank" else len(ks)):
                    pending.remove(i)
                    handles.append(node.commit_async(tx))
                for _ in range(rng.randint(0, 3)):
                    cluster.step()
            cluster.run()
            for h in handles:
                if h.committed:
                    result.committed += 1
                else:
                    result.aborted += 1
            if bar is not None:
                bar.update(len(batch))
        for n in down:
            cluster.restart(n)
        cluster.run()
    if bar is not None:
        bar.close()
    result.aborted += timeouts
    result.stats = {"timeouts": timeouts, "events": len(cluster.trace),
                    "simulated_time": cluster.now}
    return result


def _op(kind: str, node: Any, tx: str, ro: bool, ks: list[str], pos: int,
        rng: random.Random, unique: Any) -> None:
    if kind == "bank":
        if ro:  # an audit: read every account
            for k in ks:
                node.get(tx, k)
            return
        a, b = ks[0], ks[1]
        amount = rng.randint(1, 10)
        va, vb = node.get(tx, a), node.get(tx, b)
        node.put(tx, a, va - amount)
        node.put(tx, b, vb + amount)
        return
    key = ks[pos]
    if ro or rng.random() < 0.5:
        node.get(tx, key)
    elif kind == "register":
        node.put(tx, key, next(unique))
    else:
        current = node.get(tx, key) or []
        node.put(tx, key, current + [next(unique)])


def bank_totals(history: History) -> list[int]:
    """The sum each committed read-only audit saw (all equal the initial total when correct)."""
    totals = []
    for t in history:
        if t.status == "committed" and t.ops and all(op.kind == "r" for op in t.ops) \
                and len(t.ops) > 2:
            totals.append(sum(op.value for op in t.ops))
    return totals


__all__ = ["run", "Faults", "WorkloadResult", "bank_totals", "KINDS"]
