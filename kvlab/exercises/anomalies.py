"""Chapter 3 (conflicts and anomalies): the exercise checks.

:func:`check_write_skew` takes a hand-written plain history (the list-of-dicts format of
:mod:`kvlab.checker`) and says whether it shows write skew: the checker must report G2-item at
``serializable`` while finding nothing that snapshot isolation forbids.

:func:`check_booking` takes a learner's ``book(node, tx, room, who)`` and runs it on fresh
clusters: alone, after another booking, and racing another booking at ``serializable`` (and,
to show why that matters, at ``snapshot``). A room holds one booking, a key under
``f"{room}/"``; only a scan of that prefix sees a booking another transaction inserts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvlab.checker import check
from kvlab.cluster import Cluster
from kvlab.errors import KvlabError, TransactionClosed
from kvlab.exercises import Feedback, correct, not_yet
from kvlab.mvcc import prefix_end
from kvlab.viz.depgraph import cycle_text

ROOM = "room101"
NODES = ["n1", "n2", "n3"]

_FORMAT = ("[{'id': 'T1', 'ops': [['w', 'x', 1]]}, {'id': 'T2', 'ops': [['r', 'x', 1]]}]: "
           "one dict per committed transaction, listed in commit order")


def _names(anomalies: list[Any]) -> list[str]:
    return sorted({a.name for a in anomalies})


def check_write_skew(history: Any) -> Feedback:
    """Does ``history`` show write skew (allowed under snapshot, forbidden under serializable)?"""
    if history is None:
        return not_yet("replace `answer = None` with a plain history, a list of dicts such as "
                       f"{_FORMAT}. Model the two doctors: each transaction reads both keys "
                       "and writes one of them.")
    try:
        ser = check(history, "serializable")
        si = check(history, "snapshot")
    except KvlabError as e:
        return not_yet(f"the checker cannot read that history: {e}")
    if not si.ok:
        names = _names(si.anomalies)
        hint = ""
        if "lost-update" in names:
            hint = (" Two transactions wrote the same key after reading the same version: first "
                    "committer wins would abort one of them. In write skew each transaction "
                    "writes a different key.")
        elif "G-single" in names:
            hint = (" A transaction saw part of another's writes and missed the rest; a snapshot "
                    "never does that. In write skew both transactions read from the same "
                    "snapshot, before either wrote.")
        return not_yet(f"snapshot isolation already forbids this history (the checker finds "
                       f"{', '.join(names)}), so it is not write skew: write skew is what "
                       f"snapshot isolation lets through.{hint}")
    found = [a for a in ser.anomalies if a.name == "G2-item"]
    if found:
        a = found[0]
        return correct(f"snapshot isolation allows this history, serializable forbids it: the "
                       f"checker finds G2-item ({cycle_text(a.cycle)}), a cycle of "
                       f"anti-dependencies. That is write skew.")
    committed = sum(1 for t in ser.graph.nodes)
    if committed < 2:
        return not_yet("write skew needs at least two committed transactions that run "
                       "concurrently; your history has fewer.")
    return not_yet("the checker finds nothing non-serializable: some serial order explains every "
                   "read. For write skew, each of two transactions must read the key the other "
                   "one writes and see the value from *before* that write (the initial value), "
                   "so each one misses the other's update. Give every write a new value.")


class _Failed(Exception):
    """The learner's function raised: carry its message out of the run."""


def _bookings(c: Cluster, room: str) -> list[str]:
    n3 = c["n3"]
    t = n3.begin()
    keys = [k for k, _ in n3.scan(t, prefix=f"{room}/")]
    n3.commit(t)
    return keys


def _book(book: Callable[..., Any], c: Cluster, node: str, level: str, who: str) -> str:
    n = c[node]
    tx = n.begin(level)
    try:
        book(n, tx, ROOM, who)
    except TransactionClosed as e:
        raise _Failed(f"book() ended the transaction itself ({e}); leave the commit to the "
                      f"caller: book() only reads and writes") from None
    except Exception as e:  # a learner's bug: report it, don't crash the notebook
        raise _Failed(f"book(node, tx, {ROOM!r}, {who!r}) raised {type(e).__name__}: {e}") \
            from None
    return tx


def _commit(c: Cluster, node: str, tx: str) -> bool:
    try:
        return c[node].commit(tx)
    except TransactionClosed:
        raise _Failed("book() ended the transaction itself; leave the commit to the caller: "
                      "book() only reads and writes") from None


def _race(book: Callable[..., Any], level: str) -> tuple[Cluster, list[str], list[bool]]:
    """Alice on n1 and Bob on n2 book concurrently: both read before either commits."""
    c = Cluster(NODES, seed=0)
    txs = [_book(book, c, "n1", level, "alice"), _book(book, c, "n2", level, "bob")]
    done = [_commit(c, "n1", txs[0]), _commit(c, "n2", txs[1])]
    return c, txs, done


def _covers(op: Any, room: str) -> bool:
    start, end = f"{room}/", prefix_end(f"{room}/")
    return op.key <= start and (op.end is None or (end is not None and op.end >= end))


def check_booking(book: Callable[..., Any] | None) -> Feedback:
    """Does ``book(node, tx, room, who)`` keep every room to one booking, even when two
    bookings race at serializable? It must find the room's bookings with a scan."""
    if book is None:
        return not_yet("replace `book = None` with a function book(node, tx, room, who) that "
                       "books the room for who, by putting the key f'{room}/{who}', but only "
                       "if the room has no booking yet (no key under f'{room}/')")
    if not callable(book):
        return not_yet(f"book must be a function book(node, tx, room, who), got "
                       f"{type(book).__name__}")
    try:
        c = Cluster(NODES, seed=0)
        first = _book(book, c, "n1", "serializable", "alice")
        if not _commit(c, "n1", first):
            return not_yet(f"alone, alice's booking did not commit: {c['n1'].outcome(first)}")
        written = [op.key for op in c.history[first].writes]
        alone = _bookings(c, ROOM)
        if alone != [f"{ROOM}/alice"]:
            where = f" (it wrote {written})" if written else ""
            return not_yet(f"with the room free, book() must add the booking "
                           f"f'{{room}}/{{who}}', here {ROOM + '/alice'!r}; the room's "
                           f"bookings are now {alone}{where}")
        second = _book(book, c, "n2", "serializable", "bob")
        _commit(c, "n2", second)
        if len(_bookings(c, ROOM)) > 1:
            return not_yet(f"bob booked {ROOM} although alice already had it: look for "
                           f"existing bookings first, with node.scan(tx, prefix=f'{{room}}/'), "
                           f"and write only if it returns nothing")
        scans = [op for t in (first, second) for op in c.history[t].scans]
        if not any(_covers(op, ROOM) for op in scans):
            return not_yet("it keeps one booking when they come one at a time, but without a "
                           "scan of the room's prefix (node.scan(tx, prefix=f'{room}/')) it "
                           "cannot see a booking another transaction inserts. (Writing one "
                           "shared key per room works too, by making the bookings conflict on "
                           "it; here, let the scan find them.)")
        race, txs, done = _race(book, "serializable")
        if all(done) and len(_bookings(race, ROOM)) > 1:
            return not_yet("racing at serializable, both bookings committed: each scan must "
                           "cover every possible booking of the room, the whole prefix "
                           "f'{room}/', so the one that commits second meets a phantom")
        loser = txs[done.index(False)] if False in done else None
        why = race[("n1", "n2")[txs.index(loser)]].outcome(loser).reason if loser else ""
        si, _, si_done = _race(book, "snapshot")
    except _Failed as e:
        return not_yet(str(e))
    double = len(_bookings(si, ROOM))
    at_si = (f"at snapshot isolation the same race commits both and the room has {double} "
             f"bookings: predicate write skew" if all(si_done) and double > 1 else
             "at snapshot isolation the race ends the same way here")
    return correct(f"one booking per room, also when two race at serializable: the second to "
                   f"commit is refused ({why or 'it aborted'}). And {at_si}, which only the "
                   f"serializable range validation and range lock stop.")


__all__ = ["check_write_skew", "check_booking"]
