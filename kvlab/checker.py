"""Find isolation anomalies in a history, and explain each one in plain words.

:func:`check` builds Adya's direct serialization graph -- committed transactions as nodes, one
edge per dependency that forces an order, as the networkx MultiDiGraph ``report.graph`` -- and
reports the anomalies that the chosen level forbids, each with the shortest cycle found and
one sentence per edge saying why that edge forces its order.  Names follow Adya's thesis and
Hermitage; the list-append trick is Elle's.

An edge ``src -> dst`` means src must come before dst in any equivalent serial order:

* ``ww``: dst overwrote (or appended after) src's version of the key;
* ``wr``: dst read the version src wrote;
* ``rw``: src read a version that dst then overwrote (an anti-dependency).

Scans are Adya's predicate reads, with a key range as the predicate. The rows a scan returns
are item reads like any other. A key of the range it did not return, it saw absent: in the
initial state or deleted. That gives the two *predicate* edges, marked with the scanned range
as the edge attribute ``predicate``: ``wr`` from the transaction whose delete the scan saw,
and ``rw`` to the first later writer that makes the key exist again: the phantom the scan
missed. (A value predicate such as "value % 3 = 0" is a scan of the whole range filtered by
the client, so the checker sees the range, which is stricter: any insert into it counts.)

==================  ===============================================  ==============
anomaly             meaning                                          forbidden from
==================  ===============================================  ==============
G0                  cycle of ww edges only (dirty write)             read_committed
G1a                 read a value written by an aborted transaction   read_committed
G1b                 read a value its writer later overwrote          read_committed
G1c                 cycle of ww/wr edges with a wr edge              read_committed
incompatible-order  list reads that no single order of appends fits  read_committed
lost-update         two transactions read one version and both       snapshot
                    wrote the key (P4)
G-single            cycle with exactly one rw edge (read skew)       snapshot
G2-item             cycle with two or more rw edges (write skew)     serializable
G2                  the same, needing a predicate rw edge            serializable
                    (predicate write skew, phantoms)
==================  ===============================================  ==============

Histories
---------
Pass a :class:`kvlab.history.History` as the engine records it (every read names the
``writer`` of the version it saw), or plain JSON-friendly data, one dict per transaction::

    [{"id": "T1", "status": "committed", "ops": [["w", "x", 1], ["r", "y", None]]},
     {"id": "T2", "ops": [["r", "x", 1], ["append", "l", 3], ["r", "l", [1, 3]]]}]

``id`` (a string) and ``ops`` are required; ``status`` ("committed" by default, "aborted" or
"active"), ``node``, ``isolation``, ``start_ts``, ``commit_ts`` and ``reason`` are optional.
An op is ``[kind, key, value]``, optionally followed by a dict with ``writer``, ``version_ts``
and ``deleted`` (which :meth:`History.to_plain` emits).  Each key has one of two flavours:

* Registers: ``["w", key, value]`` and ``["r", key, value]``.  A read's writer is whoever wrote
  that value to that key, so give every write to a key a unique value; ``None`` is the initial,
  never-written state.  Versions are ordered by ``commit_ts`` when committed writers have one
  (read-only transactions may omit it), else by position: **list committed transactions in
  commit order**.  As that order is given rather than observed, G0 can only show up in lists.
* Lists: ``["append", key, element]`` adds a unique int or str; ``["r", key, [...]]`` reads the
  whole list.  The longest list read fixes the order of appends, so reads reveal the version
  order instead of trusting timestamps (appends that no read shows stay unordered).

Scans of register keys: ``["scan", [start, end], [[key, value], ...]]`` read the range
``start <= key < end`` (``None``: no bound) and list the rows seen, in key order; a row may
name its writer, ``[key, value, {"writer": "T1"}]``.  Which version of an absent key a scan
saw is clear when that key was never deleted; otherwise give the scan its snapshot's
timestamp, ``["scan", [start, end], rows, {"ts": 7}]``, and the writers their ``commit_ts``.

Limits: one example cycle per anomaly per strongly connected component (the shortest found;
G2-item only where no cycle has fewer than two rw edges, G2 only where no such cycle is made
of item edges alone); predicates are key ranges; no checks inside a single transaction, no
real-time order.
"""

from __future__ import annotations

import re
import textwrap
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from kvlab.errors import KvlabError
from kvlab.history import History, InvalidHistory, Op, Txn
from kvlab.mvcc import span_text

if TYPE_CHECKING:
    import networkx as nx
else:
    class _Networkx:
        """networkx, imported when a check first needs it: importing it takes a third of a
        second, and once loaded it makes each full pass of Python's collector about 45 ms
        slower, in every process that imports kvlab (an OS-process node, a benchmark) even
        if it never checks a history."""

        def __getattr__(self, name: str) -> Any:
            import networkx
            return getattr(networkx, name)

    nx = _Networkx()

__all__ = ["LEVELS", "Anomaly", "CheckReport", "InvalidHistory", "InvalidLevel", "check"]

Edge = tuple[str, str, str, str]  # (src, dst, type, key): src must come before dst

_READ_COMMITTED = frozenset({"G0", "G1a", "G1b", "G1c", "incompatible-order"})
LEVELS: dict[str, frozenset[str]] = {
    "read_committed": _READ_COMMITTED,
    "snapshot": _READ_COMMITTED | {"lost-update", "G-single"},
    "serializable": _READ_COMMITTED | {"lost-update", "G-single", "G2-item", "G2"},
}
NICKNAMES = {  # also the severity order of reports
    "G0": "dirty write",
    "G1a": "aborted read",
    "G1b": "intermediate read",
    "G1c": "circular information flow",
    "incompatible-order": "incompatible order",
    "lost-update": "P4",
    "G-single": "read skew",
    "G2-item": "write skew",
    "G2": "predicate write skew",
}
_WHY = {
    "G0": "Only write-write edges: the writes interleaved. Every level forbids this.",
    "G1c": "Only write and read dependencies: each saw the other's effects. Every level forbids "
    "this.",
    "G-single": "Exactly one anti-dependency (rw) edge. Snapshot isolation forbids this; read "
    "committed allows it.",
    "G2-item": "Two or more anti-dependency (rw) edges. Snapshot isolation allows this; "
    "serializable forbids it.",
    "G2": "Two or more anti-dependency (rw) edges, and no such cycle without a predicate one: "
    "a scan missed a row that another transaction inserted (a phantom). Snapshot isolation "
    "allows this; serializable forbids it.",
}
_MORE_STARTS = 64  # searches tried after a first cycle, hunting a shorter one
_SHOW = 20  # anomalies printed per section of a report


class InvalidLevel(KvlabError):
    """The isolation level is not one the checker knows."""


@dataclass
class Anomaly:
    """One anomaly: who took part, the cycle that proves it (if any), and why, in words."""

    name: str
    txns: list[str]
    cycle: list[Edge] = field(default_factory=list)
    explanation: str = ""
    keys: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.name} ({NICKNAMES[self.name]})"

    def __str__(self) -> str:
        lines = [f"{self.title}: {', '.join(self.txns)} on {', '.join(self.keys)}"]
        if self.cycle:
            lines.append(f"  cycle: {_arrows(self.cycle)}")
        lines += textwrap.wrap(self.explanation, 96, initial_indent="  ", subsequent_indent="  ",
                               break_on_hyphens=False)
        return "\n".join(lines)


@dataclass
class CheckReport:
    """The verdict at one level; ``allowed`` lists anomalies found that the level permits."""

    level: str
    ok: bool
    anomalies: list[Anomaly]
    allowed: list[Anomaly]
    stats: dict[str, int] = field(default_factory=dict)
    #: The dependency graph the verdict was drawn from: committed transactions as nodes, one
    #: edge per dependency, keyed ``(type, key)`` with attributes ``type`` and ``key`` (and, on
    #: wr and rw edges, the ``value`` read and the txn it was ``read_from``; on predicate
    #: edges, the scanned range ``(start, end)`` as ``predicate``).
    graph: nx.MultiDiGraph = field(default_factory=lambda: nx.MultiDiGraph(), repr=False,
                                   compare=False)

    def __bool__(self) -> bool:  # so `assert check(h)` works and `if check(h):` is not a trap
        return self.ok

    @property
    def headline(self) -> str:
        n = len(self.anomalies)
        verdict = "OK" if self.ok else f"FAIL, {n} forbidden anomal{'y' if n == 1 else 'ies'}"
        s = self.stats
        return (f"{verdict} at level {self.level!r} ({s['committed']} committed and "
                f"{s['aborted']} aborted transactions, {s['edges']} dependencies)")

    def __str__(self) -> str:
        lines = [self.headline]
        for title, found in (("Forbidden", self.anomalies), ("Allowed", self.allowed)):
            if found:
                lines.append(f"{title} at {self.level}:")
                shown = enumerate(found[:_SHOW], 1)
                lines += [textwrap.indent(f"{i}. {a}", "  ") for i, a in shown]
                if len(found) > _SHOW:
                    lines.append(f"  ... and {len(found) - _SHOW} more")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"{'✅' if self.ok else '❌'} **{_md(self.headline)}**"]
        rows = [("forbidden", a) for a in self.anomalies[:_SHOW]]
        rows += [("allowed", a) for a in self.allowed[:_SHOW]]
        if rows:
            lines += ["", "| | anomaly | transactions | cycle | why |", "|---|---|---|---|---|"]
            lines += [f"| {kind} | {_md(a.title)} | {_md(', '.join(a.txns))} | "
                      f"{_md(_arrows(a.cycle))} | {_md(a.explanation)} |" for kind, a in rows]
        return "\n".join(lines)


def check(history: History | Sequence[dict[str, Any]], level: str = "snapshot") -> CheckReport:
    """Judge ``history`` at ``level`` ("read_committed", "snapshot" or "serializable").

    The default is snapshot isolation because that is what kvlab's engine promises; ask for
    "serializable" to see write skew fail too.  Plain data goes through History.from_plain.
    """
    name = _level_name(level)
    if not isinstance(history, History):
        history = History.from_plain(history)
    deps = _Dependencies(history)
    found = list(deps.direct.values())
    found += [_cycle_anomaly(kind, cycle, deps) for kind, cycle in _find_cycles(deps)]
    found.sort(key=lambda a: (list(NICKNAMES).index(a.name), [_natural(t) for t in a.txns],
                              [_natural(k) for k in a.keys], a.explanation))
    forbidden = [a for a in found if a.name in LEVELS[name]]
    allowed = [a for a in found if a.name not in LEVELS[name]]
    stats = {s: sum(t.status == s for t in history) for s in ("committed", "aborted", "active")}
    stats["edges"] = deps.graph.number_of_edges()
    return CheckReport(name, not forbidden, forbidden, allowed, stats, deps.graph)


def _level_name(level: str) -> str:
    name = level.strip().lower().replace("-", "_").replace(" ", "_") if isinstance(level, str) \
        else ""
    if name not in LEVELS:
        raise InvalidLevel(f"unknown isolation level {level!r}; use one of "
                           f"{', '.join(map(repr, LEVELS))}")
    return name


class _Dependencies:
    """Every dependency edge of a history, the values behind them, and the non-cycle anomalies.

    Built in one pass over the ops, so checking stays near-linear in the size of the history.
    """

    def __init__(self, history: History) -> None:
        self.history = history
        self.committed = _commit_order(history)
        self.rank = {t.id: i for i, t in enumerate(self.committed)}
        self.edges: dict[tuple[str, str, tuple[str, str]], dict[str, Any]] = {}  # staged
        self.wrote: dict[tuple[str, str], Any] = {}  # (txn, key) -> its last value or element
        self.writers: dict[str, list[str]] = defaultdict(list)  # key -> committed, in rank order
        self.appender: dict[tuple[str, Any], str] = {}  # (key, element) -> txn
        self.lists: set[str] = set()
        self.lost: set[tuple[str, str]] = set()  # (txn, key) in a lost update
        self.deleted: set[tuple[str, str]] = set()  # (txn, key) whose last write is a delete
        self.scans: list[tuple[Txn, Op, set[str]]] = []  # committed scans, own keys before
        self.direct: dict[tuple[str, ...], Anomaly] = {}
        reads = self._index()
        for key in dict.fromkeys([*self.writers, *reads]):
            if key in self.lists:
                self._list_key(key, reads.get(key, []))
            else:
                self._register_key(key, reads.get(key, []))
        self._predicates()  # after the item edges, which win where both exist
        self.has_predicates = any("predicate" in d for d in self.edges.values())
        self.graph = nx.MultiDiGraph()
        self.graph.add_nodes_from((t.id, {"node": t.node, "isolation": t.isolation,
                                          "start_ts": t.start_ts, "commit_ts": t.commit_ts})
                                  for t in self.committed)
        self.graph.add_edges_from((u, v, k, data) for (u, v, k), data in self.edges.items())

    def _index(self) -> dict[str, list[tuple[Txn, Op]]]:
        reads: dict[str, list[tuple[Txn, Op]]] = defaultdict(list)
        flavour: dict[str, str] = {}
        for txn in self.history:
            if txn.status not in ("committed", "aborted", "active"):
                raise InvalidHistory(f"{txn.id} has status {txn.status!r}; use 'committed', "
                                     "'aborted' or 'active'")
            own: set[str] = set()
            for op in txn.ops:
                if op.kind == "r":
                    if txn.id in self.rank:
                        reads[op.key].append((txn, op))
                    continue
                if op.kind == "scan":
                    if txn.id in self.rank:
                        self.scans.append((txn, op, set(own)))
                        for row in op.value:
                            reads[row.key].append((txn, row))
                    continue
                own.add(op.key)
                self._note_write(txn, op, flavour)
        for txn in self.committed:
            for key in dict.fromkeys(op.key for op in txn.ops if op.kind in ("w", "append")):
                self.writers[key].append(txn.id)
        for txn, op, _ in self.scans:
            for row in op.value:
                if row.key in self.lists:
                    raise InvalidHistory(f"{txn.id}'s scan returns {row.key!r}, a list-append "
                                         "key; scans cover register keys ('w') only")
        return reads

    def _note_write(self, txn: Txn, op: Op, flavour: dict[str, str]) -> None:
        if op.kind not in ("w", "append"):
            raise InvalidHistory(f"{txn.id} has an op of kind {op.kind!r}; use 'r', 'w' or "
                                 "'append'")
        if flavour.setdefault(op.key, op.kind) != op.kind:
            raise InvalidHistory(f"key {op.key!r} is both written ('w') and appended to "
                                 "('append'); use one flavour per key")
        self.wrote[txn.id, op.key] = op.value
        if op.deleted:
            self.deleted.add((txn.id, op.key))
        else:
            self.deleted.discard((txn.id, op.key))
        if op.kind == "append":
            if isinstance(op.value, (list, dict)):
                raise InvalidHistory(f"{txn.id} appends {op.value!r} to {op.key}; list elements "
                                     "are ints or strings")
            if (op.key, op.value) in self.appender:
                raise InvalidHistory(f"{op.value!r} is appended to {op.key!r} twice; list "
                                     "elements must be unique per key")
            self.appender[op.key, op.value] = txn.id
            self.lists.add(op.key)

    def _edge(self, edge: Edge, value: Any = None, read_from: str | None = None,
              predicate: tuple[str, str | None] | None = None) -> None:
        """Stage an edge keyed by (type, key); a wr or rw edge keeps the first value read."""
        src, dst, kind, key = edge
        if (src, dst, (kind, key)) not in self.edges:
            self.edges[src, dst, (kind, key)] = {"type": kind, "key": key} if kind == "ww" else \
                {"type": kind, "key": key, "value": value, "read_from": read_from}
            if predicate is not None:
                self.edges[src, dst, (kind, key)]["predicate"] = predicate

    def is_predicate(self, edge: Edge) -> bool:
        """Whether a cycle edge is a predicate dependency (it exists only because of a scan)."""
        return "predicate" in self.graph.edges[edge[0], edge[1], (edge[2], edge[3])]

    def _predicates(self) -> None:
        """Adya's predicate dependencies of every committed scan, over the keys of its range
        that it did not return (see the module docstring)."""
        keys = sorted(k for k, chain in self.writers.items() if chain and k not in self.lists)
        for reader, scan, own in self.scans:
            span = (scan.key, scan.end)
            seen = {row.key for row in scan.value}
            lo = bisect_left(keys, scan.key)
            hi = len(keys) if scan.end is None else bisect_left(keys, scan.end, lo)
            for key in keys[lo:hi]:
                if key in seen or key in own:
                    continue
                chain = self.writers[key]
                at = self._absent_at(reader, scan, key, chain)
                observed = chain[at] if at >= 0 else None
                if observed is not None and observed != reader.id:
                    self._edge((observed, reader.id, "wr", key), None, observed, span)
                nxt = next((w for w in chain[at + 1:] if (w, key) not in self.deleted), None)
                if nxt is not None and nxt != reader.id:  # the first to make it exist again
                    self._edge((reader.id, nxt, "rw", key), None, observed, span)

    def _absent_at(self, reader: Txn, scan: Op, key: str, chain: list[str]) -> int:
        """Which version of ``key`` a scan that did not return it saw: -1 for the initial
        state, else the index in ``chain`` of the delete that made the key absent (a delete
        of an absent key changes no scan, so it is skipped back over)."""
        where = span_text((scan.key, scan.end))
        gone = [(w, key) in self.deleted for w in chain]
        stamps = [self.history[w].commit_ts for w in chain]
        if scan.version_ts is not None and None not in stamps:
            at = bisect_right(stamps, scan.version_ts) - 1
            if at >= 0 and not gone[at] and chain[at] != reader.id:
                raise InvalidHistory(
                    f"{reader.id} scanned {where} at ts {scan.version_ts} without seeing {key}, "
                    f"but {chain[at]} wrote {key}={_show(self.wrote[chain[at], key])} at ts "
                    f"{stamps[at]}: a scan returns every key of its range in its snapshot")
        else:
            removals = [w for i, w in enumerate(chain) if gone[i] and i and not gone[i - 1]]
            if removals:
                raise InvalidHistory(
                    f"{reader.id} scanned {where} and did not see {key}, which {_and(removals)} "
                    f"deleted: whether it saw the initial state or a delete is ambiguous. Give "
                    f"the scan its snapshot, ['scan', [start, end], rows, {{'ts': 7}}], and the "
                    f"writers their commit_ts")
            at = -1  # never deleted after existing: absent only before its first writer
        while at >= 0 and (at == 0 or gone[at - 1]):
            at -= 1
        return at

    def _chain(self, key: str, chain: list[str]) -> None:
        for a, b in pairwise(chain):
            self._edge((a, b, "ww", key))

    def _committed_writer(self, reader: Txn, op: Op, writer: str) -> bool:
        """Whether ``writer`` committed; if not, the read is G1a."""
        if writer not in self.history:
            raise InvalidHistory(f"{reader.id}'s read of {op.key} names writer {writer!r}, which "
                                 "is not in the history; add it, or use None for the initial state")
        if writer in self.rank:
            return True
        fate = "aborted" if self.history[writer].status == "aborted" else "never committed"
        self._direct("G1a", [reader.id, writer], op.key,
                     f"{reader.id} read {op.key}={_show(op.value)} written by {writer}, which "
                     f"{fate}: {reader.id} saw data that never became part of the database. Every "
                     "level forbids this.")
        return False

    def _direct(self, name: str, txns: list[str], key: str, explanation: str,
                cycle: list[Edge] | None = None) -> None:
        txns = sorted(set(txns), key=_natural)
        self.direct.setdefault((name, key, *txns), Anomaly(name, txns, cycle or [], explanation,
                                                           [key]))

    def _anti(self, reader: str, key: str, value: Any, observed: str | None, chain: list[str],
              at: int) -> None:
        """rw edge from a reader of version ``chain[at]`` to the writer of the next version."""
        if at + 1 < len(chain) and chain[at + 1] != reader:
            self._edge((reader, chain[at + 1], "rw", key), value, observed)

    def _register_key(self, key: str, reads: list[tuple[Txn, Op]]) -> None:
        chain = self.writers.get(key, [])
        position = {t: i for i, t in enumerate(chain)}
        self._chain(key, chain)
        read_then_wrote: dict[int, dict[str, Any]] = defaultdict(dict)
        for reader, op in reads:
            writer = op.writer
            if writer == reader.id:
                continue
            if writer is None:
                at = -1
            elif not self._committed_writer(reader, op, writer):
                continue
            elif (writer, key) not in self.wrote:
                raise InvalidHistory(f"{reader.id}'s read of {key} names writer {writer}, which "
                                     f"never wrote {key}")
            else:
                at = position[writer]
                self._edge((writer, reader.id, "wr", key), op.value, writer)
                if op.value != self.wrote[writer, key]:
                    self._intermediate(reader, op, writer)
            self._anti(reader.id, key, op.value, writer, chain, at)
            if (reader.id, key) in self.wrote:
                read_then_wrote[at].setdefault(reader.id, op.value)
        for at, readers in read_then_wrote.items():
            overwriters = {t: v for t, v in readers.items() if position[t] > at}
            if len(overwriters) > 1:
                self._lost_update(key, chain, position, at, overwriters)

    def _intermediate(self, reader: Txn, op: Op, writer: str) -> None:
        final = self.wrote[writer, op.key]
        if op.key not in self.lists and all(
                w.value != op.value for w in self.history[writer].ops
                if w.key == op.key and w.kind == "w"):
            raise InvalidHistory(f"{reader.id} read {op.key}={op.value!r} from {writer}, but "
                                 f"{writer} never wrote that value to {op.key}")
        later = "appended" if op.key in self.lists else f"overwrote {op.key} with"
        self._direct("G1b", [reader.id, writer], op.key,
                     f"{reader.id} read {op.key}={_show(op.value)} written by {writer}, but "
                     f"{writer} later {later} {_show(final)} before committing: {reader.id} saw a "
                     "state that never existed in the database. Every level forbids this.")

    def _lost_update(self, key: str, chain: list[str], position: dict[str, int], at: int,
                     readers: dict[str, Any]) -> None:
        members = sorted(readers, key=position.__getitem__)
        second = members[1]
        cycle = [(second, chain[at + 1], "rw", key)]
        cycle += [(chain[i], chain[i + 1], "ww", key) for i in range(at + 1, position[second])]
        source = "the initial value" if at < 0 else f"written by {chain[at]}"
        wrote = ", ".join(f"{t}: {key}={_show(self.wrote[t, key])}" for t in members)
        first, last = members[0], members[-1]
        lost = (f"{last} overwrote {key} without having seen {first}'s update, so it is lost"
                if len(members) == 2 else f"each overwrote {key} without having seen the others' "
                f"updates, so only {last}'s survives")
        self.lost.update((t, key) for t in members)
        self._direct("lost-update", members, key,
                     f"{_and(members)} {'both' if len(members) == 2 else 'all'} read "
                     f"{key}={_show(readers[first])} ({source}) and then wrote {key} ({wrote}); "
                     f"{lost}. Snapshot isolation forbids this (first committer wins); read "
                     "committed allows it.", _rotate(cycle))

    def _list_key(self, key: str, reads: list[tuple[Txn, Op]]) -> None:
        whole: list[tuple[Txn, Op, list[Any]]] = []
        for reader, op in reads:
            value = self._list_value(reader, op)
            if len(set(value)) == len(value):
                whole.append((reader, op, value))
            else:
                self._direct("incompatible-order", [reader.id], key,
                             f"{reader.id} read {key}={_show(value)}, in which an element appears "
                             "twice, but every element is appended once. Every level forbids this.")
        longest_reader, _, longest = max(whole, key=lambda r: len(r[2]), default=(None, None, []))
        chain: list[str] = []
        run_at: list[int] = []  # element position -> index in chain of the run it belongs to
        for element in longest:
            writer = self.appender[key, element]
            if writer in self.rank and (not chain or chain[-1] != writer):
                chain.append(writer)
            run_at.append(len(chain) - 1)
        self._chain(key, chain)
        clashes = []
        for reader, op, value in whole:
            seen = len(value)
            while seen and self.appender[key, value[seen - 1]] == reader.id:
                seen -= 1  # the reader's own appends
            writer = self.appender[key, value[seen - 1]] if seen else None
            others = dict.fromkeys(self.appender[key, e] for e in value[:seen])
            if [w for w in others if w != reader.id and not self._committed_writer(reader, op, w)]:
                continue  # read aborted data: G1a
            if writer is not None:
                self._edge((writer, reader.id, "wr", key), value, writer)
                if value[seen - 1] != self.wrote[writer, key]:
                    self._intermediate(reader, op, writer)
            if value[:seen] != longest[:seen]:
                clashes.append((reader.id, value))
            else:
                self._anti(reader.id, key, value, writer, chain, run_at[seen - 1] if seen else -1)
        if clashes and longest_reader is not None:
            (first, value), more = clashes[0], len(clashes) - 1
            self._direct("incompatible-order", [longest_reader.id, *(c[0] for c in clashes)], key,
                         f"{first} read {key}={_show(value)} but {longest_reader.id} read "
                         f"{key}={_show(longest)}: neither list is a prefix of the other, so no "
                         f"single order of appends to {key} explains both"
                         + (f" ({more} more reads of {key} disagree)" if more else "")
                         + ". Every level forbids this.")

    def _list_value(self, reader: Txn, op: Op) -> list[Any]:
        value = [] if op.value is None else op.value
        if not isinstance(value, list):
            raise InvalidHistory(f"{reader.id} read {op.key}={op.value!r}, but {op.key} is a "
                                 "list-append key: its reads return the whole list")
        for element in value:
            if isinstance(element, (list, dict)) or (op.key, element) not in self.appender:
                raise InvalidHistory(f"{reader.id} read {op.key}={value!r}, but no transaction "
                                     f"appends {element!r} to {op.key}")
        return value


def _commit_order(history: History) -> list[Txn]:
    """Committed transactions in version order: by commit_ts if writers have one, else as listed.

    Read-only transactions need no commit_ts (kvlab's skip two-phase commit); they go by start_ts,
    else just after the transaction listed before them.
    """
    committed = history.committed
    stamped = next((t for t in committed if t.commit_ts is not None), None)
    if stamped is None:
        return committed
    when: dict[str, float] = {}
    last = float("-inf")
    for t in committed:
        if t.commit_ts is None and any(op.kind in ("w", "append") for op in t.ops):
            raise InvalidHistory(f"{t.id} writes but has no commit_ts, while {stamped.id} has one; "
                                 "give every committed writer a commit_ts, or give none and list "
                                 "transactions in commit order")
        last = when[t.id] = next((ts for ts in (t.commit_ts, t.start_ts) if ts is not None), last)
    return sorted(committed, key=lambda t: when[t.id])


def _find_cycles(deps: _Dependencies) -> list[tuple[str, list[Edge]]]:
    found = []
    for scc in nx.strongly_connected_components(deps.graph):
        if len(scc) > 1:  # a cycle never leaves its strongly connected component
            found += _classify(scc, deps)
    return found


def _classify(scc: set[str], deps: _Dependencies) -> list[tuple[str, list[Edge]]]:
    """The shortest cycle found of each kind within one strongly connected component.

    Each kind is a candidate edge closed by a path back of some edge types: G0 a ww edge and
    ww edges, G1c a wr edge and ww/wr edges, G-single an rw edge and ww/wr edges, G2-item an rw
    edge and any edges (searched only where no cycle has fewer than two rw edges).
    """
    rank = deps.rank
    nodes = sorted(scc, key=rank.__getitem__)
    edges = sorted(((u, v, *k) for u, v, k in deps.graph.out_edges(nodes, keys=True) if v in scc),
                   key=lambda e: (rank[e[0]], rank[e[1]], e[2], e[3]))
    ww, wwwr = _paths(nodes, edges, {"ww"}), _paths(nodes, edges, {"ww", "wr"})
    found = []
    for name, kind, paths in (("G0", "ww", ww), ("G1c", "wr", wwwr)):
        if cycle := _shortest_cycle(edges, kind, paths, deps)[0]:
            found.append((name, cycle))
    cycle, lost = _shortest_cycle(edges, "rw", wwwr, deps, _not_lost_update)
    if cycle:
        found.append(("G-single", cycle))
    elif not found and not lost:  # every cycle here has two or more rw edges
        every = {"ww", "wr", "rw"}
        items = [e for e in edges if not deps.is_predicate(e)] if deps.has_predicates else edges
        cycle, _ = _shortest_cycle(items, "rw", _paths(nodes, items, every), deps, _items_only)
        if cycle:
            found.append(("G2-item", cycle))
        elif len(items) < len(edges):  # only cycles through a predicate edge: phantoms
            cycle, _ = _shortest_cycle(edges, "rw", _paths(nodes, edges, every), deps)
            if cycle:
                found.append(("G2", cycle))
    return found


def _items_only(cycle: list[Edge], deps: _Dependencies) -> bool:
    return not deps.has_predicates or not any(deps.is_predicate(e) for e in cycle)


def _not_lost_update(cycle: list[Edge], deps: _Dependencies) -> bool:
    """A one-key G-single cycle whose reader lost an update is already reported as lost-update."""
    rw = [e for e in cycle if e[2] == "rw"]
    return len({e[3] for e in cycle}) > 1 or (rw[0][0], rw[0][3]) not in deps.lost


def _shortest_cycle(edges: list[Edge], kind: str, paths: nx.DiGraph, deps: _Dependencies,
                    accept: Callable[[list[Edge], _Dependencies], bool] = lambda c, d: True,
                    ) -> tuple[list[Edge] | None, bool]:
    """The shortest accepted cycle made of one ``kind`` edge and a path back through ``paths``.

    Also says whether some cycle was rejected.  Each candidate costs one breadth-first search.
    Until a cycle is found every candidate is tried, which keeps the verdict exact; after that
    only a bounded number more, hunting a shorter one, so a tangled component costs little
    beyond its size.
    """
    types, position = paths.graph["types"], paths.graph["position"]
    # An edge u -> v closes a cycle only if v reaches u, which needs v's component no later than
    # u's in the topological order; a path from v to u never leaves that window of positions.
    candidates = [e for e in edges if e[2] == kind and position[e[1]] <= position[e[0]]]
    rejected = False
    for e in candidates:  # a 2-cycle cannot be beaten, and finding one costs O(edges)
        for back in sorted(deps.graph[e[1]].get(e[0], ())):
            if back[0] in types:
                if accept([e, (e[1], e[0], *back)], deps):
                    return [e, (e[1], e[0], *back)], rejected
                rejected = True
    best: list[Edge] | None = None
    tries = 0
    for e in candidates:
        if best is not None and (len(best) == 3 or tries == _MORE_STARTS):
            break
        tries += best is not None
        path = _path(paths, e[1], e[0], None if best is None else len(best) - 2)
        if path is None:
            continue
        cycle = [e, *path]
        if not accept(cycle, deps):
            rejected = True
        elif best is None or len(cycle) < len(best):
            best = cycle
    return best, rejected


def _path(paths: nx.DiGraph, start: str, goal: str, limit: int | None) -> list[Edge] | None:
    """Shortest path of at most ``limit`` edges, in networkx's breadth-first order.

    It only visits nodes no later than ``goal``'s component (the only ones that can lie on a
    path to it); nx.shortest_path would search every node, with no depth limit.
    """
    position = paths.graph["position"]
    last = position[goal]
    parent = {}
    for a, b in nx.generic_bfs_edges(paths, start, lambda x: (y for y in paths.adj[x]
                                                              if position[y] <= last), limit):
        parent[b] = a
        if b == goal:
            path = []
            while b != start:
                path.append(paths.edges[parent[b], b]["edge"])
                b = parent[b]
            return path[::-1]
    return None


def _paths(nodes: list[str], edges: list[Edge], types: set[str]) -> nx.DiGraph:
    """The ``types`` edges as a DiGraph to search, with graph attributes ``types`` and
    ``position``: each node's strongly connected component's place in a topological order.

    Neighbours are in commit order and the first of parallel edges (as sorted) is kept, so
    ties between equally short paths break the same way every run.  The topological order
    stays close to commit order, which keeps the window each search explores small.
    """
    paths = nx.DiGraph(types=types)
    paths.add_nodes_from(nodes)
    for e in edges:
        if e[2] in types and not paths.has_edge(e[0], e[1]):
            paths.add_edge(e[0], e[1], edge=e)
    dag = nx.condensation(paths)
    component = dag.graph["mapping"]
    first: dict[int, int] = {}
    for i, n in enumerate(nodes):
        first.setdefault(component[n], i)
    order = nx.lexicographical_topological_sort(dag, key=first.__getitem__)
    position = {c: i for i, c in enumerate(order)}
    paths.graph["position"] = {n: position[component[n]] for n in nodes}
    return paths


def _cycle_anomaly(name: str, cycle: list[Edge], deps: _Dependencies) -> Anomaly:
    cycle = _rotate(cycle)
    txns = sorted({e[0] for e in cycle}, key=_natural)
    steps = "; ".join(_because(e, deps) for e in cycle)
    return Anomaly(name, txns, cycle,
                   f"{steps}. Following the cycle, {cycle[0][0]} must come before itself, so no "
                   f"serial order of {_and(txns)} exists. {_WHY[name]}",
                   sorted({e[3] for e in cycle}, key=_natural))


def _because(edge: Edge, deps: _Dependencies) -> str:
    """Why one edge forces its order, in words."""
    a, b, kind, key = edge
    listy = key in deps.lists
    if kind == "ww":
        if listy:
            return (f"{b} appended {_show(deps.wrote[b, key])} to {key} after {a} appended "
                    f"{_show(deps.wrote[a, key])}, so {a} comes before {b}")
        return (f"{b} overwrote {key}={_show(deps.wrote[a, key])} (written by {a}) with "
                f"{key}={_show(deps.wrote[b, key])}, so {a} comes before {b}")
    data = deps.graph.edges[a, b, (kind, key)]
    value, observed = data["value"], data["read_from"]
    if "predicate" in data:
        where = span_text(data["predicate"])
        if kind == "wr":
            return (f"{b} scanned {where} and did not see {key}, which {a} had deleted, so {a} "
                    f"comes before {b}")
        return (f"{a} scanned {where} and missed {b}'s insert {key}="
                f"{_show(deps.wrote[b, key])} (a phantom), so {a} comes before {b}")
    if kind == "wr":
        return f"{b} read {key}={_show(value)} written by {a}, so {a} comes before {b}"
    source = "the initial value" if observed is None else f"written by {observed}"
    missed = f"append of {_show(deps.wrote[b, key])}" if listy else \
        f"write {key}={_show(deps.wrote[b, key])}"
    return f"{a} read {key}={_show(value)} ({source}) and missed {b}'s {missed}, so {a} comes " \
        f"before {b}"


def _rotate(cycle: list[Edge]) -> list[Edge]:
    """Start at the smallest transaction id, so equal cycles print equally."""
    start = min(range(len(cycle)), key=lambda i: _natural(cycle[i][0]))
    return cycle[start:] + cycle[:start]


def _natural(text: str) -> tuple[Any, ...]:
    """Sort key putting T2 before T10."""
    return tuple(int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", text)))


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"


def _arrows(cycle: list[Edge]) -> str:
    if not cycle:
        return ""
    return cycle[0][0] + "".join(f" -{kind}({key})-> {dst}" for _, dst, kind, key in cycle)


def _md(text: str) -> str:
    for char in "\\|*_`<>":
        text = text.replace(char, "\\" + char)
    return text
