"""What the cluster looks like at one moment, taken from a live cluster or rebuilt from a trace.

The cluster view and the animation draw a :class:`Scene`, so a picture of a live cluster and a
frame replayed from its trace use the same code. Replay folds trace events; it never touches
the engine.

A *step* (one animation frame) is one trace event that changes what the network or the nodes
look like from outside: a message delivered or dropped, a crash, a restart, a partition, a heal,
or a timer that fired and did something (a vote timeout, a retry). A step's picture is the
cluster just before the next step, so the flushes and the sends they release (which happen
between two steps) appear in the frame of the step that caused them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kvlab import twopc
from kvlab.trace import Event, Trace

STEP_KINDS = ("deliver", "drop", "crash", "restart", "partition", "heal", "timer")


def _terminal(table: dict[str, dict[str, str]]) -> frozenset[str]:
    """States with no way out (only self-loops): a transaction there is finished."""
    return frozenset(s for s, moves in table.items() if all(n == s for n in moves.values()))


TERMINAL = {"coordinator": _terminal(twopc.COORDINATOR_TRANSITIONS),
            "participant": _terminal(twopc.PARTICIPANT_TRANSITIONS)}


def is_live(role: str, state: str) -> bool:
    return state not in TERMINAL.get(role, ())


@dataclass(frozen=True, slots=True)
class Flight:
    """A message in flight, as the views need it."""

    id: int
    src: str
    dst: str
    kind: str
    tx: str | None
    sent: int
    due: int

    @property
    def label(self) -> str:
        return f"#{self.id} {self.kind}" + (f" {self.tx}" if self.tx else "")


@dataclass
class Scene:
    nodes: list[str]
    up: dict[str, bool]
    groups: dict[str, int]  # node -> partition group; empty when connected
    in_flight: list[Flight]
    states: dict[tuple[str, str, str], str]  # (node, role, tx) -> 2PC state
    now: int = 0
    event: Event | None = None  # the step that produced this scene (replay only)
    step: int | None = None
    steps: int | None = None

    def coordinating(self, node: str) -> list[str]:
        """Transactions ``node`` coordinates that are not finished yet."""
        return sorted(tx for (n, role, tx), s in self.states.items()
                      if n == node and role == "coordinator" and is_live(role, s))

    def live_states(self, node: str) -> list[tuple[str, str, str]]:
        """(role, tx, state) of the unfinished transactions on ``node``."""
        return sorted((role, tx, s) for (n, role, tx), s in self.states.items()
                      if n == node and is_live(role, s))

    def cut(self, a: str, b: str) -> bool:
        """True if a partition separates two nodes."""
        return bool(self.groups) and self.groups.get(a, -1) != self.groups.get(b, -1)


def scene_of(cluster: Any) -> Scene:
    """The live cluster right now (read-only)."""
    if not hasattr(cluster, "pending"):
        from kvlab.viz.common import VizError

        raise VizError(f"expected a kvlab.Cluster, got {type(cluster).__name__}")
    flights = [Flight(e.id, e.src, e.dst, e.kind, e.tx, e.sent_at, e.due)
               for e in cluster.pending()]
    return Scene(list(cluster.ids), {n: cluster.up(n) for n in cluster.ids},
                 dict(cluster.network.groups), flights, cluster.states(), cluster.now)


class Replay:
    """Rebuild scenes by folding trace events (the trace is all it reads)."""

    def __init__(self, nodes: Iterable[str]) -> None:
        self.nodes = list(nodes)
        self.up = dict.fromkeys(self.nodes, True)
        self.groups: dict[str, int] = {}
        self.flights: dict[int, Flight] = {}
        self.states: dict[tuple[str, str, str], str] = {}
        self.now = 0

    def apply(self, e: Event) -> None:
        self.now = e.time
        d, k = e.data, e.kind
        if k == "send":
            self.flights[d["id"]] = Flight(d["id"], d["src"], d["dst"], d["kind"], d.get("tx"),
                                           e.time, d.get("due", e.time))
        elif k in ("deliver", "drop"):
            self.flights.pop(d["id"], None)
        elif k == "crash":
            self.up[e.node] = False
            self.states = {key: s for key, s in self.states.items() if key[0] != e.node}
        elif k == "restart":
            self.up[e.node] = True
        elif k == "partition":
            named = [list(g) for g in d.get("groups", [])]
            self.groups = {n: i for i, g in enumerate(named) for n in g}
            for n in self.nodes:
                self.groups.setdefault(n, len(named))
        elif k == "heal":
            self.groups = {}
        elif k == "state" and d.get("new") and d.get("tx"):
            self.states[(e.node, d["role"], d["tx"])] = d["new"]

    def scene(self, event: Event | None = None) -> Scene:
        flights = sorted(self.flights.values(), key=lambda f: (f.due, f.id))
        return Scene(self.nodes, dict(self.up), dict(self.groups), flights, dict(self.states),
                     self.now, event)


def noop_timer(trace: Trace, i: int) -> bool:
    """True if the timer event at ``i`` did nothing (a retry whose work was already done)."""
    nxt = trace[i + 1] if i + 1 < len(trace) else None
    return nxt is None or nxt.node != trace[i].node or nxt.kind not in ("state", "send", "wal")


def step_indices(trace: Trace) -> list[int]:
    """Positions of the step events in ``trace`` (see the module docstring)."""
    return [i for i, e in enumerate(trace)
            if e.kind in STEP_KINDS and not (e.kind == "timer" and noop_timer(trace, i))]


def replay_steps(trace: Trace, nodes: Iterable[str]) -> list[Scene]:
    """One scene per step: the cluster just after that step's event and its consequences."""
    idx = step_indices(trace)
    r = Replay(nodes)
    scenes: list[Scene] = []
    pos = 0
    for n, i in enumerate(idx):
        end = idx[n + 1] if n + 1 < len(idx) else len(trace)
        while pos < end:
            r.apply(trace[pos])
            pos += 1
        s = r.scene(trace[i])
        s.step, s.steps = n + 1, len(idx)
        scenes.append(s)
    return scenes


__all__ = ["Scene", "Flight", "Replay", "scene_of", "replay_steps", "step_indices",
           "STEP_KINDS", "TERMINAL", "is_live", "noop_timer"]
