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
_OP_KINDS = ("r", "w", "append", "scan")
_OP_EXTRAS = ("writer", "version_ts", "deleted")
_ROW_EXTRAS = ("writer", "version_ts")


class InvalidHistory(KvlabError):
    """The history cannot be checked as given: malformed, ambiguous or self-contradictory."""


@dataclass(slots=True)
class Op:
    """One read, write, list append or range scan, in program order.

    For a read, ``writer`` names the transaction whose version was observed (its own id for a
    read of its own write, ``None`` for the initial state) and ``version_ts`` its commit timestamp.
    For a write, ``value is None`` together with ``deleted=True`` marks a delete.
    ``kind == "append"`` adds the unique element ``value`` to the list at ``key``; reads of such
    a key return the whole list, which reveals the order of appends.
    ``kind == "scan"`` is a predicate read of the key range ``key <= k < end`` (``key`` "" is
    the first key, ``end`` None no upper bound): ``value`` lists the rows it returned, in key
    order, each a read op (``Op("r", k, v, writer, version_ts)``), and ``version_ts`` is the
    snapshot it read (None if unknown). A key of the range it did not return, it saw absent.
    """

    kind: str  # "r", "w", "append" or "scan"
    key: str
    value: Any
    writer: str | None = None
    version_ts: int | None = None
    deleted: bool = False
    end: str | None = None  # a scan's exclusive upper bound (None: none)


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

    @property
    def scans(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "scan"]


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
    if op.kind == "scan":
        rows = [_op_to_plain(row)[1:] for row in op.value]
        plain = ["scan", [op.key or None, op.end], rows]
        return plain + [{"ts": op.version_ts}] if op.version_ts is not None else plain
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
        where = f"op #{i} of {tid}"
        if isinstance(raw_op, (list, tuple)) and raw_op and raw_op[0] == "scan":
            op, implicit = _scan_from_plain(raw_op, where)
            to_infer.update((tid, i, j) for j in implicit)
        else:
            op, explicit_writer = _op_from_plain(raw_op, where)
            if op.kind == "r" and not explicit_writer:
                to_infer.add((tid, i))
        txn.ops.append(op)
    return txn


def _scan_from_plain(raw: Any, where: str) -> tuple[Op, list[int]]:
    """``["scan", [start, end], [[key, value], ...]]`` (optionally ``{"ts": n}`` after it) ->
    a scan op, and the rows whose writer is to be inferred."""
    shape = (f"{where} should look like ['scan', ['a', 'm'], [['b', 1], ['c', 2]]] (the range "
             f"start <= key < end, None for no bound, then the rows seen in key order)")
    if len(raw) not in (3, 4) or not isinstance(raw[1], (list, tuple)) or len(raw[1]) != 2 \
            or not isinstance(raw[2], (list, tuple)):
        raise InvalidHistory(f"{shape}, got {raw!r}")
    start, end = raw[1]
    extras = raw[3] if len(raw) == 4 else {}
    if not isinstance(extras, dict) or set(extras) - {"ts"} or (
            "ts" in extras and (isinstance(extras["ts"], bool)
                                or not isinstance(extras["ts"], int))):
        raise InvalidHistory(f"{where}: a scan's optional 4th element is {{'ts': <the snapshot's "
                             f"timestamp>}}, got {extras!r}")
    for name, bound in (("start", start), ("end", end)):
        if bound is not None and not isinstance(bound, str):
            raise InvalidHistory(f"{where}: the range's {name} is a key string or None, got "
                                 f"{bound!r}")
    start = start or ""
    if end is not None and start > end:
        raise InvalidHistory(f"{where}: the range starts at {start!r}, after its end {end!r}")
    rows, implicit, last = [], [], None
    for j, row in enumerate(raw[2]):
        if not isinstance(row, (list, tuple)) or len(row) not in (2, 3):
            raise InvalidHistory(f"{where}: row #{j} should be [key, value] or [key, value, "
                                 f"{{'writer': 'T1'}}], got {row!r}")
        key, value = row[0], row[1]
        extra = row[2] if len(row) == 3 else {}
        if not isinstance(extra, dict) or set(extra) - set(_ROW_EXTRAS):
            raise InvalidHistory(f"{where}: row #{j}'s 3rd element is a dict with keys "
                                 f"{', '.join(_ROW_EXTRAS)}, got {extra!r}")
        if not isinstance(key, str) or not key or not (start <= key and (end is None
                                                                          or key < end)):
            raise InvalidHistory(f"{where}: row #{j} has key {key!r}, which is not in the "
                                 f"scanned range [{start!r}, {end!r})")
        if last is not None and key <= last:
            raise InvalidHistory(f"{where}: rows are listed in key order, each key once; "
                                 f"{key!r} comes after {last!r}")
        if value is None:
            raise InvalidHistory(f"{where}: row {key!r} has value None; a scan returns only "
                                 f"keys that exist, so leave absent keys out")
        last = key
        rows.append(Op("r", key, list(value) if isinstance(value, tuple) else value,
                       writer=extra.get("writer"), version_ts=extra.get("version_ts")))
        if "writer" not in extra:
            implicit.append(j)
    return Op("scan", start, rows, version_ts=extras.get("ts"), end=end), implicit


def _op_from_plain(raw: Any, where: str) -> tuple[Op, bool]:
    if not isinstance(raw, (list, tuple)) or len(raw) not in (3, 4):
        raise InvalidHistory(f"{where} should look like ['r', 'x', 1], ['w', 'x', 1], "
                             f"['append', 'l', 3] or ['scan', ['a', 'm'], [['b', 1]]], got "
                             f"{raw!r}")
    kind, key, value = raw[:3]
    extras = raw[3] if len(raw) == 4 else {}
    if kind not in _OP_KINDS:
        raise InvalidHistory(f"{where} has kind {kind!r}; use 'r', 'w', 'append' or 'scan'")
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


def _infer_writers(history: History, to_infer: set[tuple]) -> None:
    """Name the writer of every read in ``to_infer``: unique values make writers unambiguous."""
    flavour: dict[str, str] = {}
    appended: dict[tuple[str, Any], str] = {}
    written: dict[tuple[str, Any], list[str]] = {}
    for txn in history:
        for op in txn.ops:
            if op.kind in ("r", "scan"):
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
            if op.kind == "scan":
                _scan_rows(history, txn.id, i, op, to_infer, flavour, written, own)
            elif op.kind != "r":
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


def _scan_rows(history: History, tid: str, i: int, scan: Op, to_infer: set[tuple],
               flavour: dict[str, str], written: dict[tuple[str, Any], list[str]],
               own: dict[str, list[Any]]) -> None:
    """Name the writers of a scan's rows, and check it against the transaction's own writes:
    a scan sees them (and does not see what the transaction deleted)."""
    seen = {row.key for row in scan.value}
    for key, values in own.items():
        if key not in seen and values[-1] is not None and scan.key <= key and (
                scan.end is None or key < scan.end):
            raise InvalidHistory(f"{tid} wrote {key}={values[-1]!r}, then scanned a range that "
                                 f"holds {key} without seeing it; a transaction's scan sees its "
                                 "own writes")
    for j, row in enumerate(scan.value):
        if flavour.get(row.key) == "append":
            raise InvalidHistory(f"{tid}'s scan returns {row.key!r}, a list-append key; scans "
                                 "cover register keys ('w') only")
        if (tid, i, j) in to_infer:
            if own.get(row.key) and own[row.key][-1] is None:
                raise InvalidHistory(f"{tid} deleted {row.key}, then its scan returned "
                                     f"{row.key}={row.value!r}; a transaction's scan does not "
                                     "see what it deleted")
            row.writer = _register_writer(tid, row, written, own.get(row.key))
            if row.writer is not None and row.writer != tid:
                row.version_ts = history[row.writer].commit_ts


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
