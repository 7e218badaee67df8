"""Chapter 6 (stress and checking): the exercise checks.

:func:`check_verifier` takes the learner's ``verify(result) -> bool`` and runs it on five bank
workload results: two correct runs (one with faults, one without audits) and three broken ones,
each failing a different oracle (the audit totals, the history checker, the replica audit). A
good ``verify`` accepts the correct runs and rejects the broken ones.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from kvlab.exercises import Feedback, correct, not_yet
from kvlab.workloads import Faults, WorkloadResult, bank_totals, run

_SIZE = dict(transactions=240, concurrency=8, keys=8)


@lru_cache(maxsize=1)
def _cases() -> tuple[tuple[str, WorkloadResult, bool, str], ...]:
    """(name, result, what verify should say, hint if it says the opposite), built once."""
    good = run("bank", seed=11, isolation="snapshot", **_SIZE,
               faults=Faults(crash_rate=0.1, loss=0.02, latency=(1, 8)))
    drift = run("bank", seed=12, isolation="read_committed", **_SIZE)
    totals = bank_totals(drift.history)
    blind = run("bank", seed=13, isolation="read_committed", read_only=0.0, **_SIZE)
    quiet = run("bank", seed=15, isolation="snapshot", read_only=0.0, **_SIZE)
    lost = run("bank", seed=14, isolation="snapshot", **_SIZE)
    node, key, writer = _lose_newest_write(lost, "n2")
    return (
        ("a correct snapshot run with crashes and message loss", good, True,
         "every audit saw the same total, kvlab.audit.audit finds every write where it belongs "
         "and the checker finds nothing forbidden at snapshot. Is one of your tests stricter than "
         "the invariant (all audit totals equal to each other)?"),
        ("a correct snapshot run without audits (read_only=0)", quiet, True,
         "with no audits there are no totals to compare, and an empty list breaks no invariant."),
        ("a read-committed run", drift, False,
         f"its audits saw totals from {min(totals)} to {max(totals)}: look at "
         "workloads.bank_totals(result.history)."),
        ("a read-committed run without audits (read_only=0)", blind, False,
         "there are no audits, so no total can drift, yet transfers overwrote each other. Which "
         "oracle reads the history itself?"),
        (f"a snapshot run whose replica {node} silently lost the newest write to {key!r}", lost,
         False,
         f"the history and the audit totals look fine; only {node}'s store is missing {writer}'s "
         "version. Which oracle reads the replicas?"),
    )


def _lose_newest_write(result: WorkloadResult, node: str) -> tuple[str, str, str]:
    """Drop the newest version of the first key on one replica, as a faulty disk might."""
    store = result.cluster.core(node).store
    key = sorted(store.chains)[0]
    version = store.lose_latest(key)
    return node, key, version.writer


def check_verifier(verify: Callable[[Any], Any] | None) -> Feedback:
    """Run ``verify`` on two correct and three broken bank runs; say what it got wrong."""
    if verify is None:
        return not_yet("write a function verify(result) that returns True or False, then call "
                       "check_verifier(verify).")
    if not callable(verify):
        return not_yet(f"pass the function itself, check_verifier(verify), not what it returns "
                       f"(got a {type(verify).__name__}).")
    for name, result, want, hint in _cases():
        try:
            got = verify(result)
        except Exception as e:  # a learner's bug: report it, don't crash the notebook
            return not_yet(f"verify raised {type(e).__name__} on {name}: {e}")
        if got is None:
            return not_yet(f"verify returned None for {name}; return True (the run is correct) "
                           f"or False.")
        if bool(got) != want:
            verdict = "rejected" if want else "accepted"
            return not_yet(f"verify {verdict} {name}: {hint}")
    return correct("verify accepts both correct runs and rejects all three broken ones. Each "
                   "oracle earned its place: without audits only the history checker sees the "
                   "lost updates, and only the replica audit sees the lost write.")


__all__ = ["check_verifier"]
