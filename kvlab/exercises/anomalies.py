"""Chapter 3 (conflicts and anomalies): the exercise checks.

:func:`check_write_skew` takes a hand-written plain history (the list-of-dicts format of
:mod:`kvlab.checker`) and says whether it shows write skew: the checker must report G2-item at
``serializable`` while finding nothing that snapshot isolation forbids.
"""

from __future__ import annotations

from typing import Any

from kvlab.checker import check
from kvlab.errors import KvlabError
from kvlab.exercises import Feedback, correct, not_yet
from kvlab.viz.depgraph import cycle_text

_FORMAT = ("[{'id': 'T1', 'ops': [['w', 'x', 1]]}, {'id': 'T2', 'ops': [['r', 'x', 1]]}]: "
           "one dict per committed transaction, listed in commit order")


def _names(anomalies: list[Any]) -> list[str]:
    return sorted({a.name for a in anomalies})


def check_write_skew(history: Any) -> Feedback:
    """Does ``history`` show write skew (allowed under snapshot, forbidden under serializable)?"""
    if history is None:
        return not_yet("replace `answer = None` with a plain history, a list of dicts such as "
                       f"{_FORMAT}. Model the two doctors: each transaction reads both keys "
                       "and writes one of them.")
    try:
        ser = check(history, "serializable")
        si = check(history, "snapshot")
    except KvlabError as e:
        return not_yet(f"the checker cannot read that history: {e}")
    if not si.ok:
        names = _names(si.anomalies)
        hint = ""
        if "lost-update" in names:
            hint = (" Two transactions wrote the same key after reading the same version: first "
                    "committer wins would abort one of them. In write skew each transaction "
                    "writes a different key.")
        elif "G-single" in names:
            hint = (" A transaction saw part of another's writes and missed the rest; a snapshot "
                    "never does that. In write skew both transactions read from the same "
                    "snapshot, before either wrote.")
        return not_yet(f"snapshot isolation already forbids this history (the checker finds "
                       f"{', '.join(names)}), so it is not write skew: write skew is what "
                       f"snapshot isolation lets through.{hint}")
    found = [a for a in ser.anomalies if a.name == "G2-item"]
    if found:
        a = found[0]
        return correct(f"snapshot isolation allows this history, serializable forbids it: the "
                       f"checker finds G2-item ({cycle_text(a.cycle)}), a cycle of "
                       f"anti-dependencies. That is write skew.")
    committed = sum(1 for t in ser.graph.nodes)
    if committed < 2:
        return not_yet("write skew needs at least two committed transactions that run "
                       "concurrently; your history has fewer.")
    return not_yet("the checker finds nothing non-serializable: some serial order explains every "
                   "read. For write skew, each of two transactions must read the key the other "
                   "one writes and see the value from *before* that write (the initial value), "
                   "so each one misses the other's update. Give every write a new value.")


__all__ = ["check_write_skew"]
