"""A node's write-ahead log: which records are durable and which a crash would lose.

Read-only: durable records are decoded from a copy of the disk's bytes (``Wal.recover`` would
cut a torn tail, so it is never called); unflushed ones come from ``Wal.unflushed``. Green rows
survive a crash, orange hatched rows do not; the thick line is ``flushed_lsn``.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from kvlab.errors import CorruptLog
from kvlab.viz import style as st
from kvlab.viz.common import figure_ax, shorten
from kvlab.wal import LogRecord

LAST = 30
FLUSH_GAP = 0.6  # rows of room around the flush line for its label


def detail(rec: LogRecord) -> str:
    """One line saying what a record means for recovery."""
    d = rec.data
    if rec.type == "PREPARE":
        writes = ", ".join(f"{k}={'deleted' if v[1] else repr(v[0])}"
                           for k, v in d.get("writes", {}).items())
        reads = f" reads {', '.join(d['reads'])}" if d.get("reads") else ""
        return f"prepared (coordinator {d.get('coordinator')}): {writes}{reads}"
    if rec.type == "DECISION":
        return f"decided commit at ts {d.get('commit_ts')}; tell {' '.join(d['participants'])}"
    if rec.type == "COMMIT":
        return f"applied at commit ts {d.get('commit_ts')}"
    if rec.type == "ABORT":
        return "aborted (not forced: presumed abort)"
    if rec.type == "END":
        return "every participant acked; the coordinator may forget it"
    if rec.type == "BATCH":  # kvlab.batching: one record for what one batch of messages made
        inner = d.get("records", [])
        return f"{len(inner)} records: " + ", ".join(
            f"{t} {x.get('tx') or ''}".rstrip() for t, x in inner)
    return ", ".join(f"{k}={v!r}" for k, v in d.items() if k != "tx")


def read_disk(wal: Any) -> dict[str, Any]:
    """Durable records, checkpoint and torn-tail size, without changing the log."""
    out: dict[str, Any] = {"records": [], "checkpoint": None, "torn": 0, "error": None}
    try:
        out["checkpoint"], out["records"], out["torn"] = wal.durable()
    except CorruptLog as e:
        out["error"] = str(e)
    return out


def wal_view(cluster: Any, node: str, ax: Axes | None = None, *, last: int = LAST) -> Figure:
    """Draw ``node``'s log: checkpoint, durable records, the flush line, the unflushed tail."""
    cluster.node(node)
    wal = cluster.wal(node)
    disk = read_disk(wal)
    up = cluster.up(node)
    rows: list[tuple[str, str, Any]] = []  # (what, text, colour)
    ck = disk["checkpoint"]
    if ck is not None:
        s = ck.data
        rows.append(("checkpoint", f"checkpoint: covers lsn ≤ {ck.lsn} "
                     f"({sum(len(c) for c in s.get('store', {}).values())} versions, "
                     f"{len(s.get('prepared', {}))} prepared, {len(s.get('decided', {}))} "
                     f"undecided commits)", st.CHECKPOINT_COLOR))
    body = [("durable", r) for r in disk["records"]] + [("unflushed", r) for r in wal.unflushed]
    hidden = max(0, len(body) - last)
    if hidden:
        rows.append(("note", f"… {hidden} earlier record(s)", st.GREY))
    for what, r in body[hidden:]:
        rows.append((what, f"lsn {r.lsn:<4} {r.type:<9} {r.data.get('tx') or '':<5} "
                     f"{shorten(detail(r), 60)}",
                     st.DURABLE_COLOR if what == "durable" else st.UNFLUSHED_COLOR))
    if disk["torn"]:
        rows.append(("torn", f"torn tail: {disk['torn']} byte(s) of a half-written record "
                     f"(recovery cuts it off)", st.CRASH_COLOR))
    if disk["error"]:
        rows.append(("torn", shorten(disk["error"], 90), st.CRASH_COLOR))
    if not rows:
        rows.append(("note", "empty log: nothing written yet", st.GREY))
    n = len(rows)
    split = any(what == "unflushed" for what, _, _ in rows)
    span = n + (FLUSH_GAP if split else 0.0)  # the flush line gets a band of its own
    height = min(0.6 + 0.24 * span, 30.0)
    fresh = ax is None
    fig, ax = figure_ax(ax, 8.0, height)
    if fresh:  # margins in inches: room for the title, and the full width for the rows
        fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.4 / height, bottom=0.1 / height)
    st.style_axes(ax)
    ax.set_xlim(0, 10)
    ax.set_ylim(-span + 0.3, 1.2)
    verts, faces, hatches = [], [], []
    flush_line = None
    y = 1.0
    for what, text, color in rows:
        y -= 1
        if what == "unflushed" and flush_line is None:
            y -= FLUSH_GAP
            flush_line = y + 0.5 + FLUSH_GAP / 2
        if what in ("durable", "unflushed", "checkpoint", "torn"):
            verts.append([(0, y - 0.42), (10, y - 0.42), (10, y + 0.42), (0, y + 0.42)])
            faces.append(st.tint(color, 0.75))
            hatches.append(what == "unflushed")
        ax.text(0.1, y, text, fontsize=st.SMALL, family="monospace", va="center",
                gid=f"wal:{what}", color=st.BLACK if what != "note" else st.ink(st.GREY))
        tag = {"durable": "survives a crash", "unflushed": "lost on a crash"}.get(what)
        if tag:
            ax.text(9.9, y, tag, fontsize=st.SMALL, ha="right", va="center",
                    color=st.BLACK, style="italic")
    ax.add_collection(PolyCollection([v for v, h in zip(verts, hatches, strict=True) if not h],
                                     facecolors=[f for f, h in zip(faces, hatches, strict=True)
                                                 if not h], edgecolors="white", zorder=0))
    ax.add_collection(PolyCollection([v for v, h in zip(verts, hatches, strict=True) if h],
                                     facecolors=st.tint(st.UNFLUSHED_COLOR, 0.75),
                                     edgecolors=st.UNFLUSHED_COLOR, hatch="///", zorder=0,
                                     gid="unflushed"))
    if flush_line is not None:
        ax.plot([0, 10], [flush_line, flush_line], color=st.BLACK, linewidth=2.5)
        ax.text(5.0, flush_line, f"flushed_lsn = {wal.flushed_lsn}", fontsize=st.SMALL,
                ha="center", va="center", fontweight="bold",
                bbox=dict(boxstyle="round,pad=0.2", facecolor="white", edgecolor=st.BLACK))
    lost = len(wal.unflushed)
    state = ("crashed: this is what is on its disk; restart replays it" if not up else
             f"{lost} unflushed record(s) would be lost by a crash" if lost else
             "everything is durable")
    ax.set_title(f"{node} write-ahead log · flushed_lsn {wal.flushed_lsn} · {state}",
                 fontsize=st.TITLE, loc="left")
    return fig


__all__ = ["wal_view", "read_disk", "detail"]
