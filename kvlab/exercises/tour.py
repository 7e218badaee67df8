"""Chapter 1 (Tour) exercise: move 10 from account ``a`` to account ``b`` in one transaction.

>>> from kvlab.exercises import tour
>>> bank = tour.bank()              # a fresh cluster where a = 100 and b = 50 on every node
>>> n2 = bank["n2"]
>>> # ... begin on n2, read a and b, write the new balances, commit ...
>>> tour.check(bank)                # doctest: +SKIP

``check`` reads the answer from the cluster itself (its replicas and its history), so the
notebook never contains the expected result.
"""

from __future__ import annotations

from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_yet
from kvlab.history import Txn

NODES = ["n1", "n2", "n3"]
OPENING = {"a": 100, "b": 50}
AMOUNT = 10
ON_NODE = "n2"


def bank(seed: int = 0) -> Cluster:
    """A quiet three-node cluster whose first transaction (on n1) opened a = 100, b = 50."""
    cluster = Cluster(NODES, seed=seed)
    n1 = cluster.node("n1")
    tx = n1.begin()
    for key, value in OPENING.items():
        n1.put(tx, key, value)
    if not n1.commit(tx):  # pragma: no cover - a fresh cluster has nobody to conflict with
        raise RuntimeError(f"could not open the accounts: {n1.outcome(tx)}")
    cluster.run()
    return cluster


def _opening(cluster: Cluster) -> Txn | None:
    """The transaction bank() used to open the accounts, if this cluster came from bank()."""
    first = next(iter(cluster.history), None)
    if first is None or first.status != "committed":
        return None
    writes = {op.key: op.value for op in first.ops if op.kind == "w"}
    return first if writes == OPENING else None


def check(cluster: Cluster) -> Feedback:
    """Did exactly one committed transaction, begun on n2, move 10 from a to b everywhere?

    Runs the cluster until it is quiet first: ``commit()`` returns once the decision is
    durable, and the COMMIT messages to the other replicas may still be in flight.
    """
    if not isinstance(cluster, Cluster):
        return not_yet(f"pass the cluster, e.g. check(bank); got {type(cluster).__name__}")
    opening = _opening(cluster)
    if opening is None:
        return not_yet("this cluster was not made by tour.bank(): start from "
                       "bank = tour.bank() so that a = 100 and b = 50 to begin with")
    down = [n for n in cluster.ids if not cluster.up(n)]
    if down:
        return not_yet(f"{', '.join(down)} is crashed: cluster.restart({down[0]!r}) so the "
                       f"check can read every replica")
    cluster.run()  # deliver the COMMITs still in flight

    movers = [t for t in cluster.history if t is not opening and t.status == "committed"
              and any(op.kind == "w" and op.key in OPENING for op in t.ops)]
    if not movers:
        return not_yet("no committed transaction has changed a or b yet: begin a transaction "
                       "on n2, get both balances, put the new ones, and commit it")
    elsewhere = [t for t in movers if t.node != ON_NODE]
    if elsewhere:
        t = elsewhere[0]
        return not_yet(f"{t.id} was begun on {t.node}; the exercise asks for a transaction "
                       f"begun on {ON_NODE} (use n2 = bank['n2'])")
    if len(movers) > 1:
        ids = ", ".join(t.id for t in movers)
        return not_yet(f"a and b were changed by {len(movers)} committed transactions ({ids}). "
                       f"Do the whole transfer in ONE transaction, so that no reader can ever "
                       f"see the money half moved (start again from tour.bank())")
    tx = movers[0]
    written = {op.key for op in tx.ops if op.kind == "w"}
    missing = sorted(set(OPENING) - written)
    if missing:
        return not_yet(f"{tx.id} wrote only {', '.join(sorted(written & set(OPENING)))}: a "
                       f"transfer must change both balances in the same transaction")
    unread = sorted(k for k in OPENING
                    if not any(op.kind == "r" and op.key == k for op in tx.ops))
    if unread:
        return not_yet(f"{tx.id} never read {' and '.join(unread)}: compute each new balance "
                       f"from what get() returns inside the transaction, not from a number "
                       f"you typed")
    expected = {"a": OPENING["a"] - AMOUNT, "b": OPENING["b"] + AMOUNT}
    for n in cluster.ids:
        store = cluster.core(n).store
        for key, want in expected.items():
            v = store.latest(key)
            got = None if v is None or v.deleted else v.value
            if got != want:
                other = "b" if key == "a" else "a"
                return not_yet(f"on {n}, {key} is now {got!r}: it should have gone "
                               f"{'down' if key == 'a' else 'up'} by {AMOUNT} (and {other} "
                               f"{'up' if key == 'a' else 'down'} by {AMOUNT}), so that the "
                               f"total stays {sum(OPENING.values())}")
            if v.writer != tx.id:
                return not_yet(f"on {n}, the newest version of {key} was written by "
                               f"{v.writer}, not by {tx.id}")
    return correct(f"{tx.id}, begun on {ON_NODE}, moved {AMOUNT} from a to b in one atomic "
                   f"transaction (commit ts {tx.commit_ts}): a = {expected['a']} and b = "
                   f"{expected['b']} on {', '.join(cluster.ids)}, both versions written by "
                   f"{tx.id}")


__all__ = ["bank", "check", "NODES", "OPENING", "AMOUNT"]
