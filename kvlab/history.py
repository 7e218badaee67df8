"""Recorded histories: what each transaction read and wrote, the raw material of the checker.

The engine fills a :class:`History` as transactions run; the checker also accepts histories
that never came near kvlab (see :meth:`History.from_plain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INITIAL = None  # writer of the initial (never written) state of every key


@dataclass
class Op:
    """One read or write, in program order.

    For a read, ``writer`` names the transaction whose version was observed (its own id for a
    read of its own write, ``None`` for the initial state) and ``version_ts`` its commit timestamp.
    For a write, ``value is None`` together with ``deleted=True`` marks a delete.
    """

    kind: str  # "r" or "w"
    key: str
    value: Any
    writer: str | None = None
    version_ts: int | None = None
    deleted: bool = False


@dataclass
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

    def __iter__(self):
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
