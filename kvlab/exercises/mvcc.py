"""Chapter 2 (MVCC and snapshots) exercise: predict what a snapshot reads.

>>> from kvlab.exercises import mvcc
>>> mvcc.check(cluster, "T7", "k", answer)    # doctest: +SKIP

The check never stores the answer: it works out, from the cluster, the value transaction
``tx`` reads for ``key`` (its own write if it wrote the key, else the newest committed version
at or below its start timestamp on the node that began it) and compares. When the prediction
is wrong, the hint names the rule that rules it out, using the history's commit timestamps.
"""

from __future__ import annotations

from typing import Any

from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_yet

_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def truth(cluster: Cluster, tx: str, key: str) -> tuple[Any, str]:
    """``(value, why)``: what ``tx`` reads for ``key`` (value None: no visible version).

    Raises ``LookupError`` with a learner-facing message when it cannot be known.
    """
    if tx not in cluster.history:
        raise LookupError(f"no transaction {tx!r} in this cluster: pass the id that begin() "
                          f"returned (a string such as 'T7')")
    txn = cluster.history[tx]
    own = [op for op in txn.ops if op.kind == "w" and op.key == key]
    if own:
        op = own[-1]
        return (None if op.deleted else op.value), f"{tx} wrote {key!r} itself"
    core = cluster.core(txn.node)
    if core is None:
        raise LookupError(f"{txn.node}, where {tx} began, is crashed: restart it first")
    store = core.store
    ts = txn.start_ts
    if txn.status != "active" and store.watermark > ts:
        reads = [op for op in txn.ops if op.kind == "r" and op.key == key]
        if reads:
            op = reads[0]
            return (None if op.deleted else op.value), f"{tx} read it before it finished"
        raise LookupError(f"{tx} has finished and garbage collection (watermark "
                          f"{store.watermark}) has removed versions its snapshot at ts {ts} "
                          f"could see: ask about a transaction that is still active")
    lock = store.blocker(key, ts, tx)
    if lock is not None:
        raise LookupError(f"nobody can predict this one yet: {key!r} on {txn.node} is locked "
                          f"by prepared transaction {lock.tx}, which began before {tx}'s "
                          f"snapshot (ts {ts}). A read by {tx} would wait for {lock.tx}'s "
                          f"outcome")
    v = store.visible(key, ts)
    if v is None:
        return None, f"no version of {key!r} has a commit timestamp at or below {ts}"
    why = (f"the newest version of {key!r} with commit ts <= {ts} was written by {v.writer} "
           f"at ts {v.commit_ts}")
    return (None if v.deleted else v.value), why


def check(cluster: Cluster, tx: str, key: str, answer: Any) -> Feedback:
    """Is ``answer`` the value transaction ``tx`` reads for ``key``? (None: no value.)"""
    if not isinstance(cluster, Cluster):
        return not_yet(f"pass the cluster first: check(cluster, tx, key, answer); got "
                       f"{type(cluster).__name__}")
    try:
        value, why = truth(cluster, tx, key)
    except LookupError as e:
        return not_yet(str(e))
    txn = cluster.history[tx]
    where = f"{tx} (snapshot ts {txn.start_ts}, on {txn.node})"
    if _same(answer, value):
        if value is None:
            return correct(f"{where} sees no value for {key!r}, so get() returns None: {why}")
        return correct(f"{where} reads {value!r} for {key!r}: {why}")
    if answer is None:
        return not_yet(f"replace None by the value you predict {tx} reads for {key!r}")
    return not_yet(f"{where} does not read {answer!r} for {key!r}. " + _hint(cluster, tx, key,
                                                                           answer))


def _hint(cluster: Cluster, tx: str, key: str, answer: Any) -> str:
    start = cluster.history[tx].start_ts
    writers = [t for t in cluster.history if t.id != tx
               and any(op.kind == "w" and op.key == key and not op.deleted
                       and _same(op.value, answer) for op in t.ops)]
    committed = [t for t in writers if t.status == "committed" and t.commit_ts is not None]
    if committed:
        late = [t for t in committed if t.commit_ts > start]
        if len(late) == len(committed):
            t = late[0]
            return (f"{t.id} wrote it, but committed at ts {t.commit_ts}, after {tx}'s "
                    f"snapshot was taken at ts {start}: a snapshot never sees a later commit, "
                    f"even one that happened before the read")
        t = max((t for t in committed if t.commit_ts <= start), key=lambda t: t.commit_ts)
        return (f"{t.id} wrote it at ts {t.commit_ts}, which is at or below {tx}'s snapshot "
                f"(ts {start}), but it is not the newest such version: a snapshot reads the "
                f"newest version committed at or below its start timestamp")
    if writers:
        t = writers[0]
        if t.status == "aborted":
            how = "was rolled back" if "rolled back" in t.reason else "was aborted"
        else:
            how = "has not committed"
        return (f"{t.id} wrote it, but {t.id} {how}: uncommitted and aborted writes are "
                f"invisible to every other transaction")
    return (f"No transaction wrote {answer!r} to {key!r}: look at the version chain "
            f"(viz.version_chains) and at each writer's commit timestamp")


__all__ = ["check", "truth"]
