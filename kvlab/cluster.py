"""The driver: owns the network, the clock, each node's disk and the trace, and does all the I/O.

Nodes (:class:`kvlab.node.NodeCore`) are pure state machines. The cluster feeds them inputs,
carries out their outputs in the one order that keeps the protocol safe (forced log records are
flushed before the messages that depend on them leave), and keeps a single event queue ordered by
simulated time. ``step()`` runs one event, ``run()`` runs until nothing can make progress, and the
synchronous client calls (``get``, ``commit``) run the queue just until their answer exists.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import random
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kvlab.client import CommitHandle, Node, Outcome
from kvlab.effects import Outputs, Reply
from kvlab.errors import (
    ConfigurationError,
    MessageNotFound,
    NodeUnavailable,
    SimulationTimeout,
    UnknownNode,
)
from kvlab.history import History
from kvlab.messages import TS_REPLY, TSO
from kvlab.network import Envelope, Network
from kvlab.node import PLACEMENTS, Deliver, Fire, NodeConfig, NodeCore, PeerUp, Recover
from kvlab.trace import Trace
from kvlab.tso import TimestampOracle
from kvlab.twopc import COMMITTING, Rules, Timing
from kvlab.wal import FileDisk, MemoryDisk, TornTailWarning, Wal

_FLUSH, _MSG, _TIMER = 0, 1, 2  # at equal times: flushes first, then messages, then timers
_PLAIN = (str, int, float, bool, type(None))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Replay builds a large, acyclic structure in one go; Python's cyclic collector would
    rescan it again and again while it grows (about 3x the replay time), so pause it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Cluster:
    """A simulated cluster of nodes. See the README for a tour."""

    def __init__(self, nodes: Iterable[str], seed: int = 0, data_dir: str | Path | None = None,
                 placement: str = "all", latency: tuple[int, int] = (1, 1), loss: float = 0.0,
                 fsync_latency: int = 1, timing: Timing | None = None,
                 call_timeout: int = 2000, checkpoint_every: int = 5000, gc_every: int = 1000,
                 trace: bool = True, rules: Rules | None = None) -> None:
        ids = list(nodes)
        self.options: dict[str, Any] = dict(  # what clone() rebuilds from
            nodes=ids, seed=seed, data_dir=data_dir, placement=placement, latency=latency,
            loss=loss, fsync_latency=fsync_latency, timing=timing, call_timeout=call_timeout,
            checkpoint_every=checkpoint_every, gc_every=gc_every, trace=trace, rules=rules)
        if not ids or len(set(ids)) != len(ids) or not all(isinstance(n, str) and n
                                                            for n in ids) or TSO in ids:
            raise ConfigurationError(f"nodes must be distinct non-empty strings (not {TSO!r}), "
                                     f"got {ids!r}")
        if placement not in PLACEMENTS:
            raise ConfigurationError(f"unknown placement {placement!r}: choose 'all' or "
                                     f"'partitioned'")
        self.ids = ids
        self.seed = seed
        self.placement = placement
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.fsync_latency = fsync_latency
        self.call_timeout = call_timeout
        self.checkpoint_every = checkpoint_every
        self.gc_every = gc_every
        self.config = NodeConfig(ids, placement, timing or Timing(), rules or Rules())
        self.rng = random.Random(seed)
        self.network = Network(self.rng, latency, loss)
        self.trace = Trace(enabled=trace)
        self.history = History()
        self.now = 0
        self._queue: list[tuple] = []
        self._seq = itertools.count()
        self._calls = itertools.count(1)
        self._replies: dict[int, Reply] = {}
        self._commit_calls: dict[int, tuple[str, str]] = {}
        self._timers: dict[tuple[str, tuple], int] = {}
        self._held: dict[str, list[Outputs]] = {n: [] for n in ids}
        self._flush_due: dict[str, bool] = dict.fromkeys(ids, False)
        self._incarnation: dict[str, int] = dict.fromkeys(ids, 0)
        self._since_gc = 0
        self._handles = {n: Node(self, n) for n in ids}
        self.tso = TimestampOracle(path=self.data_dir / "tso.json" if self.data_dir else None)
        self._wals: dict[str, Wal] = {}
        self._cores: dict[str, NodeCore | None] = {}
        for n in ids:
            disk = FileDisk(self.data_dir / n) if self.data_dir else MemoryDisk()
            self._wals[n] = Wal(disk, name=f"{n}/wal.log")
            self._cores[n] = NodeCore(n, self.config)
        if self.data_dir is not None:
            try:
                for n in ids:
                    self._recover(n, reopen=True)
            except BaseException:
                for wal in self._wals.values():  # a damaged log: don't leak open files
                    wal.disk.close()
                raise

    # -- public API -------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        try:
            return self._handles[node_id]
        except KeyError:
            raise UnknownNode(f"no node {node_id!r}; this cluster has {self.ids}") from None

    __getitem__ = node

    @property
    def nodes(self) -> list[Node]:
        return [self._handles[n] for n in self.ids]

    def up(self, node_id: str) -> bool:
        self.node(node_id)
        return self._cores[node_id] is not None

    def step(self) -> Trace:
        """Run the next event (usually one message delivery); return the events it produced."""
        start = len(self.trace)
        self._step()
        return self.trace[start:]

    def run(self, max_steps: int = 10_000_000) -> int:
        """Deliver messages and fire timers until nothing can make progress; return the count."""
        n = 0
        while self._step():
            n += 1
            if n >= max_steps:
                raise SimulationTimeout(f"run() stopped after {max_steps} events; the cluster "
                                        f"is still busy (call run() again to continue)")
        return n

    @property
    def quiet(self) -> bool:
        """True when nothing can happen: no message in flight, no timer set, no flush due."""
        return not self.network.in_flight and not self._timers and not any(
            self._flush_due.values())

    def clone(self, **changes: Any) -> Cluster:
        """A fresh cluster with the same constructor arguments (and seed), as Reset needs."""
        return Cluster(**{**self.options, **changes})

    def pending(self) -> list[Envelope]:
        """Messages in flight, in the order they would be delivered."""
        return sorted(self.network.in_flight.values(), key=lambda e: (e.due, e.id))

    def deliver(self, msg_id: int) -> Trace:
        """Deliver one chosen message now, ahead of its turn (explore an interleaving)."""
        env = self.network.in_flight.pop(self._msg_id(msg_id), None)
        if env is None:
            raise MessageNotFound(f"message {msg_id} is not in flight; see cluster.pending()")
        start = len(self.trace)
        self._arrive(env)
        self._after_event()
        return self.trace[start:]

    def drop(self, msg_id: int) -> None:
        """Lose one message in flight, as a faulty network would."""
        env = self.network.in_flight.pop(self._msg_id(msg_id), None)
        if env is None:
            raise MessageNotFound(f"message {msg_id} is not in flight; see cluster.pending()")
        self._trace_msg("drop", env, reason="dropped by the user")
        self._after_event()

    def crash(self, node_id: str, torn: bool = False) -> None:
        """Stop a node: it loses its memory and its unflushed log tail (``torn``: a partial
        record of that tail reaches the disk, as when power fails mid-write)."""
        self.node(node_id)
        core = self._cores[node_id]
        if core is None:
            return
        lost = self._wals[node_id].crash(torn)
        self._cores[node_id] = None
        self._held[node_id].clear()
        self._flush_due[node_id] = False
        self._incarnation[node_id] += 1
        for k in [k for k in self._timers if k[0] == node_id]:
            del self._timers[k]
        for txn in self.history:
            if txn.node == node_id and txn.status == "active":
                txn.status = "aborted"
                txn.reason = (f"aborted: {node_id} crashed before the commit decision was "
                              f"durable (presumed abort)")
        self.trace.record(self.now, "crash", node_id, {"lost_records": lost, "torn": torn})

    def restart(self, node_id: str) -> None:
        """Bring a crashed node back: replay its checkpoint and WAL, then resolve in-doubt
        transactions with their coordinators."""
        self.node(node_id)
        if self._cores[node_id] is not None:
            return
        self._cores[node_id] = NodeCore(node_id, self.config)
        self._recover(node_id)
        self.gc()  # replay brought back versions that no snapshot needs any more
        for other in self.ids:
            if other != node_id and self._cores[other] is not None:
                self.trace.record(self.now, "peer_up", other, {"peer": node_id})
                self._apply(other, self._cores[other].handle(PeerUp(node_id)))

    def partition(self, *groups: set[str]) -> None:
        """Cut the network between groups, e.g. ``partition({"n1"}, {"n2", "n3"})``."""
        for g in groups:
            for n in g:
                self.node(n)
        self.network.partition([set(g) for g in groups], self.ids)
        by_group: dict[int, list[str]] = {}
        for n in self.ids:
            by_group.setdefault(self.network.groups[n], []).append(n)
        self.trace.record(self.now, "partition", None,  # every group, unnamed nodes' too
                          {"groups": [sorted(g) for _, g in sorted(by_group.items())]})

    def heal(self) -> None:
        """Reconnect every node; parked retries resume."""
        before = dict(self.network.groups)
        self.network.heal()
        self.trace.record(self.now, "heal", None, {})
        for a in self.ids:
            for b in self.ids:
                if a != b and before and before.get(a) != before.get(b) \
                        and self._cores[a] is not None and self._cores[b] is not None:
                    self._apply(a, self._cores[a].handle(PeerUp(b)))

    def gc(self) -> int:
        """Collect versions no active snapshot can see; returns the low watermark used."""
        marks = [self.tso.last]
        for core in self._cores.values():
            if core is not None:
                m = core.min_active_ts()
                if m is not None:
                    marks.append(m)
        for env in self.network.in_flight.values():
            if env.msg.kind == TS_REPLY:  # a snapshot handed out but not yet received
                marks.append(env.msg.body["ts"])
        watermark = min(marks)
        removed = 0
        for n in self.ids:
            core = self._cores[n]
            if core is not None:
                removed += core.store.gc(watermark)
        self.trace.record(self.now, "gc", None, {"watermark": watermark, "removed": removed})
        return watermark

    def checkpoint(self, node_id: str | None = None) -> None:
        """Write a checkpoint and truncate the WAL (of one node, or every live node)."""
        for n in [node_id] if node_id else self.ids:
            core = self._live(n)
            wal = self._wals[n]
            wal.checkpoint(core.checkpoint_state())
            self._release_held(n)  # checkpoint flushed everything held
            self.trace.record(self.now, "checkpoint", n, {"lsn": wal.flushed_lsn})

    def close(self) -> None:
        """Flush and close every log. ``Cluster(ids, data_dir=same)`` reopens and recovers."""
        for n in self.ids:
            wal = self._wals[n]
            if self._cores[n] is not None and wal.dirty:
                wal.flush()
            wal.disk.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection ------------------------------------------------------------------------
    def core(self, node_id: str) -> NodeCore | None:
        """The node's state machine (read it, don't drive it): None while crashed."""
        self.node(node_id)
        return self._cores[node_id]

    def wal(self, node_id: str) -> Wal:
        self.node(node_id)
        return self._wals[node_id]

    def states(self) -> dict[tuple[str, str, str], str]:
        """Current 2PC state of every live transaction: (node, role, tx) -> state."""
        out: dict[tuple[str, str, str], str] = {}
        for n in self.ids:
            core = self._cores[n]
            if core is None:
                continue
            for tx in core.coordinator.txs.values():
                out[(n, "coordinator", tx.id)] = tx.state
            for ptx in core.participant.txs.values():
                out[(n, "participant", ptx.id)] = ptx.state
        return out

    def __repr__(self) -> str:
        ups = ", ".join(f"{n}{'' if self._cores[n] else ' (crashed)'}" for n in self.ids)
        return (f"<kvlab.Cluster [{ups}] t={self.now} in-flight={len(self.network.in_flight)} "
                f"placement={self.placement}>")

    # -- the engine room ---------------------------------------------------------------------
    def _live(self, node_id: str) -> NodeCore:
        self.node(node_id)
        core = self._cores[node_id]
        if core is None:
            raise NodeUnavailable(f"node {node_id} is crashed: call cluster.restart({node_id!r})"
                                  f" first")
        return core

    @staticmethod
    def _msg_id(msg_id: int | Envelope) -> int:
        if isinstance(msg_id, Envelope):
            return msg_id.id
        try:
            return int(msg_id)
        except (TypeError, ValueError):
            raise MessageNotFound(f"{msg_id!r} is not a message id: pass an id (or an "
                                  f"envelope) from cluster.pending()") from None

    def _record_call(self, node: str, op: str, **data: Any) -> None:
        if self.trace.enabled:
            data["op"] = op
            self.trace.record(self.now, "call", node, data)

    def _call(self, node_id: str, make: Any, what: str) -> Any:
        core = self._live(node_id)
        call = next(self._calls)
        self._apply(node_id, core.handle(make(call)))
        self._drive(node_id, call, lambda: call in self._replies, what)
        reply = self._replies.pop(call)
        if reply.error is not None:
            raise reply.error
        return reply.value

    def _drive(self, node_id: str, call: int, ready: Any, what: str) -> None:
        deadline = self.now + self.call_timeout
        while not ready():
            core = self._cores[node_id]
            if core is None:
                raise NodeUnavailable(f"{node_id} crashed while {what} was running; restart it "
                                      f"and check node.outcome() for the transaction")
            timed_out = self.now > deadline
            if timed_out or not self._step():
                why = self._why_waiting(node_id, call)
                how = (f"did not finish within {self.call_timeout} simulated ticks" if timed_out
                       else "cannot finish: nothing else can happen in the cluster")
                for other in self._cores.values():  # forget the parked read everywhere
                    if other is not None:
                        other.waiting = [w for w in other.waiting if not (
                            (w.call == call and other is core)
                            or (w.requester == node_id and w.req == call))]
                raise SimulationTimeout(
                    f"{what} on {node_id} {how}: {why}. Restart crashed nodes or heal the "
                    f"partition, then try again.")

    def _why_waiting(self, node_id: str, call: int) -> str:
        core = self._cores[node_id]
        pending = core._reads.get(call)
        if pending is not None and pending.ts is not None:  # a remote read: ask its owner
            owner = core.owner(pending.key)
            if self._cores[owner] is None:
                return f"the read of {pending.key!r} needs its owner {owner}, which is crashed"
            return self._cores[owner].why_waiting(call, requester=node_id)
        return core.why_waiting(call)

    def _settle(self, call: int) -> None:
        """Record a commit outcome in the history the moment its reply is released."""
        reply = self._replies.get(call)
        if reply is None or call not in self._commit_calls:
            return
        node, tx = self._commit_calls.pop(call)
        del self._replies[call]
        h = self.history[tx]
        rec = self._cores[node].coordinator.txs[tx]
        h.status = "committed" if reply.value else "aborted"
        h.commit_ts, h.reason = rec.commit_ts, rec.reason

    def _schedule(self, time: int, kind: int, node: str, payload: Any) -> int:
        seq = next(self._seq)
        heapq.heappush(self._queue, (time, kind, seq, node, self._incarnation.get(node, 0),
                                     payload))
        return seq

    def _step(self) -> bool:
        q = self._queue
        while q:
            time, kind, seq, node, inc, payload = heapq.heappop(q)
            if kind == _MSG:
                env = self.network.in_flight.pop(payload, None)
                if env is None:
                    continue  # delivered or dropped by hand earlier
                self.now = max(self.now, time)
                self._arrive(env)
            elif inc != self._incarnation[node]:
                continue  # scheduled before a crash
            elif kind == _TIMER:
                if self._timers.get((node, payload)) != seq:
                    continue  # cancelled or superseded
                del self._timers[(node, payload)]
                self.now = max(self.now, time)
                self.trace.record(self.now, "timer", node,
                                  {"key": " ".join(map(str, payload)), "tx": payload[1]
                                   if isinstance(payload[1], str) else None})
                self._apply(node, self._cores[node].handle(Fire(payload)))
            else:
                self.now = max(self.now, time)
                self._flush(node)
            self._after_event()
            return True
        return False

    def _after_event(self) -> None:
        self._since_gc += 1
        if self._since_gc >= self.gc_every:
            self._since_gc = 0
            self.gc()

    def _arrive(self, env: Envelope) -> None:
        msg = env.msg
        dst = msg.dst
        if dst == TSO:
            if self.network.lost():
                self._trace_msg("drop", env, reason="lost")
                return
            self._trace_msg("deliver", env)
            self._send(TSO, self.tso.handle(msg))
            return
        core = self._cores[dst]
        if core is None:
            self._trace_msg("drop", env, reason=f"{dst} is down")
        elif not self.network.reachable(msg.src, dst):
            self._trace_msg("drop", env, reason="partitioned")
        elif self.network.lost():
            self._trace_msg("drop", env, reason="lost")
        else:
            self._trace_msg("deliver", env)
            self._apply(dst, core.handle(Deliver(msg)))

    def _trace_msg(self, what: str, env: Envelope, **extra: Any) -> None:
        if self.trace.enabled:
            m = env.msg
            data = {"id": env.id, "src": m.src, "dst": m.dst, "kind": m.kind, "tx": m.tx}
            if what == "send":
                data["due"] = env.due
                if m.body and all(isinstance(v, _PLAIN) for v in m.body.values()):
                    data["body"] = m.body  # e.g. a VOTE_NO's reason (plain values only)
            data.update(extra)
            self.trace.record(self.now, what, m.dst if what == "deliver" else m.src, data)

    def _send(self, src: str, msg: Any) -> None:
        env = self.network.send(msg, self.now)
        self._trace_msg("send", env)
        self._schedule(env.due, _MSG, msg.dst, env.id)

    def _apply(self, node: str, out: Outputs) -> None:
        """Carry out one node's outputs, holding back whatever a forced record must precede."""
        wal = self._wals[node]
        tracing = self.trace.enabled
        for rec in out.records:
            r = wal.append(rec.type, rec.data)
            if tracing:
                self.trace.record(self.now, "wal", node, {"lsn": r.lsn, "type": r.type,
                                                          "tx": rec.data.get("tx"),
                                                          "force": out.force})
        for key in out.cancel:
            self._timers.pop((node, key), None)
        if tracing:
            for note in out.notes:
                self.trace.record(self.now, "state", node, note)
        if out.force and wal.dirty:
            self._held[node].append(out)
            if not self._flush_due[node]:
                self._flush_due[node] = True
                self._schedule(self.now + self.fsync_latency, _FLUSH, node, None)
        else:
            self._release(node, out)

    def _release(self, node: str, out: Outputs) -> None:
        for msg in out.messages:
            self._send(node, msg)
        for key, delay in out.timers:
            self._timers[(node, key)] = self._schedule(self.now + delay, _TIMER, node, key)
        for reply in out.replies:
            self._replies[reply.call] = reply
            if reply.call in self._commit_calls:
                self._settle(reply.call)

    def _flush(self, node: str) -> None:
        wal = self._wals[node]
        self._flush_due[node] = False
        n = wal.flush()
        self.trace.record(self.now, "flush", node, {"records": n, "lsn": wal.flushed_lsn})
        self._release_held(node)
        if wal.since_checkpoint >= self.checkpoint_every:
            self.checkpoint(node)

    def _release_held(self, node: str) -> None:
        held, self._held[node] = self._held[node], []
        for out in held:
            self._release(node, out)

    def _recover(self, node: str, reopen: bool = False) -> None:
        wal = self._wals[node]
        core = self._cores[node]
        with warnings.catch_warnings(record=True) as caught, _collector_paused():
            warnings.simplefilter("always", TornTailWarning)
            state, records = wal.recover()
            out = core.handle(Recover(state, records)) if state or records or not reopen \
                else None
        for w in caught:
            self.trace.record(self.now, "torn", node, {"warning": str(w.message)})
            warnings.warn(w.message, stacklevel=3)
        if out is None:
            return
        self.tso.advance_to(core.max_ts)
        self.trace.record(self.now, "restart", node,
                          {"replayed": len(records), "checkpoint": state is not None,
                           "in_doubt": sorted(t.id for t in core.participant.in_doubt()),
                           "decided": sorted(t for t, r in core.coordinator.txs.items()
                                             if r.state == COMMITTING)})
        self._apply(node, out)


# -- the classic entry point ----------------------------------------------------------------------
_default: dict[tuple[str, ...], Cluster] = {}


def initialize(node_id: str, all_node_ids: Iterable[str], **options: Any) -> Node:
    """Return ``node_id``'s handle in the default in-memory cluster of ``all_node_ids``.

    Every call with the same node list shares one cluster, so ``initialize("n1", ids)`` and
    ``initialize("n2", ids)`` are two nodes of the same system, as in the classic exercise.
    """
    ids = tuple(all_node_ids)
    if node_id not in ids:
        raise UnknownNode(f"{node_id!r} is not in all_node_ids {list(ids)}")
    cluster = _default.get(ids)
    if cluster is None:
        cluster = _default[ids] = Cluster(ids, **options)
    elif options:
        raise ConfigurationError(f"the default cluster of {list(ids)} already exists; call "
                                 f"kvlab.reset_default() before initialize() with new options")
    return cluster.node(node_id)


def reset_default() -> None:
    """Forget the clusters made by :func:`initialize` (start the classic exercise afresh)."""
    _default.clear()


__all__ = ["Cluster", "Node", "CommitHandle", "Outcome", "initialize", "reset_default"]
