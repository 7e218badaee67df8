"""Transaction timeline: when each transaction began, prepared, decided and finished.

One row per transaction, coloured by its coordinator's 2PC state over simulated time (the
coordinator's own state changes in the trace), ending in a tick for committed or a cross for
aborted. Thin lines under a bar are the participants' PREPARED / IN_DOUBT stretches: the time
they held locks without knowing the outcome, which is what blocks other readers.
Without a trace, the bars run from start to commit timestamp (a history has no clock).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kvlab.history import History
from kvlab.trace import Trace
from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax, shorten
from kvlab.viz.scene import is_live

LIMIT = 40
_HOLDING = ("PREPARED", "IN_DOUBT")


@dataclass
class Row:
    tx: str
    node: str | None = None
    begin: float | None = None
    segments: list[tuple[str, float, float]] = field(default_factory=list)
    holds: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    status: str = "active"  # committed | aborted | committing | active
    end: float | None = None
    reason: str = ""


def _status(state: str) -> str:
    return {"COMMITTED": "committed", "COMMITTING": "committed", "ABORTED": "aborted",
            "ACTIVE": "active"}.get(state, "committing")


def rows_from_trace(trace: Trace, history: History | None = None) -> list[Row]:
    """Rebuild each transaction's coordinator and participant intervals from state events."""
    rows: dict[str, Row] = {}
    open_seg: dict[str, tuple[str, float]] = {}  # tx -> (state, since)
    open_hold: dict[tuple[str, str], float] = {}  # (tx, node) -> since
    now = trace[-1].time if len(trace) else 0
    for e in trace:
        d = e.data
        if e.kind == "crash":
            for tx, (state, t0) in list(open_seg.items()):
                if rows[tx].node == e.node:
                    rows[tx].segments.append((state, t0, e.time))
                    del open_seg[tx]
            for (tx, n), t0 in list(open_hold.items()):
                if n == e.node:
                    rows[tx].holds.setdefault(n, []).append((t0, e.time))
                    del open_hold[(tx, n)]
            continue
        if e.kind != "state" or not d.get("tx") or not d.get("new") or d["new"] == d.get("old"):
            continue
        tx, new = d["tx"], d["new"]
        row = rows.setdefault(tx, Row(tx))
        if d.get("role") == "coordinator":
            row.node = e.node
            if row.begin is None:
                row.begin = e.time
            if tx in open_seg:
                state, t0 = open_seg.pop(tx)
                row.segments.append((state, t0, e.time))
            row.status = _status(new)
            if is_live("coordinator", new):
                open_seg[tx] = (new, e.time)
            if new in ("COMMITTING", "ABORTED") or (new == "COMMITTED" and row.end is None):
                row.end = e.time  # the decision
        elif d.get("role") == "participant":
            key = (tx, e.node)
            if new in _HOLDING and key not in open_hold:
                open_hold[key] = e.time
            elif new not in _HOLDING and key in open_hold:
                row.holds.setdefault(e.node, []).append((open_hold.pop(key), e.time))
    for tx, (state, t0) in open_seg.items():
        rows[tx].segments.append((state, t0, now))
    for (tx, n), t0 in open_hold.items():
        rows[tx].holds.setdefault(n, []).append((t0, now))
    for row in rows.values():
        if row.begin is None:  # only participant events seen (trace starts mid-way)
            row.begin = min((a for spans in row.holds.values() for a, _ in spans), default=0)
        if history is not None and row.tx in history:
            h = history[row.tx]
            if h.status in ("committed", "aborted"):
                row.status = h.status
            row.reason = h.reason
    return sorted(rows.values(), key=lambda r: (r.begin, r.tx))


def rows_from_history(history: History) -> list[Row]:
    """Without a trace: start timestamp to commit timestamp."""
    rows = []
    for t in history:
        start = t.start_ts or 0
        end = t.commit_ts if t.commit_ts is not None else start + 0.5
        state = "ACTIVE" if t.status == "active" else "start ts → commit ts"
        rows.append(Row(t.id, t.node, start, [(state, start, end)], status=t.status,
                        end=end if t.status != "active" else None, reason=t.reason))
    return sorted(rows, key=lambda r: (r.begin, r.tx))


def transaction_timeline(source: Any, ax: Axes | None = None, *,
                         txs: Iterable[str] | None = None, participants: bool = True,
                         limit: int = LIMIT) -> Figure:
    """Draw every transaction of a cluster (or of a Trace, or a History) on one time axis.

    ``txs`` picks transactions; ``limit`` keeps the last N rows so big runs stay legible.
    """
    trace = getattr(source, "trace", source if isinstance(source, Trace) else None)
    history = getattr(source, "history", source if isinstance(source, History) else None)
    if trace is None and history is None:
        raise VizError(f"expected a kvlab.Cluster, a Trace or a History, got "
                       f"{type(source).__name__}")
    has_states = trace is not None and any(e.kind == "state" for e in trace)
    rows = rows_from_trace(trace, history) if has_states else (
        rows_from_history(history) if history is not None else [])
    clock = "simulated time" if has_states else "timestamp"
    if txs is not None:
        wanted = set(txs)
        rows = [r for r in rows if r.tx in wanted]
    hidden = max(0, len(rows) - limit)
    rows = rows[hidden:]
    height = 1.4 + 0.42 * max(len(rows), 1) * (1.4 if participants else 1.0)
    height = min(height, 40.0)
    fresh = ax is None
    fig, ax = figure_ax(ax, 8.0, height)
    if fresh:  # margins in inches: the title and the key above, the time axis below
        fig.subplots_adjust(left=0.11, right=0.98, top=1 - 0.75 / height, bottom=0.5 / height)
    _draw(ax, rows, participants, clock, hidden)
    return fig


def _draw(ax: Axes, rows: list[Row], participants: bool, clock: str, hidden: int) -> None:
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="both", labelsize=st.SMALL)
    ax.set_xlabel(clock, fontsize=st.SMALL)
    pitch = 1.4 if participants else 1.0
    verts, faces, holds, ok, bad = [], [], [], [], []
    yticks, ylabels, notes = [], [], []
    x_max = 1.0
    for i, r in enumerate(rows):
        y = -i * pitch
        yticks.append(y)
        ylabels.append(f"{r.tx} @{r.node or '?'}")
        for state, a, b in r.segments:
            b = max(b, a + 0.3)
            verts.append([(a, y - 0.17), (b, y - 0.17), (b, y + 0.17), (a, y + 0.17)])
            faces.append(st.state_color(state))
            x_max = max(x_max, b)
        if participants:
            for k, (_node, spans) in enumerate(sorted(r.holds.items())):
                yy = y - 0.3 - 0.1 * k
                for a, b in spans:
                    holds.append([(a, yy), (max(b, a + 0.3), yy)])
                    x_max = max(x_max, b)
        if r.end is not None and r.status in ("committed", "aborted"):
            (ok if r.status == "committed" else bad).append((r.end, y))
        notes.append((r, y))
    ax.add_collection(PolyCollection(verts, facecolors=faces, edgecolors=st.BLACK,
                                     linewidths=0.4, gid="bars"))
    ax.add_collection(LineCollection(holds, colors=st.PURPLE, linewidths=1.5, gid="holds"))
    ax.scatter(*zip(*ok, strict=True) if ok else ([], []), marker="P", s=60,
               color=st.outcome_color("committed"), zorder=4, gid="committed")
    ax.scatter(*zip(*bad, strict=True) if bad else ([], []), marker="X", s=60,
               color=st.outcome_color("aborted"), zorder=4, gid="aborted")
    ax.set_yticks(yticks, ylabels)
    x_min = min((r.begin or 0 for r in rows), default=0) - 1
    ax.set_xlim(x_min, x_max * 1.05 + 2)
    middle = (x_min + x_max) / 2
    for r, y in notes:  # right-aligned in the right half, so the text stays on the page
        text = r.status if not r.reason else shorten(r.reason, 70)
        right = (r.begin or 0) > middle
        x = max((b for _, _, b in r.segments), default=r.begin or 0) if right else r.begin or 0
        ax.text(x, y + 0.22, text, fontsize=st.SMALL, va="bottom", clip_on=True,
                ha="right" if right else "left", color=st.outcome_ink(r.status))
    ax.set_ylim(-max(len(rows), 1) * pitch + 0.4, 0.8)
    states = sorted({s for r in rows for s, _, _ in r.segments})
    handles = [Patch(facecolor=st.state_color(s), edgecolor=st.BLACK, label=s) for s in states]
    if participants and holds:
        handles.append(Patch(facecolor=st.PURPLE, label="participant holds locks"))
    if handles:
        ax.legend(handles=handles, fontsize=st.SMALL, loc="lower right", frameon=False,
                  ncols=min(len(handles), 3), bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2,
                  columnspacing=1.0, handlelength=1.5)
    title = "transactions by coordinator state\n(+ commit point, x abort)"
    if hidden:
        title += f" · last {len(rows)} (of {len(rows) + hidden}; pass limit=)"
    if not rows:
        title = "no transactions yet"
    ax.set_title(title, fontsize=st.FONT, loc="left")


__all__ = ["transaction_timeline", "rows_from_trace", "rows_from_history", "Row"]
