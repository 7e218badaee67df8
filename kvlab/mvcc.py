"""One node's multi-version store: version chains, prepared locks, snapshot reads, GC.

Every committed write adds a :class:`Version` to its key's chain, stamped with the writer's commit
timestamp; nothing is overwritten in place. A reader with snapshot ``ts`` sees the newest version
with ``commit_ts <= ts``, so readers never block writers and never see half a transaction.

The one place a reader must wait: a key locked by a *prepared* transaction whose commit timestamp
is not known yet. If that transaction started before the reader's snapshot, it may still commit
below it, so the reader cannot know which version is the right one until the outcome arrives.

Range reads: the store keeps its keys in a sorted list (``bisect`` over a plain list; measured
against ``sortedcontainers.SortedList`` in :mod:`kvlab.bench_scan`: scans and copies are several
times faster, inserts as fast up to tens of thousands of keys, and it needs no dependency), so
:meth:`Store.scan` finds a range ``start <= key < end`` by two binary searches. A serializable
transaction's scanned ranges are validated at PREPARE like its point reads, and a *range lock*
holds each one until the decision: it stops a writer of any key inside it, including a key that
does not exist yet (a phantom insert), because the lock is on the range, not on keys found.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kvlab.messages import freeze

Span = tuple[str, "str | None"]  # a key range: start <= key < end; end None = no upper bound

_MAX_CHAR = chr(0x10FFFF)


def prefix_end(prefix: str) -> str | None:
    """The exclusive end of the range of keys that start with ``prefix`` (None: no end).

    The smallest string greater than every string with that prefix: drop trailing U+10FFFF
    characters (nothing sorts after them) and increment the last character left."""
    p = prefix.rstrip(_MAX_CHAR)
    return p[:-1] + chr(ord(p[-1]) + 1) if p else None


def in_span(key: str, span: Span) -> bool:
    start, end = span
    return start <= key and (end is None or key < end)


def span_text(span: Sequence[Any]) -> str:
    """A key range in words, for conflict reasons and the checker's explanations."""
    start, end = span[0] or "", span[1]
    if not start and end is None:
        return "every key"
    if end is None:
        return f"keys >= {start!r}"
    if not start:
        return f"keys < {end!r}"
    return f"keys in [{start!r}, {end!r})"


@dataclass(slots=True)
class Version:
    commit_ts: int
    value: Any
    writer: str
    deleted: bool = False


@dataclass(slots=True)
class Lock:
    """A prepared transaction's claim on a key, held from PREPARE until COMMIT/ABORT."""

    tx: str
    start_ts: int
    mode: str = "write"  # "write" (exclusive) or "read" (serializable read validation)
    # its commit timestamp will be above this (fast reads; see Store.seen); left out of the
    # repr so every view stays as it was with the switch off
    floor: int = field(default=0, repr=False)


@dataclass(slots=True)
class Conflict:
    """Why a transaction cannot prepare: which key, which other transaction, and how."""

    key: str
    other: str
    how: str  # "committed" (a newer version exists), "locked", "read-locked", "stale-read",
    # and for scanned ranges "phantom", "stale-scan", "range-locked"
    other_ts: int | None = None
    span: Span | None = None  # the scanned range involved (scans only)

    def __str__(self) -> str:
        if self.how == "phantom":
            return (f"scan of {span_text(self.span)} is stale: {self.other} inserted "
                    f"{self.key!r} at ts {self.other_ts}, after this transaction's snapshot (a "
                    f"phantom; serializable validation)")
        if self.how == "stale-scan":
            return (f"scan of {span_text(self.span)} is stale: {self.other} changed "
                    f"{self.key!r} at ts {self.other_ts}, after this transaction's snapshot "
                    f"(serializable validation)")
        if self.how == "range-locked":
            return (f"key {self.key!r} is in the range ({span_text(self.span)}) scanned by "
                    f"prepared serializable transaction {self.other}; writing it now could "
                    f"break serializability (a phantom)")
        if self.how == "committed":
            return (f"write-write conflict on key {self.key!r}: {self.other} committed a newer "
                    f"version at ts {self.other_ts} (first committer wins)")
        if self.how == "locked" and self.span is not None:
            return (f"key {self.key!r}, in the range scanned ({span_text(self.span)}), is "
                    f"locked by prepared transaction {self.other}")
        if self.how == "locked":
            return f"key {self.key!r} is locked by prepared transaction {self.other}"
        if self.how == "read-locked":
            return (f"key {self.key!r} was read by prepared serializable transaction "
                    f"{self.other}; writing it now could break serializability")
        return (f"read of {self.key!r} is stale: {self.other} committed a newer version at ts "
                f"{self.other_ts} after this transaction's snapshot (serializable validation)")


class Store:
    """Version chains and locks of one node. Pure data structure: no I/O, no clock."""

    def __init__(self) -> None:
        self.chains: dict[str, list[Version]] = {}
        self._ts_index: dict[str, list[int]] = {}  # commit timestamps per key, for bisect
        self.write_locks: dict[str, Lock] = {}
        self.read_locks: dict[str, dict[str, Lock]] = {}
        self.range_locks: dict[str, tuple[Span, ...]] = {}  # tx -> ranges it scanned
        self.watermark = 0  # versions below it, except the newest, have been collected
        # Fast reads (Cluster(fast_reads=True)): the newest timestamp this node knows the
        # oracle issued. A transaction that prepares now gets its commit timestamp later (the
        # coordinator asks for it only after every vote), so it commits above ``seen``: a read
        # at ts <= seen can never see it and need not wait for its lock. 0: the switch is off.
        self.seen = 0
        self._fp: tuple | None = None  # fingerprint cache (kvlab.explore), reset on change
        self._collectable: dict[str, None] = {}  # keys with more than one version
        self._keys: list[str] = []  # every key of chains, sorted (derived from chains)

    # -- reads ---------------------------------------------------------------------------
    def visible(self, key: str, ts: int) -> Version | None:
        """The version a snapshot at ``ts`` sees (tombstones included), ignoring locks."""
        stamps = self._ts_index.get(key)
        if not stamps:
            return None
        i = bisect_right(stamps, ts)
        return self.chains[key][i - 1] if i else None

    def blocker(self, key: str, ts: int, tx: str | None = None) -> Lock | None:
        """The prepared write a read at ``ts`` must wait for, if any."""
        lock = self.write_locks.get(key)
        if lock is not None and lock.tx != tx and lock.start_ts < ts and lock.floor < ts:
            return lock
        return None

    def latest(self, key: str) -> Version | None:
        chain = self.chains.get(key)
        return chain[-1] if chain else None

    def keys_in(self, span: Span) -> list[str]:
        """Every key with versions here in ``span``, in order (tombstoned keys too)."""
        keys = self._keys
        i = bisect_left(keys, span[0])
        return keys[i:] if span[1] is None else keys[i:bisect_left(keys, span[1], i)]

    def scan(self, span: Span, ts: int) -> list[tuple[str, Version]]:
        """The live versions a snapshot at ``ts`` sees in ``span``, in key order, ignoring
        locks (see :meth:`scan_blocker`): tombstones are left out."""
        out = []
        append, chains, index = out.append, self.chains, self._ts_index
        for key in self.keys_in(span):
            stamps = index[key]
            if stamps and stamps[-1] <= ts:  # the usual case: the newest version is visible
                v = chains[key][-1]
            else:
                i = bisect_right(stamps, ts)
                if not i:
                    continue
                v = chains[key][i - 1]
            if not v.deleted:
                append((key, v))
        return out

    def scan_blocker(self, span: Span, ts: int, tx: str | None = None) -> tuple[str, Lock] | None:
        """The prepared write in ``span`` a scan at ``ts`` must wait for, if any: as for a
        read, one that may still commit below the snapshot. Locked keys are searched, not
        stored keys, so a prepared insert of a key that has no version yet counts too."""
        for key in sorted(self.write_locks):
            lock = self.write_locks[key]
            if lock.tx != tx and lock.start_ts < ts and lock.floor < ts and in_span(key, span):
                return key, lock
        return None

    # -- prepare / commit ----------------------------------------------------------------
    def conflicts(self, tx: str, start_ts: int, writes: list[str], reads: Sequence[str] = (),
                  check_committed: bool = True, ranges: Sequence[Span] = ()) -> list[Conflict]:
        """First-committer-wins (and, for serializable, read validation) checks at PREPARE.

        ``check_committed=False`` (read committed) skips first-committer-wins: a later writer
        simply overwrites, as PostgreSQL does at that level. Locks always conflict (no waiting).
        ``ranges`` (serializable scans) are validated like reads, over every key in them: no
        version newer than the snapshot (a phantom if the key is new), no prepared writer.
        """
        found: list[Conflict] = []
        for key in writes:
            v = self.latest(key)
            if check_committed and v is not None and v.commit_ts > start_ts and v.writer != tx:
                found.append(Conflict(key, v.writer, "committed", v.commit_ts))
                continue
            lock = self.write_locks.get(key)
            if lock is not None and lock.tx != tx:
                found.append(Conflict(key, lock.tx, "locked"))
                continue
            readers = [t for t in self.read_locks.get(key, {}) if t != tx]
            if readers:
                found.append(Conflict(key, sorted(readers)[0], "read-locked"))
                continue
            scanner = self._range_holder(key, tx)
            if scanner is not None:
                found.append(Conflict(key, scanner[0], "range-locked", span=scanner[1]))
        for key in reads:
            v = self.latest(key)
            if v is not None and v.commit_ts > start_ts and v.writer != tx:
                found.append(Conflict(key, v.writer, "stale-read", v.commit_ts))
                continue
            lock = self.write_locks.get(key)
            if lock is not None and lock.tx != tx:
                found.append(Conflict(key, lock.tx, "locked"))
        for span in ranges:
            found += self._stale_range(tx, start_ts, tuple(span))
        return found

    def _range_holder(self, key: str, tx: str) -> tuple[str, Span] | None:
        """The first other transaction (by id) whose range lock covers ``key``."""
        for holder in sorted(self.range_locks):
            if holder != tx:
                for span in self.range_locks[holder]:
                    if in_span(key, span):
                        return holder, span
        return None

    def _stale_range(self, tx: str, start_ts: int, span: Span) -> list[Conflict]:
        for key in self.keys_in(span):
            v = self.latest(key)
            if v is not None and v.commit_ts > start_ts and v.writer != tx:
                before = self.visible(key, start_ts)
                how = "phantom" if (before is None or before.deleted) and not v.deleted \
                    else "stale-scan"
                return [Conflict(key, v.writer, how, v.commit_ts, span)]
        for key in sorted(self.write_locks):  # a prepared insert has no version here yet
            lock = self.write_locks[key]
            if lock.tx != tx and in_span(key, span):
                return [Conflict(key, lock.tx, "locked", span=span)]
        return []

    def lock(self, tx: str, start_ts: int, writes: list[str], reads: Sequence[str] = (),
             ranges: Sequence[Span] = ()) -> None:
        self._fp = None
        floor = self.seen
        for key in writes:
            self.write_locks[key] = Lock(tx, start_ts, "write", floor)
        for key in reads:
            self.read_locks.setdefault(key, {})[tx] = Lock(tx, start_ts, "read")
        if ranges:
            self.range_locks[tx] = tuple((s, e) for s, e in ranges)

    def unlock(self, tx: str, writes: list[str], reads: Sequence[str] = ()) -> None:
        """Release ``tx``'s locks on these keys, and every range lock it holds."""
        self._fp = None
        self.range_locks.pop(tx, None)
        for key in writes:
            lock = self.write_locks.get(key)
            if lock is not None and lock.tx == tx:
                del self.write_locks[key]
        for key in reads:
            holders = self.read_locks.get(key)
            if holders is not None:
                holders.pop(tx, None)
                if not holders:
                    del self.read_locks[key]

    def apply(self, tx: str, commit_ts: int, writes: dict[str, tuple[Any, bool]]) -> None:
        """Install a committed transaction's writes as new versions (idempotent on replay)."""
        self._fp = None
        for key, (value, deleted) in writes.items():
            chain = self.chains.get(key)
            if chain is None:
                chain = self.chains[key] = []
                insort(self._keys, key)
            stamps = self._ts_index.setdefault(key, [])
            if stamps and stamps[-1] >= commit_ts:
                if any(v.writer == tx for v in chain):
                    continue  # already applied (replay of a checkpointed commit)
                i = bisect_right(stamps, commit_ts)
                chain.insert(i, Version(commit_ts, value, tx, deleted))
                stamps.insert(i, commit_ts)
            else:
                chain.append(Version(commit_ts, value, tx, deleted))
                stamps.append(commit_ts)
            if len(chain) > 1:
                self._collectable[key] = None

    # -- garbage collection ---------------------------------------------------------------
    def gc(self, watermark: int) -> int:
        """Drop versions no snapshot at or above ``watermark`` can see; return how many.

        The newest version of a key always stays, a tombstone too: it is one small version
        per deleted key, and it lets a later read name the transaction that deleted the key
        (a read of a key that never existed and of a collected delete must not look alike
        in the history the checker reads)."""
        if watermark <= self.watermark:
            return 0
        self.watermark = watermark
        self._fp = None
        removed = 0
        for key in list(self._collectable):
            stamps = self._ts_index[key]
            i = bisect_right(stamps, watermark)  # chain[i-1] is what the oldest snapshot sees
            chain = self.chains[key]
            drop = i - 1
            if drop > 0:
                removed += drop
                del chain[:drop]
                del stamps[:drop]
            if len(chain) <= 1:
                del self._collectable[key]
        return removed

    def lose_latest(self, key: str) -> Version:
        """Fault injection for lessons: forget the newest version of ``key`` here, as a replica
        with a faulty disk would. Never called by the protocol; the audit must notice it."""
        self._fp = None
        self._ts_index[key].pop()
        return self.chains[key].pop()

    # -- snapshots for kvlab.explore ------------------------------------------------------
    def clone(self) -> Store:
        """An independent copy (versions and locks are never mutated, so they are shared)."""
        s = Store.__new__(Store)
        s.chains = {k: list(c) for k, c in self.chains.items()}
        s._ts_index = {k: list(t) for k, t in self._ts_index.items()}
        s.write_locks = dict(self.write_locks)
        s.read_locks = {k: dict(h) for k, h in self.read_locks.items()}
        s.range_locks = dict(self.range_locks)  # tuples of spans: immutable, shared
        s.watermark = self.watermark
        s.seen = self.seen
        s._collectable = dict(self._collectable)
        s._keys = list(self._keys)
        s._fp = self._fp
        return s

    def fingerprint(self) -> tuple:
        """Everything here that can influence the future (see kvlab.explore)."""
        if self._fp is None:
            self._fp = self._fingerprint()
        return self._fp

    def _fingerprint(self) -> tuple:
        return (
            tuple(sorted((k, tuple((v.commit_ts, freeze(v.value), v.writer, v.deleted)
                                   for v in c)) for k, c in self.chains.items())),
            tuple(sorted((k, lk.tx, lk.start_ts, lk.floor)
                         for k, lk in self.write_locks.items())),
            tuple(sorted((k, tuple(sorted(h))) for k, h in self.read_locks.items())),
            tuple(sorted(self.range_locks.items())),
            self.watermark, self.seen)  # _keys is derived from chains, which the first part covers

    # -- inspection and checkpoints ------------------------------------------------------
    def version_count(self) -> int:
        return sum(len(c) for c in self.chains.values())

    def dump(self) -> dict[str, list[list[Any]]]:
        return {k: [[v.commit_ts, v.value, v.writer, v.deleted] for v in chain]
                for k, chain in self.chains.items()}

    def load(self, data: dict[str, list[list[Any]]]) -> None:
        self._fp = None
        for key, rows in data.items():
            self.chains[key] = [Version(ts, val, w, bool(d)) for ts, val, w, d in rows]
            self._ts_index[key] = [row[0] for row in rows]
            if len(rows) > 1:
                self._collectable[key] = None
        self._keys = sorted(self.chains)
