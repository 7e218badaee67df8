"""Recorded histories: what each transaction read and wrote, the raw material of the checker.

The engine fills a :class:`History` as transactions run; the checker also accepts histories
that never came near kvlab (see :meth:`History.from_plain`; the format is documented in
:mod:`kvlab.checker`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kvlab.errors import KvlabError

INITIAL = None  # writer of the initial (never written) state of every key

_TXN_FIELDS = ("id", "ops", "status", "node", "isolation", "start_ts", "commit_ts", "reason")
_STATUSES = ("committed", "aborted", "active")
_OP_KINDS = ("r", "w", "append")
_OP_EXTRAS = ("writer", "version_ts", "deleted")


class InvalidHistory(KvlabError):
    """The history cannot be checked as given: malformed, ambiguous or self-contradictory."""


@dataclass(slots=True)
class Op:
    """One read, write or list append, in program order.

    For a read, ``writer`` names the transaction whose version was observed (its own id for a
    read of its own write, ``None`` for the initial state) and ``version_ts`` its commit timestamp.
    For a write, ``value is None`` together with ``deleted=True`` marks a delete.
    ``kind == "append"`` adds the unique element ``value`` to the list at ``key``; reads of such
    a key return the whole list, which reveals the order of appends.
    """

    kind: str  # "r", "w" or "append"
    key: str
    value: Any
    writer: str | None = None
    version_ts: int | None = None
    deleted: bool = False


@dataclass(slots=True)
class Txn:
    """A transaction as the history saw it."""

    id: str
    node: str | None = None
    isolation: str = "snapshot"
    start_ts: int | None = None
    commit_ts: int | None = None
    status: str = "active"  # "active" | "committed" | "aborted"
    reason: str = ""
    ops: list[Op] = field(default_factory=list)

    @property
    def reads(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "r"]

    @property
    def writes(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "w"]


class History:
    """An ordered collection of transactions, keyed by id."""

    def __init__(self, txns: list[Txn] | None = None) -> None:
        self._txns: dict[str, Txn] = {}
        for t in txns or []:
            self._txns[t.id] = t

    def __len__(self) -> int:
        return len(self._txns)

    def __iter__(self) -> Iterator[Txn]:
        return iter(self._txns.values())

    def __getitem__(self, tx_id: str) -> Txn:
        return self._txns[tx_id]

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txns

    def add(self, txn: Txn) -> Txn:
        self._txns[txn.id] = txn
        return txn

    @property
    def committed(self) -> list[Txn]:
        return [t for t in self._txns.values() if t.status == "committed"]

    def __repr__(self) -> str:
        c = sum(1 for t in self if t.status == "committed")
        a = sum(1 for t in self if t.status == "aborted")
        return f"<History {len(self)} transactions: {c} committed, {a} aborted>"

    @classmethod
    def from_plain(cls, data: Any) -> History:
        """Build a history from hand-writable lists and dicts (format: see :mod:`kvlab.checker`).

        Reads that do not name their writer get it inferred from the values written, so the
        result looks exactly like a history the engine recorded and the checker needs one path.
        """
        if not isinstance(data, (list, tuple)):
            raise InvalidHistory(
                "expected a list of transactions such as "
                f"[{{'id': 'T1', 'ops': [['w', 'x', 1]]}}], got {type(data).__name__}"
            )
        history = cls()
        to_infer: set[tuple[str, int]] = set()
        for pos, raw in enumerate(data):
            txn = _txn_from_plain(raw, pos, to_infer)
            if txn.id in history:
                raise InvalidHistory(
                    f"transaction id {txn.id!r} appears twice; give every transaction a unique id"
                )
            history.add(txn)
        _infer_writers(history, to_infer)
        return history

    def to_plain(self) -> list[dict[str, Any]]:
        """JSON-ready lists and dicts that :meth:`from_plain` turns back into this history.

        Reads keep their ``writer``, so engine histories whose values repeat still round-trip.
        """
        out = []
        for t in self:
            d: dict[str, Any] = {"id": t.id, "status": t.status}
            for name, default in (("node", None), ("isolation", "snapshot"), ("start_ts", None),
                                  ("commit_ts", None), ("reason", "")):
                if getattr(t, name) != default:
                    d[name] = getattr(t, name)
            d["ops"] = [_op_to_plain(op) for op in t.ops]
            out.append(d)
        return out


def _value_key(value: Any) -> Any:
    """A hashable stand-in for a JSON value, so equal values written twice are spotted."""
    try:
        hash(value)
    except TypeError:
        return ("json", json.dumps(value, sort_keys=True, default=repr))
    return (type(value).__name__, value)


def _op_to_plain(op: Op) -> list[Any]:
    extras: dict[str, Any] = {}
    if op.kind == "r" and op.writer is not None:
        extras["writer"] = op.writer
    if op.version_ts is not None:
        extras["version_ts"] = op.version_ts
    if op.deleted:
        extras["deleted"] = True
    return [op.kind, op.key, op.value, extras] if extras else [op.kind, op.key, op.value]


def _txn_from_plain(raw: Any, pos: int, to_infer: set[tuple[str, int]]) -> Txn:
    if not isinstance(raw, dict):
        raise InvalidHistory(
            f"transaction #{pos} should be a dict with 'id' and 'ops', got {raw!r}"
        )
    unknown = sorted(map(str, set(raw) - set(_TXN_FIELDS)))
    if unknown:
        raise InvalidHistory(
            f"transaction #{pos} has unknown field(s) {unknown}; allowed: {', '.join(_TXN_FIELDS)}"
        )
    tid = raw.get("id")
    if not isinstance(tid, str) or not tid:
        raise InvalidHistory(f"transaction #{pos} needs an 'id' that is a non-empty string, "
                             f"got {tid!r}")
    status = raw.get("status", "committed")
    if status not in _STATUSES:
        raise InvalidHistory(f"{tid} has status {status!r}; use one of {', '.join(_STATUSES)}")
    for name in ("start_ts", "commit_ts"):
        ts = raw.get(name)
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int)):
            raise InvalidHistory(f"{tid} has {name}={ts!r}; timestamps are integers")
    ops = raw.get("ops")
    if not isinstance(ops, (list, tuple)):
        raise InvalidHistory(f"{tid} needs 'ops', a list such as [['r', 'x', None], ['w', 'x', 1]]")
    txn = Txn(id=tid, node=raw.get("node"), isolation=raw.get("isolation", "snapshot"),
              start_ts=raw.get("start_ts"), commit_ts=raw.get("commit_ts"), status=status,
              reason=raw.get("reason", ""))
    for i, raw_op in enumerate(ops):
        op, explicit_writer = _op_from_plain(raw_op, f"op #{i} of {tid}")
        if op.kind == "r" and not explicit_writer:
            to_infer.add((tid, i))
        txn.ops.append(op)
    return txn


def _op_from_plain(raw: Any, where: str) -> tuple[Op, bool]:
    if not isinstance(raw, (list, tuple)) or len(raw) not in (3, 4):
        raise InvalidHistory(f"{where} should look like ['r', 'x', 1], ['w', 'x', 1] or "
                             f"['append', 'l', 3], got {raw!r}")
    kind, key, value = raw[:3]
    extras = raw[3] if len(raw) == 4 else {}
    if kind not in _OP_KINDS:
        raise InvalidHistory(f"{where} has kind {kind!r}; use 'r', 'w' or 'append'")
    if not isinstance(key, str) or not key:
        raise InvalidHistory(f"{where}: keys are non-empty strings, got {key!r}")
    if not isinstance(extras, dict) or set(extras) - set(_OP_EXTRAS):
        raise InvalidHistory(f"{where}: the optional 4th element is a dict with keys "
                             f"{', '.join(_OP_EXTRAS)}, got {extras!r}")
    deleted = bool(extras.get("deleted", False))
    if kind == "w" and value is None and not deleted:
        raise InvalidHistory(f"{where} writes None, which means 'never written'; write a distinct "
                             "value instead, or add {'deleted': True} to model a delete")
    if kind == "append" and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise InvalidHistory(f"{where} appends {value!r}; append elements are ints or strings, "
                             "unique per key")
    if kind == "r" and isinstance(value, tuple):
        value = list(value)
    op = Op(kind, key, value, writer=extras.get("writer"), version_ts=extras.get("version_ts"),
            deleted=deleted)
    return op, "writer" in extras


def _infer_writers(history: History, to_infer: set[tuple[str, int]]) -> None:
    """Name the writer of every read in ``to_infer``: unique values make writers unambiguous."""
    flavour: dict[str, str] = {}
    appended: dict[tuple[str, Any], str] = {}
    written: dict[tuple[str, Any], list[str]] = {}
    for txn in history:
        for op in txn.ops:
            if op.kind == "r":
                continue
            if flavour.setdefault(op.key, op.kind) != op.kind:
                raise InvalidHistory(f"key {op.key!r} is both written ('w') and appended to "
                                     "('append'); use one flavour per key")
            if op.kind == "append":
                if (op.key, op.value) in appended:
                    raise InvalidHistory(
                        f"{op.value!r} is appended to {op.key!r} twice (by "
                        f"{appended[op.key, op.value]} and {txn.id}); list elements must be unique"
                        " per key, because a read's last element names its writer")
                appended[op.key, op.value] = txn.id
            else:
                writers = written.setdefault((op.key, _value_key(op.value)), [])
                if txn.id not in writers:
                    writers.append(txn.id)
    for txn in history:
        own: dict[str, list[Any]] = {}
        for i, op in enumerate(txn.ops):
            if op.kind != "r":
                own.setdefault(op.key, []).append(op.value)
            elif (txn.id, i) in to_infer:
                if flavour.get(op.key) == "append" or (op.key not in flavour
                                                       and isinstance(op.value, list)):
                    op.value = [] if op.value is None else op.value
                    op.writer = _list_writer(txn.id, op, appended)
                else:
                    op.writer = _register_writer(txn.id, op, written, own.get(op.key))
                if op.writer is not None and op.writer != txn.id:
                    op.version_ts = history[op.writer].commit_ts


def _register_writer(tid: str, op: Op, written: dict[tuple[str, Any], list[str]],
                     own: list[Any] | None) -> str | None:
    if own:
        if op.value != own[-1]:
            raise InvalidHistory(
                f"{tid} wrote {op.key}={own[-1]!r}, then read {op.key}={op.value!r}; a transaction"
                " reads its own latest write (the checker judges isolation between transactions,"
                " not inside one)")
        return tid
    if op.value is None:
        return None
    writers = [w for w in written.get((op.key, _value_key(op.value)), []) if w != tid]
    if not writers:
        raise InvalidHistory(
            f"{tid} read {op.key}={op.value!r}, but no other transaction writes that value to "
            f"{op.key}; add the writer to the history, or read None for the initial state")
    if len(writers) > 1:
        raise InvalidHistory(
            f"{tid} read {op.key}={op.value!r}, which {' and '.join(writers)} all write to "
            f"{op.key}, so its writer is ambiguous; give every write to a key a unique value, or "
            f"name it: ['r', {op.key!r}, {op.value!r}, {{'writer': {writers[0]!r}}}]")
    return writers[0]


def _list_writer(tid: str, op: Op, appended: dict[tuple[str, Any], str]) -> str | None:
    """The appender of the last element: unique elements name the version read (Elle's trick)."""
    if not isinstance(op.value, list):
        raise InvalidHistory(f"{tid} read {op.key}={op.value!r}, but {op.key} is a list-append key;"
                             " its reads return the whole list, such as [1, 3]")
    appenders = []
    for elem in op.value:
        try:
            appenders.append(appended[op.key, elem])
        except (KeyError, TypeError):
            raise InvalidHistory(f"{tid} read {op.key}={op.value!r}, but no transaction appends "
                                 f"{elem!r} to {op.key}; add the appender to the history") from None
    return appenders[-1] if appenders else None
