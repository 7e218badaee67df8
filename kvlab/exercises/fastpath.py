"""Chapter 11 (where the time goes): helpers for the chapter and its exercise.

The chapter counts what one commit costs with and without one-phase commit
(:func:`single_commit`, :func:`commit_costs`), sweeps the fast-path switches over the number of
concurrent transactions (:func:`sweep`, on :func:`kvlab.bench_fastpath.measure`'s workload) and
the group-commit window (:func:`window_sweep`), shows batching on a few commits at once
(:func:`batched_commits`), and times the read that fast reads no longer makes wait
(:func:`read_wait`). :mod:`kvlab.viz.costs` draws the sweeps.

The exercise: :func:`exercise_setup` builds a 4-node cluster (placement "partitioned") in which
n4 commits a transaction writing one key on each of n1 .. nk, so the coordinator is not a
participant. :func:`check_costs` wants, for k = 1, 2, 3 and with ``one_phase`` off and on, the
messages between nodes and the forced log records the commit costs, and computes the truth by
running those clusters (:func:`exercise_costs`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kvlab.bench_fastpath import measure
from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_a_dict_of, not_yet
from kvlab.messages import PREPARE, TSO

NODES = ["n1", "n2", "n3"]
CONCURRENCY = (1, 2, 4, 8, 16, 32)
WINDOWS = (0, 1, 2, 4, 8)
SWEEP_N = 48  # committed transactions per point: enough to average, small enough for a notebook
# the lines of the sweep plots; fast reads change no count on this workload (see the chapter).
# Batching comes last so the first four keep their colours; "all three" does not include it.
SWITCHES: dict[str, dict[str, Any]] = {
    "2PC": {},
    "+ one-phase": {"one_phase": True},
    "+ window 2": {"fsync_latency": 2},
    "all three": {"one_phase": True, "fast_reads": True, "fsync_latency": 2},
    "+ batching (window 0)": {"batch_window": 0},
}


# -- the chapter's helpers ------------------------------------------------------------------------
def keys_on(c: Cluster, node: str, n: int = 1) -> list[str]:
    """The first ``n`` keys k0, k1, ... that ``node`` owns under the cluster's placement."""
    owner = c._cores[c.ids[0]].owner
    keys = [k for k in (f"k{i}" for i in range(1000)) if owner(k) == node][:n]
    if len(keys) < n:
        raise ValueError(f"{node} owns fewer than {n} of the keys k0..k999")
    return keys


def single_commit(one_phase: bool = False, **options: Any) -> tuple[Cluster, str, Any]:
    """n1 commits two writes that both live on n2 (placement "partitioned"): one participant,
    and it is not the coordinator. Returns (cluster, tx, handle); nothing has been stepped."""
    c = Cluster(NODES, seed=0, placement="partitioned", one_phase=one_phase, **options)
    tx = c["n1"].begin()
    for key in keys_on(c, "n2", 2):
        c["n1"].put(tx, key, 1)
    return c, tx, c["n1"].commit_async(tx)


def commit_costs(c: Cluster, handle: Any) -> dict[str, int]:
    """Run ``c`` to quiet and count the trace from the client's commit call of ``handle``'s
    transaction: messages between nodes, messages to and from the oracle, forced log records,
    fsyncs, and the simulated ticks until ``handle`` settled."""
    start = next(i for i, e in enumerate(c.trace) if e.kind == "call"
                 and e.data.get("op") == "commit" and e.data.get("tx") == handle.tx)
    t0 = c.now
    while not handle.done:
        if c.step() is None:
            raise RuntimeError("the cluster went quiet before the commit was answered")
    ticks = c.now - t0
    c.run()
    return {**_counts(c.trace[start:]), "ticks": ticks}


def _counts(events: list[Any]) -> dict[str, int]:
    sends = [e for e in events if e.kind == "send"]
    return {
        "messages": sum(1 for e in sends if TSO not in (e.data["src"], e.data["dst"])),
        "oracle": sum(1 for e in sends if TSO in (e.data["src"], e.data["dst"])),
        "forced": sum(1 for e in events if e.kind == "wal" and e.data["force"]),
        "fsyncs": sum(1 for e in events if e.kind == "flush"),
    }


def batched_commits(batch_window: int | None, n: int = 4) -> tuple[Cluster, list[Any],
                                                                  dict[str, int]]:
    """n1 starts ``n`` commits at the same tick, each writing one key that lives on n2
    (placement "partitioned", network latency 1 to 4 ticks as in the sweeps), and the cluster
    runs to quiet. Returns (cluster, the trace from the first commit call, its counts:
    messages between nodes, oracle messages, forced records, fsyncs)."""
    c = Cluster(NODES, seed=0, placement="partitioned", latency=(1, 4),
                batch_window=batch_window)
    n1 = c["n1"]
    txs = [n1.begin() for _ in range(n)]
    for tx, key in zip(txs, keys_on(c, "n2", n), strict=True):
        n1.put(tx, key, 1)
    start = len(c.trace)
    handles = [n1.commit_async(tx) for tx in txs]
    c.run()
    if not all(h.committed for h in handles):
        raise RuntimeError(f"a commit did not commit: {handles}")
    events = c.trace[start:]
    return c, events, _counts(events)


def forced_records(c: Cluster, tx: str) -> list[str]:
    """The forced log records of ``tx``, in trace order: "n2 PREPARE", "n1 DECISION", ...
    (with batching, "n2 BATCH": the one record its PREPARE shares with others, kvlab.trace)."""
    return [f"{e.node} {e.data['type']}" for e in c.trace
            if e.kind == "wal" and e.data["force"] and tx in e.txs]


def sweep(switches: dict[str, dict[str, Any]] | None = None,
          concurrency: Iterable[int] = CONCURRENCY, colocated: bool = False,
          n: int = SWEEP_N) -> dict[str, list[dict[str, Any]]]:
    """For each named setting, one :func:`kvlab.bench_fastpath.measure` row per concurrency
    (each row also has its ``concurrency``). Simulated figures only; deterministic."""
    switches = SWITCHES if switches is None else switches
    return {name: [{"concurrency": k, **measure(options, n, k, colocated=colocated)}
                   for k in concurrency]
            for name, options in switches.items()}


def window_sweep(windows: Iterable[int] = WINDOWS, concurrency: Iterable[int] = (4, 16),
                 colocated: bool = True, n: int = SWEEP_N, **options: Any
                 ) -> dict[int, list[dict[str, Any]]]:
    """For each concurrency, one row per group-commit window (``fsync_latency``)."""
    return {k: [{"window": w, **measure({**options, "fsync_latency": w}, n, k,
                                        colocated=colocated)} for w in windows]
            for k in concurrency}


def sweep_lines(rows: dict[str, list[dict[str, Any]]], metric: str) -> list[str]:
    """A sweep as text: one line per setting, ``metric`` at each concurrency."""
    first = next(iter(rows.values()))
    width = max(14, *(len(name) + 1 for name in rows))
    head = "".join(f"{r['concurrency']:>7}" for r in first)
    lines = [f"{metric + ' per tx':<{width}}{head}   (concurrency)"]
    for name, series in rows.items():
        lines.append(f"{name:<{width}}" + "".join(f"{r[metric]:>7.2f}" for r in series))
    return lines


def read_meets_prepared_lock(fast_reads: bool = True,
                             protocol: str = "2pc") -> tuple[Cluster, str]:
    """n1 commits x = 1 while n3 holds a reader whose snapshot was taken before the PREPARE
    reached n3 (so the writer must commit above it). Returns the cluster stopped just after n3
    prepared the writer, and the reader's transaction on n3, which has not read x yet."""
    c = Cluster(NODES, seed=0, fast_reads=fast_reads, commit_protocol=protocol)
    n1, n3 = c["n1"], c["n3"]
    setup = n1.begin()
    n1.put(setup, "x", 0)
    n1.commit(setup)
    writer = n1.begin()
    reader = n3.begin()
    n1.put(writer, "x", 1)
    n1.commit_async(writer)
    while not any(e.kind == "deliver" and e.node == "n3" and e.data["kind"] == PREPARE
                  for e in c.step()):
        pass
    return c, reader


def read_wait(fast_reads: bool) -> tuple[int, Any]:
    """A read that meets a prepared lock (:func:`read_meets_prepared_lock`). Returns (simulated
    ticks from the read to its answer, the value read)."""
    c, reader = read_meets_prepared_lock(fast_reads)
    t0 = c.now
    h = c["n3"].get_async(reader, "x")
    while not h.done:
        c.step()
    return c.now - t0, h.value


# -- the exercise ---------------------------------------------------------------------------------
EXERCISE_NODES = ["n1", "n2", "n3", "n4"]
COORDINATOR = "n4"
KS = (1, 2, 3)
MODES = ("2pc", "one_phase")


def exercise_setup(k: int, one_phase: bool) -> tuple[Cluster, Any]:
    """A 4-node cluster (placement "partitioned") in which n4 has just called ``commit_async``
    for a transaction writing one key on each of n1 .. nk. Returns (cluster, handle)."""
    if k not in KS:
        raise ValueError(f"k is one of {KS} (participants among n1, n2, n3), got {k!r}")
    c = Cluster(EXERCISE_NODES, seed=0, placement="partitioned", one_phase=one_phase)
    n4 = c[COORDINATOR]
    tx = n4.begin()
    for node in EXERCISE_NODES[:k]:
        n4.put(tx, keys_on(c, node)[0], 1)
    return c, n4.commit_async(tx)


def exercise_costs(k: int, one_phase: bool) -> tuple[int, int]:
    """The truth for one cell: (messages between nodes, forced records) of the commit."""
    c, handle = exercise_setup(k, one_phase)
    costs = commit_costs(c, handle)
    return costs["messages"], costs["forced"]


def _cell(mode: str, k: int, value: Any) -> tuple[int, int] | str:
    where = f"{mode!r}, k={k}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return f"{where}: give a pair (messages, forced records) like (6, 2), not {value!r}"
    pair = tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        return f"{where}: give two whole numbers (messages, forced records), not {value!r}"
    return pair  # type: ignore[return-value]


def check_costs(answer: Any) -> Feedback:
    """Correct if ``answer`` gives, for "2pc" and "one_phase" and each k in 1, 2, 3, the pair
    (messages between nodes, forced log records) that n4's commit over k participants costs."""
    if answer is None:
        return not_yet('set `answer` to a dict {"2pc": {1: (msgs, forced), 2: ..., 3: ...}, '
                       '"one_phase": {1: ..., 2: ..., 3: ...}}')
    why = not_a_dict_of(answer, MODES)
    if why:
        return not_yet(why)
    wrong = []
    for mode in MODES:
        cells = answer[mode]
        why = not_a_dict_of(cells, KS, f"answer[{mode!r}]", " (the number of participants)")
        if why:
            return not_yet(why)
        for k in KS:
            pair = _cell(mode, k, cells[k])
            if isinstance(pair, str):
                return not_yet(pair)
            messages, forced = exercise_costs(k, mode == "one_phase")
            what = []
            if pair[0] != messages:
                what.append("messages too " + ("high" if pair[0] > messages else "low"))
            if pair[1] != forced:
                what.append("forced records too " + ("high" if pair[1] > forced else "low"))
            if what:
                wrong.append(f"{mode}, k={k}: {' and '.join(what)}")
    if wrong:
        return not_yet("; ".join(wrong) + ". Count per participant: which messages go to it "
                       "and back, and which records does it force? Then the coordinator's. "
                       "When does one_phase=True apply at all?")
    return correct(
        "two-phase commit costs 4 messages and 2 forced records per participant (PREPARE and "
        "VOTE, COMMIT and ACK; its PREPARE and COMMIT records) plus the coordinator's forced "
        "DECISION: 4k messages and 2k + 1 forced records. One-phase commit only applies with a "
        "single participant, and then it is 2 messages and 1 forced record; with two or more "
        "participants it is two-phase commit, to the message.")


__all__ = ["NODES", "CONCURRENCY", "WINDOWS", "SWITCHES", "keys_on", "single_commit",
           "commit_costs", "forced_records", "batched_commits", "sweep", "window_sweep",
           "sweep_lines", "read_wait", "exercise_setup", "exercise_costs", "check_costs"]
