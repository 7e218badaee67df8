"""What non-blocking commit costs: messages, forced writes and latency per commit protocol.

``commit_costs()`` runs the same transaction (one write, replicated on every node, committed
from n1) under each protocol on a fault-free simulated cluster and counts what the trace shows:
messages between nodes (and to the timestamp oracle), messages a node sends itself (the
coordinator is also a participant), forced log records, fsyncs, and the simulated ticks from
``commit_async`` to the client's answer. ``python -m kvlab.bench`` prints the table; chapter 9
sets it next to Gray and Lamport's analysis.

Gray and Lamport (*Consensus on Transaction Commit*, TODS 2006, Table 1) count, for N
participants and F tolerated faults, with the coordinator on one participant's machine and the
client's request and the final outcome messages left out: two-phase commit 4 message delays,
3N - 1 messages, 2 stable-storage write delays, N + 1 writes; Paxos Commit 5 message delays,
(N + 1)(F + 3) - 4 messages, 2 write delays, N + F + 1 writes. kvlab's counts include the
timestamp oracle's round trip and the acks, so compare how the columns grow, not the numbers.
"""

from __future__ import annotations

from typing import Any

from kvlab.cluster import Cluster
from kvlab.messages import TSO
from kvlab.node import COMMIT_PROTOCOLS


def _gray_lamport(protocol: str, n: int, f: int) -> dict[str, int] | None:
    if protocol == "2pc":
        return {"delays": 4, "messages": 3 * n - 1, "writes": n + 1}
    if protocol == "paxos":
        return {"delays": 5, "messages": (n + 1) * (f + 3) - 4, "writes": n + f + 1}
    return None  # cooperative termination costs nothing until something fails


def commit_costs(protocols: tuple[str, ...] = COMMIT_PROTOCOLS, nodes: int = 3,
                 paxos_f: int = 1) -> list[dict[str, Any]]:
    """One row per protocol: the fault-free cost of one replicated commit."""
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    rows = []
    for protocol in protocols:
        c = Cluster(ids, seed=0, commit_protocol=protocol, paxos_f=paxos_f)
        n1 = c["n1"]
        tx = n1.begin()
        n1.put(tx, "x", 1)
        start, t0 = len(c.trace), c.now
        h = n1.commit_async(tx)
        while not h.done and c._step():
            pass
        latency = c.now - t0
        c.run()
        sends = [e for e in c.trace[start:] if e.kind == "send"]
        row: dict[str, Any] = {
            "protocol": protocol,
            "committed": h.committed,
            "messages": sum(1 for e in sends if e.data["src"] != e.data["dst"]
                            and TSO not in (e.data["src"], e.data["dst"])),
            "oracle": sum(1 for e in sends if TSO in (e.data["src"], e.data["dst"])),
            "to_self": sum(1 for e in sends if e.data["src"] == e.data["dst"]),
            "forced": sum(1 for e in c.trace[start:] if e.kind == "wal" and e.data["force"]),
            "fsyncs": sum(1 for e in c.trace[start:] if e.kind == "flush"),
            "latency": latency,
            "gray_lamport": _gray_lamport(protocol, nodes, paxos_f),
        }
        rows.append(row)
        c.close()
    return rows


def report(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as text lines for ``python -m kvlab.bench``."""
    lines = ["protocol      messages  +oracle  +to-self  forced  fsyncs  ticks to answer   "
             "Gray & Lamport (delays, messages, writes)"]
    for r in rows:
        gl = r["gray_lamport"]
        ref = (f"{gl['delays']}, {gl['messages']}, {gl['writes']}" if gl
               else "as 2PC until a failure")
        lines.append(f"{r['protocol']:<12}  {r['messages']:>8}  {r['oracle']:>7}  "
                     f"{r['to_self']:>8}  {r['forced']:>6}  {r['fsyncs']:>6}  "
                     f"{r['latency']:>15}   {ref}")
    return lines


__all__ = ["commit_costs", "report"]
