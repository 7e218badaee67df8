"""Atomicity and durability, checked on the replicas themselves (the checker reads histories;
this reads the nodes' stores, which is where a broken force-log rule leaves its mark).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvlab.cluster import Cluster


@dataclass
class AuditReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"atomicity and durability hold for all {self.checked} transactions"
        return f"{len(self.problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in self.problems)


def audit(cluster: Cluster) -> AuditReport:
    """Every committed transaction's writes are on every node that stores them, and no aborted
    transaction's writes are anywhere. Run it when the cluster is quiet and every node is up
    (``cluster.run()`` after restarting crashed nodes): before that, commits may be in flight."""
    problems: list[str] = []
    down = [n for n in cluster.ids if not cluster.up(n)]
    if down:
        problems.append(f"restart {', '.join(map(str, down))} first: a crashed node cannot be "
                        f"audited")
    if not cluster.quiet:
        problems.append("messages or timers are still pending: call cluster.run() first")
    if cluster.history is None:
        problems.append("the audit compares replicas with the history: create the cluster "
                        "with history=True (the default)")
    if problems:
        return AuditReport(False, problems)
    latest: dict[str, tuple[int, str, bool]] = {}  # key -> newest committed (ts, writer, del)
    aborted: set[str] = set()
    checked = 0
    for txn in cluster.history:
        if txn.status == "aborted":
            aborted.add(txn.id)
        if txn.status != "committed" or not txn.writes:
            continue
        checked += 1
        last = {op.key: op for op in txn.writes}  # a transaction's last write to a key wins
        for op in last.values():
            if op.key not in latest or latest[op.key][0] < txn.commit_ts:
                latest[op.key] = (txn.commit_ts, txn.id, op.deleted)
    for n in cluster.ids:
        store = cluster.core(n).store
        for key, lock in sorted(store.write_locks.items()):
            problems.append(f"{n} still holds a lock on {key!r} for {lock.tx} (in doubt)")
        for key, chain in sorted(store.chains.items()):
            for v in chain:
                if v.writer in aborted:
                    problems.append(f"{v.writer} aborted but {n} applied its write to {key!r}: "
                                    f"atomicity broken")
        for key, (ts, writer, deleted) in sorted(latest.items()):
            if not cluster.core(n).stores(n, key):
                continue
            newest = store.latest(key)
            if newest is None and deleted:
                continue  # deleted, and the tombstone was collected
            if newest is None or newest.writer != writer:
                have = "nothing" if newest is None else f"{newest.writer}'s version"
                problems.append(f"{writer} committed the newest write to {key!r} (ts {ts}), but "
                                f"{n} has {have}: atomicity or durability broken")
    return AuditReport(not problems, problems, checked)


