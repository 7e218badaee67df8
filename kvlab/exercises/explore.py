"""Checks for chapter 8 (let the computer find the bug): which force rule needs a coordinator
crash, and a hand-written invariant judged on known states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kvlab
from kvlab import explore
from kvlab.exercises import Feedback, correct, not_yet

NODES = ["n1", "n2", "n3"]
RULES = ("force_prepare", "force_decision", "force_commit")


def commit_setup(rules: kvlab.Rules | None = None) -> kvlab.Cluster:
    """Chapter 4's commit: T1 puts x=1 on n1, the coordinator; all three nodes participate."""
    c = kvlab.Cluster(NODES, seed=0, rules=rules)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.commit_async(tx)
    return c


def counterexample(rule: str) -> explore.Result:
    """The shortest schedule that breaks the commit with ``rule`` switched off."""
    return explore.search(lambda: commit_setup(kvlab.Rules(**{rule: False})), crashes=1,
                          progress=False)


def check_coordinator_rule(answer: Any) -> Feedback:
    """Which force rule's shortest counterexample is the one that crashes the coordinator?"""
    if answer not in RULES:
        return not_yet(f"answer with one of {', '.join(map(repr, RULES))} (a string)")
    crashed = [c.node for c in counterexample(answer).schedule if c.kind == "crash"]
    if crashed == ["n1"]:
        return correct(f"without {answer} the coordinator's decision is not durable when the "
                       f"participants hear it, so the coordinator is the one whose crash loses "
                       f"it (presumed abort) while they have committed")
    return not_yet(f"with {answer} off, the shortest schedule the search finds crashes "
                   f"{', '.join(crashed) or 'no node'}, a participant: which promise lives "
                   f"only in the coordinator's log?")


def _waiting_state(crash_coordinator: bool) -> kvlab.Cluster:
    """T2's read of x on n3 waits for T1, prepared there; optionally T1's coordinator is down."""
    c = kvlab.Cluster(NODES, seed=0)
    n1, n3 = c["n1"], c["n3"]
    t1 = n1.begin()
    n1.put(t1, "x", 1)
    n1.commit_async(t1)
    while not (c.core("n3").participant.txs.get(t1) is not None and c.pending()
               and all(e.kind != "PREPARE" for e in c.pending())):
        c.step()
    t2 = n3.begin()
    n3.get_async(t2, "x")
    if crash_coordinator:
        c.crash("n1")
    return c


def check_invariant(invariant: Callable[[kvlab.Cluster], Any]) -> Feedback:
    """Your "a reader never waits on a transaction whose coordinator is up", on known states."""
    if not callable(invariant):
        return not_yet("pass the function itself: check_invariant(my_invariant)")
    quiet = kvlab.Cluster(NODES, seed=0)
    cases = [("a cluster where nobody reads", quiet, False),
             ("a read waiting for T1 while T1's coordinator n1 is up", _waiting_state(False),
              True),
             ("a read waiting for T1 after its coordinator n1 crashed", _waiting_state(True),
              False)]
    for what, cluster, broken in cases:
        try:
            verdict = invariant(cluster)
        except Exception as e:  # noqa: BLE001 - the learner's code: report, don't crash
            return not_yet(f"your invariant raised {type(e).__name__}: {e} on {what}; "
                           f"cluster.core(n) is None for a crashed node")
        if broken and not (isinstance(verdict, str) and verdict):
            return not_yet(f"on {what} it returned {verdict!r}: it should return a sentence "
                           f"saying which read waits for which transaction")
        if not broken and verdict is not None:
            return not_yet(f"on {what} it returned {verdict!r}: it should return None there "
                           f"(the invariant holds)")
    return correct("it tells a read held by a live coordinator's transaction from one held "
                   "by a dead coordinator's")


__all__ = ["check_coordinator_rule", "check_invariant", "commit_setup", "counterexample"]
