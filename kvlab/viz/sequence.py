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
from kvlab.viz.common import VizError, figure_ax, nodes_of, shorten, text_size, trace_of
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
            elif txs.isdisjoint(e.txs):  # (a batch speaks for several)
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
    """A reusable space-time diagram; :meth:`update` redraws it from a trace.

    Labels are laid out so that none overlaps another: each event's note sits on its own row,
    and each message's label goes on a row its arrow crosses where that row has room (a row
    holds one event, so the arrow's own send and delivery rows are always free for it). Only
    when rows are thinner than a line of text (a very long trace in a capped figure) are the
    labels that do not fit left out.
    """

    def __init__(self, lanes: list[str], ax: Axes | None = None,
                 size: tuple[float, float] | None = None, compact: bool = False) -> None:
        self.compact = compact  # shorter notes: fewer glyphs to render when redrawing often
        self.lanes = [n for n in lanes if n != TSO] + [TSO]
        self.x = {n: float(i) for i, n in enumerate(self.lanes)}
        w = size or (min(1.5 * len(self.lanes) + 1.6, st.MAX_WIDTH), 6.0)
        self.fig, self.ax = figure_ax(ax, *w)
        ax = self.ax
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.tick_params(axis="y", length=0, labelsize=st.SMALL, labelcolor=st.ink(st.GREY))
        ax.set_xticks([])
        self.xlim = (-0.7, len(self.lanes) - 0.3)
        ax.set_xlim(*self.xlim)
        self.headers = [ax.text(self.x[n], -0.9, n, ha="center", va="bottom",
                                fontsize=st.TITLE, fontweight="bold") for n in self.lanes]
        self.bands = ax.add_collection(PolyCollection([], facecolors=st.BAND, zorder=0,
                                                      gid="partitions"))
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
        self.hidden = 0  # labels left out for want of room in the last update

    # -- drawing ------------------------------------------------------------------------------
    def _text(self, i: int, x: float, y: float, s: str, color: str, ha: str = "left",
              style: str = "normal") -> None:
        if i == len(self.texts):
            self.texts.append(self.ax.text(0, 0, "", fontsize=st.SMALL, zorder=5, va="center",
                                           clip_on=False, bbox=_CHIP))
        t = self.texts[i]
        t.set_position((x, y))
        t.set_text(s)
        t.set_color(color)
        t.set_ha(ha)
        t.set_fontstyle(style)
        t.set_visible(True)

    def update(self, trace: Trace, **filters: Any) -> Figure:
        """Draw ``trace`` after :func:`select` filters (tx, since, until, last, states, calls)."""
        events = select(trace, **filters)
        self.events = events
        n = max(len(events), 1)
        ax = self.ax
        up, cut = _before(trace, events[0].seq if events else len(trace), self.lanes)
        down_since = {lane: (-1.0 if not up.get(lane, True) else None) for lane in self.lanes}
        down: list[tuple[str, float, float]] = []  # (lane, from row, to row) while crashed
        band_start = -1.0 if cut else None
        bands = []
        marks: dict[str, list[tuple[float, float]]] = {k: [] for k in _MARKS}
        msgs: dict[int, dict[str, Any]] = {}
        notes: list[tuple[int, Event]] = []
        owner: dict[int, int] = {}  # row -> message id of the send/delivery drawn there
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
                owner[r] = d["id"]
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
            notes.append((r, e))
        if band_start is not None:
            bands.append((band_start, n))
        for lane in self.lanes:
            if down_since.get(lane) is not None:
                self._lane_down(down, lane, down_since[lane], n)
        self.messages = list(msgs.values())
        flying = any(m["end"] is None for m in self.messages)
        ax.set_ylim(n + (0.9 if flying else 0.2), -1.6)  # a row below for in-flight labels
        layout = _Layout(self, n)
        loops = self._loops(self.messages)
        ti = self._notes(notes, loops, marks, layout)
        for r, mid in owner.items():  # arrow ends: no label may cover them
            e, m = events[r], msgs[mid]
            xs, xd = self.x.get(m["src"], 0.0), self.x.get(m["dst"], 0.0)
            x = xs if e.kind == "send" else xd
            if e.kind == "drop":
                x = xs + (xd - xs) * 0.6 if xs != xd else xs + loops.get(mid, LOOP)
            layout.claim(r, x - 0.02, x + 0.02, margin=0.0)
        ti = self._arrows(self.messages, n, marks, ti, loops, owner, layout)
        for t in self.texts[ti:]:
            t.set_visible(False)
        self.hidden = layout.hidden
        self._static_layers(down, bands, marks, n)
        self._time_axis(events, layout)
        return self.fig

    @staticmethod
    def _lane_down(down: list, node: str | None, start: float | None, end: float) -> None:
        if node is not None and start is not None:
            down.append((node, start, end))

    def _loops(self, msgs: list[dict[str, Any]]) -> dict[int, float]:
        """Width of each message-to-itself loop: nested loops on a lane step outwards."""
        widths: dict[int, float] = {}
        open_: dict[str, list[tuple[float, float]]] = {}  # lane -> [(end row, width)]
        for m in msgs:
            if m["src"] != m["dst"]:
                continue
            a = m["start"] if m["start"] is not None else -0.6
            live = [(b, w) for b, w in open_.get(m["src"], []) if b > a]
            w = max((w for _, w in live), default=0.0) + LOOP if live else LOOP
            b = m["end"] if m["end"] is not None else float("inf")
            open_[m["src"]] = [*live, (b, w)]
            widths[m["id"]] = w
        return widths

    def _loop_room(self, msgs_by_id: dict[int, dict[str, Any]], loops: dict[int, float],
                   lane: str, row: int) -> float:
        """How far right of ``lane`` the loops passing ``row`` reach."""
        reach = 0.0
        for mid, w in loops.items():
            m = msgs_by_id[mid]
            a = m["start"] if m["start"] is not None else -1
            b = m["end"] if m["end"] is not None else 1 << 30
            if m["src"] == lane and a < row < b:
                reach = max(reach, w)
        return reach

    def _notes(self, notes: list[tuple[int, Event]], loops: dict[int, float],
               marks: dict, layout: _Layout) -> int:
        by_id = {m["id"]: m for m in self.messages}
        ti = 0
        lo, hi = self.xlim
        for r, e in notes:
            mark, text, color, kw = _note(e, self.compact)
            ha = kw.get("ha", "left")
            if e.kind in ("partition", "heal"):  # whole-cluster events: noted at the left edge
                x0 = lane_x = lo + 0.05
            else:
                lane_x = self.x.get(e.node or "", 0.0)
                x0 = lane_x + 0.1 + self._loop_room(by_id, loops, e.node or "", r)
            if mark:
                marks[mark].append((lane_x, r))
            w = layout.width(text)
            if ha == "left" and x0 + w > hi - 0.02:  # no room on the right: the lane's left
                ha, x0 = "right", lane_x - 0.1
            if ha == "right":
                x0 = max(x0, lo + w + 0.02)
                span = (x0 - w, x0 if not mark else lane_x + 0.06)
            else:
                x0 = min(x0, hi - 0.02 - w)
                span = (lane_x - 0.06 if mark else x0, x0 + w)
            if layout.take(r, *span):
                self._text(ti, x0, r, text, color, ha=ha, style=kw.get("style", "normal"))
                ti += 1
        return ti

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
        lo, hi = self.xlim
        self.bands.set_verts([[(lo, a), (hi, a), (hi, b), (lo, b)] for a, b in bands])
        for k, coll in self.marks.items():
            coll.set_offsets(np.array(marks[k], dtype=float).reshape(-1, 2))

    def _arrows(self, msgs: list[dict[str, Any]], n: int, marks: dict, ti: int,
                loops: dict[int, float], owner: dict[int, int], layout: _Layout) -> int:
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
            loop = loops.get(m["id"])
            if loop is not None:  # to itself: a bracket out to the right and back
                bend = min(0.35, (b - a) / 2)
                pts = [(xs, a), (xs + loop, a + bend), (xs + loop, b - bend), (xs, b)]
                if m["dropped"] or m["end"] is None:
                    pts = pts[:3]
                    pts[-1] = (xs + loop, b)
            else:
                pts = [(xs, a), (xe, b)]
            segs.append(pts)
            layout.line(m["id"], pts)
            colors.append(st.kind_color(m["kind"]))
            styles.append(style)
            if m["dropped"]:
                marks["drop"].append(pts[-1])
            elif m["end"] is not None:
                tips.append((pts[-2], pts[-1]))
        for m, pts in zip(msgs, segs, strict=True):
            label = m["kind"] + (f" {m['tx']}" if m["tx"] else "")
            if m["dropped"]:
                label += f" ✕ {m['dropped']}"
            elif m["end"] is None:
                label += " (in flight)"
            spot = layout.place_label(m, label, pts, loops.get(m["id"]), owner, n)
            if spot is not None:
                x, r, ha = spot
                self._text(ti, x, r, label, st.kind_ink(m["kind"]), ha=ha)
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

    def _time_axis(self, events: list[Event], layout: _Layout) -> None:
        """The simulated time at each row where it changes (no closer than a line apart)."""
        ticks, labels, last, room = [], [], None, -1e9
        for r, e in enumerate(events):
            if e.time != last and r >= room:
                ticks.append(r)
                labels.append(f"t={e.time}")
                room = r + layout.line_rows
            last = e.time
        self.ax.set_yticks(ticks, labels)


ROW = 0.18  # inches per event row in a diagram sized to its trace: a line of text and a gap
LOOP = 0.14  # how far a message-to-itself loop reaches right of its lane (lane spacing 1)
_CHIP = dict(boxstyle="square,pad=0.12", facecolor="white", edgecolor="none", alpha=0.85)


class _Layout:
    """What the labels placed so far cover, in data units bucketed by row, to keep labels
    apart: text and arrow ends are hard obstacles; arrow lines are soft ones, which only
    another message's label avoids (and only while it has somewhere else to go)."""

    def __init__(self, view: SequenceView, n: int) -> None:
        ax, fig = view.ax, view.fig
        self.dpi = fig.dpi
        lo, hi = view.xlim
        self.xlim = view.xlim
        self.px_x = max(ax.bbox.width, 1.0) / (hi - lo)  # pixels per lane spacing
        bottom, top = ax.get_ylim()
        px_row = max(ax.bbox.height, 1.0) / (bottom - top)  # pixels per row
        h = text_size("Tg", st.SMALL, self.dpi)[1] + 1.0
        self.half = h / 2 / px_row  # a label's half height, in rows
        self.line_rows = h / px_row  # a line of text, in rows
        self.gap = 12.0 / self.px_x  # room kept between two labels on one row
        self.boxes: dict[int, list[tuple[float, float, float, float]]] = {}
        self.lines: dict[int, list[tuple[float, float, int]]] = {}  # row -> (x0, x1, msg)
        self.hidden = 0

    def width(self, text: str) -> float:
        return text_size(text, st.SMALL, self.dpi)[0] / self.px_x

    def line(self, mid: int, pts: list[tuple[float, float]]) -> None:
        """Record where message ``mid``'s line runs through each row band."""
        ys = [y for _, y in pts]
        for r in range(max(0, math.floor(min(ys) - self.half)), math.ceil(max(ys) + self.half) + 1):
            y0, y1 = r - self.half, r + self.half
            xs = []
            for (xa, ya), (xb, yb) in zip(pts, pts[1:], strict=False):
                lo, hi = max(min(ya, yb), y0), min(max(ya, yb), y1)
                if lo > hi:
                    continue
                for y in (lo, hi):
                    xs.append(xa if ya == yb else xa + (xb - xa) * (y - ya) / (yb - ya))
            if xs:
                self.lines.setdefault(r, []).append((min(xs), max(xs), mid))

    def free(self, row: float, x0: float, x1: float, mid: int | None = None) -> bool:
        """Nothing placed overlaps the box (x0..x1 on ``row``); with ``mid``, no line of
        another message crosses it either."""
        lo, hi = self.xlim
        if x0 < lo or x1 > hi:
            return False
        x0, x1 = x0 - self.gap / 2, x1 + self.gap / 2
        y0, y1 = row - self.half, row + self.half
        reach = math.ceil(self.half * 2) + 1
        for b in range(math.floor(row) - reach, math.floor(row) + reach + 1):
            for bx0, bx1, by0, by1 in self.boxes.get(b, ()):
                if x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1:
                    return False
        if mid is not None:
            for lx0, lx1, other in self.lines.get(int(row), ()):
                if other != mid and x0 < lx1 and lx0 < x1:
                    return False
        return True

    def claim(self, row: float, x0: float, x1: float, margin: float | None = None) -> None:
        g = self.gap / 2 if margin is None else margin
        self.boxes.setdefault(math.floor(row), []).append(
            (x0 - g, x1 + g, row - self.half, row + self.half))

    def take(self, row: float, x0: float, x1: float) -> bool:
        """Claim a box on ``row`` if nothing is there; False (and counted hidden) if taken."""
        if not self.free(row, x0, x1):
            self.hidden += 1
            return False
        self.claim(row, x0, x1)
        return True

    def place_label(self, m: dict[str, Any], label: str, pts: list[tuple[float, float]],
                    loop: float | None, owner: dict[int, int], n: int
                    ) -> tuple[float, int, str] | None:
        """Where ``m``'s label goes: (x, row, ha), on a row its arrow crosses.

        Best is centred on the arrow, 60% of the way along; next, just before its head or
        after its tail (rows nobody else's event uses); last, beside it on any row. Spots
        that would cover another arrow are tried only when no other spot is free, and a label
        with no free spot at all is left out (None).
        """
        w = self.width(label)
        (xa, ya), (xb, yb) = pts[0], pts[-1]
        pref = ya + (yb - ya) * (0.5 if loop is not None else 0.6)
        spots: list[tuple[float, int, float, str, bool]] = []  # (score, row, x, ha, other's)
        toward = 1 if xb >= xa else -1  # which way the arrow runs
        last = n if m["end"] is None else min(n - 1, math.floor(yb))  # in flight: the row below
        for r in range(max(0, math.ceil(ya)), last + 1):
            mine = owner.get(r) == m["id"]
            others = r in owner and not mine
            if loop is not None:  # right of the loop
                spots.append((abs(r - pref), r, xa + loop + 0.06, "left", others))
                spots.append((abs(r - pref) + 2.0, r, xa - 0.08, "right", others))
                continue
            x = xa + (xb - xa) * ((r - ya) / (yb - ya) if yb != ya else 0.5)
            spots.append((abs(r - pref), r, x, "center", others))
            # beside the arrow: on its own rows, before the head / after the tail first
            back, ahead = ("right", "left") if toward > 0 else ("left", "right")
            first, then = (back, ahead) if r == m["end"] else (ahead, back)
            side = (1.0 if r == m["end"] else 1.5) if mine else abs(r - pref) + 2.0
            for ha, k in ((first, 0.0), (then, 0.01)):
                spots.append((side + k, r, x + (0.08 if ha == "left" else -0.08), ha, others))
        spots.sort(key=lambda sp: sp[:2])
        for strict in (True, False):  # first avoiding other arrows' lines and rows
            for _, r, x, ha, others in spots:
                if strict and others:
                    continue
                x0 = x - w / 2 if ha == "center" else x if ha == "left" else x - w
                if self.free(r, x0, x0 + w, m["id"] if strict else None):
                    self.claim(r, x0, x0 + w)
                    return x, r, ha
        self.hidden += 1
        return None


def _note(e: Event, compact: bool) -> tuple[str | None, str, str, dict[str, Any]]:
    """How a non-message event appears on its lane: (mark, text, text colour, options)."""
    k, d = e.kind, e.data
    if k == "wal":
        text = d["type"] if compact else f"log {d['type']} (lsn {d['lsn']})"
        return ("force" if d.get("force") else "record"), text, st.ink(st.GREY), {}
    if k == "flush":
        text = "flush" if compact else f"flush → lsn {d.get('lsn')} durable"
        return "flush", text, st.ink(st.DURABLE_COLOR), {}
    if k == "checkpoint":
        return "flush", f"checkpoint (lsn {d.get('lsn')})", st.ink(st.CHECKPOINT_COLOR), {}
    if k == "crash":
        lost = d.get("lost_records", 0)
        text = "CRASH" if compact else f"CRASH (lost {lost} unflushed record(s))"
        return "crash", text, st.ink(st.CRASH_COLOR), {}
    if k == "restart":
        doubt = d.get("in_doubt") or []
        extra = f", in doubt: {' '.join(map(str, doubt))}" if doubt else ""
        text = "restart" if compact else f"restart (replayed {d.get('replayed', 0)}{extra})"
        return "restart", text, st.ink(st.RESTART_COLOR), {}
    if k == "torn":
        return None, "torn tail cut off", st.ink(st.CRASH_COLOR), {}
    if k == "partition":
        sides = " | ".join(" ".join(map(str, g)) for g in d.get("groups", []))
        return None, f"partition {sides} (rest apart)", st.BLACK, {"style": "italic"}
    if k == "heal":
        return None, "heal", st.BLACK, {"style": "italic"}
    if k == "timer":
        return "timer", f"timeout: {d.get('key')}", st.ink(st.PURPLE), {}
    if k == "state":
        new = d["new"]
        return None, f"{d.get('tx')} → {new}", st.ink(st.BLUE) if new == "ACTIVE" else \
            st.state_ink(new), {}
    what = d.get("op", "")  # a client call
    if what in ("put", "get"):
        what += f" {shorten(str(d.get('key')), 10)}" + (
            f"={shorten(repr(d.get('value')), 10)}" if what == "put" else "")
    return None, f"{what} {d.get('tx') or ''}", st.ink(st.GREY), {"ha": "right"}


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
    height = min(max(2.2, ROW * len(events) + 0.9), 60.0)
    width = min(1.5 * (len(nodes) + 1) + 1.6, st.MAX_WIDTH)
    view = SequenceView(nodes, ax=ax, size=None if ax is not None else (width, height))
    if ax is None:  # margins in inches, so tall diagrams do not waste a band top and bottom
        view.fig.subplots_adjust(left=0.75 / width, right=1 - 0.1 / width,
                                 top=1 - 0.1 / height, bottom=0.1 / height)
    return view.update(trace, tx=tx, since=since, until=until, last=last, states=states,
                       calls=calls)


__all__ = ["SequenceView", "sequence_diagram", "select"]
