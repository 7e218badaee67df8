"""Chapter 4 (two-phase commit): choose a delivery order and see what it does to a race.

The exercise: two transactions write the same key and start committing at the same moment.
:func:`race` builds that cluster; its six PREPAREs are in ``c.pending()``. Find an order of
deliveries that makes **both** transactions abort. :func:`check_both_abort` replays the order on
a fresh, identical cluster (same seed, so the same message ids), runs it to the end and says
what happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_yet

NODES = ["n1", "n2", "n3"]


def race(seed: int = 0) -> tuple[Cluster, str, str]:
    """A fresh cluster where T1 (begun on n1) and T2 (begun on n2) both write ``x`` and have
    both called ``commit_async``: every PREPARE of both is in flight. Returns (cluster, t1, t2).
    """
    c = Cluster(NODES, seed=seed)
    n1, n2 = c["n1"], c["n2"]
    t1 = n1.begin()
    n1.put(t1, "x", "from T1")
    t2 = n2.begin()
    n2.put(t2, "x", "from T2")
    n1.commit_async(t1)
    n2.commit_async(t2)
    return c, t1, t2


def _ids(order: Any) -> list[int] | str:
    """The message ids of ``order``, or a message saying what is wrong with it."""
    if order is None:
        return ("set `order` to a list of message ids taken from c.pending(), e.g. [5, 8]; "
                "they are delivered in that order, then the cluster runs to the end")
    if isinstance(order, (str, bytes)) or not isinstance(order, Iterable):
        return f"`order` should be a list of message ids like [5, 8], not {order!r}"
    ids = []
    for item in order:
        msg_id = getattr(item, "id", item)  # an Envelope from c.pending() is fine too
        if isinstance(msg_id, bool) or not isinstance(msg_id, int):
            return f"{item!r} is not a message id: use the numbers after '#' in c.pending()"
        ids.append(msg_id)
    return ids


def replay(order: Iterable[int], seed: int = 0) -> tuple[Cluster, str, str]:
    """Deliver ``order`` on a fresh :func:`race` cluster, then run it until quiet."""
    c, t1, t2 = race(seed)
    for msg_id in order:
        c.deliver(msg_id)
    c.run()
    return c, t1, t2


def check_both_abort(order: Any) -> Feedback:
    """Correct if delivering ``order`` (then running to the end) makes both T1 and T2 abort."""
    ids = _ids(order)
    if isinstance(ids, str):
        return not_yet(ids)
    if len(set(ids)) != len(ids):
        return not_yet("a message can be delivered only once: your order repeats an id")
    c, t1, t2 = race()
    for i, msg_id in enumerate(ids):
        if msg_id not in {e.id for e in c.pending()}:
            return not_yet(
                f"message #{msg_id} (position {i} of your order) is not in flight at that "
                f"point: it was already delivered, or it has not been sent yet. Start from "
                f"the ids in c.pending() of a fresh race()")
        c.deliver(msg_id)
    c.run()
    out1, out2 = c["n1"].outcome(t1), c["n2"].outcome(t2)
    if not out1.committed and not out2.committed:
        return correct(
            f"both aborted. {out1}. {out2}. Each transaction locked x on some node before the "
            f"other's PREPARE got there, and a PREPARE that meets a lock votes no at once "
            f"(it never waits), so each one got a NO vote and neither could commit.")
    winner, loser = (out1, out2) if out1.committed else (out2, out1)
    return not_yet(
        f"{winner.tx} committed (every node voted yes for it) and {loser}. Look at which "
        f"transaction's PREPARE each node receives first, and what a node does with a "
        f"PREPARE for x while another transaction holds x's lock.")


def step_line(events: Iterable[Any]) -> str:
    """One short line for the events of one ``cluster.step()``: the time and node, then what
    happened, in order (``events.text()`` has the full trace lines)."""
    events = [e for e in events if e.kind != "timer"]
    if not events:
        return "(nothing)"
    parts: list[str] = []
    sends: dict[str, list[str]] = {}
    for e in events:
        d = e.data
        if e.kind == "send":
            if d["kind"] not in sends:
                sends[d["kind"]] = []
                parts.append(f"send {d['kind']}")
            sends[d["kind"]].append(str(d["dst"]))
            continue
        if e.kind in ("deliver", "drop"):
            parts.append(f"{e.kind} {d['kind']} {d['src']}->{d['dst']}")
        elif e.kind == "wal":
            parts.append(f"log {d['type']}" + (" [force]" if d.get("force") else ""))
        elif e.kind == "flush":
            parts.append("flush (fsync)")
        elif e.kind == "state" and "new" in d:
            parts.append(f"{d['role']} {d['event']}: {d['old']}→{d['new']}")
        elif e.kind == "state":
            parts.append(str(d["event"]))
        else:
            parts.append(e.kind)
    parts = [f"{p}→{','.join(sends[p[5:]])}" if p.startswith("send ") and p[5:] in sends
             else p for p in parts]
    first = events[0]
    return f"t={first.time:<3} {first.node}: " + " · ".join(parts)


__all__ = ["race", "replay", "check_both_abort", "step_line"]
