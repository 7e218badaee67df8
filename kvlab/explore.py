"""A model checker: search every schedule of a small cluster, and show the shortest that breaks it.

>>> from kvlab import explore
>>> r = explore.search(setup, crashes=1)          # doctest: +SKIP
>>> r.status, r.states, r.violation              # doctest: +SKIP

``setup()`` is any function that returns a :class:`kvlab.Cluster` with work in flight (say two
``commit_async`` calls). From that state the search tries, at every state, **every** choice:

* deliver any message in flight, in any order (to a node, or to the timestamp oracle);
* run any node's due log flush (an fsync completing);
* fire any set timer early: a node cannot tell a slow peer from a dead one, so every timeout
  (vote, decision, retry, the failure detector's peer-up) may fire at any moment;
* within the fault budgets: crash any up node (``torn`` too, if it has an unflushed tail),
  restart any crashed node, drop or duplicate any message in flight.

**Why that is enough.** Nodes are deterministic state machines that change only when one of
these events happens to them, and the simulated network has no other behaviour: latency only
orders deliveries (every order is tried), loss is a drop, reordering is a delivery order,
duplication is a duplicate, and timeouts are timers fired early. So every run the simulator can
produce with those faults is one of the searched schedules. **What it leaves out**: partitions
as a choice (a partition is drops in both directions; ``setup`` may partition the cluster), the
random faults of ``Cluster(loss=..., duplicate=...)`` (the budgets replace them), periodic
garbage collection and checkpoints (collection still runs after each restart), new client calls
(only what ``setup`` started runs), and anything beyond the budgets.

**States** are deduplicated by a fingerprint of everything that can influence the future: each
live node's volatile state (store, locks, coordinator and participant records, retry counters,
parked reads), each node's log (durable bytes, checkpoint, unflushed records), the outputs held
back until a flush, the multiset of messages in flight, the set timers, due flushes, crashed
nodes, the failure detector's watches, the oracle's counter, the outcomes reported to clients,
and the budgets left. It leaves out what cannot: the trace and history contents, message ids,
timer sequence numbers and every absolute time (choices ignore time), and the order of sends
(any delivery order is tried anyway). Two schedules that reach the same fingerprint therefore
have the same set of futures, up to renaming message ids, so exploring one is enough. Hashes
are 64-bit: with a million states the chance of any collision is below one in ten million.

Snapshots are cheap: nodes are copied on write (a choice changes one node, a restart all of
them), and each node's part of the fingerprint is computed once per copy. A node's core is a
sans-I/O state machine, so a delivery or a timer makes the same transition from the same core
object with the same message object (or timer), whatever the rest of the state (unless
``setup`` partitioned the network, which may drop the message first: no reuse then): the search
makes each such transition once and reuses the new core and its outputs wherever it recurs
(only the driver's part, log and network, runs again), and with them their part of the
fingerprint and of :func:`safety`. The client part (calls waiting, handles, history) is shared
by a state and its successors until a choice tells a client something, crashes or restarts
a node. When a reused transition only sends messages and sets or cancels timers, the new
state's fingerprint is worked out without making it, and a state already found is not made
again; a new one is made, and must come out with the fingerprint worked out (checked).

**The reduction** (``reduce=True``, the default) makes fewer choices, never fewer states. A
delivery or a flush changes one node (or the oracle) and only adds messages for the others; a
crash changes one node. Two such *local* choices at different nodes commute (either order
reaches the same state) and neither disables the other, except in three cases, which count as
dependent: one takes a message the other's node sent again (a send merges with an identical
message in flight, so it depends on that message being there); both are crashes (they share
the budget); or one is a crash and the other may end the run (one message or flush left: the
search expands no state where the run ended). Every other choice is dependent on every choice:
firing a timer (whether it spends the ``timeouts`` budget depends on the whole network), a
restart (it reads every node), a drop or a duplicate (budgets), and any choice that tells a
client something or arms a peer-up timer (which reads whether peers are up); the search sees
those two as they happen. *Sleep sets* (Godefroid, "Partial-Order Methods for the Verification
of Concurrent Systems", 1996, ch. 5) use the relation: once choice ``a`` was made at a state,
the states of its later siblings ``b`` independent of it need not make ``a`` (``b`` then ``a``
is ``a`` then ``b``, made already), and ``a`` stays asleep down the schedule while the choices
made stay independent of it. With states cached, each state keeps its sleep set; arriving
again with a smaller one shrinks it, and if the state was already expanded, makes the choices
that woke up. So every state the full search visits is visited, each at the same
breadth-first depth (the commuted schedules have the same length): every invariant, checked on
every state or at the end of every schedule, gives the same verdict; ``Result.states`` counts
the same states; the violation breadth-first search finds has a shortest schedule still (maybe
another of that length); only ``Result.transitions``, the choices made, drops
(``Result.slept``: the ones skipped). ``tests/test_explore_reduce.py`` compares both searches'
graphs state by state, and catches a relation with any of its rules taken out. **Why not fewer
states**: persistent sets would skip states too, but need a set of choices nothing else can
interfere with before one of them is made. Here any node may later send the chosen node a
message that arrives first (every delivery order is tried), and a crash budget makes each
crash dependent on the others and on everything at its node, so the only such set is every
choice. Skipping states soundly needs the races found as the search runs (dynamic partial-order
reduction), which this module does not do.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from kvlab.audit import audit
from kvlab.checker import check
from kvlab.cluster import Cluster, _collector_paused
from kvlab.effects import Outbox
from kvlab.errors import KvlabError
from kvlab.messages import TSO, mixed_hash
from kvlab.network import Envelope
from kvlab.node import Fire
from kvlab.twopc import (
    ABORTED,
    AWAIT_TS,
    COMMITTING,
    DELEGATED,
    IN_DOUBT,
    PREPARED,
    PREPARING,
)
from kvlab.wal import _MASK, TornTailWarning, _record_hash

Invariant = Callable[[Cluster], "str | None"]
_BIG = 10**18
_LEVEL_ORDER = ("read_committed", "snapshot", "serializable")


class ExploreError(KvlabError):
    """The search cannot run as asked (e.g. setup did not return an in-memory Cluster)."""


# -- choices and schedules -----------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """One step of a schedule: what happened, to which message or node."""

    kind: str  # "deliver" | "drop" | "duplicate" | "flush" | "fire" | "crash" | "restart"
    node: Any = None
    msg: int | None = None
    key: tuple | None = None
    torn: bool = False
    label: str = ""

    def __str__(self) -> str:
        return self.label

    def apply(self, c: Cluster) -> None:
        """Make this choice on ``c`` through the public API."""
        k = self.kind
        if k == "deliver":
            c.deliver(self.msg)
        elif k == "drop":
            c.drop(self.msg)
        elif k == "duplicate":
            c.duplicate(self.msg)
        elif k == "flush":
            c.flush(self.node)
        elif k == "fire":
            c.fire(self.node, self.key)
        elif k == "crash":
            c.crash(self.node, torn=self.torn)
        elif k == "restart":
            c.restart(self.node)
        else:
            raise ExploreError(f"unknown choice kind {k!r}")


class Schedule(list):
    """The choices from ``setup()``'s state to a state, one per line when printed."""

    def __str__(self) -> str:
        if not self:
            return "(the state setup() returned)"
        return "\n".join(f"{i:>3}. {c}" for i, c in enumerate(self, 1))

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _msg_label(verb: str, env: Any) -> str:
    m = env.msg
    return f"{verb} #{env.id} {m.src}->{m.dst} {m.kind}" + (f" {m.tx}" if m.tx else "")


# -- results ---------------------------------------------------------------------------------------
@dataclass
class Result:
    """What a search found. ``replay()`` rebuilds the cluster at the end of ``schedule``."""

    status: str  # "exhausted" | "violation" | "limit"
    states: int
    depth: int
    elapsed: float
    violation: str | None = None
    schedule: Schedule = field(default_factory=Schedule)
    transitions: int = 0  # choices made (a state found again counts, a slept choice not)
    terminal: int = 0  # states where the run ended (judged by the end invariants)
    setup: Callable[[], Cluster] | None = field(default=None, repr=False)
    finish: bool = False  # the violation shows once crashed nodes restart and the run ends
    slept: int = 0  # choices the reduction did not make (their states are reached otherwise)

    @property
    def rate(self) -> float:
        """Distinct states per second."""
        return self.states / self.elapsed if self.elapsed > 0 else 0.0

    def replay(self) -> Cluster:
        """A cluster in the state the schedule leads to, trace and history intact (for a
        violation found at the end of a schedule: after restarting every crashed node and
        running until quiet, where it shows)."""
        if self.setup is None:
            raise ExploreError("this result has no setup to replay from")
        return replay(self.setup, self.schedule, finish=self.finish)

    def explain(self) -> list[str]:
        """The schedule as sentences: each choice and what it made the nodes do."""
        if self.setup is None:
            raise ExploreError("this result has no setup to replay from")
        return explain(self.setup, self.schedule, finish=self.finish)

    def __str__(self) -> str:
        head = (f"{self.status}: {self.states:,} states, depth {self.depth}, "
                f"{self.elapsed:.1f} s ({self.rate:,.0f} states/s)")
        if self.violation:
            head += f"\nviolation: {self.violation}\nschedule ({len(self.schedule)} steps):\n" \
                    f"{self.schedule}"
        return head

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# -- the explorer's view of a cluster --------------------------------------------------------------
def _prepare(c: Any) -> Cluster:
    """Switch a setup's cluster to exploration: every event is chosen, nothing is random."""
    if not isinstance(c, Cluster):
        raise ExploreError(f"setup() must return a kvlab.Cluster, got {type(c).__name__}")
    if c.data_dir is not None:
        raise ExploreError("explore needs in-memory disks: build the cluster without data_dir")
    if c.history is None:
        raise ExploreError("explore needs the history (what clients were told): history=True")
    c.gc_every = c.checkpoint_every = _BIG  # no periodic GC or checkpoints (see module doc)
    c.network.loss = c.network.duplicate_rate = 0.0  # faults come from the budgets
    c.network.merge_identical = True  # multiplicity is what the duplicates budget explores
    for wal in c._wals.values():
        wal.track = True
        wal._durable = sum(map(_record_hash, wal.scan().records)) & _MASK
    return c


def replay(setup: Callable[[], Cluster], schedule: Iterable[Choice],
           finish: bool = False) -> Cluster:
    """Run ``setup()`` again and make the schedule's choices through the public API: by
    determinism the same state, with its trace and history, for :mod:`kvlab.viz`.
    ``finish``: then restart every crashed node and run until quiet, as the end-of-schedule
    checks do."""
    c = _prepare(setup())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        for i, choice in enumerate(schedule, 1):
            _replay_one(c, i, choice)
        if finish:
            _finish(c)
    return c


def _finish(c: Cluster) -> None:
    for n in c.ids:
        if not c.up(n):
            c.restart(n)
    c.run(max_steps=100_000)


def explain(setup: Callable[[], Cluster], schedule: Iterable[Choice],
            finish: bool = False) -> list[str]:
    """One sentence per step of ``schedule``: the choice, then what it made happen (state
    changes, log records, flushes, messages lost) as the trace records it; with ``finish``, a
    last line for restarting every crashed node and running until quiet."""
    c = _prepare(setup())
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        for i, choice in enumerate(schedule, 1):
            start = len(c.trace)
            _replay_one(c, i, choice)
            lines.append(_sentence(f"{i}. {choice}", c.trace[start:]))
        if finish:
            start = len(c.trace)
            _finish(c)
            lines.append(_sentence("then every crashed node restarts and the cluster runs "
                                   "until quiet", c.trace[start:]))
    return lines


def _sentence(head: str, events: Any) -> str:
    parts = [p for p in map(_event_phrase, events) if p]
    return head + (": " + "; ".join(dict.fromkeys(parts)) if parts else "")


def _event_phrase(e: Any) -> str | None:
    d = e.data
    if e.kind == "state" and "new" in d and d["old"] != d["new"]:
        return f"{e.node}'s {d['role']} moves {d['tx']} from {d['old']} to {d['new']}"
    if e.kind == "wal":
        return f"{e.node} logs {d['type']} {d.get('tx') or ''}".rstrip() + (
            " (forced: what it says next waits for the flush)" if d.get("force") else "")
    if e.kind == "flush":
        return f"{e.node}'s log is durable up to LSN {d['lsn']}"
    if e.kind == "drop":
        return f"#{d['id']} is lost ({d['reason']})"
    if e.kind == "crash":
        return f"{e.node} loses its memory and {d['lost_records']} unflushed record(s)"
    if e.kind == "restart":
        doubt = ", ".join(d["in_doubt"]) or "nothing"
        return f"{e.node} replays {d['replayed']} record(s); in doubt: {doubt}"
    return None


def _replay_one(c: Cluster, i: int, choice: Choice) -> None:
    if choice.msg is not None:
        env = c.network.in_flight.get(choice.msg)
        if env is None or _msg_label(choice.kind, env) != choice.label:
            raise ExploreError(f"step {i} ({choice}) does not match this cluster: setup() "
                               f"must build the same cluster every time (fixed seed, same "
                               f"calls)")
    choice.apply(c)


def fingerprint(c: Cluster, budgets: tuple[int, ...] = (0, 0, 0, 0)) -> int:
    """The search's fingerprint of ``c``'s state (a cluster from :func:`replay`): equal for
    two states exactly when they have the same futures (see the module docstring)."""
    nodes = {n: _NodeSnap(c, n) for n in c.ids}
    return _fingerprint(c, nodes, tuple(budgets), list(c.history))


class _NodeSnap:
    """One node's part of a state: shared by every state in which the node did not change."""

    __slots__ = ("core", "wal", "outbox", "flush_due", "watches", "incarnation", "fp",
                 "core_fp", "log_fp")

    def __init__(self, c: Cluster, n: Any, core_fp: Any = None,
                 log_fp: tuple | None = None) -> None:
        """``core_fp``, ``log_fp``: the core's and the log's (with the held outputs) parts,
        when known (the same core, or the same log and outbox objects, as before)."""
        self.core = core = c._cores[n]
        self.wal = c._wals[n]
        self.outbox = c._outbox[n]
        self.flush_due = c._flush_due[n]
        self.watches = c._watches[n]
        self.incarnation = c._incarnation[n]
        if core_fp is None and core is not None:
            core_fp = core.fingerprint()
        if log_fp is None:
            log_fp = (self.wal.fingerprint(), self.outbox.fingerprint())
        self.core_fp, self.log_fp = core_fp, log_fp
        self.fp = hash((core_fp, *log_fp, self.flush_due,
                        tuple(sorted(self.watches, key=str)) if self.watches else ()))

    def install(self, c: Cluster, n: Any, copy: Any) -> None:
        """``copy``: False to share everything (nothing will change this node); True to copy
        it all; "log" to copy the log, held outputs and watches only (a flush never changes
        the core, a crash drops it); or (core, copy the log?, copy the watches?): that core
        in place, for a transition the search made before (see _reuse)."""
        if type(copy) is tuple:
            core, log, watches = copy
            c._cores[n] = core
            if log:
                wal = self.wal.clone()
                outbox = Outbox(wal)
                outbox.held = list(self.outbox.held)
                c._wals[n], c._outbox[n] = wal, outbox
            else:
                c._wals[n], c._outbox[n] = self.wal, self.outbox
            c._watches[n] = set(self.watches) if watches else self.watches
        elif copy is not False:
            wal = self.wal.clone()
            outbox = Outbox(wal)
            outbox.held = list(self.outbox.held)
            if copy is True:
                c._cores[n] = self.core.clone() if self.core is not None else None
            else:
                c._cores[n] = self.core if isinstance(copy, str) else copy
            c._wals[n], c._outbox[n] = wal, outbox
            c._watches[n] = set(self.watches)
        else:  # the choice does not touch this node: share (nothing will change it)
            c._cores[n], c._wals[n], c._outbox[n] = self.core, self.wal, self.outbox
            c._watches[n] = self.watches
        c._flush_due[n] = self.flush_due
        c._incarnation[n] = self.incarnation


class _TimerHashes(dict):
    """A timer's mixed hash, made on first use: few distinct timers, many states."""

    def __missing__(self, key: tuple) -> int:
        h = self[key] = mixed_hash(key) or 1  # (never 0, as it always was)
        return h


_TIMER_HASH = _TimerHashes()
_NODE_FP = attrgetter("fp")


def _fingerprint(c: Cluster, nodes: dict[Any, _NodeSnap], budgets: tuple[int, ...],
                 history: list[Any], client: tuple | None = None) -> int:
    """The state's fingerprint, from the live cluster and its node parts (see module doc);
    ``client``: :func:`_client_part` of the cluster when known (unchanged by the choice)."""
    net = c.network
    return hash((tuple(map(_NODE_FP, nodes.values())),
                 sum(map(Envelope.key_hash, net.in_flight.values())) & _MASK,
                 sum(map(_TIMER_HASH.__getitem__, c._timers)) & _MASK,
                 tuple(sorted(net.groups.items(), key=str)) if net.groups else (),
                 c.tso.last, *(client or _client_part(c, history)), budgets))


def _client_part(c: Cluster, history: list[Any]) -> tuple:
    """What the clients were told and read, as the fingerprint takes it."""
    return (tuple([(t.id, t.status) for t in history if t.status != "active"]),
            tuple(c._commit_calls), tuple(c._read_calls),
            tuple([tuple([(o.key, o.writer, o.version_ts) for o in t.ops if o.kind == "r"])
                   for t in history]))


class _Client:
    """The client side of a state: the calls still waiting, their handles, the history and
    the replies kept. Shared by a state and its successors while no choice changes it (only
    one that tells a client something, a crash or a restart can)."""

    __slots__ = ("commits", "handles", "reads", "history", "replies", "fp")

    def __init__(self, c: Cluster, history: list[Any], fp: tuple | None = None) -> None:
        self.commits = dict(c._commit_calls)
        self.handles = tuple((h, h._result, h.reason, h.commit_ts)
                             for _, _, h in self.commits.values())
        self.reads = dict(c._read_calls)
        # the ops themselves, not their number: a branch that truncated a list cannot give
        # back a read answered on another branch
        self.history = tuple((t, t.status, t.commit_ts, t.reason, tuple(t.ops))
                             for t in history)
        self.replies = dict(c._replies)
        self.fp = fp if fp is not None else _client_part(c, history)

    def install(self, c: Cluster) -> None:
        c._commit_calls = dict(self.commits)
        for h, result, reason, ts in self.handles:
            h._result, h.reason, h.commit_ts = result, reason, ts
        for t, status, ts, reason, ops in self.history:
            t.status, t.commit_ts, t.reason = status, ts, reason
            t.ops[:] = ops  # reads answered on another branch, or answered differently
        if self.reads or c._read_calls:
            c._read_calls = dict(self.reads)
            for h in self.reads.values():
                h.done, h._value, h.error = False, None, None
        c._replies = dict(self.replies) if self.replies else {}


class _Snap:
    """A whole state: node parts, the client part, plus the cluster-level rest (copied once,
    when new)."""

    __slots__ = ("nodes", "in_flight", "groups", "next_id", "timers", "tso", "now", "seq",
                 "client", "budgets", "fp", "flight")

    def __init__(self, c: Cluster, nodes: dict[Any, _NodeSnap], budgets: tuple[int, ...],
                 client: _Client, fp: int) -> None:
        self.nodes = nodes
        net = c.network
        self.in_flight = dict(net.in_flight)
        self.groups = net.groups  # only partition() and heal() change it, never a choice
        self.next_id = net._next_id
        self.timers = dict(c._timers)
        self.tso = (c.tso.last, c.tso.limit)
        self.now, self.seq = c.now, c._seq
        self.client = client
        self.budgets = budgets
        self.fp = fp
        self.flight: int | None = None  # the messages' part of the fingerprint, once needed


# -- invariants ------------------------------------------------------------------------------------
def _told(c: Cluster) -> dict[str, Any]:
    """Transactions whose client was told "committed", with their history records."""
    return {t.id: t for t in c.history if t.status == "committed"}


def _present(core: Any, node: Any, txn: Any) -> str | None:
    """Why committed ``txn``'s writes are missing on ``node``, or None if they are there
    (or superseded by newer versions, or still to be applied: prepared there)."""
    ptx = core.participant.txs.get(txn.id)
    if ptx is not None and ptx.state in (PREPARED, IN_DOUBT):
        return None
    for op in txn.writes:
        if not core.stores(node, op.key):
            continue
        chain = core.store.chains.get(op.key)
        if not chain:
            if op.deleted:
                continue  # a collected tombstone
            return f"its write to {op.key!r} is missing on {node}"
        if not any(v.writer == txn.id for v in chain) and not (
                txn.commit_ts is not None and chain[-1].commit_ts > txn.commit_ts):
            return f"its write to {op.key!r} is missing on {node}"
    return None


def safety(c: Cluster) -> str | None:
    """Checked on every state: atomicity on the replicas, reported commits kept, and reported
    aborts kept (no write of a transaction its client was told aborted is applied anywhere:
    one-phase commit's participant decides after the client may have heard)."""
    return _safety(c, _core_facts)


def _core_facts(core: Any) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What :func:`safety` reads of one core: the writers of its versions (in order of first
    appearance), and its aborted records (transaction, role), participant's first."""
    writers = dict.fromkeys(v.writer for chain in core.store.chains.values() for v in chain)
    return tuple(writers), tuple(
        [(t.id, "participant") for t in core.participant.txs.values() if t.state == ABORTED]
        + [(t.id, "coordinator") for t in core.coordinator.txs.values() if t.state == ABORTED])


def _safety(c: Cluster, facts: Callable[[Any], tuple]) -> str | None:
    """:func:`safety`, with each core's facts from ``facts`` (the search remembers them per
    core: a core never changes once it is part of a state)."""
    applied: dict[str, list[Any]] = {}
    aborted: dict[str, list[str]] = {}
    for n in c.ids:
        core = c._cores[n]
        if core is None:
            continue
        writers, gone = facts(core)
        for w in writers:
            applied.setdefault(w, []).append(n)
        for tx, role in gone:
            aborted.setdefault(tx, []).append(f"{n} ({role})")
    for tx, nodes in applied.items():
        if tx in aborted:
            return (f"{tx}'s writes are applied on {', '.join(map(str, nodes))} but {tx} "
                    f"aborted on {', '.join(aborted[tx])}: atomicity broken")
    if c.history is not None and applied:
        for t in c.history:
            if t.status == "aborted" and t.id in applied:
                return (f"the client was told {t.id} aborted ({t.reason}), but its writes are "
                        f"applied on {', '.join(map(str, applied[t.id]))}")
    for tx, txn in _told(c).items():
        if tx in aborted:
            return (f"the client was told {tx} committed, but it aborted on "
                    f"{', '.join(aborted[tx])}")
        for n in c.ids:
            core = c._cores[n]
            if core is not None:
                why = _present(core, n, txn)
                if why:
                    return f"the client was told {tx} committed, but {why}"
    return None


def nonblocking(c: Cluster) -> str | None:
    """"After the faults stop, every live participant decides without any crashed node
    restarting": pass it in ``invariants``. It judges only quiet states (nothing in flight, no
    timer set, no flush due), where nothing more can happen unless a node restarts; a live
    participant still prepared there is blocked, waiting for a node that is down."""
    if c.network.in_flight or c._timers or any(c._flush_due.values()):
        return None
    down = [n for n in c.ids if c._cores[n] is None]
    for n in c.ids:
        core = c._cores[n]
        if core is None:
            continue
        for t in core.participant.in_doubt():
            return (f"{t.id} is blocked {t.state} on {n}: nothing more can happen until "
                    f"{', '.join(map(str, down)) or 'a crashed node'} restarts "
                    f"(its coordinator is {t.coordinator})")
    return None


def crash_points(setup: Callable[[], Cluster], node: Any, invariant: Invariant = nonblocking,
                 lose_sends: bool = True) -> list[tuple[int, str, str | None]]:
    """Crash ``node`` after each event of ``setup``'s fault-free run, in turn, run to quiet
    without restarting it, and check ``invariant``: one ``(events before the crash, the last
    event, why it fails or None)`` per crash point. The blocking window, measured.

    ``lose_sends``: the crash also loses the messages ``node`` sent that are still in flight
    (a dead machine's socket buffers go with it), so some participants hear and others do not:
    the case cooperative termination and Paxos Commit exist for."""
    base = setup()
    events = []
    while True:
        before = len(base.trace)
        if not base._step():
            break
        last = [e for e in base.trace[before:] if e.kind in ("deliver", "flush", "timer", "fire")]
        events.append(str(last[0]) if last else str(base.trace[before]))
    out: list[tuple[int, str, str | None]] = []
    for k in range(len(events) + 1):
        c = setup()
        for _ in range(k):
            c._step()
        c.crash(node)
        if lose_sends:
            for env in [e for e in c.pending() if e.msg.src == node]:
                c.drop(env)
        c.run(max_steps=100_000)
        out.append((k, events[k - 1] if k else "(before any event)", invariant(c)))
    return out


def finished(c: Cluster) -> str | None:
    """Checked at the end of every schedule, once every node is up and the run is quiet."""
    for n in c.ids:
        core = c._cores[n]
        for t in core.participant.in_doubt():
            return f"{t.id} is still {t.state} on {n} with every node up: it never decided"
        for t in core.coordinator.txs.values():
            if t.state in (PREPARING, AWAIT_TS, COMMITTING, DELEGATED):
                return f"{n}'s coordinator still has {t.id} in {t.state} with every node up"
        if core.store.write_locks or core.store.read_locks:
            key = next(iter(core.store.write_locks or core.store.read_locks))
            return f"{n} still holds a lock on {key!r} with every node up"
    report = audit(c)
    if not report:
        return "; ".join(report.problems)
    for tx, txn in _told(c).items():
        for n in c.ids:
            why = _present(c._cores[n], n, txn)
            if why:
                return f"the client was told {tx} committed, but {why}"
    why = _stale_read(c)
    if why:
        return why
    levels = {t.isolation for t in c.history}
    if levels:
        level = min(levels, key=_LEVEL_ORDER.index)
        rep = check(c.history, level=level)
        if not rep.ok:
            a = rep.anomalies[0]
            return f"the history is not {level}: {a.name}: {a.explanation}"
    return None


def _stale_read(c: Cluster) -> str | None:
    """A snapshot read that missed a version committed at or below its snapshot (what a read
    that ignores a prepared writer would do)."""
    committed = [t for t in c.history if t.status == "committed" and t.commit_ts is not None]
    for t in c.history:
        if t.isolation == "read_committed" or t.start_ts is None:
            continue
        for op in t.ops:
            if op.kind != "r" or op.writer == t.id:
                continue
            seen = op.version_ts or 0
            for w in committed:
                if w.id != t.id and seen < w.commit_ts <= t.start_ts and any(
                        o.key == op.key for o in w.writes):
                    return (f"{t.id} read {op.key!r} from {op.writer or 'the initial state'}, "
                            f"but {w.id} committed it at ts {w.commit_ts}, within {t.id}'s "
                            f"snapshot (ts {t.start_ts}): a stale snapshot read")
    return None


# -- the search ------------------------------------------------------------------------------------
_Local = tuple  # a local choice: (node or oracle it changes, taken message's source, its hash)
_Made = tuple  # a local choice made somewhere: _Local + (hashes of the sends it merged,)
_CRASH = "crash"  # a crash's _Local: (node, _CRASH, torn)
_NONE: frozenset = frozenset()
_STEPS = 50_000  # entries a cache holds (a core transition: a few kB) before all start over


class _Search:
    reuse = True  # reuse core transitions made before (the tests compare with it off)

    def __init__(self, setup: Callable[[], Cluster], budgets: dict[str, int],
                 invariants: list[Invariant], end_invariants: list[Invariant]) -> None:
        self.setup = setup
        self.c = _prepare(setup())
        self.c.trace.enabled = False
        self.c._calls.journal = None
        self.c._exploring = True
        self.c._queue = []
        self.merged: list[int] = []  # messages a choice sent that merged with one in flight
        net = self.c.network
        # each message's fingerprint, by the message object (a transition made again sends
        # the same objects): (message, kept alive so the id stays its own; key; mixed hash)
        self.keys: dict[int, tuple] = {}

        def noting_merges(msg: Any, now: int) -> list[Any]:
            """Network.send with merge_identical (and no random duplicates, see _prepare),
            noting the merges."""
            got = self.keys.get(id(msg))
            if got is None:
                key = msg.key()
                h = mixed_hash(key)
                self.keys[id(msg)] = (msg, key, h)
            else:
                _, key, h = got
            for e in net.in_flight.values():
                if e.key_hash() == h and e._key == key:
                    self.merged.append(h)
                    return []
            env = net.carry(msg, now)
            env._key, env._hash = key, h
            return [env]

        net.send = noting_merges  # this cluster's network only
        self.watched = False  # a choice armed a peer-up timer: it read whether peers are up
        arm = self.c._arm_watches

        def noting_watches(only: Any = None, delay: int = 1) -> None:
            self.watched = True
            arm(only, delay)

        self.c._arm_watches = noting_watches  # this cluster only
        # core transitions made so far: (id of the core, id of the message or the timer key)
        # -> (that core and input, kept alive so the ids stay theirs; the new core; its
        # outputs; the new core's fingerprint; the hashes of the records it appended)
        self.steps: dict[tuple, tuple] = {}
        self.known: dict[int, Any] = {}  # the states found so far (the search's parents)
        self.facts_of: dict[int, tuple] = {}  # id of a core -> (its facts for safety, it)
        self.verdicts: dict[tuple, tuple] = {}  # ids of the cores and client part -> safety
        self.envs: dict[int, tuple] = {}  # id of an envelope -> (it, its delivery, identity)
        self.labelled: dict[tuple, Choice] = {}  # the other choices, made once
        self.history = list(self.c.history)
        self.invariants = invariants
        self.end_invariants = end_invariants
        self.names = ("crashes", "drops", "duplicates", "timeouts")
        self.root = self.snap({n: _NodeSnap(self.c, n) for n in self.c.ids},
                              tuple(budgets[k] for k in self.names))

    def close(self) -> None:
        """Take the hooks off the cluster. They refer back to the search, a reference cycle
        that kept every state it made alive until a collector pass freed them all at once
        (about 1.5 s after a 50,000-state search); without it they go as the search ends."""
        for hooked, name in ((self.c.network, "send"), (self.c, "_arm_watches")):
            hooked.__dict__.pop(name, None)

    def snap(self, nodes: dict[Any, _NodeSnap], budgets: tuple[int, ...]) -> _Snap:
        self.client = _Client(self.c, self.history)
        fp = _fingerprint(self.c, nodes, budgets, self.history, self.client.fp)
        return _Snap(self.c, nodes, budgets, self.client, fp)

    def choices(self, s: _Snap) -> list[tuple[Choice, tuple[int, ...], tuple[Any, ...],
                                              _Local | None]]:
        """Every choice at state ``s``: (choice, budgets after it, nodes it may change, its
        local identity for the reduction, or None: dependent on everything)."""
        c = self.c
        crashes, drops, dups, early = s.budgets
        # an open batch (kvlab.batching) is a message on its way: its timer is free to fire
        # at any moment (sooner is a legal schedule: the window is a bound), and until it has,
        # the network is not quiet
        batches = [(n, k) for n, k in s.timers if k[0] == "batch"]
        quiet = not s.in_flight and not batches and \
            not any(ns.flush_due for ns in s.nodes.values())
        out: list[tuple[Choice, tuple[int, ...], tuple[Any, ...], _Local | None]] = []
        for node, key in sorted(batches, key=lambda k: (str(k[0]), str(k[1][1]))):
            out.append((Choice("fire", node=node, key=key,
                               label=f"send {node}'s batch to {key[1]}"), s.budgets, (node,),
                        None))
        envs = self.envs
        if len(envs) >= _STEPS:
            self.forget()
        flight = s.in_flight
        for i in sorted(flight):  # (keyed by the envelopes' ids)
            env = flight[i]
            got = envs.get(id(env))
            if got is None:  # (an envelope is never changed, and is shared by states)
                m = env.msg
                got = envs[id(env)] = (env, Choice("deliver", msg=env.id,
                                                   label=_msg_label("deliver", env)),
                                       (m.dst, m.src, env.key_hash()))
            dst = got[2][0]
            touched = () if dst == TSO or s.nodes[dst].core is None else (dst,)
            out.append((got[1], s.budgets, touched, got[2]))
            if drops:
                out.append((Choice("drop", msg=env.id, label=_msg_label("drop", env)),
                            (crashes, drops - 1, dups, early), (), None))
            if dups:
                out.append((Choice("duplicate", msg=env.id, label=_msg_label("duplicate", env)),
                            (crashes, drops, dups - 1, early), (), None))
        # timers and restarts: free once the network is quiet, else they spend "early"
        later = s.budgets if quiet else (crashes, drops, dups, early - 1)
        if not quiet and not early:
            later = None
        made = self.labelled
        for n, ns in s.nodes.items():
            if ns.flush_due:
                choice = made.get(("flush", n))
                if choice is None:
                    choice = made["flush", n] = Choice("flush", node=n, label=f"flush {n}'s log")
                out.append((choice, s.budgets, (n,), (n, None, None)))
        for node, key in sorted((t for t in s.timers if t[1][0] != "batch"),
                                key=lambda k: (str(k[0]), repr(k[1]))) \
                if later is not None else ():
            choice = made.get(("fire", node, key, quiet))
            if choice is None:
                label = f"fire {node}'s timer {' '.join(map(str, key))}" + (
                    "" if quiet else " (early)")
                choice = made["fire", node, key, quiet] = Choice("fire", node=node, key=key,
                                                                 label=label)
            out.append((choice, later, (node,), None))
        for n, ns in s.nodes.items():
            if ns.core is None:
                if later is not None:
                    out.append((Choice("restart", node=n, label=f"restart {n}" + (
                        "" if quiet else " (early)")), later, tuple(c.ids), None))
            elif crashes:
                after = (crashes - 1, drops, dups, early)
                out.append((Choice("crash", node=n, label=f"crash {n}"), after, (n,),
                            (n, _CRASH, False)))
                if ns.wal.unflushed:
                    out.append((Choice("crash", node=n, torn=True,
                                       label=f"crash {n} (torn write)"), after, (n,),
                                (n, _CRASH, True)))
        return out

    def install(self, s: _Snap, copy: Iterable[Any] = (), how: Any = True) -> None:
        """Put state ``s`` in the cluster, the nodes in ``copy`` copied (``how``: see
        :meth:`_NodeSnap.install`), the others shared: nothing changes them."""
        c = self.c
        cores, wals, outbox, watches = c._cores, c._wals, c._outbox, c._watches
        due, inc = c._flush_due, c._incarnation
        for n, ns in s.nodes.items():
            if n in copy:
                ns.install(c, n, how)
            else:
                cores[n], wals[n], outbox[n], watches[n] = ns.core, ns.wal, ns.outbox, \
                    ns.watches
                due[n], inc[n] = ns.flush_due, ns.incarnation
        net = c.network
        net.in_flight = s.in_flight.copy()
        net.groups = s.groups
        net._next_id = s.next_id
        c._timers = s.timers.copy()
        c.tso.last, c.tso.limit = s.tso
        c.now, c._seq = s.now, s.seq
        if self.client is not s.client:  # (else: in place, and no choice since changed it)
            s.client.install(c)
            self.client = s.client

    def expand(self, s: _Snap, choice: Choice, budgets: tuple[int, ...],
               touched: tuple[Any, ...], predict: bool = True
               ) -> tuple[int, dict | None, frozenset | None, str | None]:
        """Apply ``choice`` at ``s``, leaving the cluster in the new state: its fingerprint,
        its node parts (for :meth:`make`), the messages it sent that merged with identical
        ones in flight (None if it told a client something: then it is dependent on
        everything, see :func:`_independent`), and a violation if one shows (an exception
        escaping a handler). With ``predict``, a state already known may come back without
        node parts and with the cluster unchanged (see :meth:`_predict`)."""
        c = self.c
        k = choice.kind
        # a delivery to a live node or a timer: one core's transition, which depends on that
        # core and the input alone (a sans-I/O state machine), so one made before (the same
        # core object, the same message object or timer) is reused instead of made again
        step = None
        if ((k == "deliver" and touched) or k == "fire") and self.reuse and \
                not c.network.groups:
            # (a partition may drop the message before the core sees it: no reuse then)
            n = touched[0]
            core = s.nodes[n].core
            inp = s.in_flight[choice.msg].msg if k == "deliver" else choice.key
            step = (id(core), id(inp) if k == "deliver" else inp)
            made = self.steps.get(step)
            if made is not None:
                guess = self._predict(s, choice, budgets, n, made) if predict else None
                if guess is not None and guess[0] in self.known:
                    return guess[0], None, guess[1], None  # (the cluster is left as it was)
                got = self._reuse(s, choice, budgets, n, made)
                if guess is not None and got[3] is None and (got[0], got[2]) != guess:
                    raise ExploreError(f"kvlab.explore's prediction of {choice} differs from "
                                       f"making it: please report this")
                return got
        # a flush never changes the core, and a crash drops it: copy the log only
        self.install(s, touched, "log" if k == "flush" or k == "crash" else True)
        told = len(c._commit_calls), len(c._read_calls), len(c._replies)
        self.merged.clear()
        self.watched = False
        try:
            if step is None:
                _apply_fast(c, choice)
            else:
                new = c._cores[n]
                if k == "deliver":
                    c._take(choice.msg)
                    out = new.deliver(inp)
                else:
                    del c._timers[(n, inp)]
                    out = new.handle(Fire(inp))
                c._apply(n, out)
        except Exception as e:  # noqa: BLE001 - any exception escaping a handler is a finding
            self.client = None
            return 0, None, None, f"{type(e).__name__} raised by {choice}: {e}"
        merged = self._merged(told, k)
        nodes = dict(s.nodes)
        if step is None:
            for n in touched:  # (a flush keeps the core, and its fingerprint)
                nodes[n] = _NodeSnap(c, n, s.nodes[n].core_fp if k == "flush" else None)
        else:
            fp = new.fingerprint()
            if len(self.steps) >= _STEPS:
                self.forget()
            recs = out._records
            hs = tuple(map(_record_hash, c._wals[n].unflushed[-len(recs):])) if recs else ()
            self.steps[step] = (core, inp, new, out, fp, hs)
            nodes[n] = _NodeSnap(c, n, fp)
        client = self.client.fp if self.client is not None else None
        return _fingerprint(c, nodes, budgets, self.history, client), nodes, merged, None

    def _predict(self, s: _Snap, choice: Choice, budgets: tuple[int, ...], n: Any,
                 made: tuple) -> tuple[int, frozenset] | None:
        """The fingerprint and merged sends :meth:`_reuse` would give, worked out from ``s``
        alone, without changing the cluster, for a transition whose outputs only send
        messages and set or cancel timers (no records, nothing held back, no client told, no
        peer watched): what ``Cluster._apply`` then does is just that. None for any other.
        Used only to recognise states already found; a new one is made for real, and its
        fingerprint must agree (checked)."""
        _core, inp, _new, out, fp, _hs = made
        if out._records or out._replies or out._outcomes or out._watch:
            return None
        ns = s.nodes[n]
        if ns.wal.forced_lsn > ns.wal.flushed_lsn:
            return None  # (the outputs would be held until a flush)
        flight = s.in_flight
        total = s.flight
        if total is None:
            total = s.flight = sum(map(Envelope.key_hash, flight.values()))
        taken = flight[choice.msg] if choice.kind == "deliver" else None
        if taken is not None:
            total -= taken.key_hash()
        merged: list[int] = []
        sent: list[tuple] = []
        keys = self.keys
        for msg in out._messages or ():  # noting_merges, without sending
            got = keys.get(id(msg))
            if got is None:
                key = msg.key()
                h = mixed_hash(key)
                keys[id(msg)] = (msg, key, h)
            else:
                _, key, h = got
            if (h, key) in sent or any(e is not taken and e.key_hash() == h and e._key == key
                                       for e in flight.values()):
                merged.append(h)
            else:
                sent.append((h, key))
                total += h
        timers = s.timers.copy()  # Cluster._fire, _apply and _release on the keys
        if taken is None:
            del timers[(n, inp)]
        for key in out._cancel or ():
            timers.pop((n, key), None)
        for key, _delay in out._timers or ():
            timers[(n, key)] = 0
        node = hash((fp, *ns.log_fp, ns.flush_due,
                     tuple(sorted(ns.watches, key=str)) if ns.watches else ()))
        fps = tuple([node if m == n else o.fp for m, o in s.nodes.items()])
        return hash((fps, total & _MASK, sum(map(_TIMER_HASH.__getitem__, timers)) & _MASK,
                     (), s.tso[0], *s.client.fp, budgets)), \
            frozenset(merged) if merged else _NONE

    def forget(self) -> None:
        """Empty the caches (only time is lost: each keeps alive the objects it is keyed by,
        which would otherwise go with the states the search is done with)."""
        for cache in (self.steps, self.keys, self.facts_of, self.envs, self.verdicts):
            cache.clear()

    def _reuse(self, s: _Snap, choice: Choice, budgets: tuple[int, ...], n: Any,
               made: tuple) -> tuple[int, dict | None, frozenset | None, str | None]:
        """:meth:`expand` with the core's transition made before: the new core (never
        changed once made: every later transition starts from a copy) and its outputs (never
        changed by the driver), carried out as ``Cluster._arrive`` / ``_fire`` would."""
        c = self.c
        _core, inp, new, out, fp, hs = made
        # what carrying the outputs out can change at the node: the log and the held outputs
        # (records to append, or outputs to hold until the next flush), the watches
        ns = s.nodes[n]
        log = bool(out._records) or ns.wal.forced_lsn > ns.wal.flushed_lsn
        self.install(s, (n,), (new, log, bool(out._watch)))
        told = len(c._commit_calls), len(c._read_calls), len(c._replies)
        self.merged.clear()
        self.watched = False
        try:
            if choice.kind == "deliver":
                del c.network.in_flight[choice.msg]  # (Cluster._take: the id is in flight)
            else:
                del c._timers[(n, inp)]
            c._apply(n, out)
        except Exception as e:  # noqa: BLE001 - any exception escaping a handler is a finding
            self.client = None
            return 0, None, None, f"{type(e).__name__} raised by {choice}: {e}"
        if hs:  # the records just appended hash as they did the first time
            for rec, r, h in zip(c._wals[n].unflushed[-len(hs):], out._records, hs,
                                 strict=False):
                if rec.h is None and rec.data is r.data and rec.type == r.type:
                    rec.h = h
        merged = self._merged(told, choice.kind)
        nodes = dict(s.nodes)
        nodes[n] = _NodeSnap(c, n, fp, None if log else ns.log_fp)
        client = self.client.fp if self.client is not None else None
        return _fingerprint(c, nodes, budgets, self.history, client), nodes, merged, None

    def _merged(self, told: tuple[int, int, int], kind: str) -> frozenset | None:
        """The hashes of the sends the choice just made that merged with messages in flight;
        None if it told a client something or armed a peer-up timer (see expand). A choice
        that told a client something, a crash or a restart may change the client part: the
        one installed is then not known to be in place any more."""
        c = self.c
        if told != (len(c._commit_calls), len(c._read_calls), len(c._replies)):
            self.client = None
            return None
        if kind == "crash" or kind == "restart":
            self.client = None
        if self.watched:
            return None
        return frozenset(self.merged) if self.merged else _NONE

    def make(self, nodes: dict[Any, _NodeSnap], budgets: tuple[int, ...], fp: int) -> _Snap:
        """The state :meth:`expand` just reached, as a snapshot."""
        if self.client is None:
            self.client = _Client(self.c, self.history)
        return _Snap(self.c, nodes, budgets, self.client, fp)

    def facts(self, core: Any) -> tuple:
        """:func:`_core_facts`, remembered per core object (kept alive with them)."""
        got = self.facts_of.get(id(core))
        if got is None:
            got = self.facts_of[id(core)] = (_core_facts(core), core)
        return got[0]

    def safety(self) -> str | None:
        """:func:`safety` of the cluster's state, remembered per combination of cores and
        client part (all it reads; none of them changes once part of a state)."""
        c = self.c
        key = (*map(id, c._cores.values()), id(self.client))
        got = self.verdicts.get(key)
        if got is None:
            if len(self.verdicts) >= _STEPS:
                self.forget()
            got = self.verdicts[key] = (_safety(c, self.facts), tuple(c._cores.values()),
                                        self.client)
        return got[0]

    def check(self) -> str | None:
        for inv in self.invariants:
            why = self.safety() if inv is safety else inv(self.c)
            if why:
                return why
        return None

    def terminal(self, s: _Snap) -> bool:
        return not s.in_flight and not s.timers and not any(
            ns.flush_due for ns in s.nodes.values())

    def end_check(self, s: _Snap) -> str | None:
        """Restart every crashed node, run to quiet, and check the end invariants."""
        c = self.c
        self.install(s, c.ids)
        self.client = None  # (the run below changes it)
        c._requeue()
        try:
            for n in c.ids:
                if c._cores[n] is None:
                    c.restart(n)
            c.run(max_steps=100_000)
            for inv in self.end_invariants:
                why = inv(c)
                if why:
                    return f"after restarting every node and running to quiet: {why}"
            return None
        except Exception as e:  # noqa: BLE001
            return f"after restarting every node and running: {type(e).__name__}: {e}"
        finally:
            c._exploring = True
            c._queue = []


def _apply_fast(c: Cluster, choice: Choice) -> None:
    """A choice without the public layer's bookkeeping (the search calls this a great many
    times; :func:`replay` uses :meth:`Choice.apply`, which does the same through the API)."""
    k = choice.kind
    if k == "deliver":
        c._arrive(c._take(choice.msg))
    elif k == "fire":
        c._fire(choice.node, choice.key)
    elif k == "flush":
        c._flush(choice.node)
    elif k == "crash":
        _CRASH_NODE(c, choice.node, torn=choice.torn)
    else:
        choice.apply(c)


# Cluster.crash without the public layer (its lock, journal and traceback trimming: the
# search holds no other thread, keeps no journal, and reports an exception by its message)
_CRASH_NODE = getattr(Cluster.crash, "__wrapped__", Cluster.crash)


def search(setup: Callable[[], Cluster], crashes: int = 1, drops: int = 0,
           duplicates: int = 0, max_states: int | None = None,
           time_limit: float | None = None, invariants: Iterable[Invariant] | None = None,
           strategy: str = "bfs", max_depth: int | None = None,
           end_invariants: Iterable[Invariant] | None = None,
           progress: bool | None = None, timeouts: int = 0, reduce: bool = True) -> Result:
    """Search every schedule from ``setup()``'s state within the fault budgets.

    ``invariants`` are extra callables ``invariant(cluster) -> str | None`` checked on every
    state (None: it holds), after the default :func:`safety`; ``end_invariants`` are checked
    at the end of every schedule (every crashed node restarted, run to quiet) after the
    default :func:`finished`. ``strategy``: ``"bfs"`` (the violation found has the shortest
    schedule) or ``"dfs"``. Stops at a violation, when everything reachable was visited
    ("exhausted"), or at ``max_states`` / ``time_limit`` seconds / ``max_depth`` / Ctrl-C
    ("limit", with what was found so far). ``progress``: a tqdm bar (default: on for searches
    that run longer than a few seconds). ``reduce``: skip choices whose states another order
    reaches (sleep sets, see the module docstring): the same states and verdicts, fewer
    choices made; ``reduce=False`` makes every choice at every state.
    """
    for name, v in (("crashes", crashes), ("drops", drops), ("duplicates", duplicates),
                    ("timeouts", timeouts)):
        if type(v) is not int or v < 0:
            raise ExploreError(f"{name} is a budget: a whole number >= 0, got {v!r}")
    if strategy not in ("bfs", "dfs"):
        raise ExploreError(f"strategy is 'bfs' or 'dfs', got {strategy!r}")
    with warnings.catch_warnings(), _collector_paused():
        warnings.simplefilter("ignore", TornTailWarning)  # torn tails are part of the search
        return _run(setup, {"crashes": crashes, "drops": drops, "duplicates": duplicates,
                            "timeouts": timeouts},
                    [safety, *(invariants or ())], [finished, *(end_invariants or ())],
                    max_states, time_limit, strategy, max_depth, progress, reduce)


def _independent(u: _Made, t: _Made, last: bool) -> bool:
    """Two local choices commute and neither disables the other (see the module docstring):
    they change different nodes (or the oracle); neither takes a message the other sent into
    (a send merges with an identical message in flight, so it depends on that message being
    there); they are not both crashes (which share the budget); and not a crash and another
    choice at a state with one message or flush ``last``: that choice may end the run, and
    the search does not expand a state where it ended (see ``terminal()``)."""
    return u[0] != t[0] and u[2] not in t[3] and t[2] not in u[3] and not (
        (u[1] is _CRASH or last) and (t[1] is _CRASH or last) and (
            u[1] is _CRASH or t[1] is _CRASH))


def _run(setup: Callable[[], Cluster], budgets: dict[str, int], invariants: list[Invariant],
         end_invariants: list[Invariant], max_states: int | None, time_limit: float | None,
         strategy: str, max_depth: int | None, progress: bool | None,
         reduce: bool = True, graph: dict | None = None) -> Result:
    s = _Search(setup, budgets, invariants, end_invariants)
    start = time.perf_counter()
    root = s.root
    parents: dict[int, tuple[int, Choice] | None] = {root.fp: None}
    s.known = parents
    # the reduction's books: the sleep set stored with each state (when not empty), with its
    # depth; the states found but not expanded yet (a revisit there just shrinks the set)
    sleep: dict[int, tuple[frozenset, int]] = {}
    waiting: set[int] = {root.fp}
    frontier: deque[tuple[_Snap, int, frozenset | None]] = deque([(root, 0, None)])
    pop = frontier.popleft if strategy == "bfs" else frontier.pop
    transitions = terminal = depth_seen = slept = 0
    status, violation, at, finish = "exhausted", None, None, False
    bar = _Progress(progress)

    def schedule_to(fp: int, last: Choice | None = None) -> Schedule:
        steps = [last] if last is not None else []
        link = parents[fp]
        while link is not None:
            fp, choice = link
            steps.append(choice)
            link = parents[fp]
        return Schedule(reversed(steps))

    s.install(s.root)
    violation = s.check()
    if violation:
        s.close()
        return Result("violation", 1, 0, time.perf_counter() - start, violation, Schedule(),
                      setup=setup)
    try:
        while frontier:
            state, depth, only = pop()
            fp = state.fp
            if only is None:  # the first expansion (else: a revisit woke up slept choices)
                waiting.discard(fp)
                depth_seen = max(depth_seen, depth)
                if s.terminal(state):
                    terminal += 1
                    why = s.end_check(state)
                    if why:
                        status, violation, at = "violation", why, schedule_to(fp)
                        finish = True
                        break
                    continue
            if max_depth is not None and depth >= max_depth:
                status = "limit"
                continue
            z = sleep[fp][0] if fp in sleep else _NONE
            # local choices not to make: asleep, or made here already (a duplicate copy of a
            # message is the same choice); on a revisit, all but the ones it woke up
            skip = {u[:3] for u in z}
            wake = None if only is None else {u[:3] for u in only}
            done: list[_Made] = []  # choices made here that later choices may sleep on
            last = len(state.in_flight) + sum([ns.flush_due for ns in state.nodes.values()]) < 2
            for choice, budgets, touched, tid in s.choices(state):
                if reduce:
                    if tid is None:
                        if wake is not None:
                            continue  # made at the first expansion
                    elif tid in skip or (wake is not None and tid not in wake):
                        slept += 1
                        continue
                    else:
                        skip.add(tid)
                transitions += 1
                cfp, nodes, merged, why = s.expand(state, choice, budgets, touched)
                if why is None:
                    zc = _NONE
                    if reduce and tid is not None and merged is not None:
                        made = (*tid, merged)
                        if z or done:
                            zc = frozenset([u for u in (*z, *done)
                                            if _independent(u, made, last)])
                        done.append(made)
                    if cfp in parents:  # seen before: it may have to wake slept choices
                        entry = sleep.get(cfp)
                        if entry is not None and not entry[0] <= zc:
                            zx, dx = entry
                            if zx & zc:
                                sleep[cfp] = (zx & zc, dx)
                            else:
                                del sleep[cfp]
                            if cfp not in waiting:
                                if nodes is None:  # only predicted: make it for real
                                    got = s.expand(state, choice, budgets, touched, False)
                                    if got[0] != cfp or got[2] != merged or got[3]:
                                        raise ExploreError(
                                            f"kvlab.explore's prediction of {choice} differs "
                                            f"from making it: please report this")
                                    nodes = got[1]
                                frontier.append((s.make(nodes, budgets, cfp), dx, zx - zc))
                        continue
                    parents[cfp] = (fp, choice)
                    child = s.make(nodes, budgets, cfp)
                    why = s.check()
                    if why is None:
                        frontier.append((child, depth + 1, None))
                        if reduce:
                            waiting.add(cfp)
                            if zc:
                                sleep[cfp] = (zc, depth + 1)
                        continue
                status, violation = "violation", why
                at = schedule_to(fp, choice)
                break
            if violation:
                break
            bar.update(len(parents), depth_seen, start)
            if (max_states is not None and len(parents) >= max_states) or (
                    time_limit is not None and time.perf_counter() - start > time_limit):
                status = "limit"
                break
    except KeyboardInterrupt:
        status = "limit"
    finally:
        bar.close(len(parents))
        s.close()
    if graph is not None:  # for the tests: every state found, with its schedule's length
        for fp in parents:
            n, link = 0, parents[fp]
            while link is not None:
                n, link = n + 1, parents[link[0]]
            graph[fp] = n
    if status == "violation":
        depth_seen = len(at)
    return Result(status, len(parents), depth_seen, time.perf_counter() - start, violation,
                  at or Schedule(), transitions, terminal, setup, finish, slept)


class _Progress:
    """A tqdm.auto bar, shown once a search has run for a second (or always/never)."""

    def __init__(self, want: bool | None) -> None:
        self.want, self.bar, self.last = want, None, 0.0

    def update(self, states: int, depth: int, start: float) -> None:
        now = time.perf_counter()
        if now - self.last < 0.25 or self.want is False:
            return
        self.last = now
        if self.bar is None:
            if self.want is None and now - start < 3.0:
                return
            from tqdm.auto import tqdm
            self.bar = tqdm(desc="explore", unit=" states", total=None, initial=states)
        self.bar.n = states
        self.bar.set_postfix(depth=depth, rate=f"{states / (now - start):,.0f}/s",
                             refresh=False)
        self.bar.refresh()

    def close(self, states: int) -> None:
        if self.bar is not None:
            self.bar.n = states  # the final count, not the last refresh's
            self.bar.refresh()
            self.bar.close()


__all__ = ["search", "replay", "explain", "fingerprint", "Result", "Schedule", "Choice",
           "safety", "finished", "nonblocking", "crash_points", "ExploreError"]
