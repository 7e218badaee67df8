"""The message-sequence (space-time) diagram: a lane per node, time running down the page.

Each drawn trace event gets its own row, so events at the same simulated time never overlap
and the order in which the cluster processed them is exact (the row number is the trace order;
the simulated time is on the left). Arrows are messages from their send row to their delivery
row; a dropped message stops short with a cross. Squares on a lane are log records (hollow when
forced, waiting for a flush), diamonds are flushes, crosses crashes, triangles restarts. A grey
band is a partition.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.path import Path
from matplotlib.text import Text

from kvlab.messages import TSO
from kvlab.trace import Event, Trace
from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax, nodes_of, trace_of
from kvlab.viz.scene import noop_timer

FAULTS = ("crash", "restart", "partition", "heal", "torn")
DRAWN = ("send", "deliver", "drop", "wal", "flush", "timer", "state", "call", "checkpoint",
         *FAULTS)
_HEAD = Path([(0.0, 0.0), (-1.0, 0.45), (-1.0, -0.45), (0.0, 0.0)],
             [Path.MOVETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY])
_MARKS = {  # mark kind -> scatter style
    "force": dict(marker="s", s=22, facecolors="white", edgecolors=st.BLACK),
    "record": dict(marker="s", s=12, facecolors=st.GREY, edgecolors=st.GREY),
    "flush": dict(marker="D", s=26, facecolors=st.DURABLE_COLOR, edgecolors=st.BLACK),
    "crash": dict(marker="X", s=110, facecolors=st.CRASH_COLOR, edgecolors=st.CRASH_COLOR),
    "restart": dict(marker="^", s=70, facecolors=st.RESTART_COLOR, edgecolors=st.BLACK),
    "drop": dict(marker="x", s=45, color=st.CRASH_COLOR),
    "timer": dict(marker="o", s=30, facecolors="white", edgecolors=st.PURPLE),
}


def _wanted(tx: str | Iterable[str] | None) -> set[str] | None:
    if tx is None:
        return None
    return {tx} if isinstance(tx, str) else set(tx)


def select(trace: Trace, tx: str | Iterable[str] | None = None, since: int | None = None,
           until: int | None = None, last: int | None = None, states: bool = True,
           calls: bool = True) -> list[Event]:
    """The events a diagram draws, in order, after the filters (``last`` applies last).

    With ``tx``, only that transaction's messages, log records and states are kept (plus the
    flushes that made them durable and every fault, since faults explain what happens next).
    Messages without a transaction (a begin's timestamp request) are left out.
    """
    txs = _wanted(tx)
    if txs is None and last:  # the explorer's case: walk back from the end, stop at ``last``
        out = []
        for i in range(len(trace) - 1, -1, -1):
            if _drawn(trace, i, since, until, states, calls):
                out.append(trace[i])
                if len(out) == last:
                    break
        return out[::-1]
    waiting: set[str] = set()  # nodes with a kept log record not flushed yet
    out = []
    for i, e in enumerate(trace):
        if not _drawn(trace, i, since, until, states, calls):
            continue
        if txs is not None and e.kind not in FAULTS:
            if e.kind == "flush":
                if e.node not in waiting:
                    continue
                waiting.discard(e.node)
            elif e.data.get("tx") not in txs:
                continue
            elif e.kind == "wal":
                waiting.add(e.node)
        out.append(e)
    return out[-last:] if last else out


def _drawn(trace: Trace, i: int, since: int | None, until: int | None, states: bool,
           calls: bool) -> bool:
    e = trace[i]
    k = e.kind
    if k not in DRAWN or (since is not None and e.time < since) or (
            until is not None and e.time > until):
        return False
    if k == "state":
        new = e.data.get("new")
        return states and bool(new) and new != e.data.get("old")
    if k == "call":
        return calls
    return k != "timer" or not noop_timer(trace, i)


class SequenceView:
    """A reusable space-time diagram; :meth:`update` redraws it from a trace."""

    def __init__(self, lanes: list[str], ax: Axes | None = None,
                 size: tuple[float, float] | None = None, compact: bool = False) -> None:
        self.compact = compact  # shorter notes: fewer glyphs to render when redrawing often
        self.lanes = [n for n in lanes if n != TSO] + [TSO]
        self.x = {n: float(i) for i, n in enumerate(self.lanes)}
        w = size or (1.5 * len(self.lanes) + 1.6, 6.0)
        self.fig, self.ax = figure_ax(ax, *w)
        ax = self.ax
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="y", length=0, labelsize=st.SMALL, colors=st.GREY)
        ax.set_xticks([])
        ax.set_xlim(-0.7, len(self.lanes) - 0.3)
        self.headers = [ax.text(self.x[n], -0.9, n, ha="center", va="bottom",
                                fontsize=st.FONT + 1, fontweight="bold") for n in self.lanes]
        self.bands = ax.add_collection(PolyCollection([], facecolors=st.LIGHT, alpha=0.6,
                                                      zorder=0, gid="partitions"))
        self.lane_lines = ax.add_collection(LineCollection([], zorder=1, gid="lanes"))
        self.shafts = ax.add_collection(LineCollection([], linewidths=1.2, zorder=2,
                                                       gid="messages"))
        self.heads = ax.scatter(np.zeros(0), np.zeros(0), s=40, zorder=3, linewidths=0,
                                gid="arrowheads")
        self.marks = {k: ax.scatter(np.zeros(0), np.zeros(0), zorder=4, gid=f"mark:{k}", **kw)
                      for k, kw in _MARKS.items()}
        self.texts: list[Text] = []
        self.messages: list[dict[str, Any]] = []  # what the arrows show, for tests and tools
        self.events: list[Event] = []

    # -- drawing ------------------------------------------------------------------------------
    def _text(self, i: int, x: float, y: float, s: str, color: str, **kw: Any) -> None:
        if i == len(self.texts):
            self.texts.append(self.ax.text(0, 0, "", fontsize=st.SMALL - 0.5, zorder=5,
                                           clip_on=True))
        t = self.texts[i]
        t.set_position((x, y))
        t.set_text(s)
        t.set_color(color)
        t.set_ha(kw.get("ha", "left"))
        t.set_va(kw.get("va", "center"))
        t.set_fontstyle(kw.get("style", "normal"))
        t.set_visible(True)

    def update(self, trace: Trace, **filters: Any) -> Figure:
        """Draw ``trace`` after :func:`select` filters (tx, since, until, last, states, calls)."""
        events = select(trace, **filters)
        self.events = events
        n = max(len(events), 1)
        ax = self.ax
        ax.set_ylim(n + 0.2, -1.6)
        up, cut = _before(trace, events[0].seq if events else len(trace), self.lanes)
        down_since = {lane: (-1.0 if not up.get(lane, True) else None) for lane in self.lanes}
        down: list[tuple[str, float, float]] = []  # (lane, from row, to row) while crashed
        band_start = -1.0 if cut else None
        bands = []
        marks: dict[str, list[tuple[float, float]]] = {k: [] for k in _MARKS}
        msgs: dict[int, dict[str, Any]] = {}
        ti = 0
        for r, e in enumerate(events):
            k, d = e.kind, e.data
            if k in ("send", "deliver", "drop"):
                m = msgs.setdefault(d["id"], dict(id=d["id"], src=d["src"], dst=d["dst"],
                                                  kind=d["kind"], tx=d.get("tx"), start=None,
                                                  end=None, dropped=None))
                if k == "send":
                    m["start"] = r
                else:
                    m["end"] = r
                    m["dropped"] = d.get("reason", "dropped") if k == "drop" else None
                continue
            if k == "crash":
                down_since[e.node] = r
            elif k == "restart":
                self._lane_down(down, e.node, down_since.get(e.node), r)
                down_since[e.node] = None
            elif k in ("partition", "heal"):
                if band_start is not None:
                    bands.append((band_start, r))
                band_start = r if k == "partition" else None
            mark, text, color, kw = _note(e, self.compact)
            if k in ("partition", "heal"):  # whole-cluster events: noted at the left edge
                x, dx = -0.65, 0.0
            else:
                x, dx = self.x.get(e.node or "", 0.0), -0.08 if kw.get("ha") == "right" else 0.1
            if mark:
                marks[mark].append((x, r))
            self._text(ti, x + dx, r, text, color, **kw)
            ti += 1
        if band_start is not None:
            bands.append((band_start, n))
        for lane in self.lanes:
            if down_since.get(lane) is not None:
                self._lane_down(down, lane, down_since[lane], n)
        ti = self._arrows(list(msgs.values()), n, marks, ti)
        for t in self.texts[ti:]:
            t.set_visible(False)
        self.messages = list(msgs.values())
        self._static_layers(down, bands, marks, n)
        self._time_axis(events)
        return self.fig

    @staticmethod
    def _lane_down(down: list, node: str | None, start: float | None, end: float) -> None:
        if node is not None and start is not None:
            down.append((node, start, end))

    def _static_layers(self, down: list, bands: list, marks: dict, n: int) -> None:
        segs, colors, styles = [], [], []
        for lane in self.lanes:
            x = self.x[lane]
            segs.append([(x, -0.8), (x, n)])
            colors.append(st.GREY if lane == TSO else st.BLACK)
            styles.append("--" if lane == TSO else "-")
        for lane, a, b in down:  # crashed stretch: drawn over the lane in light grey
            x = self.x[lane]
            segs.append([(x, a), (x, b)])
            colors.append(st.DOWN_FACE)
            styles.append("-")
        self.lane_lines.set_segments(segs)
        self.lane_lines.set_colors(colors)
        self.lane_lines.set_linestyles(styles)
        self.lane_lines.set_linewidths([0.8] * len(self.lanes) + [3.5] * len(down))
        w = len(self.lanes)
        self.bands.set_verts([[(-0.7, a), (w - 0.3, a), (w - 0.3, b), (-0.7, b)]
                              for a, b in bands])
        for k, coll in self.marks.items():
            coll.set_offsets(np.array(marks[k], dtype=float).reshape(-1, 2))

    def _arrows(self, msgs: list[dict[str, Any]], n: int, marks: dict, ti: int) -> int:
        segs, colors, styles, tips = [], [], [], []
        for m in msgs:
            xs, xd = self.x.get(m["src"], 0.0), self.x.get(m["dst"], 0.0)
            a = m["start"] if m["start"] is not None else -0.6
            if m["end"] is None:  # still in flight at the end of the window
                b, xe, style = n, xs + (xd - xs) * 0.5, ":"
            elif m["dropped"]:
                b, xe, style = m["end"], xs + (xd - xs) * 0.6, "--"
            else:
                b, xe, style = m["end"], xd, st.kind_style(m["kind"])
            if m["start"] is None:
                style = ":"
            if xs == xd:  # to itself: a small loop out to the right
                xe = xs
                pts = [(xs, a), (xs + 0.28, a + (b - a) * 0.5), (xe, b)]
            else:
                pts = [(xs, a), (xe, b)]
            if m["dropped"] and xs == xd:
                pts[-1] = (xs + 0.14, b)
            segs.append(pts)
            colors.append(st.kind_color(m["kind"]))
            styles.append(style)
            if m["dropped"]:
                marks["drop"].append(pts[-1])
            elif m["end"] is not None:
                tips.append((pts[-2], pts[-1]))
            f = 0.6 if m["start"] is not None else 0.5  # past the fan-out of a broadcast
            mx = pts[0][0] + (pts[-1][0] - pts[0][0]) * f
            my = pts[0][1] + (pts[-1][1] - pts[0][1]) * f
            if xs == xd:
                mx = xs + 0.3
            label = m["kind"] + (f" {m['tx']}" if m["tx"] else "")
            if m["dropped"]:
                label += f" ✕ {m['dropped']}"
            elif m["end"] is None:
                label += " (in flight)"
            self._text(ti, mx, my, label, st.kind_color(m["kind"]), ha="center", va="bottom")
            ti += 1
        self.shafts.set_segments(segs)
        self.shafts.set_colors(colors)
        self.shafts.set_linestyles(styles)
        self._heads(tips, [c for c, m in zip(colors, msgs, strict=True)
                           if not m["dropped"] and m["end"] is not None])
        return ti

    def _heads(self, tips: list, colors: list[str]) -> None:
        """Arrowheads drawn at the delivery ends, rotated to the line as it appears on screen."""
        to_screen = self.ax.transData.transform
        paths = []
        for p0, p1 in tips:
            (x0, y0), (x1, y1) = to_screen([p0, p1])
            a = math.atan2(y1 - y0, x1 - x0)
            c, s = math.cos(a), math.sin(a)
            paths.append(Path(_HEAD.vertices @ np.array([[c, s], [-s, c]]), _HEAD.codes))
        self.heads.set_offsets(np.array([p1 for _, p1 in tips], dtype=float).reshape(-1, 2))
        self.heads.set_paths(paths)
        self.heads.set_facecolors(colors)

    def _time_axis(self, events: list[Event]) -> None:
        ticks, labels, last = [], [], None
        for r, e in enumerate(events):
            if e.time != last:
                ticks.append(r)
                labels.append(f"t={e.time}")
                last = e.time
        self.ax.set_yticks(ticks, labels)


def _note(e: Event, compact: bool) -> tuple[str | None, str, str, dict[str, Any]]:
    """How a non-message event appears on its lane: (mark, text, colour, text options)."""
    k, d = e.kind, e.data
    if k == "wal":
        text = d["type"] if compact else f"log {d['type']} (lsn {d['lsn']})"
        return ("force" if d.get("force") else "record"), text, st.GREY, {}
    if k == "flush":
        text = "flush" if compact else f"flush → lsn {d.get('lsn')} durable"
        return "flush", text, st.DURABLE_COLOR, {}
    if k == "checkpoint":
        return "flush", f"checkpoint (lsn {d.get('lsn')})", st.BLUE, {}
    if k == "crash":
        lost = d.get("lost_records", 0)
        return "crash", f"CRASH (lost {lost} unflushed record(s))", st.CRASH_COLOR, {}
    if k == "restart":
        doubt = d.get("in_doubt") or []
        extra = f", in doubt: {' '.join(doubt)}" if doubt else ""
        return ("restart", f"restart (replayed {d.get('replayed', 0)}{extra})",
                st.RESTART_COLOR, {})
    if k == "torn":
        return None, "torn tail cut off", st.CRASH_COLOR, {}
    if k == "partition":
        sides = " | ".join(" ".join(g) for g in d.get("groups", []))
        return None, f"partition {sides} (rest apart)", st.BLACK, {"style": "italic"}
    if k == "heal":
        return None, "heal", st.BLACK, {"style": "italic"}
    if k == "timer":
        return "timer", f"timeout: {d.get('key')}", st.PURPLE, {}
    if k == "state":
        new = d["new"]
        return None, f"{d.get('tx')} → {new}", st.BLUE if new == "ACTIVE" else \
            st.state_color(new), {}
    what = d.get("op", "")  # a client call
    if what in ("put", "get"):
        what += f" {d.get('key')}" + (f"={d.get('value')!r}" if what == "put" else "")
    return None, f"{what} {d.get('tx') or ''}", st.GREY, {"ha": "right"}


def _before(trace: Trace, seq: int, lanes: list[str]) -> tuple[dict[str, bool], bool]:
    """Which nodes are up, and whether a partition holds, just before event ``seq``."""
    up = dict.fromkeys(lanes, True)
    cut = False
    for e in trace:
        if e.seq >= seq:
            break
        if e.kind == "crash":
            up[e.node] = False
        elif e.kind == "restart":
            up[e.node] = True
        elif e.kind == "partition":
            cut = True
        elif e.kind == "heal":
            cut = False
    return up, cut


def sequence_diagram(source: Any, ax: Axes | None = None, *, tx: str | Iterable[str] | None = None,
                     since: int | None = None, until: int | None = None, last: int | None = None,
                     states: bool = True, calls: bool = True) -> Figure:
    """Draw a cluster's trace (or a Trace) as a space-time diagram, one lane per node + tso.

    Narrow it down with ``tx`` (one id or several), a time window ``since``/``until``
    (simulated time, inclusive) and ``last`` (keep the last N drawn events). ``states`` adds
    each 2PC state change as a note on its lane; ``calls`` the client's begin/put/commit.
    """
    trace = trace_of(source)
    nodes = nodes_of(source, trace)
    if not nodes:
        nodes = []
    if last is not None and last < 1:
        raise VizError(f"last={last}: pass a positive number of events, or None for all")
    events = select(trace, tx=tx, since=since, until=until, last=last, states=states,
                    calls=calls)
    height = min(max(2.2, 0.17 * len(events) + 0.9), 60.0)
    width = 1.5 * (len(nodes) + 1) + 1.6
    view = SequenceView(nodes, ax=ax, size=None if ax is not None else (width, height))
    if ax is None:  # margins in inches, so tall diagrams do not waste a band top and bottom
        view.fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width,
                                 top=1 - 0.1 / height, bottom=0.1 / height)
    return view.update(trace, tx=tx, since=since, until=until, last=last, states=states,
                       calls=calls)


__all__ = ["SequenceView", "sequence_diagram", "select"]
