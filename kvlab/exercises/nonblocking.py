"""Chapter 9 (commit without blocking): helpers for the chapter and its exercise.

The chapter replays chapter 5's blocking case under ``commit_protocol="2pc"``,
``"cooperative"`` and ``"paxos"`` (:func:`start_commit`, :func:`until_voted`,
:func:`states`), measures each protocol's blocking window with
:func:`kvlab.explore.crash_points` (:func:`blocking_rows`) and prints the fault-free cost of one
commit next to Gray and Lamport's figures (:func:`cost_lines`).

The exercise: :func:`exercise_setup` builds chapter 5's exercise cluster under a given protocol
(placement "partitioned": n3 coordinates a transaction writing ``x``, owned by n1, and ``y``,
owned by n2, so the coordinator is not a participant). Crash n3 after ``k`` steps of the
fault-free run, losing the messages it had not yet delivered, and run to quiet without
restarting it: is a live participant left blocked? :func:`check_blocking_steps` wants, for each
protocol, the set of such ``k``, and computes the truth with :func:`kvlab.explore.crash_points`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kvlab import explore
from kvlab.bench_commit import commit_costs
from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_a_dict_of, not_yet
from kvlab.messages import P2A, VOTE_NO, VOTE_YES
from kvlab.trace import Event

NODES = ["n1", "n2", "n3"]
PROTOCOLS = ("2pc", "cooperative", "paxos")
COORDINATOR = "n3"  # the exercise's coordinator (chapter 5's exercise cluster)
VOTES = (VOTE_YES, VOTE_NO, P2A)  # a participant's vote: to the coordinator, or to the acceptors


# -- the chapter's helpers ------------------------------------------------------------------------
def start_commit(protocol: str = "2pc", **options: Any) -> tuple[Cluster, str, Any]:
    """Chapter 5's commit under ``protocol``: a fresh 3-node cluster in which n1 has just
    started committing T1 (put x=1). Returns (cluster, tx, handle)."""
    c = Cluster(NODES, seed=0, commit_protocol=protocol, **options)
    tx = c["n1"].begin()
    c["n1"].put(tx, "x", 1)
    return c, tx, c["n1"].commit_async(tx)


def setup_for(protocol: str, **options: Any) -> Callable[[], Cluster]:
    """A ``setup()`` for :mod:`kvlab.explore`: :func:`start_commit`'s cluster."""
    def setup() -> Cluster:
        return start_commit(protocol, **options)[0]
    setup.__name__ = f"commit_under_{protocol}"
    return setup


def voted(c: Cluster, nodes: Iterable[Any]) -> bool:
    """Every one of ``nodes`` has sent its vote (VOTE_YES/VOTE_NO, or P2A under Paxos Commit)."""
    senders = {e.data["src"] for e in c.trace if e.kind == "send" and e.data["kind"] in VOTES}
    return set(nodes) <= senders


def until_voted(c: Cluster, nodes: Iterable[Any] = NODES) -> int:
    """Step ``c`` until every one of ``nodes`` has sent its vote; returns the steps taken."""
    nodes = list(nodes)
    k = 0
    while not voted(c, nodes):
        if c.step() is None:
            raise RuntimeError(f"the cluster went quiet before {nodes} all voted")
        k += 1
    return k


def states(c: Cluster, tx: str) -> dict[str, str]:
    """Where each live participant is for ``tx`` ({"n2": "IN_DOUBT", ...})."""
    return {n: s for (n, role, t), s in sorted(c.states().items())
            if role == "participant" and t == tx}


def table_lines(table: dict[str, dict[str, str]]) -> list[str]:
    """A state table (``kvlab.paxos.LEADER_TRANSITIONS``, ...) as one line per move between
    two states, with the events that make it: "PHASE1 -> PHASE2: majority promised"."""
    lines = []
    for state, moves in table.items():
        targets: dict[str, list[str]] = {}
        for event, target in moves.items():
            targets.setdefault(target, []).append(event)
        lines += [f"{state} -> {target}: {', '.join(events)}" for target, events in targets.items()]
    return lines


def step_summary(events: list[Event]) -> str:
    """One short line for a step: the message moved, or the flush and what it sent."""
    first = events[0]
    if first.kind in ("deliver", "drop"):
        d = first.data
        return f"{first.kind} {d['kind']} {d['src']}->{d['dst']}"
    sent = sorted({e.data["kind"] for e in events if e.kind == "send"})
    return f"{first.kind} {first.node}" + (f", then send {'/'.join(sent)}" if sent else "")


def spans(ks: Iterable[int]) -> str:
    """[2, 3, 4, 7] -> "2-4, 7" ("none" for no steps)."""
    ks = sorted(ks)
    if not ks:
        return "none"
    out, lo = [], ks[0]
    for a, b in zip(ks, ks[1:] + [None], strict=True):
        if b != a + 1:
            out.append(f"{lo}" if lo == a else f"{lo}-{a}")
            lo = b
    return ", ".join(out)


def blocked_steps(setup: Callable[[], Cluster], node: Any) -> tuple[int, set[int]]:
    """(steps in the fault-free run, the crash points after which a crash of ``node`` blocks)."""
    points = explore.crash_points(setup, node)
    return len(points) - 1, {k for k, _, why in points if why}


def blocking_rows(configs: dict[str, Callable[[], Cluster]], node: Any = "n1") -> list[str]:
    """A small table: for each named setup, how many crash points of ``node`` block, and which."""
    lines = [f"{'protocol':<14}{'steps':>6}{'blocking':>10}   crash points that block"]
    for name, setup in configs.items():
        total, bad = blocked_steps(setup, node)
        lines.append(f"{name:<14}{total:>6}{len(bad):>10}   {spans(bad)}")
    return lines


def cost_lines(protocols: tuple[str, ...] = PROTOCOLS, paxos_f: int = 1) -> list[str]:
    """:func:`kvlab.bench_commit.commit_costs` as a table narrow enough for a notebook, with
    Gray and Lamport's counts (message delays, messages, stable writes) beside kvlab's."""
    rows = commit_costs(protocols, paxos_f=paxos_f)
    lines = [f"{'':<12}{'---------- kvlab, measured ----------':^38}  Gray & Lamport",
             f"{'protocol':<12}{'msgs':>5}{'oracle':>7}{'self':>5}{'forced':>7}{'fsyncs':>7}"
             f"{'ticks':>6}   {'delays':>6}{'msgs':>5}{'writes':>7}"]
    for r in rows:
        gl = r["gray_lamport"]
        ref = (f"{gl['delays']:>6}{gl['messages']:>5}{gl['writes']:>7}" if gl
               else "  as 2PC until a failure")
        name = r["protocol"] + (f" F={paxos_f}" if r["protocol"] == "paxos" else "")
        lines.append(f"{name:<12}{r['messages']:>5}{r['oracle']:>7}{r['to_self']:>5}"
                     f"{r['forced']:>7}{r['fsyncs']:>7}{r['latency']:>6}   {ref}")
    return lines


# -- the exercise ---------------------------------------------------------------------------------
def exercise_setup(protocol: str) -> Callable[[], Cluster]:
    """A ``setup()``: chapter 5's exercise cluster under ``protocol``. Placement "partitioned";
    n3 has just called ``commit_async`` for a transaction writing x (owner n1) and y (owner n2),
    so n3 coordinates and is not a participant."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol is one of {PROTOCOLS}, got {protocol!r}")

    def setup() -> Cluster:
        c = Cluster(NODES, seed=0, commit_protocol=protocol, placement="partitioned")
        n3 = c[COORDINATOR]
        tx = n3.begin()
        n3.put(tx, "x", 1)
        n3.put(tx, "y", 2)
        n3.commit_async(tx)
        return c
    setup.__name__ = f"exercise_under_{protocol}"
    return setup


def exercise_steps(protocol: str) -> list[str]:
    """The fault-free run of the exercise's commit under ``protocol``, one numbered line a step."""
    c = exercise_setup(protocol)()
    lines = []
    while not c.quiet:
        lines.append(f"step {len(lines) + 1:>2}: {step_summary(c.step())}")
    return lines


def _steps(protocol: str, answer: Any, last: int) -> set[int] | str:
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable):
        return (f"{protocol!r}: give a list or set of step numbers like [3, 4] (or [] for "
                f"none), not {answer!r}")
    steps = set()
    for s in answer:
        if isinstance(s, bool) or not isinstance(s, int):
            return f"{protocol!r}: {s!r} is not a step number: use ints (0: before any step)"
        if not 0 <= s <= last:
            return (f"{protocol!r}: step {s} is outside the commit: under {protocol} it takes "
                    f"{last} steps, so crash points are 0 to {last}")
        steps.add(s)
    return steps


def check_blocking_steps(answer: Any) -> Feedback:
    """Correct if ``answer`` maps each of "2pc", "cooperative" and "paxos" to exactly the steps
    after which crashing n3 (losing its undelivered messages) leaves a live participant blocked."""
    if answer is None:
        return not_yet('set `answer` to a dict {"2pc": [...], "cooperative": [...], '
                       '"paxos": [...]}: for each protocol, the step numbers after which a '
                       'crash of n3 blocks a participant ([] for none)')
    why = not_a_dict_of(answer, PROTOCOLS)
    if why:
        return not_yet(why)
    wrong = []
    for protocol in PROTOCOLS:
        last, truth = blocked_steps(exercise_setup(protocol), COORDINATOR)
        steps = _steps(protocol, answer[protocol], last)
        if isinstance(steps, str):
            return not_yet(steps)
        if steps == truth:
            continue
        extra, missing = sorted(steps - truth), sorted(truth - steps)
        parts = []
        if missing:
            parts.append(f"you left out {len(missing)} step(s) where a participant is blocked")
        if extra:
            parts.append(f"after step {extra[0]} nobody is blocked (crash there, run, and look "
                         f"at explore.nonblocking(c))")
        wrong.append(f"{protocol}: " + " and ".join(parts))
    if wrong:
        return not_yet("; ".join(wrong) + ". A crash loses n3's undelivered messages, so some "
                       "participants hear from it and others do not.")
    return correct(
        "two-phase commit blocks from the first PREPARE delivered until the last COMMIT is: a "
        "prepared participant can only ask its coordinator. Cooperative termination removes "
        "both ends of that window (a participant that never voted aborts on its own; one that "
        "got COMMIT tells the others), but not the middle, where every live participant is "
        "prepared and in doubt. Paxos Commit has no window: the votes live on F + 1 acceptors, "
        "and any of them can lead.")


__all__ = ["NODES", "PROTOCOLS", "start_commit", "setup_for", "voted", "until_voted", "states",
           "table_lines", "step_summary", "spans", "blocked_steps", "blocking_rows", "cost_lines",
           "exercise_setup", "exercise_steps", "check_blocking_steps"]
