"""A seeded schedule fuzzer: random faults and interleavings, then every safety property.

Each schedule builds a cluster from its seed (3-4 nodes with string or int ids, both placements,
a mix of isolation levels, latency, loss, duplication, tight timeouts, small checkpoint / GC /
keep_outcomes settings, memory or file disks, a calm / normal / stormy fault mix) and runs
100-400 random actions: begin, put, get, delete, read-then-write, commit_async, commit,
rollback, wait on a handle, reuse of a finished transaction (must be refused), step, run,
deliver / drop / duplicate a pending message, crash (torn or not), restart, partition, heal,
checkpoint, gc, and (file disks) close and reopen the data directory mid-run, with several
transactions in flight over a few keys so that they conflict. Then it heals, restarts every
node, finishes every open transaction, runs to quiet and checks:

* every node agrees on every outcome (all remembered coordinator and participant records, the
  commit handles, ``outcome()`` and the history), after every action as well as at the end;
* a transaction's writes are on all of its replicas or on none: each replica's version chain is
  exactly the newest part of the key's committed versions (older ones only where GC may have
  collected them), and no version comes from a transaction not reported committed;
* every commit the API reported is readable on every node (a fresh transaction sees the newest
  committed write of each key); every read of every transaction, committed or not, saw what its
  isolation level promises (a snapshot read: the newest committed version at its snapshot);
* no transaction undecided, no lock held, no parked read, no handle left running; kvlab.audit
  agrees;
* :func:`kvlab.check` is clean with each transaction judged at its own isolation level;
* replaying the journal gives the same trace (trace on, memory disks);
* reopening the data directory (file disks) or crashing and restarting every node (memory
  disks) gives the same state, and the recovered cluster still commits and reads.

Only documented errors are tolerated (SimulationTimeout, NodeUnavailable, and Transaction-
NotFound/Closed where the client's view says they can happen); anything else, a ProtocolError
included, fails the schedule with its seed.

A schedule is a list of abstract actions whose arguments are plain numbers, interpreted against
the cluster's state when they run (e.g. "deliver pending message number a % len(pending)"), so a
failing schedule can be shrunk by deleting actions (:func:`minimise`), and ``log=`` records the
concrete public-API calls it made, from which :func:`reproducer` writes a standalone script::

    from test_fuzz import *
    actions = minimise(123)
    open("/tmp/repro.py", "w").write(reproducer(123, actions, make_config(123)))

CI runs ``CI_SCHEDULES`` seeds. ``KVLAB_FUZZ_SCHEDULES=N`` runs N more (``-k long``; seeds from
``KVLAB_FUZZ_SEED_BASE``, default 100000) and prints a summary.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

import kvlab
from kvlab.history import History, Op, Txn
from kvlab.node import owner_of

LEVELS = ("read_committed", "snapshot", "serializable")
RANK = {lvl: i for i, lvl in enumerate(LEVELS)}
UNDECIDED_COORD = ("ACTIVE", "PREPARING", "AWAIT_TS")

ACTIONS = {  # name -> weight
    "begin": 16, "put": 14, "delete": 3, "get": 10, "rmw": 10, "commit_async": 12, "commit": 4,
    "rollback": 2, "wait": 2, "step": 15, "run": 2, "deliver": 8, "drop": 3, "duplicate": 3,
    "crash": 3, "restart": 4, "partition": 2, "heal": 2, "checkpoint": 1, "gc": 1, "reuse": 1,
    "reopen": 0.5, "crash_dirty": 1.5,
}
FAULTS = ("drop", "crash", "restart", "partition", "heal", "reopen", "crash_dirty")
PROFILES = {"calm": 0.1, "normal": 1.0, "storm": 3.0}  # how much weight the faults get

RUN_LIMIT = 200_000  # events
CI_SCHEDULES = 300
CI_CHUNK = 20

# KVLAB_FUZZ_PROTOCOL=cooperative|paxos (and KVLAB_FUZZ_FAST_READS=1, KVLAB_FUZZ_ONE_PHASE=1,
# KVLAB_FUZZ_BATCH=ticks)
# fuzz the other commit protocols, fast reads and one-phase commit with the same schedules; the
# default is the lessons' 2PC.
PROTOCOL: dict[str, Any] = {}
if os.environ.get("KVLAB_FUZZ_PROTOCOL"):
    PROTOCOL["commit_protocol"] = os.environ["KVLAB_FUZZ_PROTOCOL"]
if os.environ.get("KVLAB_FUZZ_FAST_READS") == "1":
    PROTOCOL["fast_reads"] = True
if os.environ.get("KVLAB_FUZZ_ONE_PHASE") == "1":
    PROTOCOL["one_phase"] = True
if os.environ.get("KVLAB_FUZZ_BATCH"):  # a batch window in ticks (kvlab.batching)
    PROTOCOL["batch_window"] = int(os.environ["KVLAB_FUZZ_BATCH"])


class FuzzFailure(AssertionError):
    """A schedule broke a property (or the engine raised something it must not)."""


# -------------------------------------------------------------------------------------------
# configuration and schedule, both from the seed
# -------------------------------------------------------------------------------------------
def make_config(seed: int) -> dict[str, Any]:
    rng = random.Random(f"config-{seed}")
    n = rng.choice((3, 3, 4))
    ids: list[Any] = [f"n{i + 1}" for i in range(n)] if rng.random() < 0.8 else \
        [i + 1 for i in range(n)]
    mix = rng.choice((["snapshot"], ["serializable"], ["read_committed"],
                      ["snapshot", "serializable"], ["read_committed", "snapshot"],
                      list(LEVELS), list(LEVELS)))
    lo = rng.randint(1, 3)
    hi = lo + rng.choice((0, 1, 3, 8))
    fsync = rng.choice((0, 1, 1, 3))
    least = 2 * hi + 2 * fsync + 2  # a round trip and a flush: tighter and nothing commits
    timing = dict(vote_timeout=rng.randint(least, least + 60),
                  ts_timeout=rng.randint(least, least + 60),
                  decision_timeout=rng.randint(15, 80), retry_interval=rng.randint(3, 20),
                  max_retries=rng.randint(0, 5),
                  keep_outcomes=rng.choice((3, 10, 50, 10_000)))
    return dict(
        nodes=ids, placement=rng.choice(("all", "partitioned")), isolation=mix,
        latency=(lo, hi),
        loss=rng.choice((0.0, 0.0, 0.01, 0.03, 0.05)),
        duplicate=rng.choice((0.0, 0.0, 0.02, 0.05)),
        disk=rng.choice(("memory", "memory", "file")),
        keys=[f"k{i}" for i in range(rng.randint(2, 6))],
        timing=timing, call_timeout=rng.choice((150, 300, 600)),
        checkpoint_every=rng.choice((7, 30, 200, 5000)), gc_every=rng.choice((20, 100, 1000)),
        fsync_latency=fsync, max_open=rng.randint(2, 6),
        trace=rng.random() < 0.1, rules=None, profile=rng.choice(list(PROFILES)),
    )


def make_actions(seed: int, count: int | None = None, profile: str | None = None) -> list[tuple]:
    rng = random.Random(f"actions-{seed}")
    count = count if count is not None else rng.randint(100, 400)
    scale = PROFILES[profile or make_config(seed)["profile"]]
    weights = {k: w * scale if k in FAULTS else w for k, w in ACTIONS.items()}
    names = rng.choices(list(weights), list(weights.values()), k=count)
    return [(name, rng.getrandbits(16), rng.getrandbits(16), rng.getrandbits(16))
            for name in names]


# -------------------------------------------------------------------------------------------
# running one schedule
# -------------------------------------------------------------------------------------------
@dataclass
class Open:
    tx: str
    node: Any
    isolation: str
    incarnation: int


@dataclass
class Result:
    seed: int
    config: dict[str, Any]
    actions: int = 0
    stats: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)


class Schedule:
    """Runs actions on a cluster and keeps the client's view (open txs, handles, counts)."""

    def __init__(self, seed: int, config: dict[str, Any], data_dir: str | None,
                 log: list[str] | None) -> None:
        self.seed, self.config, self.log = seed, config, log
        self.ids = config["nodes"]
        self.keys = config["keys"]
        self.data_dir = data_dir
        self.generation = 0  # how many times the data directory was closed and reopened
        self.retired: list[History] = []  # the histories of the clusters closed so far
        self.c = self.make_cluster()
        self.open: list[Open] = []
        self.handles: list[tuple[kvlab.CommitHandle, str, Any]] = []
        self.seen: dict[str, bool] = {}  # tx -> the first settled result of its handle
        self.incarnation = dict.fromkeys(self.ids, 0)
        self.counter = 0
        self.result = Result(seed, config)

    def make_cluster(self) -> kvlab.Cluster:
        cfg = self.config
        return kvlab.Cluster(
            self.ids, seed=self.seed + self.generation, data_dir=self.data_dir,
            placement=cfg["placement"], latency=cfg["latency"], loss=cfg["loss"],
            duplicate=cfg["duplicate"], fsync_latency=cfg["fsync_latency"],
            timing=kvlab.Timing(**cfg["timing"]), call_timeout=cfg["call_timeout"],
            checkpoint_every=cfg["checkpoint_every"], gc_every=cfg["gc_every"],
            trace=cfg["trace"], history=True, rules=cfg["rules"], **PROTOCOL)

    # -- helpers ------------------------------------------------------------------------
    def fail(self, what: str) -> None:
        raise FuzzFailure(f"seed {self.seed}: {what}")

    def note(self, line: str) -> None:
        if self.log is not None:
            self.log.append(line)

    def up(self) -> list[Any]:
        return [n for n in self.ids if self.c.up(n)]

    def down(self) -> list[Any]:
        return [n for n in self.ids if not self.c.up(n)]

    def value(self, kind: int) -> Any:
        self.counter += 1
        n = self.counter
        return (n, f"s{n}", [n, "x"], {"v": n})[kind % 4]

    def expect(self, call: Any, line: str, allowed: tuple, o: Open | None = None) -> Any:
        """Make one public call; a KvlabError in ``allowed`` is counted, anything else (or an
        error the client's view says cannot happen) fails the schedule."""
        self.note(line)
        try:
            return call()
        except kvlab.ProtocolError as e:
            where = "".join(traceback.format_tb(e.__traceback__)[-3:])
            self.fail(f"ProtocolError from {line}: {e}\n{where}")
        except kvlab.KvlabError as e:
            name = type(e).__name__
            self.result.errors[name] += 1
            if not isinstance(e, allowed):
                self.fail(f"{line} raised {name}: {e}")
            if o is not None and isinstance(e, (kvlab.TransactionNotFound,
                                                kvlab.TransactionClosed)):
                if self.incarnation[o.node] == o.incarnation:
                    self.fail(f"{line} raised {name} although {o.tx} is open and {o.node} never "
                              f"crashed since it began: {e}")
            if o is not None and isinstance(e, kvlab.NodeUnavailable) and self.c.up(o.node):
                self.fail(f"{line} raised NodeUnavailable but {o.node} is up: {e}")
            raise _Expected(e) from None
        except Exception as e:  # noqa: BLE001 - anything else is a bug, with the seed
            where = "".join(traceback.format_tb(e.__traceback__)[-3:])
            self.fail(f"{line} raised {type(e).__name__} (not a KvlabError): {e!r}\n{where}")

    def _drop_open(self, o: Open) -> None:
        if o in self.open:
            self.open.remove(o)

    # -- actions -------------------------------------------------------------------------
    def do(self, action: tuple) -> None:
        name, a, b, c3 = action
        self.result.actions += 1
        self.result.stats[name] += 1
        try:
            getattr(self, "a_" + name)(a, b, c3)
        except _Expected:
            pass
        self.check_agreement(f"after action {self.result.actions} ({name})")

    def _pick_open(self, a: int) -> Open | None:
        return self.open[a % len(self.open)] if self.open else None

    def _node_for(self, a: int) -> Any:
        up = self.up()
        return up[a % len(up)] if up and a % 8 else self.ids[a % len(self.ids)]

    def a_begin(self, a: int, b: int, _c: int) -> None:
        if len(self.open) >= self.config["max_open"]:
            return self.a_step(a, b, _c)
        node = self._node_for(a)
        iso = self.config["isolation"][b % len(self.config["isolation"])]
        allowed = (kvlab.SimulationTimeout,) if self.c.up(node) else (kvlab.NodeUnavailable,)
        tx = self.expect(lambda: self.c[node].begin(iso),
                         f"c[{node!r}].begin({iso!r})", allowed)
        self.open.append(Open(tx, node, iso, self.incarnation[node]))

    def _tx_call(self, a: int, line: str, call: Any, extra: tuple = ()) -> Any:
        o = self._pick_open(a)
        if o is None:
            return None
        allowed = (kvlab.NodeUnavailable, kvlab.TransactionNotFound, kvlab.TransactionClosed,
                   *extra)
        try:
            line = line.replace("{node}", repr(o.node)).replace("{tx}", repr(o.tx))
            return o, self.expect(lambda: call(o), line, allowed, o)
        except _Expected as e:
            if isinstance(e.error, (kvlab.TransactionNotFound, kvlab.TransactionClosed)):
                self._drop_open(o)  # its coordinator crashed and forgot it
            raise

    def a_put(self, a: int, b: int, c3: int) -> None:
        key, value = self.keys[b % len(self.keys)], self.value(c3)
        self._tx_call(a, "c[{node}].put({tx}, " + f"{key!r}, {value!r})",
                      lambda o: self.c[o.node].put(o.tx, key, value))

    def a_delete(self, a: int, b: int, _c: int) -> None:
        key = self.keys[b % len(self.keys)]
        self._tx_call(a, "c[{node}].delete({tx}, " + f"{key!r})",
                      lambda o: self.c[o.node].delete(o.tx, key))

    def a_get(self, a: int, b: int, _c: int) -> None:
        key = self.keys[b % len(self.keys)]
        self._tx_call(a, "c[{node}].get({tx}, " + f"{key!r})",
                      lambda o: self.c[o.node].get(o.tx, key), (kvlab.SimulationTimeout,))

    def a_rmw(self, a: int, b: int, c3: int) -> None:
        """Read one key, then write another (or the same) in the same transaction: what write
        skew and lost updates are made of."""
        o = self._pick_open(a)
        self.a_get(a, b, c3)
        if o in self.open:
            self.a_put(self.open.index(o), b >> 8 if c3 % 3 else b, c3)

    def a_rollback(self, a: int, _b: int, _c: int) -> None:
        got = self._tx_call(a, "c[{node}].rollback({tx})",
                            lambda o: self.c[o.node].rollback(o.tx))
        if got is not None:
            self._drop_open(got[0])

    def a_commit_async(self, a: int, _b: int, _c: int) -> None:
        n = len(self.handles)
        got = self._tx_call(a, f"h[{n}] = " + "c[{node}].commit_async({tx})",
                            lambda o: self.c[o.node].commit_async(o.tx))
        if got is not None:
            o, h = got
            self._drop_open(o)
            self.handles.append((h, o.tx, o.node))
            self.result.stats["commits started"] += 1

    def a_commit(self, a: int, _b: int, _c: int) -> None:
        o = self._pick_open(a)
        if o is None:
            return
        self.a_commit_async(a, 0, 0)
        if self.handles and self.handles[-1][1] == o.tx:
            self._wait(len(self.handles) - 1)

    def _wait(self, i: int) -> None:
        h, tx, node = self.handles[i]
        allowed = (kvlab.SimulationTimeout, kvlab.NodeUnavailable)
        self.expect(h.wait, f"h[{i}].wait()", allowed)

    def a_wait(self, a: int, _b: int, _c: int) -> None:
        running = [i for i, (h, _, _) in enumerate(self.handles) if not h.done]
        if running:
            self._wait(running[a % len(running)])

    def a_reuse(self, a: int, b: int, c3: int) -> None:
        """Use a transaction after its commit started: it must be refused, never applied."""
        if not self.handles:
            return
        h, tx, node = self.handles[a % len(self.handles)]
        key, value = self.keys[b % len(self.keys)], self.value(c3)
        calls = [(lambda: self.c[node].put(tx, key, value), f"c[{node!r}].put({tx!r}, {key!r}, "
                  f"{value!r})  # after commit"),
                 (lambda: self.c[node].get(tx, key), f"c[{node!r}].get({tx!r}, {key!r})  # after "
                  f"commit"),
                 (lambda: self.c[node].commit_async(tx), f"c[{node!r}].commit_async({tx!r})  # "
                  f"again"),
                 (lambda: self.c[node].rollback(tx), f"c[{node!r}].rollback({tx!r})  # after "
                  f"commit")]
        call, line = calls[c3 % len(calls)]
        allowed = (kvlab.TransactionClosed, kvlab.TransactionNotFound, kvlab.NodeUnavailable)
        self.expect(call, line, allowed)
        self.fail(f"{line} succeeded on a transaction whose commit already started")

    def a_step(self, a: int, _b: int, _c: int) -> None:
        for _ in range(1 + a % 5):
            self.expect(self.c.step, "c.step()", ())

    def run(self) -> None:
        """run() to quiet; a schedule needs a few thousand events, so a cluster still busy
        after RUN_LIMIT is a livelock (run() raises SimulationTimeout)."""
        self.expect(lambda: self.c.run(max_steps=RUN_LIMIT), f"c.run(max_steps={RUN_LIMIT})", ())

    def a_run(self, _a: int, _b: int, _c: int) -> None:
        self.run()

    def _envelope(self, a: int) -> Any:
        p = self.c.pending()
        return p[a % len(p)] if p else None

    def a_deliver(self, a: int, _b: int, _c: int) -> None:
        env = self._envelope(a)
        if env is not None:
            self.expect(lambda: self.c.deliver(env.id), f"c.deliver({env.id})  # {env}", ())

    def a_drop(self, a: int, _b: int, _c: int) -> None:
        env = self._envelope(a)
        if env is not None:
            self.expect(lambda: self.c.drop(env.id), f"c.drop({env.id})  # {env}", ())

    def a_duplicate(self, a: int, _b: int, _c: int) -> None:
        env = self._envelope(a)
        if env is not None:
            self.expect(lambda: self.c.duplicate(env.id), f"c.duplicate({env.id})  # {env}", ())

    def a_crash(self, a: int, b: int, _c: int) -> None:
        up = self.up()
        if up and (len(up) > 1 or not b % 4):
            self._crash(up[a % len(up)], bool(b % 2))

    def a_crash_dirty(self, a: int, b: int, _c: int) -> None:
        """Step until some node has appended log records it has not flushed yet, and crash it
        right then (torn or not): the window every force-log rule is about."""
        for _ in range(1 + a % 30):
            dirty = [n for n in self.up() if self.c.wal(n).dirty]
            if dirty:
                return self._crash(dirty[b % len(dirty)], bool(b & 2))
            if self.c.quiet:
                return None
            self.expect(self.c.step, "c.step()", ())
        return None

    def _crash(self, victim: Any, torn: bool) -> None:
        if self.expect(lambda: self.c.crash(victim, torn=torn),
                       f"c.crash({victim!r}, torn={torn})", ()) is not True:
            self.fail(f"crash({victim!r}) of an up node did not return True")
        self.incarnation[victim] += 1
        self.result.stats["torn crashes" if torn else "clean crashes"] += 1

    def a_restart(self, a: int, _b: int, _c: int) -> None:
        down = self.down()
        if down:
            self._restart(down[a % len(down)])

    def _restart(self, n: Any) -> None:
        if self.expect(lambda: self.c.restart(n), f"c.restart({n!r})", ()) is not True:
            self.fail(f"restart({n!r}) of a crashed node did not return True")
        self.result.stats["restarts"] += 1

    def a_partition(self, a: int, _b: int, _c: int) -> None:
        groups: dict[int, set] = {}
        for i, n in enumerate(self.ids):
            groups.setdefault((a >> (2 * i)) % 3, set()).add(n)
        sets = [groups[g] for g in sorted(groups)]
        self.expect(lambda: self.c.partition(*sets),
                    f"c.partition({', '.join(map(repr, sets))})", ())

    def a_heal(self, _a: int, _b: int, _c: int) -> None:
        self.expect(self.c.heal, "c.heal()", ())

    def a_checkpoint(self, a: int, _b: int, _c: int) -> None:
        up = self.up()
        node = up[a % len(up)] if up and a % 3 else None
        self.expect(lambda: self.c.checkpoint(node), f"c.checkpoint({node!r})", ())

    def a_reopen(self, _a: int, b: int, _c: int) -> None:
        """File disks: close the cluster in the middle of things and open its data directory
        again (every message in flight and every open transaction is lost; commit handles still
        running never learn their outcome). Memory disks: crash and restart every node."""
        if self.data_dir is None:
            for i, n in enumerate(self.up()):
                self._crash(n, bool((b >> i) & 1))
            for n in self.down():
                self._restart(n)
            return
        self.reopen()
        self.result.stats["reopens"] += 1

    def reopen(self) -> None:
        self.note("c.close()")
        self.c.close()
        self.retired.append(self.c.history)
        self.handles = [hd for hd in self.handles if hd[0].done]  # the rest: fate unknown
        self.open.clear()
        for n in self.ids:
            self.incarnation[n] += 1
        self.generation += 1
        self.note(f"c = kvlab.Cluster(NODES, seed={self.seed + self.generation}, "
                  f"data_dir=DATA_DIR, **OPTIONS)  # reopen")
        try:
            self.c = self.make_cluster()
        except kvlab.KvlabError as e:
            self.fail(f"reopening the data directory raised {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001
            where = "".join(traceback.format_tb(e.__traceback__)[-3:])
            self.fail(f"reopening the data directory raised {e!r}\n{where}")

    def a_gc(self, _a: int, _b: int, _c: int) -> None:
        self.expect(self.c.gc, "c.gc()", ())

    # -- the end of a schedule ----------------------------------------------------------
    def finish(self, b: int) -> None:
        """Heal, restart everything, finish every open transaction, run to quiet."""
        for call, line in ((self.c.heal, "c.heal()"),):
            self.expect(call, line, ())
        for n in self.down():
            self.expect(lambda n=n: self.c.restart(n), f"c.restart({n!r})", ())
        for i, o in enumerate(list(self.open)):
            try:
                if (b >> (2 * (i % 16))) & 3 == 0:  # a quarter roll back, the rest commit
                    self._tx_call(self.open.index(o), "c[{node}].rollback({tx})",
                                  lambda o: self.c[o.node].rollback(o.tx))
                    self._drop_open(o)
                else:
                    self.a_commit_async(self.open.index(o), 0, 0)
            except _Expected:
                pass
        self.open.clear()
        self.run()

    # -- properties ----------------------------------------------------------------------
    def check_agreement(self, where: str, inferred: dict[str, str] | None = None) -> None:
        """No two remembered records, no handle and no history status disagree on any tx
        (nor, at the end, the outcomes inferred for transactions cut off by a reopen)."""
        c = self.c
        verdicts: dict[str, dict[str, str]] = {}
        for (node, role, tx), state in c.states().items():
            v = {"COMMITTED": "commit", "COMMITTING": "commit", "ABORTED": "abort"}.get(state)
            if v is not None:
                verdicts.setdefault(tx, {})[f"{role} on {node} ({state})"] = v
        for h, tx, _node in self.handles:
            if h.done:
                got = bool(h.committed)
                if self.seen.setdefault(tx, got) != got:
                    self.fail(f"{where}: the handle of {tx} changed its result to {got}")
                verdicts.setdefault(tx, {})["the commit handle"] = "commit" if got else "abort"
        for tx, said in verdicts.items():
            st = c.history[tx].status if tx in c.history else (inferred or {}).get(tx)
            for old in self.retired:
                if st is None and tx in old:
                    st = old[tx].status
            if st in ("committed", "aborted"):
                said["the history"] = "commit" if st == "committed" else "abort"
            if len(set(said.values())) > 1:
                self.fail(f"{where}: outcomes of {tx} disagree: "
                          + ", ".join(f"{k} says {v}" for k, v in sorted(said.items())))

    def newest(self) -> dict[Any, dict[str, tuple]]:
        """node -> key -> (writer, commit_ts, value) of the newest version, tombstones left out."""
        out = {}
        for n in self.ids:
            chains = self.c.core(n).store.chains
            out[n] = {k: (ch[-1].writer, ch[-1].commit_ts, ch[-1].value)
                      for k, ch in chains.items() if ch and not ch[-1].deleted}
        return out

    def check_quiet_and_clean(self, c: kvlab.Cluster, where: str) -> list[str]:
        problems = []
        if not c.quiet:
            problems.append(f"{where}: not quiet after run() with every node up and connected")
        for n in self.ids:
            core = c.core(n)
            if core is None:
                problems.append(f"{where}: {n} is down")
                continue
            for key, lock in core.store.write_locks.items():
                problems.append(f"{where}: {n} still holds a write lock on {key!r} for {lock.tx}")
            for key, holders in core.store.read_locks.items():
                problems.append(f"{where}: {n} still holds read locks on {key!r} for "
                                f"{sorted(holders)}")
            for t in core.participant.in_doubt():
                problems.append(f"{where}: {t.id} is still {t.state} on participant {n}")
            for t in core.coordinator.txs.values():
                if t.state in UNDECIDED_COORD or t.state == "COMMITTING":
                    problems.append(f"{where}: {t.id} is still {t.state} on coordinator {n}")
            if core.waiting:
                problems.append(f"{where}: {n} has parked reads {core.waiting}")
        return problems

    def full_history(self) -> tuple[History, dict[str, str]]:
        """The current history after those of the clusters closed before it. A transaction
        still running when its cluster was closed has no reported outcome: it counts as
        committed (at the timestamp the evidence names) if a replica holds its version, a read
        saw it or a coordinator or participant remembers it committed, else as aborted. Returns
        the history and those inferred outcomes."""
        c = self.c
        evidence: dict[str, int] = {}
        for n in self.ids:
            core = c.core(n)
            for chain in core.store.chains.values():
                for v in chain:
                    evidence.setdefault(v.writer, v.commit_ts)
            for rec in (*core.coordinator.txs.values(), *core.participant.txs.values()):
                if rec.state in ("COMMITTED", "COMMITTING") and rec.commit_ts is not None:
                    evidence.setdefault(rec.id, rec.commit_ts)
        for hist in (*self.retired, c.history):
            for t in hist:
                for op in t.ops:
                    if op.kind == "r" and op.writer not in (None, t.id) and op.version_ts:
                        evidence.setdefault(op.writer, op.version_ts)
        txns, inferred = [], {}
        for hist in self.retired:
            for t in hist:
                if t.status == "active":
                    ts = evidence.get(t.id)
                    status = "committed" if ts is not None and t.writes else "aborted"
                    if not t.writes and ts is None:
                        status = "aborted"
                    inferred[t.id] = status
                    t = Txn(t.id, t.node, t.isolation, t.start_ts,
                            ts if status == "committed" else None, status,
                            "outcome inferred after the cluster was closed", t.ops)
                txns.append(t)
        txns += list(c.history)
        return History(txns), inferred

    def check_end(self) -> None:
        c = self.c
        h, inferred = self.full_history()
        self.history = h
        problems = self.check_quiet_and_clean(c, "at the end")
        self.check_agreement("at the end", inferred)
        for hd, tx, node in self.handles:
            if not hd.done:
                problems.append(f"the commit handle of {tx} on {node} is still running")
        for t in c.history:
            if t.status == "active":
                problems.append(f"{t.id} (began on {t.node}) is still active in the history")
            if c.up(t.node):
                try:
                    out = c[t.node].outcome(t.id)
                except kvlab.KvlabError as e:
                    problems.append(f"outcome({t.id!r}) on {t.node} raised {e!r}")
                else:
                    if out.status != t.status:
                        problems.append(f"outcome({t.id}) on {t.node} says {out.status} but the "
                                        f"history says {t.status}")
        committed = {t.id: t for t in h if t.status == "committed"}
        # what each committed transaction wrote last to each key
        final: dict[str, dict[str, Op]] = {}
        for t in committed.values():
            for op in t.writes:
                final.setdefault(t.id, {})[op.key] = op
        newest_writer: dict[str, Txn] = {}
        for tid, ops in final.items():
            t = committed[tid]
            for key in ops:
                cur = newest_writer.get(key)
                if cur is None or cur.commit_ts < t.commit_ts:
                    newest_writer[key] = t
        by_key: dict[str, list[tuple[int, str, bool]]] = {}  # key -> committed versions
        for tid, ops in final.items():
            for key, op in ops.items():
                by_key.setdefault(key, []).append((committed[tid].commit_ts, tid, op.deleted))
        for versions in by_key.values():
            versions.sort()
        problems += self.check_reads(by_key)
        report = kvlab.audit.audit(c)  # the engine's own replica audit must agree
        if not report.ok:
            problems += [f"kvlab.audit: {p}" for p in report.problems]
        # atomicity and durability, read off every replica's version chains
        nodes = sorted(self.ids)
        for n in self.ids:
            store = c.core(n).store
            for key, chain in store.chains.items():
                if self.config["placement"] == "partitioned" and owner_of(key, nodes) != n:
                    problems.append(f"{n} stores {key!r} but its owner is {owner_of(key, nodes)}")
                for v in chain:
                    t = committed.get(v.writer)
                    if t is None:
                        st = h[v.writer].status if v.writer in h else "unknown"
                        problems.append(f"{v.writer} ({st}) has a version of {key!r} on {n}: "
                                        f"applied without a reported commit")
                        continue
                    op = final.get(v.writer, {}).get(key)
                    if op is None:
                        problems.append(f"{v.writer}'s version of {key!r} on {n}, but "
                                        f"{v.writer} never wrote {key!r}")
                    elif v.commit_ts != t.commit_ts or v.deleted != op.deleted or \
                            (not op.deleted and v.value != op.value):
                        problems.append(f"{v.writer}'s version of {key!r} on {n} is "
                                        f"(ts {v.commit_ts}, {v.value!r}, deleted={v.deleted}) but "
                                        f"it committed (ts {t.commit_ts}, {op.value!r}, "
                                        f"deleted={op.deleted})")
            # each replica's chain is exactly the newest part of the key's committed versions:
            # a committed write is missing only where GC may have collected it
            for key, versions in by_key.items():
                if not c.core(n).stores(n, key):
                    continue
                chain = [(v.commit_ts, v.writer) for v in store.chains.get(key, [])]
                j = len(versions) - len(chain)
                suffix = [(ts, tid) for ts, tid, _ in versions[j:]] if j >= 0 else None
                w = store.watermark
                gone = j > 0 and not ((j < len(versions) and versions[j][0] <= w)
                                      or (versions[j - 1][2] and versions[j - 1][0] <= w))
                if suffix != chain or gone:
                    missing = [f"{tid} (ts {ts})" for ts, tid, _ in versions
                               if (ts, tid) not in chain]
                    problems.append(f"committed writes to {key!r} missing on {n}: "
                                    f"{', '.join(missing) or 'none'}; it has "
                                    f"{[tid for _, tid in chain]}, the committed versions are "
                                    f"{[tid for _, tid, _ in versions]} (GC watermark {w})")
        # every reported commit is readable everywhere: a fresh snapshot sees the newest write
        for n in self.ids:
            for attempt in range(10):  # a read can time out when messages are lost: retry
                try:
                    problems += self.read_everything(n, newest_writer, final)
                    break
                except kvlab.SimulationTimeout as e:
                    self.result.errors["SimulationTimeout (final read)"] += 1
                    if attempt == 9:
                        problems.append(f"final reads on {n} timed out 10 times: {e}")
                    self.run()
                except kvlab.KvlabError as e:
                    problems.append(f"final read on {n} raised {type(e).__name__}: {e}")
                    break
            self.run()
        if problems:
            self.fail("; ".join(problems[:12]) + (f" (+{len(problems) - 12} more)"
                                                   if len(problems) > 12 else ""))
        self.check_isolation()

    def normalised_history(self) -> History:
        """The history with one engine quirk undone: once GC collected a tombstone, a snapshot
        read of the deleted key records ``writer=None`` (the initial state) instead of the
        deleter, which would show kvlab.check a read-skew edge that never existed. A read of
        None from nobody is rewritten to name the deleter only when the newest committed write
        at or below the reader's snapshot really is a delete; anything else is left alone."""
        history = self.history
        writes: dict[str, list[tuple[int, str, bool]]] = {}
        for t in history:
            if t.status == "committed":
                last = {op.key: op for op in t.writes}
                for key, op in last.items():
                    writes.setdefault(key, []).append((t.commit_ts, t.id, op.deleted))
        for chain in writes.values():
            chain.sort()
        out = []
        for t in history:
            ops = []
            own = set()
            for op in t.ops:
                if op.kind == "w":
                    own.add(op.key)
                elif (op.writer is None and op.value is None and op.key not in own
                      and t.isolation != "read_committed" and t.start_ts is not None):
                    seen = [w for w in writes.get(op.key, ()) if w[0] <= t.start_ts]
                    if seen and seen[-1][2]:
                        self.result.stats["tombstone reads renamed"] += 1
                        op = Op("r", op.key, None, seen[-1][1], seen[-1][0], True)
                ops.append(op)
            out.append(Txn(t.id, t.node, t.isolation, t.start_ts, t.commit_ts, t.status,
                           t.reason, ops))
        return History(out)

    def check_reads(self, by_key: dict[str, list[tuple[int, str, bool]]]) -> list[str]:
        """Every read of every transaction, committed or not: a snapshot (or serializable) read
        returns exactly the newest committed version at or below the start timestamp; a read
        committed read returns a committed version at least that new, never older than one it
        saw before."""
        problems = []

        def at(key: str, ts: int) -> tuple[int, str, bool] | None:
            seen = [v for v in by_key.get(key, ()) if v[0] <= ts]
            return seen[-1] if seen else None

        for t in self.history:
            if t.start_ts is None:
                continue
            own: set[str] = set()
            last: dict[str, int] = {}
            for op in t.ops:
                if op.kind == "w":
                    own.add(op.key)
                    continue
                if op.key in own:
                    if op.writer != t.id:
                        problems.append(f"{t.id} read {op.key!r} from {op.writer} after writing "
                                        f"it itself")
                    continue
                want = at(op.key, t.start_ts)
                got = None
                if op.writer is not None:
                    got = next((v for v in by_key.get(op.key, ()) if v[1] == op.writer), None)
                    if got is None:
                        problems.append(f"{t.id} ({t.status}) read {op.key!r}={op.value!r} from "
                                        f"{op.writer}, which never committed a write to it")
                        continue
                    if op.version_ts != got[0]:
                        problems.append(f"{t.id} read {op.key!r} from {op.writer} with version_ts "
                                        f"{op.version_ts}, but it committed at ts {got[0]}")
                if t.isolation == "read_committed":
                    # its read timestamp is unknown, but no older than its start nor than the
                    # version it read before
                    lower = max(want[0] if want is not None else 0, last.get(op.key, 0))
                    if got is not None:
                        ok = got[0] >= lower
                        last[op.key] = max(got[0], lower)
                    else:  # nothing: no version yet, or a tombstone that GC collected
                        base = at(op.key, lower)
                        ok = base is None or base[2] or any(
                            v[2] and v[0] > lower for v in by_key.get(op.key, ()))
                    if not ok:
                        problems.append(f"{t.id} (read committed, start ts {t.start_ts}) read "
                                        f"{op.key!r}={op.value!r} from {op.writer}, older than "
                                        f"the version at ts {lower} it must at least see")
                    continue
                if op.writer is None:
                    ok = want is None or want[2]  # nothing, or a tombstone GC collected
                else:
                    ok = want is not None and want[1] == op.writer
                if not ok:
                    newest = f"{want[1]} (ts {want[0]})" if want else "none"
                    problems.append(f"{t.id} ({t.isolation}, {t.status}, snapshot ts "
                                    f"{t.start_ts}) read {op.key!r}={op.value!r} from "
                                    f"{op.writer}, but the newest committed version at its "
                                    f"snapshot is {newest}")
        return problems

    def read_everything(self, n: Any, newest_writer: dict[str, Txn],
                        final: dict[str, dict[str, Op]]) -> list[str]:
        c, h, problems = self.c, self.c.history, []
        node = c[n]
        tx = node.begin()
        try:
            for key in self.keys:
                value = node.get(tx, key)
                op = h[tx].ops[-1]
                want = newest_writer.get(key)
                if want is None:
                    if op.writer is not None or value is not None:
                        problems.append(f"{n} reads {key!r}={value!r} (from {op.writer}) but "
                                        f"no committed transaction wrote {key!r}")
                    continue
                wop = final[want.id][key]
                if wop.deleted:
                    ok = value is None and op.writer in (want.id, None)
                else:
                    ok = op.writer == want.id and value == wop.value and \
                        op.version_ts == want.commit_ts
                if not ok:
                    problems.append(f"{want.id} committed the newest write to {key!r} (ts "
                                    f"{want.commit_ts}, {wop.value!r}) but a fresh read on "
                                    f"{n} sees {value!r} from {op.writer} (ts {op.version_ts})")
        except kvlab.SimulationTimeout:
            node.rollback(tx)
            raise
        if not node.commit(tx):
            problems.append(f"read-only {tx} on {n} did not commit")
        return problems

    def check_isolation(self) -> None:
        """kvlab.check with every transaction judged at its own level: the whole history at
        read_committed (what every level forbids), then, for snapshot and serializable, the
        history in which only the reads of transactions at that level or stronger are kept
        (dropping reads only removes dependency edges, so it cannot invent an anomaly, and what
        remains is exactly what those transactions were promised)."""
        history = self.normalised_history()
        for level in LEVELS:
            if level != "read_committed" and not any(
                    RANK[t.isolation] >= RANK[level] for t in history):
                continue
            proj = History([Txn(t.id, t.node, t.isolation, t.start_ts, t.commit_ts, t.status,
                                t.reason, [op for op in t.ops if op.kind != "r"
                                           or RANK[t.isolation] >= RANK[level]])
                            for t in history])
            try:
                report = kvlab.check(proj, level=level)
            except kvlab.KvlabError as e:
                self.fail(f"kvlab.check at {level} refused the history: {e}")
            if not report.ok:
                self.fail(f"kvlab.check at {level} (reads of {level}-or-stronger transactions): "
                          f"{report}")

    def check_replay(self) -> None:
        """Same seed, same calls, same trace: replaying the journal (memory disks, trace on)
        rebuilds the run byte for byte, faults and all."""
        c = self.c
        if not self.config["trace"] or self.data_dir is not None:
            return
        again = kvlab.Cluster.replay(c.options, c.journal)
        try:
            if again.trace.digest() != c.trace.digest():
                first = next((i for i, (x, y) in enumerate(zip(again.trace, c.trace, strict=False))
                              if str(x) != str(y)), min(len(again.trace), len(c.trace)))
                self.fail(f"replaying the journal gave another trace from event {first}: "
                          f"{c.trace[first] if first < len(c.trace) else None} vs "
                          f"{again.trace[first] if first < len(again.trace) else None}")
        finally:
            again.close()
        self.result.stats["replays"] += 1

    def check_durable(self, data_dir: str | None, b: int) -> None:
        """Reopen the data directory (or crash and restart every memory node): same state."""
        before = self.newest()
        if data_dir is not None:
            self.reopen()
            where = "after reopening the data directory"
        else:
            for i, n in enumerate(self.ids):
                torn = bool((b >> i) & 1)
                self.expect(lambda n=n, torn=torn: self.c.crash(n, torn=torn),
                            f"c.crash({n!r}, torn={torn})", ())
            for n in self.ids:
                self.expect(lambda n=n: self.c.restart(n), f"c.restart({n!r})", ())
            where = "after crashing and restarting every node"
        self.run()
        problems = self.check_quiet_and_clean(self.c, where)
        after = self.newest()
        for n in self.ids:
            for key in sorted(set(before[n]) | set(after[n])):
                if before[n].get(key) != after[n].get(key):
                    problems.append(f"{where}: {n} has {key!r} = {after[n].get(key)} but had "
                                    f"{before[n].get(key)}")
        if problems:
            self.fail("; ".join(problems[:12]))
        # and the recovered cluster still works: a write on one node is read on every node
        # (a client retries a call that timed out or a commit that lost a message)
        c = self.c
        first = c[self.ids[0]]

        def write() -> bool:
            tx = first.begin()
            first.put(tx, self.keys[0], "after")
            return first.commit(tx)

        def read(n: Any) -> Any:
            r = c[n].begin()
            try:
                return c[n].get(r, self.keys[0])
            finally:
                c[n].rollback(r)

        if not self.retrying(write, where, lambda ok: ok):
            self.fail(f"{where}: a lone write on {self.ids[0]} aborted 20 times")
        for n in self.ids:
            if self.retrying(lambda n=n: read(n), where, lambda v: True) != "after":
                self.fail(f"{where}: {n} does not read the write committed after recovery")

    def retrying(self, fn: Any, where: str, done: Any) -> Any:
        """A client's retry loop: try, and after a failure let the cluster settle (an abort's
        ABORT messages may be lost, leaving locks until the participants ask) before again."""
        for _ in range(20):
            try:
                got = fn()
            except kvlab.SimulationTimeout:
                self.result.errors["SimulationTimeout (after recovery)"] += 1
                self.run()
                continue
            except kvlab.KvlabError as e:
                self.fail(f"{where}: a new transaction raised {type(e).__name__}: {e}")
            if done(got):
                return got
            self.run()
        self.fail(f"{where}: a new transaction did not get through in 20 tries")


class _Expected(Exception):
    def __init__(self, error: kvlab.KvlabError) -> None:
        super().__init__(str(error))
        self.error = error


def run_schedule(seed: int, actions: list[tuple] | None = None,
                 config: dict[str, Any] | None = None, log: list[str] | None = None,
                 **overrides: Any) -> Result:
    """Run one schedule; raise FuzzFailure (naming the seed) if any property breaks."""
    config = {**(config or make_config(seed)), **overrides}
    actions = make_actions(seed) if actions is None else actions
    data_dir = tempfile.mkdtemp(prefix=f"kvlab-fuzz-{seed}-") if config["disk"] == "file" \
        else None
    s = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kvlab.TornTailWarning)
            try:
                s = Schedule(seed, config, data_dir, log)
            except kvlab.KvlabError as e:
                raise FuzzFailure(f"seed {seed}: Cluster(...) raised {e!r}") from e
            for act in actions:
                s.do(act)
            tail = random.Random(f"tail-{seed}").getrandbits(32)
            s.finish(tail)
            s.check_end()
            s.check_replay()
            s.check_durable(data_dir, tail >> 16)
        s.result.stats["committed"] = sum(t.status == "committed" for t in s.c.history)
        return s.result
    except (FuzzFailure, Exception) as e:
        if not isinstance(e, FuzzFailure):  # raised by a call the final checks make
            where = "".join(traceback.format_tb(e.__traceback__)[-3:])
            e = f"seed {seed}: {type(e).__name__} escaped: {e!r}\n{where}"
        if s is not None and config.get("trace") and log is not None:
            log.append("# last trace events:\n# " + s.c.trace.text(last=40).replace("\n", "\n# "))
        failure = FuzzFailure(f"{e}\n  config: {describe(config)}\n  reproduce: "
                              f"run_schedule({seed})")
        failure.result = s.result if s is not None else Result(seed, config)
        raise failure from None
    finally:
        if s is not None:
            s.c.close()
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)


def describe(config: dict[str, Any]) -> str:
    keep = ("profile", "nodes", "placement", "isolation", "latency", "loss", "duplicate", "disk",
            "keys", "timing", "call_timeout", "checkpoint_every", "gc_every", "fsync_latency",
            "rules")
    return ", ".join(f"{k}={config[k]!r}" for k in keep)


def fails(seed: int, actions: list[tuple], config: dict[str, Any]) -> str | None:
    try:
        run_schedule(seed, actions, config)
    except FuzzFailure as e:
        return str(e)
    return None


def minimise(seed: int, config: dict[str, Any] | None = None,
             actions: list[tuple] | None = None, same: Any = None) -> list[tuple]:
    """Delta debugging: the shortest action list found that still fails (with the same first
    line of symptom when ``same`` is a predicate on the message)."""
    config = config or make_config(seed)
    actions = list(make_actions(seed) if actions is None else actions)
    first = fails(seed, actions, config)
    assert first is not None, f"seed {seed} does not fail"
    same = same or (lambda msg: True)
    chunk = len(actions) // 2
    while chunk >= 1:
        i, changed = 0, False
        while i < len(actions):
            trial = actions[:i] + actions[i + chunk:]
            msg = fails(seed, trial, config)
            if msg is not None and same(msg):
                actions, changed = trial, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return actions


def reproducer(seed: int, actions: list[tuple], config: dict[str, Any]) -> str:
    """A standalone script of the concrete public-API calls the schedule made."""
    log: list[str] = []
    msg = None
    try:
        run_schedule(seed, actions, config, log=log)
    except FuzzFailure as e:
        msg = str(e)
    lines = [
        f'"""Fuzzer reproducer (tests/test_fuzz.py), seed {seed}.',
        "",
        "Symptom: " + (msg or "none").split("\n")[0],
        '"""',
        "import warnings", "import kvlab", "",
        'warnings.simplefilter("ignore", kvlab.TornTailWarning)',
        f"NODES = {config['nodes']!r}",
        "DATA_DIR = " + ("__import__('tempfile').mkdtemp()" if config["disk"] == "file"
                         else "None"),
        f"OPTIONS = dict(placement={config['placement']!r}, latency={config['latency']!r}, "
        f"loss={config['loss']!r}, duplicate={config['duplicate']!r}, "
        f"fsync_latency={config['fsync_latency']!r}, timing=kvlab.Timing(**{config['timing']!r}),"
        f" call_timeout={config['call_timeout']!r}, "
        f"checkpoint_every={config['checkpoint_every']!r}, gc_every={config['gc_every']!r}, "
        f"trace={config['trace']!r}" + (f", rules=kvlab.{config['rules']!r}" if config["rules"]
                                        else "")
        + "".join(f", {k}={v!r}" for k, v in PROTOCOL.items()) + ")",
        f"c = kvlab.Cluster(NODES, seed={seed}, data_dir=DATA_DIR, **OPTIONS)",
        "h = {}", "",
        "def attempt(f):",
        "    try:",
        "        return f()",
        "    except kvlab.ProtocolError:",
        "        raise",
        "    except kvlab.KvlabError as e:",
        "        print('  ', type(e).__name__, str(e)[:100])",
        "",
    ]
    for line in log:
        if line.startswith("#"):
            lines.append("# " + line)
        elif line.startswith("c = "):
            lines.append(line)
        elif line.startswith("h[") and " = " in line:
            target, call = line.split(" = ", 1)
            lines.append(f"{target} = attempt(lambda: {call})")
        else:
            code, _, comment = line.partition("  #")
            lines.append(f"attempt(lambda: {code})" + (f"  #{comment}" if comment else ""))
    lines += ["", "# where the schedule stopped: what the replicas and the records say",
              "if not c.closed:",
              "    print(kvlab.audit.audit(c))",
              "    print(c.states())"]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------
# the tests
# -------------------------------------------------------------------------------------------
def _batch(seeds: range) -> list[str]:
    failures = []
    for seed in seeds:
        try:
            run_schedule(seed)
        except FuzzFailure as e:
            failures.append(str(e))
    return failures


@pytest.mark.parametrize("start", range(0, CI_SCHEDULES, CI_CHUNK),
                         ids=lambda s: f"seeds{s}-{s + CI_CHUNK - 1}")
def test_fuzz_schedules(start):
    failures = _batch(range(start, start + CI_CHUNK))
    assert not failures, f"{len(failures)} schedule(s) failed:\n" + "\n".join(failures)


def test_schedules_are_deterministic():
    a, b = [], []
    run_schedule(7, log=a)
    run_schedule(7, log=b)
    assert a == b


def test_fuzzer_exercises_what_it_claims():
    """Across a batch of seeds the fuzzer really does crash, tear, partition, time out,
    commit and abort (so a clean run means something)."""
    totals: Counter = Counter()
    errors: Counter = Counter()
    configs = Counter()
    for seed in range(40):
        try:
            r = run_schedule(seed)
        except FuzzFailure:
            continue  # reported by test_fuzz_schedules; this test is about coverage
        totals.update(r.stats)
        errors.update(r.errors)
        configs[(r.config["placement"], r.config["disk"])] += 1
    for what in ("torn crashes", "clean crashes", "restarts", "partition", "deliver", "drop",
                 "duplicate", "commits started", "committed"):
        assert totals[what] > 0, (what, totals)
    assert errors["SimulationTimeout"] > 0 and errors["NodeUnavailable"] > 0, errors
    assert len(configs) == 4, configs


@pytest.mark.parametrize("rule", ["force_decision", "force_prepare", "force_commit"])
def test_fuzzer_catches_a_broken_force_rule(rule):
    """With one force-log rule switched off, some schedule must fail a check that the same
    schedule passes with every rule on: the checks can fail, and for the right reason.
    (Crashes are what expose a missing force, so the batch adds crashes and restarts.)"""
    for seed in range(200):
        config = make_config(seed)
        config["nodes"] = [f"n{i + 1}" for i in range(len(config["nodes"]))]
        config["fsync_latency"] = 3  # a wide window between append and fsync
        rng = random.Random(f"broken-{seed}")
        actions = make_actions(seed)
        for i in range(0, len(actions), 6):  # extra crashes and restarts
            name = rng.choice(("crash", "restart"))
            actions.insert(i, (name, rng.getrandbits(16), rng.getrandbits(16), 0))
        broken = fails(seed, actions, {**config, "rules": kvlab.Rules(**{rule: False})})
        if broken is not None and fails(seed, actions, config) is None:
            return
    pytest.fail(f"no schedule noticed Rules({rule}=False)")


@pytest.mark.parametrize("bug", ["no first-committer-wins", "reads ignore prepared writers",
                                 "GC ahead of the watermark"])
def test_fuzzer_catches_a_broken_isolation_rule(bug, monkeypatch):
    """With an MVCC rule broken by a monkeypatch, some schedule must fail the read, history or
    replica checks that it passes unbroken (so a clean run of those checks means something)."""
    from kvlab.mvcc import Store

    conflicts, gc = Store.conflicts, Store.gc

    def break_it(m: pytest.MonkeyPatch) -> None:
        if bug == "no first-committer-wins":
            m.setattr(Store, "conflicts", lambda self, tx, start_ts, writes, reads=(),
                      check_committed=True: conflicts(self, tx, start_ts, writes, reads, False))
        elif bug == "reads ignore prepared writers":
            m.setattr(Store, "blocker", lambda self, key, ts, tx=None: None)
        else:
            m.setattr(Store, "gc", lambda self, watermark: gc(self, watermark + 3))

    for seed in range(300):
        config = make_config(seed)
        config["nodes"] = [f"n{i + 1}" for i in range(len(config["nodes"]))]
        actions = make_actions(seed)
        with monkeypatch.context() as m:
            break_it(m)
            broken = fails(seed, actions, config)
        if broken is not None and fails(seed, actions, config) is None:
            return
    pytest.fail(f"no schedule noticed {bug}")


@pytest.mark.skipif(not os.environ.get("KVLAB_FUZZ_SCHEDULES"),  # its own switch, not slow's
                    reason="set KVLAB_FUZZ_SCHEDULES=N for the long fuzz run")
def test_fuzz_long():
    n = int(os.environ["KVLAB_FUZZ_SCHEDULES"])
    base = int(os.environ.get("KVLAB_FUZZ_SEED_BASE", "100000"))
    totals: Counter = Counter()
    errors: Counter = Counter()
    kinds: Counter = Counter()
    failures: list[str] = []
    start = time.monotonic()
    for i, seed in enumerate(range(base, base + n)):
        try:
            r = run_schedule(seed)
        except FuzzFailure as e:
            failures.append(str(e))
            r = e.result
            first = str(e).split("\n")[0].split(": ", 1)[-1]
            kinds[re.sub(r"\d+", "N", first)[:110]] += 1
            print(f"FAIL {e}", flush=True)
        totals["actions"] += r.actions
        totals.update(r.stats)
        errors.update(r.errors)
        if (i + 1) % 250 == 0:
            print(f"{i + 1}/{n} schedules, {len(failures)} failed, "
                  f"{time.monotonic() - start:.0f}s", flush=True)
    print(f"\nfuzz summary: {n} schedules (seeds {base}..{base + n - 1}) in "
          f"{time.monotonic() - start:.0f}s, {len(failures)} failed")
    print(f"  actions {totals['actions']}, clean crashes {totals['clean crashes']}, torn "
          f"crashes {totals['torn crashes']}, restarts {totals['restarts']}, reopens "
          f"{totals['reopens']}, partitions {totals['partition']}, commits started "
          f"{totals['commits started']}, committed transactions {totals['committed']}")
    print(f"  expected errors: {dict(errors)}")
    print(f"  actions by kind: { {k: totals[k] for k in ACTIONS} }")
    for kind, count in kinds.most_common():
        print(f"  {count:5} x {kind}")
    assert not failures, f"{len(failures)} of {n} schedules failed:\n" + "\n".join(failures)
