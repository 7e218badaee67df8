"""The classic client API: a handle per node with begin, get, scan, put, delete, commit, rollback.

A :class:`Node` is what ``cluster.node("n1")`` and ``kvlab.initialize("n1", ids)`` return. It
checks arguments, hands each call to the node's state machine through a
:class:`kvlab.driver.Driver` (which runs until the answer exists), and records every read and
write in the history. Every misuse raises a typed :class:`~kvlab.errors.KvlabError` from the
public call itself, before anything changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvlab.driver import public
from kvlab.errors import (
    ConfigurationError,
    InvalidKey,
    InvalidValue,
    TransactionClosed,
    TransactionNotFound,
)
from kvlab.history import Op, Txn
from kvlab.mvcc import Span, Version, prefix_end
from kvlab.node import (
    ISOLATION_LEVELS,
    Begin,
    Get,
    ReadResult,
    Rollback,
    Scan,
    ScanResult,
    Write,
    check_span,
)
from kvlab.twopc import ABORTED, ACTIVE, AWAIT_TS, COMMITTED, COMMITTING, PREPARING

if TYPE_CHECKING:
    from kvlab.driver import Driver

MAX_DEPTH = 64  # lists and dicts nested deeper than this are refused (JSON and recursion)


# -- values --------------------------------------------------------------------------------------
def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"keys are non-empty strings, got {key!r}; e.g. put(tx, 'x', 1)")
    return key


def check_tx(tx: Any) -> str:
    if not isinstance(tx, str):
        raise TransactionNotFound(f"transaction ids are the strings begin() returns (e.g. "
                                  f"'T3'), got {tx!r}")
    return tx


def _clean(value: Any, depth: int = 0) -> Any:
    """Validate a JSON value and return a private copy (the store must not alias user objects)."""
    t = type(value)
    if t is str or t is int or t is bool:
        return value
    if t is float:
        if not math.isfinite(value):
            raise InvalidValue(f"{value!r} is not JSON: use a finite float")
        return value
    if depth >= MAX_DEPTH and (t is list or t is tuple or t is dict):
        raise InvalidValue(f"values may nest lists and dicts at most {MAX_DEPTH} deep; store "
                           f"deeper structures flattened (e.g. as several keys)")
    if t is list or t is tuple:
        return [_clean(v, depth + 1) for v in value]
    if t is dict:
        for k in value:
            if not isinstance(k, str):
                raise InvalidValue(f"dict keys must be strings for JSON, got {k!r}")
        return {k: _clean(v, depth + 1) for k, v in value.items()}
    if value is None:
        if depth == 0:
            raise InvalidValue("None is not a storable value (get() returns None for 'no "
                               "value'): use delete(tx, key) to remove a key")
        return None
    raise InvalidValue(f"values must be JSON-serialisable (int, float, str, bool, list, dict); "
                       f"got {t.__name__}: {value!r}")


def check_range(start: Any, end: Any, prefix: Any) -> Span:
    """A scan's arguments as one span ``start <= key < end`` (InvalidKey if they are not)."""
    if prefix is not None:
        if start is not None or end is not None:
            raise InvalidKey(f"scan takes a prefix or start/end bounds, not both (got "
                             f"prefix={prefix!r}, start={start!r}, end={end!r}); e.g. "
                             f"scan(tx, prefix='user/') or scan(tx, 'user/a', 'user/m')")
        if not isinstance(prefix, str):
            raise InvalidKey(f"a scan prefix is a string, got {prefix!r}; e.g. "
                             f"scan(tx, prefix='user/')")
        return (prefix, prefix_end(prefix))
    return check_span(start, end)


_NESTED = (list, dict)  # the only mutable JSON values: everything else needs no copy


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

    def __init__(self, driver: Driver, node: Any, tx: str, number: int) -> None:
        self.cluster, self.node, self.tx = driver, node, tx
        self._calls = driver._calls  # type: ignore[attr-defined]
        self._number = number
        self._result: bool | None = None
        self.call: int | None = None  # the driver's call id, once the commit started
        self.reason = ""
        self.commit_ts: int | None = None
        self._delegated: tuple[Any, int] | None = None  # one-phase: (participant, start_ts)

    def _journal_target(self) -> tuple[str, int]:
        return ("handle", self._number)

    def _settle(self, committed: bool, reason: str, commit_ts: int | None) -> None:
        self._result, self.reason, self.commit_ts = committed, reason, commit_ts

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def committed(self) -> bool | None:
        """True/False once decided, None while 2PC is still running."""
        return self._result

    @public()
    def wait(self) -> bool:
        """Run the cluster until this commit's outcome is known; True if it committed."""
        if self._result is None:
            self.cluster.wait(self.node, lambda: self._result is not None,
                              f"commit({self.tx!r})", self.call, abandon=False)
        return bool(self._result)

    def __repr__(self) -> str:
        state = "running" if not self.done else ("committed" if self.committed else "aborted")
        return f"<CommitHandle {self.tx} on {self.node}: {state}>"


class ReadHandle:
    """A read started with ``get_async``: it is answered while the cluster runs (at once, or
    when a prepared writer it must wait for is decided). ``value`` once ``done``."""

    def __init__(self, driver: Driver, node: Any, tx: str, key: str, number: int) -> None:
        self.cluster, self.node, self.tx, self.key = driver, node, tx, key
        self._calls = driver._calls  # type: ignore[attr-defined]
        self._number = number
        self.call: int | None = None
        self.done = False
        self._value: Any = None
        self.error: Exception | None = None

    def _journal_target(self) -> tuple[str, int]:
        return ("handle", self._number)

    def _settle(self, value: Any, error: Exception | None) -> None:
        self.done, self._value, self.error = True, value, error

    @property
    def value(self) -> Any:
        """What the read returned (None if no version was visible); raises its error."""
        with self._calls.lock:
            if not self.done:
                raise TransactionClosed(f"the read of {self.key!r} by {self.tx} has no answer "
                                        f"yet: step or run the cluster, or call wait()")
            if self.error is not None:
                raise self.error
            return _copy(self._value)

    @public()
    def wait(self) -> Any:
        """Run the cluster until the read is answered; return the value."""
        if not self.done:
            self.cluster.wait(self.node, lambda: self.done, f"get({self.tx!r}, {self.key!r})",
                              self.call, abandon=False)
        return self.value

    def __repr__(self) -> str:
        state = "waiting" if not self.done else ("failed" if self.error else repr(self._value))
        return f"<ReadHandle {self.tx} {self.key!r} on {self.node}: {state}>"


class Node:
    """The classic per-node API: begin, get, scan, put, delete, commit, rollback."""

    def __init__(self, driver: Driver, node_id: Any) -> None:
        self.cluster = driver
        self.id = node_id
        self._calls = driver._calls  # type: ignore[attr-defined]

    def _journal_target(self) -> tuple[str, Any]:
        return ("node", self.id)

    def __repr__(self) -> str:
        return f"<kvlab.Node {self.id} ({'up' if self.up else 'crashed'})>"

    @property
    def up(self) -> bool:
        with self._calls.lock:
            return self.cluster.is_up(self.id)

    @public()
    def begin(self, isolation: str = "snapshot") -> str:
        """Start a transaction; returns its id. Asks the oracle for a start timestamp."""
        if isolation not in ISOLATION_LEVELS:
            raise ConfigurationError(f"unknown isolation {isolation!r}: choose one of "
                                     f"{', '.join(ISOLATION_LEVELS)}")
        d = self.cluster
        tx, start_ts = d.call(self.id, lambda call: Begin(call, isolation), "begin()")
        if d.history is not None:
            d.history.add(Txn(tx, self.id, isolation, start_ts))
        d.record_call(self.id, "begin", tx=tx, isolation=isolation)
        return tx

    @public()
    def get(self, tx: str, key: str) -> Any:
        """The value this transaction sees for ``key``, or None if no version is visible."""
        check_tx(tx)
        check_key(key)
        d = self.cluster
        res: ReadResult = d.call(self.id, lambda call: Get(call, tx, key),
                                 f"get({tx!r}, {key!r})")
        self._record_read(tx, key, res)
        return _copy(res.value)

    @public()
    def get_async(self, tx: str, key: str) -> ReadHandle:
        """Start a read and return at once: it may have to wait for a prepared writer, which
        stepping the cluster resolves (``handle.value`` once ``handle.done``). Lets a read race
        two-phase commits message by message, in the explorer and in kvlab.explore."""
        check_tx(tx)
        check_key(key)
        handle = ReadHandle(self.cluster, self.id, tx, key, self._calls.handles)
        self.cluster.start_read(self.id, tx, key, handle)
        self._calls.handles += 1
        return handle

    def _record_read(self, tx: str, key: str, res: ReadResult) -> None:
        """A read's answer arrived: into the history and the trace (sync and async alike)."""
        d = self.cluster
        if d.history is not None:
            d.history[tx].ops.append(Op("r", key, _copy(res.value), res.writer, res.version_ts,
                                        res.deleted))
        d.record_call(self.id, "get", tx=tx, key=key, value=res.value, writer=res.writer)

    @public()
    def scan(self, tx: str, start: str | None = None, end: str | None = None, *,
             prefix: str | None = None) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` this transaction sees with ``start <= key < end``, sorted.

        ``start=None`` is the first key and ``end=None`` no upper bound; ``prefix="user/"``
        scans the keys that start with it. The snapshot is the one ``get`` reads (read
        committed: a fresh one per scan), with this transaction's writes and deletes merged in.
        At ``serializable`` the range is validated at commit: a key inserted, changed or
        deleted in it since the snapshot (a phantom) aborts the transaction."""
        check_tx(tx)
        start, end = check_range(start, end, prefix)
        d = self.cluster
        res: ScanResult = d.call(self.id, lambda call: Scan(call, tx, start, end),
                                 f"scan({tx!r}, {start!r}, {end!r})")
        if d.history is not None:
            rows = [Op("r", k, v if type(v) not in _NESTED else _copy(v), w, ts)
                    for k, v, w, ts in res.rows]
            d.history[tx].ops.append(Op("scan", start, rows, None, res.ts, end=end))
        d.record_call(self.id, "scan", tx=tx, start=start, end=end, rows=len(res.rows))
        return [(k, v if type(v) not in _NESTED else _copy(v)) for k, v, _, _ in res.rows]

    @public()
    def put(self, tx: str, key: str, value: Any) -> None:
        """Buffer a write; other transactions cannot see it until commit."""
        check_tx(tx)
        check_key(key)
        self._write(tx, key, _clean(value), False)

    @public()
    def delete(self, tx: str, key: str) -> None:
        """Buffer a delete (a tombstone version at commit)."""
        check_tx(tx)
        check_key(key)
        self._write(tx, key, None, True)

    def _write(self, tx: str, key: str, value: Any, deleted: bool) -> None:
        d = self.cluster
        d.tell(self.id, Write(tx, key, value, deleted))
        if d.history is not None:
            d.history[tx].ops.append(Op("w", key, _copy(value), tx, None, deleted))
        d.record_call(self.id, "delete" if deleted else "put", tx=tx, key=key, value=value)

    @public()
    def commit(self, tx: str) -> bool:
        """Run two-phase commit to its outcome: True if committed, False if aborted."""
        return self.commit_async(tx).wait()

    @public()
    def commit_async(self, tx: str) -> CommitHandle:
        """Send the PREPAREs and return at once; step or run the cluster to make progress."""
        check_tx(tx)
        handle = CommitHandle(self.cluster, self.id, tx, self._calls.handles)
        self.cluster.start_commit(self.id, tx, handle)
        self._calls.handles += 1
        return handle

    @public()
    def rollback(self, tx: str) -> None:
        """Abandon the transaction: its buffered writes are dropped, nothing is sent."""
        check_tx(tx)
        d = self.cluster
        d.tell(self.id, Rollback(tx))
        if d.history is not None:
            h = d.history[tx]
            h.status, h.reason = "aborted", "aborted: rolled back by the client"
        d.record_call(self.id, "rollback", tx=tx)

    @public(journal=False, after_close=True)
    def outcome(self, tx: str) -> Outcome:
        """Whether ``tx`` committed or aborted, and why."""
        check_tx(tx)
        d = self.cluster
        rec = d.coordinator_record(self.id, tx)
        if rec is not None:
            return Outcome(tx, _STATUS[rec.state], rec.reason, rec.commit_ts)
        if d.history is not None and tx in d.history and d.history[tx].node == self.id:
            h = d.history[tx]
            return Outcome(tx, h.status, h.reason, h.commit_ts)
        raise TransactionNotFound(
            f"node {self.id} has no record of a transaction {tx!r}: it never began here, or "
            f"it finished long ago and was forgotten (a node keeps the newest "
            f"Timing.keep_outcomes outcomes; the history keeps them all unless history=False)")

    # -- inspection (read-only views for notebooks and kvlab.viz) -------------------------
    @public(journal=False)
    def versions(self, key: str) -> list[Version]:
        """The version chain of ``key`` on this node, oldest first."""
        check_key(key)
        return self.cluster.versions(self.id, key)
