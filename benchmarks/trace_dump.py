"""Dump everything the views read from seeded runs, to diff the engine before and after a change.

``python benchmarks/trace_dump.py OUT`` writes one text file: for several seeded workloads
(crashes, torn writes, partitions, drops, duplicates, loss, reordering, scans, checkpoints, real
files), the trace rendered every way the views use it (``str``/``repr`` of each event, its
``to_dict()`` in insertion order, ``tx``, lines, text, digest, slices, filters, reversed), the
inputs of the viz (replayed scenes, sequence-diagram selections), the WAL bytes of every node on
a FileDisk and on a MemoryDisk, and a few explorer results. The same code must give the same
file, byte for byte (an engine optimisation must not change it).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import warnings
from pathlib import Path

import kvlab
from kvlab import workloads
from kvlab.cluster import Cluster
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]


def rmw(c: Cluster, n: int, conc: int, nkeys: int = 50) -> None:
    nodes = c.nodes
    for start in range(0, n, conc):
        batch = []
        for i in range(start, min(n, start + conc)):
            node = nodes[i % len(nodes)]
            if not c.up(node.id):
                continue
            batch.append((node, node.begin(), f"k{i % nkeys}", f"k{(i * 7 + 1) % nkeys}"))
        for node, tx, a, b in batch:
            old = node.get(tx, a)
            node.put(tx, a, (old if isinstance(old, int) else 0) + 1)
            node.put(tx, b, {"v": [i for i in range(3)], "s": "x\u00e9"})
            node.commit_async(tx)
        c.run()


def faults(c: Cluster) -> None:
    """Crash mid-protocol (torn and not), partitions, drops, duplicates, fire, flush."""
    n1, n2 = c["n1"], c["n2"]
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.put(tx, "y", [None, 1.5, True])
    h = n1.commit_async(tx)
    for _ in range(4):
        c.step()
    c.crash("n1", torn=True)
    c.run()
    c.restart("n1")
    c.run()
    t2 = n2.begin()
    n2.put(t2, "x", 2)
    n2.delete(t2, "y")
    h2 = n2.commit_async(t2)
    pend = c.pending()
    if pend:
        c.duplicate(pend[0].id)
    pend = c.pending()
    if len(pend) > 1:
        c.drop(pend[-1].id)
    c.partition({"n1"}, {"n2", "n3"})
    for _ in range(6):
        c.step()
    for node, key in c.timers()[:2]:
        c.fire(node, key)
    for node in c.pending_flushes():
        c.flush(node)
    c.heal()
    c.run()
    c.crash("n3")
    t3 = n1.begin()
    n1.put(t3, "z", 3)
    n1.commit_async(t3)
    c.run()
    c.restart("n3")
    c.run()
    c.checkpoint()
    c.gc()
    print(h.committed, h2.committed, file=sys.stderr)


def scans(c: Cluster) -> None:
    n1, n2 = c["n1"], c["n2"]
    t = n1.begin()
    for i in range(6):
        n1.put(t, f"user/{i}", i)
    n1.commit(t)
    r = n2.begin(isolation="serializable")
    n2.scan(r, prefix="user/")
    n2.put(r, "user/9", 9)
    w = n1.begin()
    n1.put(w, "user/7", 7)
    n1.commit(w)
    n2.commit(r)
    r2 = n2.begin()
    n2.scan(r2, "user/2", "user/5")
    n2.commit(r2)


def render(out: list[str], name: str, c: Cluster) -> None:
    from kvlab.viz import animation, scene, sequence

    tr = c.trace
    out.append(f"== {name}: {tr!r} digest {tr.digest()}")
    for e in tr:
        out.append(str(e))
        out.append(repr(e))
        out.append(json.dumps(e.to_dict(), default=str))
        out.append(repr((e.seq, e.time, e.kind, e.node, e.tx, type(e.node).__name__)))
    out.append(repr(tr.lines()[-3:]))
    out.append(tr.text(last=7))
    out.append(tr.text())
    out.append(repr([str(e) for e in reversed(tr)][:5]))
    mid = len(tr) // 2
    out.append(repr((tr[mid:mid + 5], tr[mid:mid + 5].lines(), str(tr[mid]), str(tr[-1]))))
    for kind in ("send", ("wal", "flush"), "state", None):
        f = tr.filter(kind=kind, node="n2")
        out.append(f"{kind}: {f!r} {f.digest()} {f.text(last=3)}")
    out.append(tr.filter(tx="T3").text())
    out.append(tr.messages().digest())
    ids = list(c.ids)
    for s in scene.replay_steps(tr, ids):
        out.append(repr(s))
    out.append(repr(animation.frame_indices(tr)))
    out.append(repr(sequence.select(tr)))
    out.append(repr(sequence.select(tr, tx="T3")))
    out.append(repr(sequence.select(tr, last=9, states=False)))
    out.append(repr(scene.scene_of(c)))
    out.append(repr(c.journal[-5:]))
    for n in ids:
        wal = c.wal(n)
        if isinstance(wal.disk, kvlab.wal.MemoryDisk):
            out.append(f"{n} mem wal {hashlib.sha256(wal.disk.read_log()).hexdigest()} "
                       f"{len(wal.disk.read_log())} pending {bytes(wal.disk.pending)!r} "
                       f"ckpt {wal.disk.checkpoint_blob!r}")
        out.append(f"{n} wal lsn {wal.next_lsn} {wal.flushed_lsn} {wal.forced_lsn} "
                   f"{wal.since_checkpoint} {wal.unflushed!r} fsyncs {wal.disk.fsyncs}")
    if c.history is not None:
        out.append(repr(c.history.transactions if hasattr(c.history, "transactions")
                        else list(c.history)))


def files(out: list[str], name: str, root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            b = p.read_bytes()
            out.append(f"{name} file {p.relative_to(root)} {len(b)} "
                       f"{hashlib.sha256(b).hexdigest()}")
            if p.suffix in (".log", ".json"):
                out.append(repr(b[:4000]))


def main() -> None:
    out: list[str] = []
    warnings.simplefilter("ignore", TornTailWarning)
    c = Cluster(NODES, seed=1)
    rmw(c, 120, 16)
    render(out, "rmw", c)
    for seed, placement in ((3, "all"), (4, "partitioned")):
        c = Cluster(NODES, seed=seed, latency=(1, 4), placement=placement)
        rmw(c, 40, 8)
        faults(c)
        rmw(c, 30, 5)
        render(out, f"faults {seed} {placement}", c)
    for proto in ("cooperative", "paxos"):  # other commit protocols, where there are
        try:
            c = Cluster(NODES, seed=9, latency=(1, 3), commit_protocol=proto)
        except (TypeError, kvlab.ConfigurationError):
            continue
        rmw(c, 30, 6)
        faults(c)
        render(out, f"protocol {proto}", c)
    c = Cluster(NODES, seed=5, loss=0.05, duplicate=0.05, latency=(1, 3), checkpoint_every=40,
                gc_every=50)
    rmw(c, 60, 6)
    render(out, "lossy", c)
    for kind in workloads.KINDS:
        r = workloads.run(kind, transactions=60, concurrency=6, seed=11,
                          faults=workloads.Faults(crash_rate=0.3, loss=0.02, latency=(1, 3)))
        render(out, f"workload {kind}", r.cluster)
    r = workloads.run("bank", transactions=40, concurrency=4, seed=12, placement="partitioned",
                      isolation="serializable")
    render(out, "workload partitioned", r.cluster)
    for placement in ("all", "partitioned"):
        c = Cluster(NODES, seed=6, placement=placement)
        scans(c)
        render(out, f"scans {placement}", c)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        c = Cluster(NODES, seed=7, data_dir=root, latency=(1, 3), checkpoint_every=30)
        rmw(c, 50, 8)
        faults(c)
        rmw(c, 20, 4)
        render(out, "files", c)
        c.close()
        files(out, "files", root)
        c = Cluster(NODES, seed=8, data_dir=root)  # reopen: recovery
        rmw(c, 10, 3)
        render(out, "files reopened", c)
        c.close()
        files(out, "files reopened", root)
    from kvlab import explore
    from kvlab.bench import two_commits

    for crashes in (0, 1):
        r = explore.search(two_commits, crashes=crashes, max_states=3000, progress=False)
        out.append(f"explore crashes={crashes}: {r.status} {r.states} {r.depth} {r.violation}")

    def setup() -> Cluster:
        c = Cluster(NODES, seed=0, rules=kvlab.Rules(force_commit=False))
        n1 = c["n1"]
        t = n1.begin()
        n1.put(t, "x", 1)
        n1.commit_async(t)
        return c

    r = explore.search(setup, crashes=1, progress=False)
    out.append(f"explore bug: {r.status} {r.states} {r.violation}\n{r.schedule}")
    rc = r.replay()
    render(out, "explore replay", rc)
    out.append(r.explain() if hasattr(r, "explain") else "")
    Path(sys.argv[1]).write_text("\n".join(map(str, out)) + "\n")


if __name__ == "__main__":
    main()
