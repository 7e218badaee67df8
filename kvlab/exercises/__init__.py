"""Checks for the notebooks' exercises: each returns :class:`Feedback` a learner can read.

One module per chapter (``tour``, ``mvcc``, ``anomalies``, ``twopc``, ``failures``, ``stress``,
``workshop``). A check never reveals the answer; it says what is right or what to look at next.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Feedback:
    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return f"{'✔ correct' if self.ok else '✘ not yet'}: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = "#009E73" if self.ok else "#D55E00"
        mark = "✔ correct" if self.ok else "✘ not yet"
        return (f'<div style="border-left: 4px solid {colour}; padding: 4px 8px">'
                f'<b style="color: {colour}">{mark}</b>: {html.escape(self.message)}</div>')


def correct(message: str) -> Feedback:
    return Feedback(True, message)


def not_yet(message: str) -> Feedback:
    return Feedback(False, message)


def not_a_dict_of(value: object, keys: Sequence[object], name: str = "`answer`",
                  meaning: str = "") -> str | None:
    """Why ``value`` is not a dict with exactly ``keys`` (None: it is one), for a check's
    not_yet; ``meaning`` says what the keys are."""
    if isinstance(value, dict) and set(value) == set(keys):
        return None
    got = sorted(map(repr, value)) if isinstance(value, dict) else type(value).__name__
    named = [repr(k) for k in keys]
    listed = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
    return f"{name} should be a dict with exactly the keys {listed}{meaning}, got {got}"
