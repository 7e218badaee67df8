"""The simulated driver: owns the network, the clock, each node's disk and the trace.

Nodes (:class:`kvlab.node.NodeCore`) are pure state machines. The cluster feeds them inputs,
carries out their outputs under the one ordering rule that keeps the protocol safe ("log before
you speak", :class:`kvlab.effects.Outbox`), and keeps a single event queue ordered by simulated
time. ``step()`` runs one event, ``run()`` runs until nothing can make progress, and the
synchronous client calls (``get``, ``commit``) run the queue just until their answer exists.

The cluster is also the nodes' failure detector: a node that ran out of retries asks to be told
when a peer is reachable (``Outputs.watch``), and the cluster arms a ``peer-up`` timer for it as
soon as that peer is up and connected, now or after a restart, heal or new partition.

Every public method is safe to call from any thread (one re-entrant lock per cluster), and
every public call is written to :attr:`Cluster.journal` while the trace is on, which is what
lets the explorer widget reset, step back and scrub by deterministic replay.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import itertools
import os
import random
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kvlab.batching import txs as _txs
from kvlab.client import CommitHandle, Node, Outcome, ReadHandle
from kvlab.driver import _Calls, public
from kvlab.effects import Outbox, Outputs
from kvlab.errors import (
    ConfigurationError,
    KvlabError,
    MessageNotFound,
    NodeUnavailable,
    SimulationTimeout,
    UnknownNode,
)
from kvlab.history import History
from kvlab.messages import BATCH, TS_REPLY, TSO
from kvlab.network import Envelope, Network
from kvlab.node import (
    COMMIT_PROTOCOLS,
    PLACEMENTS,
    Abandon,
    Fire,
    NodeConfig,
    NodeCore,
    Recover,
    Resolve,
)
from kvlab.trace import Trace
from kvlab.tso import TimestampOracle
from kvlab.twopc import COMMITTING, DELEGATED, Rules, Timing
from kvlab.wal import FileDisk, MemoryDisk, TornTailWarning, Wal, sync_together

_FLUSH, _MSG, _TIMER = 0, 1, 2  # at equal times: flushes first, then messages, then timers
_PLAIN = (str, int, float, bool, type(None))


def _plain_body(body: dict[str, Any]) -> dict[str, Any] | None:
    """A message body as the trace keeps it: only plain bodies are, e.g. a VOTE_NO's reason."""
    for v in body.values():
        if not isinstance(v, _PLAIN):
            return None
    return body


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


def _callers_level() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside kvlab (the
    line in the learner's notebook that opened or restarted the node), however deep the call.
    kvlab's files are those under its package directory (not a ``kvlab_demo.py`` beside it)."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def check_node_ids(nodes: Any) -> list[Any]:
    """Node ids: distinct non-empty strings, or distinct ints (not both), never ``"tso"``."""
    if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Iterable):
        raise ConfigurationError(f"nodes is a list of node ids, e.g. ['n1', 'n2', 'n3'] or "
                                 f"[1, 2, 3]; got {nodes!r}")
    ids = list(nodes)
    kinds = {type(n) for n in ids}
    ok = ids and len(kinds) == 1 and kinds <= {str, int} and all(
        n != "" and n != TSO for n in ids)
    if not ok or len(set(ids)) != len(ids):
        raise ConfigurationError(f"nodes must be distinct non-empty strings, or distinct ints "
                                 f"(not a mix, not {TSO!r}); got {ids!r}")
    return ids


def _whole(name: str, value: Any, least: int) -> int:
    if type(value) is not int or value < least:
        raise ConfigurationError(f"{name} must be a whole number >= {least}, got {value!r}")
    return value


class Cluster:
    """A simulated cluster of nodes, deterministic for a given seed.

    Parameters
    ----------
    nodes: the node ids, e.g. ``["n1", "n2", "n3"]`` or ``[1, 2, 3]``.
    seed: seeds every random choice (latency, loss, duplication): same seed and same calls,
        same trace, byte for byte.
    data_dir: keep each node's WAL and checkpoint as real files under this directory (fsync
        included); opening a cluster on an existing directory recovers it. None: memory disks.
    placement: ``"all"`` (every node stores every key) or ``"partitioned"`` (a stable hash
        picks one owner per key).
    latency: ``(min, max)`` simulated ticks per message; a range reorders messages.
    loss: probability that the network loses a message.
    duplicate: probability that the network delivers a message twice.
    fsync_latency: the group-commit window: ticks from the first forced record that waits
        to the log flush (one fsync) that makes it durable; everything appended meanwhile
        shares that flush. 0 flushes at once (shortest commits, most fsyncs); a longer window
        waits for company (fewer fsyncs per transaction, longer commits); figure 2 of
        ``python -m kvlab.bench`` measures the trade. With ``data_dir``, flushes of several
        nodes due at the same tick fsync in parallel (separate machines' disks would).
    timing: protocol timeouts and retries (:class:`kvlab.Timing`).
    call_timeout: simulated ticks a synchronous call may run before SimulationTimeout.
    checkpoint_every: log records after which a node checkpoints and truncates its log.
    gc_every: events between garbage collections of old versions and finished records.
    trace: record every event (views, replay and the determinism tests read it); turn it off
        for long runs, with ``history``, to keep memory flat.
    history: record every transaction's reads and writes for :func:`kvlab.check`.
    rules: the force-log rules (:class:`kvlab.Rules`); switch one off only to watch it break.
    commit_protocol: ``"2pc"`` (classic two-phase commit with presumed abort: a coordinator
        crash can leave participants in doubt), ``"cooperative"`` (2PC plus the cooperative
        termination protocol: an in-doubt participant asks the other participants) or
        ``"paxos"`` (Gray and Lamport's Paxos Commit: votes decided by 2F+1 acceptors, so any
        node can finish a transaction whose coordinator crashed).
    paxos_f: F for Paxos Commit, the acceptor crashes it tolerates (needs 2F+1 nodes); F = 0
        is two-phase commit again.
    fast_reads: a read does not wait for a prepared write that must commit above its snapshot
        (the participant knew a timestamp at least as new as the snapshot when it prepared,
        and the commit timestamp is issued after every vote). Off by default, so the lessons
        show the classic wait.
    one_phase: a transaction whose writes all live on one node commits without a PREPARE round:
        that node decides, with one forced record (:mod:`kvlab.onephase`). Needs
        ``placement="partitioned"`` to matter (with "all" every node takes part); not with
        Paxos Commit. Off by default, so the lessons show both rounds.
    batch_window: hold what a node says to each peer (the oracle too) for up to this many
        ticks and send it as one BATCH message (:mod:`kvlab.batching`): overlapping commits
        share messages, timestamp requests and fsyncs. ``0`` gathers only what is said at the
        same tick; None (the default) is off.
    """

    def __init__(self, nodes: Iterable[Any], seed: int = 0,
                 data_dir: str | os.PathLike[str] | None = None, placement: str = "all",
                 latency: tuple[int, int] = (1, 1), loss: float = 0.0, duplicate: float = 0.0,
                 fsync_latency: int = 1, timing: Timing | None = None,
                 call_timeout: int = 2000, checkpoint_every: int = 5000, gc_every: int = 1000,
                 trace: bool = True, history: bool = True, rules: Rules | None = None,
                 commit_protocol: str = "2pc", paxos_f: int = 1,
                 fast_reads: bool = False, one_phase: bool = False,
                 batch_window: int | None = None) -> None:
        ids = check_node_ids(nodes)
        self.options: dict[str, Any] = dict(  # what clone() rebuilds from
            nodes=ids, seed=seed, data_dir=data_dir, placement=placement, latency=latency,
            loss=loss, duplicate=duplicate, fsync_latency=fsync_latency, timing=timing,
            call_timeout=call_timeout, checkpoint_every=checkpoint_every, gc_every=gc_every,
            trace=trace, history=history, rules=rules, commit_protocol=commit_protocol,
            paxos_f=paxos_f, fast_reads=fast_reads, one_phase=one_phase,
            batch_window=batch_window)
        if type(seed) is not int:
            raise ConfigurationError(f"seed must be an int (it makes runs repeatable), got "
                                     f"{seed!r}")
        if placement not in PLACEMENTS:
            raise ConfigurationError(f"unknown placement {placement!r}: choose 'all' or "
                                     f"'partitioned'")
        if commit_protocol not in COMMIT_PROTOCOLS:
            raise ConfigurationError(f"unknown commit_protocol {commit_protocol!r}: choose "
                                     f"'2pc', 'cooperative' or 'paxos'")
        _whole("paxos_f", paxos_f, 0)
        if commit_protocol == "paxos" and 2 * paxos_f + 1 > len(ids):
            raise ConfigurationError(f"Paxos Commit with paxos_f={paxos_f} needs "
                                     f"{2 * paxos_f + 1} acceptors, but the cluster has "
                                     f"{len(ids)} nodes: add nodes or lower paxos_f")
        if timing is not None and not isinstance(timing, Timing):
            raise ConfigurationError(f"timing must be a kvlab.Timing(...), got {timing!r}")
        if rules is not None and not isinstance(rules, Rules):
            raise ConfigurationError(f"rules must be a kvlab.Rules(...), got {rules!r}")
        for name, flag in (("trace", trace), ("history", history), ("fast_reads", fast_reads),
                           ("one_phase", one_phase)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, got {flag!r}")
        if batch_window is not None:
            _whole("batch_window", batch_window, 0)
        if one_phase and commit_protocol == "paxos":
            raise ConfigurationError("one_phase=True skips the vote that Paxos Commit replicates "
                                     "to its acceptors: use it with commit_protocol='2pc' or "
                                     "'cooperative'")
        if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
            raise ConfigurationError(f"data_dir must be a path (or None), got {data_dir!r}")
        self.fsync_latency = _whole("fsync_latency", fsync_latency, 0)
        self.call_timeout = _whole("call_timeout", call_timeout, 1)
        self.checkpoint_every = _whole("checkpoint_every", checkpoint_every, 1)
        self.gc_every = _whole("gc_every", gc_every, 1)
        self.rng = random.Random(seed)
        self.network = Network(self.rng, latency, loss, duplicate)
        self.ids = ids
        self.seed = seed
        self.placement = placement
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.config = NodeConfig(ids, placement, timing or Timing(), rules or Rules(),
                                 commit_protocol, paxos_f, fast_reads, one_phase,
                                 batch_window)
        self.commit_protocol = commit_protocol
        self.trace = Trace(enabled=trace)
        self.history: History | None = History() if history else None
        self._calls = _Calls(journal=trace)
        self.lock = self._calls.lock
        self.now = 0
        self._queue: list[tuple] = []
        self._seq = 0
        self._exploring = False  # kvlab.explore picks every event itself: no queue needed
        self._call_ids = itertools.count(1)
        self._replies: dict[int, Any] = {}
        self._commit_calls: dict[int, tuple[Any, str, CommitHandle]] = {}
        self._read_calls: dict[int, ReadHandle] = {}  # get_async calls not answered yet
        self._timers: dict[tuple[Any, tuple], int] = {}
        self._flush_due: dict[Any, bool] = dict.fromkeys(ids, False)
        self._incarnation: dict[Any, int] = dict.fromkeys(ids, 0)
        self._watches: dict[Any, set[Any]] = {n: set() for n in ids}
        self._since_gc = 0
        self._handles = {n: Node(self, n) for n in ids}
        self._wals: dict[Any, Wal] = {}
        self._outbox: dict[Any, Outbox] = {}
        self._cores: dict[Any, NodeCore | None] = {}
        for n in ids:
            disk = FileDisk(self.data_dir / str(n)) if self.data_dir else MemoryDisk()
            self._wals[n] = Wal(disk, name=f"{n}/wal.log")
            self._outbox[n] = Outbox(self._wals[n])
            self._cores[n] = NodeCore(n, self.config)
        try:
            self.tso = TimestampOracle(
                path=self.data_dir / "tso.json" if self.data_dir else None)
            if self.data_dir is not None:
                for n in ids:
                    self._open(n)
        except BaseException:
            for wal in self._wals.values():  # a damaged log: don't leak open files
                wal.disk.close()
            raise

    def _journal_target(self) -> None:
        return None

    # -- public API -------------------------------------------------------------------------
    @public(journal=False, after_close=True)
    def node(self, node_id: Any) -> Node:
        """The classic API handle of one node (also ``cluster[node_id]``)."""
        try:
            return self._handles[node_id]
        except (KeyError, TypeError):
            raise UnknownNode(f"no node {node_id!r}; this cluster has {self.ids}") from None

    __getitem__ = node

    @property
    def nodes(self) -> list[Node]:
        return [self._handles[n] for n in self.ids]

    @public(journal=False, after_close=True)
    def up(self, node_id: Any) -> bool:
        self.node(node_id)
        return self._cores[node_id] is not None

    @property
    def journal(self) -> list[tuple]:
        """Every public call so far, outermost first (empty while the trace is off)."""
        return [e if e[3] is not None else (*e[:3], {}) for e in self._calls.journal or ()]

    @public()
    def step(self) -> Trace:
        """Run the next event (usually one message delivery); return the events it produced."""
        start = len(self.trace)
        self._step()
        return self.trace[start:]

    @public()
    def run(self, max_steps: int = 10_000_000) -> int:
        """Deliver messages and fire timers until nothing can make progress; return the count.

        With every node up and connected this leaves no transaction undecided and no lock held
        (retries never give up on a reachable peer). It always returns: retries toward a
        crashed or cut-off peer park until a restart, heal or partition reconnects them.

        Python's cyclic collector is paused meanwhile: the engine makes no reference cycles
        per event (refcounting frees everything), but a collector pass would rescan every
        live version, record and history entry again and again (20-30% of a run)."""
        _whole("max_steps", max_steps, 1)
        n = 0
        q = self._queue
        with _collector_paused():
            while True:
                if q and q[0][1] == _FLUSH and self.data_dir is not None:
                    self._sync_flushes(max_steps - n)
                if not self._step():
                    break
                n += 1
                if n >= max_steps:
                    raise SimulationTimeout(f"run() stopped after {max_steps} events; the "
                                            f"cluster is still busy (call run() again to "
                                            f"continue)")
        return n

    @property
    def quiet(self) -> bool:
        """True when nothing can happen: no message in flight, no timer set, no flush due."""
        with self.lock:
            return not self.network.in_flight and not self._timers and not any(
                self._flush_due.values())

    def clone(self, **changes: Any) -> Cluster:
        """A fresh cluster with the same constructor arguments (and seed), as Reset needs."""
        return Cluster(**{**self.options, **changes})

    @classmethod
    def replay(cls, options: dict[str, Any], journal: Iterable[tuple]) -> Cluster:
        """A new cluster built with ``options`` on which the calls of ``journal`` (as
        :attr:`journal` lists them) are made again: by determinism, the same state and trace."""
        c = cls(**options)
        c._replay_onto([], journal)
        return c

    def _replay_onto(self, handles: list[CommitHandle], journal: Iterable[tuple]) -> None:
        """Make the calls of ``journal`` on this cluster; ``handles`` are the commit handles
        made so far (a journal names a handle by its position) and collects the new ones."""
        with warnings.catch_warnings(), _collector_paused():
            warnings.simplefilter("ignore", TornTailWarning)
            for target, name, args, kwargs in journal:
                obj: Any = self if target is None else self.node(target[1]) \
                    if target[0] == "node" else handles[target[1]]
                try:
                    result = getattr(obj, name)(*args, **(kwargs or {}))
                except KvlabError:
                    continue  # it failed the first time too, after the same state changes
                if name == "commit_async":
                    handles.append(result)

    @public(journal=False, after_close=True)
    def pending(self) -> list[Envelope]:
        """Messages in flight, in the order they would be delivered."""
        return sorted(self.network.in_flight.values(), key=lambda e: (e.due, e.id))

    @public()
    def deliver(self, msg_id: int | Envelope) -> Trace:
        """Deliver one chosen message now, ahead of its turn (explore an interleaving)."""
        env = self._take(msg_id)
        start = len(self.trace)
        self._arrive(env)
        self._after_event()
        return self.trace[start:]

    @public()
    def drop(self, msg_id: int | Envelope) -> None:
        """Lose one message in flight, as a faulty network would."""
        env = self._take(msg_id)
        self._trace_msg("drop", env, reason="dropped by the user")
        self._after_event()

    @public()
    def duplicate(self, msg_id: int | Envelope) -> Envelope:
        """Put a second copy of a message in flight (it arrives on its own schedule), as a
        duplicating network would; every handler must take it in its stride."""
        env = self._find(msg_id)
        copy = self.network.copy(env, self.now)
        self._trace_dup(env, copy, "duplicated by the user")
        self._schedule(copy.due, _MSG, copy.dst, copy.id)
        self._after_event()
        return copy

    @public(journal=False, after_close=True)
    def timers(self) -> list[tuple[Any, tuple]]:
        """Timers set now, as (node, key): e.g. ``("n2", ("decision", "T1"))``."""
        return sorted(self._timers, key=lambda k: (str(k[0]), repr(k[1])))

    @public()
    def fire(self, node_id: Any, key: tuple) -> Trace:
        """Fire a set timer now, ahead of its time (a node cannot tell slow from dead)."""
        self.node(node_id)
        key = tuple(key) if isinstance(key, (list, tuple)) else key
        if (node_id, key) not in self._timers:
            raise ConfigurationError(f"{node_id} has no timer {key!r} set; see "
                                     f"cluster.timers()")
        start = len(self.trace)
        self._fire(node_id, key)
        self._after_event()
        return self.trace[start:]

    @public()
    def flush(self, node_id: Any) -> Trace:
        """Run a node's due log flush now (its fsync completes early)."""
        self.node(node_id)
        if not self._flush_due[node_id]:
            raise ConfigurationError(f"{node_id} has no log flush due (nothing forced is "
                                     f"waiting); see cluster.pending_flushes()")
        start = len(self.trace)
        self._flush(node_id)
        self._after_event()
        return self.trace[start:]

    @public(journal=False, after_close=True)
    def pending_flushes(self) -> list[Any]:
        """Nodes with a log flush due (forced records waiting for their fsync)."""
        return [n for n in self.ids if self._flush_due[n]]

    @public()
    def crash(self, node_id: Any, torn: bool = False) -> bool:
        """Stop a node: it loses its memory and its unflushed log tail (``torn``: a partial
        record of that tail reaches the disk, as when power fails mid-write).

        Crashing a node that is already down changes nothing and returns False (so "crash
        every node" loops need no checks); otherwise True."""
        self.node(node_id)
        if not isinstance(torn, bool):
            raise ConfigurationError(f"torn must be True or False, got {torn!r}")
        if self._cores[node_id] is None:
            return False
        lost = self._wals[node_id].crash(torn)
        self._cores[node_id] = None
        self._outbox[node_id].clear()
        self._flush_due[node_id] = False
        self._incarnation[node_id] += 1
        self._watches[node_id].clear()
        for k in [k for k in self._timers if k[0] == node_id]:
            del self._timers[k]
        why = f"aborted: {node_id} crashed before the commit decision was durable " \
              f"(presumed abort)"
        # Paxos Commit: another leader may still commit it; one-phase commit: its participant
        # decides. Either way the outcome settles the handle later.
        paxos = self.commit_protocol == "paxos"
        for call in [c for c, (n, _, h) in self._commit_calls.items()
                     if n == node_id and not paxos and h._delegated is None]:
            _, tx, handle = self._commit_calls.pop(call)
            handle._settle(False, why, None)
            if self.history is not None:
                self._history_outcome(tx, False, why, None)
        for call in [c for c, h in self._read_calls.items() if h.node == node_id]:
            self._read_calls.pop(call)._settle(None, NodeUnavailable(
                f"{node_id} crashed before the read was answered; its transaction is gone "
                f"with it (restart the node and begin a new one)"))
        if self.history is not None:
            committing = {tx for n, tx, _ in self._commit_calls.values() if n == node_id}
            for txn in self.history:
                if txn.node == node_id and txn.status == "active" \
                        and txn.id not in committing:
                    txn.status, txn.reason = "aborted", why
        self.trace.record(self.now, "crash", node_id, {"lost_records": lost, "torn": torn})
        return True

    @public()
    def restart(self, node_id: Any) -> bool:
        """Bring a crashed node back: replay its checkpoint and WAL, then resolve in-doubt
        transactions with their coordinators.

        All or nothing: a damaged log (CorruptLog), or a TornTailWarning turned into an error
        (``-W error``), leaves the node crashed and its files untouched. Restarting a node
        that is up changes nothing and returns False; otherwise True."""
        self.node(node_id)
        if self._cores[node_id] is not None:
            return False
        self._open(node_id)
        if self.commit_protocol == "paxos":
            # Commits this node started whose BEGIN never became durable: no PREPARE left it
            # (the Outbox held them), so nobody can ever vote for them. The rest it leads
            # again (kvlab.paxos), and their outcome settles the handle.
            coord = self._cores[node_id].coordinator
            why = (f"aborted: {node_id} crashed before its BEGIN record was durable, so no "
                   f"PREPARE ever left it")
            for call in [c for c, (n, tx, _) in self._commit_calls.items()
                         if n == node_id and tx not in coord.leaders]:
                _, tx, handle = self._commit_calls.pop(call)
                handle._settle(False, why, None)
                if self.history is not None:
                    self._history_outcome(tx, False, why, None)
        for call, (n, tx, handle) in list(self._commit_calls.items()):
            if n == node_id and handle._delegated is not None:  # one-phase: ask how it ended
                self._apply(node_id, self._cores[node_id].handle(Resolve(call, tx,
                                                                         *handle._delegated)))
        self._arm_watches()
        self.gc()  # replay brought back versions that no snapshot needs any more
        return True

    @public()
    def partition(self, *groups: Iterable[Any]) -> None:
        """Cut the network between groups, e.g. ``partition({"n1"}, {"n2", "n3"})``; nodes not
        named form one more group. Everything is checked before anything changes."""
        sets = []
        for g in groups:
            if isinstance(g, (str, bytes, int)) or not isinstance(g, Iterable):
                raise ConfigurationError(f"each group is a set of node ids, e.g. "
                                         f"partition({{'n1'}}, {{'n2', 'n3'}}); got {g!r}")
            members = list(g)
            for n in members:
                self.node(n)
            sets.append(set(members))
        self.network.partition(sets, self.ids)
        by_group: dict[int, list[Any]] = {}
        for n in self.ids:
            by_group.setdefault(self.network.groups[n], []).append(n)
        self.trace.record(self.now, "partition", None,  # every group, unnamed nodes' too
                          {"groups": [sorted(g) for _, g in sorted(by_group.items())]})
        self._arm_watches()

    @public()
    def heal(self) -> None:
        """Reconnect every node; parked retries resume."""
        self.network.heal()
        self.trace.record(self.now, "heal", None, {})
        self._arm_watches()

    @public()
    def gc(self) -> int:
        """Collect versions no active snapshot can see, and forget finished participant
        records below the same low watermark; returns the watermark used."""
        watermark = self._watermark()
        removed = 0
        for n in self.ids:
            core = self._cores[n]
            if core is not None:
                removed += core.gc(watermark)
        self.trace.record(self.now, "gc", None, {"watermark": watermark, "removed": removed})
        return watermark

    @public()
    def checkpoint(self, node_id: Any = None) -> None:
        """Write a checkpoint and truncate the WAL (of one node, or every live node)."""
        for n in self.ids if node_id is None else [node_id]:
            if node_id is None and self._cores[n] is None:
                continue
            core = self._live(n)
            wal = self._wals[n]
            wal.checkpoint(core.checkpoint_state())
            self._release_held(n)  # checkpoint flushed everything held
            self.trace.record(self.now, "checkpoint", n, {"lsn": wal.flushed_lsn})

    @public(journal=False, after_close=True)
    def close(self) -> None:
        """Flush and close every log. ``Cluster(ids, data_dir=same)`` reopens and recovers.
        Afterwards every call that would run the cluster raises ClusterClosed; looking at the
        trace, the history and the states still works. Closing twice changes nothing."""
        if self._calls.closed:
            return
        self._calls.closed = True
        for n in self.ids:
            wal = self._wals[n]
            if self._cores[n] is not None and wal.dirty:
                wal.flush()
            wal.disk.close()

    @property
    def closed(self) -> bool:
        return self._calls.closed

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inspection ------------------------------------------------------------------------
    @public(journal=False, after_close=True)
    def core(self, node_id: Any) -> NodeCore | None:
        """The node's state machine (read it, don't drive it): None while crashed."""
        self.node(node_id)
        return self._cores[node_id]

    @public(journal=False, after_close=True)
    def wal(self, node_id: Any) -> Wal:
        self.node(node_id)
        return self._wals[node_id]

    @public(journal=False, after_close=True)
    def states(self) -> dict[tuple[Any, str, str], str]:
        """Current 2PC state of every transaction a live node remembers:
        (node, role, tx) -> state. Under Paxos Commit also its "acceptor" state (of the
        transaction's instances) and "leader" state (kvlab.paxos's tables)."""
        out: dict[tuple[Any, str, str], str] = {}
        for n in self.ids:
            core = self._cores[n]
            if core is None:
                continue
            for tx in core.coordinator.txs.values():
                out[(n, "coordinator", tx.id)] = tx.state
            for ptx in core.participant.txs.values():
                out[(n, "participant", ptx.id)] = ptx.state
            acceptor = getattr(core.coordinator, "acceptor", None)
            if acceptor is not None:  # Paxos Commit
                for atx in acceptor.txs.values():
                    out[(n, "acceptor", atx.id)] = atx.state
                for lt in core.coordinator.leaders.values():
                    out[(n, "leader", lt.id)] = lt.state
        return out

    def __repr__(self) -> str:
        with self.lock:
            ups = ", ".join(f"{n}{'' if self._cores[n] else ' (crashed)'}" for n in self.ids)
            return (f"<kvlab.Cluster [{ups}] t={self.now} "
                    f"in-flight={len(self.network.in_flight)} placement={self.placement}>")

    # -- the Driver interface (kvlab.driver) that kvlab.client.Node uses ------------------
    def is_up(self, node: Any) -> bool:
        return self._cores[node] is not None

    def call(self, node: Any, make: Any, what: str) -> Any:
        core = self._live(node)
        call = next(self._call_ids)
        self._apply(node, core.handle(make(call)))
        self.wait(node, lambda: call in self._replies, what, call)
        reply = self._replies.pop(call)
        if reply.error is not None:
            raise reply.error
        return reply.value

    def tell(self, node: Any, inp: Any) -> None:
        self._apply(node, self._live(node).handle(inp))

    def start_commit(self, node: Any, tx: str, handle: CommitHandle) -> None:
        from kvlab.node import Commit

        core = self._live(node)
        core.active(tx)  # raise before anything reaches the trace
        call = handle.call = next(self._call_ids)
        self.record_call(node, "commit", tx=tx)
        self._commit_calls[call] = (node, tx, handle)
        self._apply(node, core.handle(Commit(call, tx)))
        rec = core.coordinator.txs.get(tx)
        if rec is not None and rec.state == DELEGATED:  # the client knows where it sent it
            handle._delegated = (rec.participants[0], rec.start_ts)

    def start_read(self, node: Any, tx: str, key: str, handle: ReadHandle) -> None:
        from kvlab.node import Get

        core = self._live(node)
        call = handle.call = next(self._call_ids)
        self._read_calls[call] = handle
        try:
            self._apply(node, core.handle(Get(call, tx, key)))
        except BaseException:
            del self._read_calls[call]
            raise

    def wait(self, node: Any, ready: Any, what: str, call: int | None = None,
             abandon: bool = True) -> None:
        """Run until ``ready()``; SimulationTimeout (after abandoning ``call`` if asked) when
        the call's budget runs out or nothing else can happen."""
        deadline = self.now + self.call_timeout
        # Paxos Commit (F >= 1): another leader finishes a commit whose coordinator is down,
        # and its outcome settles the handle, so waiting for it goes on without that node
        outlives = (call in self._commit_calls and self.commit_protocol == "paxos"
                    and self.options["paxos_f"] >= 1)
        while not ready():
            if self._cores[node] is None and not outlives:
                raise NodeUnavailable(f"{node} crashed while {what} was running; restart it "
                                      f"and check node.outcome() for the transaction")
            timed_out = self.now > deadline
            if timed_out or not self._step():
                why = (self._why_waiting(node, call) if self._cores[node] is not None else
                       f"its coordinator {node} is crashed and no other leader could decide "
                       f"it (too few acceptors up?)")
                how = (f"did not finish within {self.call_timeout} simulated ticks" if timed_out
                       else "cannot finish: nothing else can happen in the cluster")
                if call is not None and abandon:
                    self._abandon(node, call)
                down = [n for n in self.ids if self._cores[n] is None]
                if down or self.network.groups:
                    advice = "Restart crashed nodes or heal the partition, then try again."
                else:
                    advice = ("Every node is up and connected, so its messages were lost: "
                              "try again (or lower the loss rate).")
                raise SimulationTimeout(f"{what} on {node} {how}: {why}. {advice}")

    def record_call(self, node: Any, op: str, **data: Any) -> None:
        if self.trace.enabled:
            data["op"] = op
            self.trace.record(self.now, "call", node, data)

    def coordinator_record(self, node: Any, tx: str) -> Any:
        core = self._cores[node]
        rec = core.coordinator.txs.get(tx) if core is not None else None
        return rec if rec is not None and rec.state != "INIT" else None

    def versions(self, node: Any, key: str) -> list:
        return list(self._live(node).store.chains.get(key, []))

    # -- the engine room ---------------------------------------------------------------------
    def _live(self, node_id: Any) -> NodeCore:
        try:
            core = self._cores[node_id]  # (the same ids as node(), without its wrapper)
        except (KeyError, TypeError):
            self.node(node_id)  # UnknownNode
            raise
        if core is None:
            raise NodeUnavailable(f"node {node_id} is crashed: call cluster.restart({node_id!r})"
                                  f" first")
        return core

    def _find(self, msg_id: Any) -> Envelope:
        if isinstance(msg_id, Envelope):
            msg_id = msg_id.id
        if isinstance(msg_id, bool) or not isinstance(msg_id, int):
            raise MessageNotFound(f"{msg_id!r} is not a message id: pass an id (or an "
                                  f"envelope) from cluster.pending()")
        env = self.network.in_flight.get(msg_id)
        if env is None:
            raise MessageNotFound(f"message {msg_id} is not in flight; see cluster.pending()")
        return env

    def _take(self, msg_id: Any) -> Envelope:
        env = self._find(msg_id)
        del self.network.in_flight[env.id]
        return env

    def _watermark(self) -> int:
        """The cluster's low watermark: no snapshot below it is in use or handed out, and no
        transaction that started below it is undecided on a live coordinator."""
        marks = [self.tso.last]
        for core in self._cores.values():
            if core is not None:
                m = core.min_active_ts()
                if m is not None:
                    marks.append(m)
        for env in self.network.in_flight.values():
            m = env.msg
            if m.kind == TS_REPLY:  # a snapshot handed out but not yet received
                marks.append(m.body["ts"])
            elif m.kind == BATCH and m.src == TSO:  # (kvlab.batching: several at once)
                marks += [body["ts"] for _, _, body in m.body["messages"]]
        return min(marks)

    def _why_waiting(self, node_id: Any, call: int | None) -> str:
        core = self._cores[node_id]
        if call is None:
            return "its outcome is not known yet"
        pending = core._reads.get(call)
        if pending is not None and pending.ts is not None:  # a remote read: ask its owner
            owner = core.owner(pending.key)
            if self._cores[owner] is None:
                return f"the read of {pending.key!r} needs its owner {owner}, which is crashed"
            return self._cores[owner].why_waiting(call, requester=node_id)
        return core.why_waiting(call)

    def _abandon(self, node: Any, call: int) -> None:
        """The client gave up on ``call``: the node forgets it, and so does any owner holding a
        parked remote read for it (a late answer must create nothing)."""
        self._apply(node, self._cores[node].handle(Abandon(call)))
        for other in self.ids:
            core = self._cores[other]
            if other != node and core is not None:
                self._apply(other, core.handle(Abandon(call, requester=node)))

    def _settle(self, call: int, reply: Any) -> None:
        """A commit's reply was released: tell its handle (and the history) at once."""
        node, tx, handle = self._commit_calls.pop(call)
        rec = self._cores[node].coordinator.txs.get(tx)
        committed = bool(reply.value)
        reason = rec.reason if rec is not None else ""
        commit_ts = rec.commit_ts if rec is not None else None
        handle._settle(committed, reason, commit_ts)
        if self.history is not None:
            self._history_outcome(tx, committed, reason, commit_ts)

    def _settle_outcome(self, tx: str, committed: bool, ts: int | None, reason: str) -> None:
        """A leader decided ``tx``: settle its commit handle if still pending (its coordinator
        may have crashed, or not be the leader that decided)."""
        for call in [c for c, (_, t, _) in self._commit_calls.items() if t == tx]:
            handle = self._commit_calls.pop(call)[2]
            handle._settle(committed, reason, ts)
            if self.history is not None:
                self._history_outcome(tx, committed, reason, ts)

    def _history_outcome(self, tx: str, committed: bool, reason: str, ts: int | None) -> None:
        if tx in self.history:
            h = self.history[tx]
            h.status = "committed" if committed else "aborted"
            h.commit_ts, h.reason = ts, reason

    def _schedule(self, time: int, kind: int, node: Any, payload: Any) -> int:
        seq = self._seq = self._seq + 1
        if not self._exploring:
            heapq.heappush(self._queue, (time, kind, seq, node, self._incarnation.get(node, 0),
                                         payload))
        return seq

    def _requeue(self) -> None:
        """Rebuild the event queue from what is pending (after kvlab.explore drove the
        cluster event by event): messages, timers and flushes, in a deterministic order."""
        self._queue = []
        self._exploring = False
        t = self.now + 1
        for env in sorted(self.network.in_flight.values(), key=lambda e: e.id):
            self._schedule(t, _MSG, env.dst, env.id)
        for (node, key) in sorted(self._timers, key=lambda k: (str(k[0]), repr(k[1]))):
            self._timers[(node, key)] = self._schedule(t, _TIMER, node, key)
        for node in self.ids:
            if self._flush_due[node]:
                self._schedule(t, _FLUSH, node, None)

    def _step(self) -> bool:
        q = self._queue
        pop = heapq.heappop
        while q:
            time, kind, seq, node, inc, payload = pop(q)
            if kind == _MSG:
                env = self.network.in_flight.pop(payload, None)
                if env is None:
                    continue  # delivered or dropped by hand earlier
                if time > self.now:
                    self.now = time
                msg = env.msg
                dst = msg.dst
                core = self._cores.get(dst)  # (None for the oracle, or a crashed node)
                net = self.network
                if core is None or net.groups or net.loss:
                    self._arrive(env)
                else:  # _arrive's common case, inline
                    tr = self.trace
                    if tr.enabled:
                        tr.deliver(self.now, dst, env.id, msg.src, dst, msg.kind,
                                   msg.tx or _txs(msg))
                    self._apply(dst, core.deliver(msg))
                n = self._since_gc = self._since_gc + 1  # _after_event, inline
                if n >= self.gc_every:
                    self._since_gc = 0
                    self.gc()
                return True
            if inc != self._incarnation[node]:
                continue  # scheduled before a crash
            elif kind == _TIMER:
                if self._timers.get((node, payload)) != seq:
                    continue  # cancelled or superseded
                if time > self.now:
                    self.now = time
                self._fire(node, payload)
            else:
                if not self._flush_due[node]:
                    continue  # flushed early (cluster.flush) or by a checkpoint
                if time > self.now:
                    self.now = time
                self._flush(node)
            self._after_event()
            return True
        return False

    def _sync_flushes(self, room: int) -> None:
        """Log flushes of several nodes due at the same moment (next in the queue): run their
        fsyncs at once, on threads, as separate machines' disks would; each flush event then
        finds its log already durable. Only inside run(), which handles all of them before it
        returns (``room``: events it may still handle), so nothing can crash a node between
        its early fsync and its flush event, and the trace is exactly as without it."""
        t = self._queue[0][0]
        disks = {}
        for time, kind, _seq, node, inc, _ in self._queue:
            if kind == _FLUSH and time == t and self._flush_due[node] \
                    and inc == self._incarnation[node]:
                disk = self._wals[node].disk
                if isinstance(disk, FileDisk) and disk.pending:
                    disks[node] = disk
        if 1 < len(disks) < room:
            sync_together(list(disks.values()))

    def _fire(self, node: Any, key: tuple) -> None:
        del self._timers[(node, key)]
        if self.trace.enabled:
            self.trace.timer(self.now, node, key)
        self._apply(node, self._cores[node].handle(Fire(key)))

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
            self._send(self.tso.handle(msg))
            return
        core = self._cores[dst]
        net = self.network
        if core is None:
            self._trace_msg("drop", env, reason=f"{dst} is down")
        elif net.groups and not net.reachable(msg.src, dst):  # (connected without groups)
            self._trace_msg("drop", env, reason="partitioned")
        elif net.loss and net.lost():  # (no random draw without loss)
            self._trace_msg("drop", env, reason="lost")
        else:
            tr = self.trace
            if tr.enabled:
                tr.deliver(self.now, dst, env.id, msg.src, dst, msg.kind, msg.tx or _txs(msg))
            self._apply(dst, core.deliver(msg))

    def _trace_msg(self, what: str, env: Envelope, reason: str = "") -> None:
        tr = self.trace
        if tr.enabled:
            m = env.msg
            src, dst, kind, tx, body = m.src, m.dst, m.kind, m.tx or _txs(m), m.body
            if what == "send":
                if body:  # only plain bodies are kept, e.g. a VOTE_NO's reason
                    for v in body.values():
                        if not isinstance(v, _PLAIN):
                            body = None
                            break
                else:
                    body = None
                tr.send(self.now, src, env.id, src, dst, kind, tx, env.due, body)
            elif what == "deliver":
                tr.deliver(self.now, dst, env.id, src, dst, kind, tx)
            else:
                tr.drop(self.now, src, env.id, src, dst, kind, tx, reason)

    def _trace_dup(self, env: Envelope, copy: Envelope, reason: str) -> None:
        if self.trace.enabled:
            m = env.msg
            data = {"id": copy.id, "of": env.id, "src": m.src, "dst": m.dst, "kind": m.kind,
                    "tx": m.tx, "due": copy.due, "reason": reason}
            txs = _txs(m)
            if txs:  # a batch's transactions, as for its send (kvlab.trace)
                data["txs"] = list(txs)
            self.trace.record(self.now, "duplicate", m.src, data)

    def _send(self, msg: Any) -> None:
        net = self.network
        if not net.merge_identical and not net.duplicate_rate:  # plain: one envelope
            now = self.now
            env = net.carry(msg, now)
            tr = self.trace
            if tr.enabled:
                body = msg.body
                tr.send(now, msg.src, env.id, msg.src, msg.dst, msg.kind, msg.tx or _txs(msg),
                        env.due, _plain_body(body) if body else None)
            seq = self._seq = self._seq + 1  # _schedule, inline
            if not self._exploring:
                heapq.heappush(self._queue, (env.due, _MSG, seq, msg.dst, 0, env.id))
            return
        sent = net.send(msg, self.now)
        if not sent:  # merged with an identical message in flight (kvlab.explore's network)
            return
        first, *copies = sent
        self._trace_msg("send", first)
        self._schedule(first.due, _MSG, msg.dst, first.id)
        for copy in copies:
            self._trace_dup(first, copy, "duplicated by the network")
            self._schedule(copy.due, _MSG, msg.dst, copy.id)

    def _apply(self, node: Any, out: Outputs) -> None:
        """Carry out one node's outputs: log first, then (maybe later) speak.

        Reads the Outputs' slots (None: nothing of that kind) so no empty list is made."""
        records = out._records
        tr = self.trace
        if records:
            appended = self._wals[node].append_records(records)
            if tr.enabled:
                tr.wals(self.now, node, appended[0].lsn, records)
        if out._cancel:
            timers = self._timers
            for key in out._cancel:
                timers.pop((node, key), None)
        if out._notes and tr.enabled:
            tr.states(self.now, node, out._notes)
        if self._outbox[node].admit(out):
            self._release(node, out)
        elif not self._flush_due[node]:
            self._flush_due[node] = True
            self._schedule(self.now + self.fsync_latency, _FLUSH, node, None)

    def _release(self, node: Any, out: Outputs) -> None:
        msgs = out._messages
        if msgs:
            net = self.network
            if net.merge_identical or net.duplicate_rate:
                for msg in msgs:
                    self._send(msg)
            else:  # _send's plain path, inline: one envelope per message
                carry, now, q, push = net.carry, self.now, self._queue, heapq.heappush
                tr = self.trace if self.trace.enabled else None
                exploring = self._exploring
                for msg in msgs:
                    env = carry(msg, now)
                    if tr is not None:
                        body = msg.body
                        tr.send(now, msg.src, env.id, msg.src, msg.dst, msg.kind,
                                msg.tx or _txs(msg), env.due, _plain_body(body) if body else None)
                    seq = self._seq = self._seq + 1
                    if not exploring:
                        push(q, (env.due, _MSG, seq, msg.dst, 0, env.id))
        if out._timers:
            timers, now, q = self._timers, self.now, self._queue
            inc = self._incarnation.get(node, 0)
            for key, delay in out._timers:  # _schedule, inline
                seq = self._seq = self._seq + 1
                if not self._exploring:
                    heapq.heappush(q, (now + delay, _TIMER, seq, node, inc, key))
                timers[(node, key)] = seq
        if out._replies:
            for reply in out._replies:
                if reply.call in self._commit_calls:
                    self._settle(reply.call, reply)
                elif reply.call in self._read_calls:
                    handle = self._read_calls.pop(reply.call)
                    if reply.error is None:
                        self._handles[handle.node]._record_read(handle.tx, handle.key,
                                                                reply.value)
                        handle._settle(reply.value.value, None)
                    else:
                        handle._settle(None, reply.error)
                else:
                    self._replies[reply.call] = reply
        if out._outcomes:
            for tx, committed, ts, reason in out._outcomes:  # decided by a Paxos Commit leader
                self._settle_outcome(tx, committed, ts, reason)
        if out._watch:  # a peer that is reachable now is retried at the capped backoff
            t = self.config.timing
            self._watches[node].update(out._watch)
            self._arm_watches(node, delay=t.retry_interval << t.max_retries)

    def _arm_watches(self, only: Any = None, delay: int = 1) -> None:
        """Tell every watching node whose peer is now up and reachable (a peer-up timer)."""
        for n in self.ids if only is None else [only]:
            peers = self._watches[n]
            if not peers or self._cores[n] is None:
                continue
            for p in sorted(peers, key=str):
                if self._cores[p] is not None and self.network.reachable(n, p):
                    peers.discard(p)
                    key = ("peer-up", p)
                    self._timers[(n, key)] = self._schedule(self.now + delay, _TIMER, n, key)

    def _flush(self, node: Any) -> None:
        wal = self._wals[node]
        self._flush_due[node] = False
        n = wal.flush()
        if self.trace.enabled:
            self.trace.flush(self.now, node, n, wal.flushed_lsn)
        self._release_held(node)
        if wal.since_checkpoint >= self.checkpoint_every:
            self.checkpoint(node)

    def _release_held(self, node: Any) -> None:
        for out in self._outbox[node].release():
            self._release(node, out)

    def _open(self, node: Any) -> None:
        """Recover one node from its disk, all or nothing: check everything, warn about a torn
        tail, rebuild a fresh core, and only then cut the tail and bring the node up.

        The collector is paused throughout (see _collector_paused) and the decoded records are
        let go before it resumes, so its first pass sees only what recovery built."""
        with _collector_paused():
            self._recover_node(node)

    def _recover_node(self, node: Any) -> None:
        wal = self._wals[node]
        scan = wal.scan()  # CorruptLog: nothing changed
        if not scan.checkpoint and not scan.records and not scan.torn \
                and self._cores[node] is not None:
            return  # opening an empty directory: nothing to recover
        if scan.torn:  # before any change, so "-W error" leaves the node as it was
            warnings.warn(scan.torn_message(wal.name), TornTailWarning,
                          stacklevel=_callers_level())
        core = NodeCore(node, self.config)
        horizon = self._watermark()
        out = core.handle(Recover(scan.checkpoint.data if scan.checkpoint else None,
                                  scan.records, horizon))  # CorruptLog: nothing changed
        wal.recover(scan)
        self._cores[node] = core
        self._outbox[node].clear()
        if scan.torn:
            self.trace.record(self.now, "torn", node, {"warning": scan.torn_message(wal.name)})
        self.tso.advance_to(core.max_ts)
        self.trace.record(self.now, "restart", node,
                          {"replayed": len(scan.records), "checkpoint": scan.checkpoint
                           is not None,
                           "in_doubt": sorted(t.id for t in core.participant.in_doubt()),
                           "decided": sorted(t for t, r in core.coordinator.txs.items()
                                             if r.state == COMMITTING)})
        self._apply(node, out)


__all__ = ["Cluster", "Node", "CommitHandle", "ReadHandle", "Outcome", "check_node_ids"]
