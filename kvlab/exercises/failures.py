"""Chapter 5 (failures and recovery): where does a coordinator crash leave participants blocked?

The exercise: :func:`exercise_cluster` builds a partitioned cluster where n3 coordinates a
transaction that writes ``x`` (owned by n1) and ``y`` (owned by n2), so n3 is the coordinator
and not a participant. After ``k`` calls to ``c.step()`` crash n3, run the cluster, and look:
is a participant left **in doubt** (still PREPARED or IN_DOUBT, holding its locks, because it
voted yes and cannot learn the outcome)? :func:`check_in_doubt_steps` computes the true set of
step numbers by running every crash point, and compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kvlab.cluster import Cluster
from kvlab.exercises import Feedback, correct, not_yet
from kvlab.twopc import IN_DOUBT, PREPARED

NODES = ["n1", "n2", "n3"]
COORDINATOR = "n3"


def exercise_cluster(seed: int = 0) -> tuple[Cluster, str]:
    """A fresh cluster (placement "partitioned") where n3 has just called ``commit_async`` for
    a transaction writing x (owner n1) and y (owner n2). Returns (cluster, tx)."""
    c = Cluster(NODES, seed=seed, placement="partitioned")
    n3 = c[COORDINATOR]
    tx = n3.begin()
    n3.put(tx, "x", 1)
    n3.put(tx, "y", 2)
    n3.commit_async(tx)
    return c, tx


def total_steps(seed: int = 0) -> int:
    """How many ``c.step()`` calls the commit takes when nothing fails."""
    c, _ = exercise_cluster(seed)
    return c.run()


def in_doubt_after_crash(step: int, seed: int = 0) -> list[str]:
    """Crash the coordinator after ``step`` steps, run until quiet (participants time out, ask,
    and give up asking), and return the participants still in doubt."""
    c, tx = exercise_cluster(seed)
    for _ in range(step):
        c.step()
    c.crash(COORDINATOR)
    c.run()
    return sorted(n for (n, role, t), state in c.states().items()
                  if role == "participant" and t == tx and state in (PREPARED, IN_DOUBT))


def _steps(answer: Any, last: int) -> set[int] | str:
    if answer is None:
        return ("set `answer` to the step numbers (a list or set of ints, e.g. [3, 4]) after "
                "which crashing n3 leaves a participant in doubt")
    if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable):
        return f"`answer` should be a list or set of step numbers like [3, 4], not {answer!r}"
    steps = set()
    for s in answer:
        if isinstance(s, bool) or not isinstance(s, int):
            return f"{s!r} is not a step number: use ints (0 means crash before any step)"
        if not 0 <= s <= last:
            return (f"step {s} is outside the commit: it takes {last} steps, so crash points "
                    f"are 0 (before any step) to {last}")
        steps.add(s)
    return steps


def check_in_doubt_steps(answer: Any) -> Feedback:
    """Correct if ``answer`` is exactly the set of steps after which crashing the coordinator
    leaves at least one participant in doubt."""
    last = total_steps()
    steps = _steps(answer, last)
    if isinstance(steps, str):
        return not_yet(steps)
    truth = {k for k in range(last + 1) if in_doubt_after_crash(k)}
    if steps == truth:
        return correct(
            f"crashing the coordinator after any of these {len(truth)} steps leaves a "
            f"participant that voted yes (or is about to: its PREPARE is already on the wire) "
            f"with no way to learn the outcome. From the step that makes the DECISION durable "
            f"on, the COMMITs are already on the wire, and they arrive although their sender "
            f"is down.")
    extra, missing = sorted(steps - truth), sorted(truth - steps)
    parts = []
    if missing:
        parts.append(f"you left out {len(missing)} step(s) where a participant is left in "
                     f"doubt (a message sent before the crash is still delivered after it)")
    if extra:
        parts.append(f"after step {extra[0]} no participant is in doubt (crash there and look "
                     f"at c.states() after c.run())")
    right = len(steps & truth)
    return not_yet("; ".join(parts) + f". {right} of your steps {'is' if right == 1 else 'are'} "
                   f"right.")


__all__ = ["exercise_cluster", "total_steps", "in_doubt_after_crash", "check_in_doubt_steps"]
