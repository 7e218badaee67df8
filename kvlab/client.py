"""The classic client API: a handle per node with begin, get, put, delete, commit, rollback.

A :class:`Node` is what ``cluster.node("n1")`` and ``kvlab.initialize("n1", ids)`` return. It
validates arguments, hands each call to the node's state machine through the cluster (which runs
the simulation until the answer exists), and records every read and write in the history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvlab.errors import ConfigurationError, InvalidKey, InvalidValue, TransactionNotFound
from kvlab.history import Op, Txn
from kvlab.mvcc import Version
from kvlab.node import ISOLATION_LEVELS, Begin, Commit, Get, ReadResult, Rollback, Write
from kvlab.twopc import ABORTED, ACTIVE, AWAIT_TS, COMMITTED, COMMITTING, PREPARING, CoordTx

if TYPE_CHECKING:
    from kvlab.cluster import Cluster


# -- values --------------------------------------------------------------------------------------
def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"keys are non-empty strings, got {key!r}; e.g. put(tx, 'x', 1)")
    return key


def _clean(value: Any, top: bool = True) -> Any:
    """Validate a JSON value and return a private copy (the store must not alias user objects)."""
    t = type(value)
    if t is str or t is int or t is bool:
        return value
    if t is float:
        if not math.isfinite(value):
            raise InvalidValue(f"{value!r} is not JSON: use a finite float")
        return value
    if t is list or t is tuple:
        return [_clean(v, False) for v in value]
    if t is dict:
        for k in value:
            if not isinstance(k, str):
                raise InvalidValue(f"dict keys must be strings for JSON, got {k!r}")
        return {k: _clean(v, False) for k, v in value.items()}
    if value is None:
        if top:
            raise InvalidValue("None is not a storable value (get() returns None for 'no "
                               "value'): use delete(tx, key) to remove a key")
        return None
    raise InvalidValue(f"values must be JSON-serialisable (int, float, str, bool, list, dict); "
                       f"got {t.__name__}: {value!r}")


def _copy(value: Any) -> Any:
    if type(value) is list:
        return [_copy(v) for v in value]
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    return value


@dataclass
class Outcome:
    """Why a transaction ended the way it did."""

    tx: str
    status: str  # "active" | "committing" | "committed" | "aborted"
    reason: str = ""
    commit_ts: int | None = None

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    def __str__(self) -> str:
        return f"{self.tx}: {self.reason or self.status}"


_STATUS = {ACTIVE: "active", PREPARING: "committing", AWAIT_TS: "committing",
           COMMITTING: "committed", COMMITTED: "committed", ABORTED: "aborted"}


class CommitHandle:
    """A commit started with ``commit_async``: poll ``done``, or ``wait()`` to drive it home."""

    def __init__(self, cluster: Cluster, node: str, tx: str, call: int) -> None:
        self.cluster, self.node, self.tx, self.call = cluster, node, tx, call

    @property
    def done(self) -> bool:
        return self.cluster.history[self.tx].status in ("committed", "aborted")

    @property
    def committed(self) -> bool | None:
        """True/False once decided, None while 2PC is still running."""
        status = self.cluster.history[self.tx].status
        return None if status not in ("committed", "aborted") else status == "committed"

    def wait(self) -> bool:
        self.cluster._drive(self.node, self.call, lambda: self.done, f"commit({self.tx!r})")
        return bool(self.committed)

    def __repr__(self) -> str:
        state = "running" if not self.done else ("committed" if self.committed else "aborted")
        return f"<CommitHandle {self.tx} on {self.node}: {state}>"


class Node:
    """The classic per-node API: begin, get, put, delete, commit, rollback."""

    def __init__(self, cluster: Cluster, node_id: str) -> None:
        self.cluster = cluster
        self.id = node_id

    def __repr__(self) -> str:
        return f"<kvlab.Node {self.id} ({'up' if self.up else 'crashed'})>"

    @property
    def up(self) -> bool:
        return self.cluster._cores[self.id] is not None

    def begin(self, isolation: str = "snapshot") -> str:
        """Start a transaction; returns its id. Asks the oracle for a start timestamp."""
        if isolation not in ISOLATION_LEVELS:
            raise ConfigurationError(f"unknown isolation {isolation!r}: choose one of "
                             f"{', '.join(ISOLATION_LEVELS)}")
        c = self.cluster
        tx = c._call(self.id, lambda call: Begin(call, isolation), "begin()")
        core = c._cores[self.id]
        c.history.add(Txn(tx, self.id, isolation, core.coordinator.txs[tx].start_ts))
        c._record_call(self.id, "begin", tx=tx, isolation=isolation)
        return tx

    def get(self, tx: str, key: str) -> Any:
        """The value this transaction sees for ``key``, or None if no version is visible."""
        check_key(key)
        c = self.cluster
        res: ReadResult = c._call(self.id, lambda call: Get(call, tx, key),
                                  f"get({tx!r}, {key!r})")
        c.history[tx].ops.append(Op("r", key, _copy(res.value), res.writer, res.version_ts,
                                    res.deleted))
        c._record_call(self.id, "get", tx=tx, key=key, value=res.value, writer=res.writer)
        return _copy(res.value)

    def put(self, tx: str, key: str, value: Any) -> None:
        """Buffer a write; other transactions cannot see it until commit."""
        check_key(key)
        v = _clean(value)
        self._write(tx, key, v, False)

    def delete(self, tx: str, key: str) -> None:
        check_key(key)
        self._write(tx, key, None, True)

    def _write(self, tx: str, key: str, value: Any, deleted: bool) -> None:
        c = self.cluster
        c._apply(self.id, c._live(self.id).handle(Write(tx, key, value, deleted)))
        c.history[tx].ops.append(Op("w", key, _copy(value), tx, None, deleted))
        c._record_call(self.id, "delete" if deleted else "put", tx=tx, key=key, value=value)

    def commit(self, tx: str) -> bool:
        """Run two-phase commit to its outcome: True if committed, False if aborted."""
        return self.commit_async(tx).wait()

    def commit_async(self, tx: str) -> CommitHandle:
        """Send the PREPAREs and return at once; step or run the cluster to make progress."""
        c = self.cluster
        core = c._live(self.id)
        core.active(tx)  # raise before anything reaches the trace
        call = next(c._calls)
        c._record_call(self.id, "commit", tx=tx)
        c._commit_calls[call] = (self.id, tx)
        c._apply(self.id, core.handle(Commit(call, tx)))
        return CommitHandle(c, self.id, tx, call)

    def rollback(self, tx: str) -> None:
        c = self.cluster
        c._apply(self.id, c._live(self.id).handle(Rollback(tx)))
        h = c.history[tx]
        h.status, h.reason = "aborted", "aborted: rolled back by the client"
        c._record_call(self.id, "rollback", tx=tx)

    def outcome(self, tx: str) -> Outcome:
        """Whether ``tx`` committed or aborted, and why."""
        c = self.cluster
        core = c._cores[self.id]
        rec: CoordTx | None = core.coordinator.txs.get(tx) if core is not None else None
        if rec is not None and rec.state != "INIT":
            return Outcome(tx, _STATUS[rec.state], rec.reason, rec.commit_ts)
        if tx in c.history and c.history[tx].node == self.id:
            h = c.history[tx]
            return Outcome(tx, h.status, h.reason, h.commit_ts)
        raise TransactionNotFound(f"node {self.id} never began a transaction {tx!r}")

    # -- inspection (read-only views for notebooks and kvlab.viz) -------------------------
    def versions(self, key: str) -> list[Version]:
        """The version chain of ``key`` on this node, oldest first."""
        return list(self.cluster._live(self.id).store.chains.get(key, []))
