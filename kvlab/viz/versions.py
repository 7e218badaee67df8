"""Version chains of a node's keys: what MVCC keeps, what a snapshot sees, what GC may drop.

A row per key, oldest version on the left. Each box is one committed version (its commit
timestamp, value and writer). A dashed box at the end is a prepared write lock: a version that
may appear once its transaction commits, and the reason a reader with a later snapshot waits.
The grey dashed tick is the GC watermark (versions left of the newest one before it are
garbage); the blue tick is the snapshot, and the thick blue box the version it reads.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.text import Text

from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax, shorten, text_size

MAX_KEYS = 10
MAX_VERSIONS = 6  # per row; older ones are summarised as "+N older"


def snapshot_ts(cluster: Any, node: str, snapshot: int | str | None) -> int | None:
    """A snapshot timestamp given as an int or as a transaction id (its start timestamp)."""
    if snapshot is None or isinstance(snapshot, int):
        return snapshot
    core = cluster.core(node)
    rec = core.coordinator.txs.get(snapshot) if core is not None else None
    if rec is not None and rec.start_ts:
        return rec.start_ts
    hist = getattr(cluster, "history", None)
    if hist is not None and snapshot in hist and hist[snapshot].start_ts is not None:
        return hist[snapshot].start_ts
    raise VizError(f"no transaction {snapshot!r} in this cluster: pass a snapshot timestamp "
                   f"(int) or the id of a transaction begun on it")


class VersionsView:
    """A reusable version-chain picture; :meth:`update` redraws it for a node."""

    def __init__(self, ax: Axes | None = None, size: tuple[float, float] = (7.0, 3.2)) -> None:
        self.fig, self.ax = figure_ax(ax, *size)
        st.style_axes(self.ax)
        self.texts: list[Text] = []
        self.ticks = self.ax.add_collection(LineCollection([], linewidths=2, zorder=4,
                                                           gid="ticks"))
        self.title = self.ax.set_title("", fontsize=st.TITLE, loc="left")
        self.boxes: list[dict[str, Any]] = []  # what each box shows, for tests and tools

    def _text(self, i: int, x: float, y: float, s: str, **kw: Any) -> Text:
        if i == len(self.texts):
            self.texts.append(self.ax.text(0, 0, "", zorder=3))
        t = self.texts[i]
        t.set_position((x, y))
        t.set_text(s)
        t.set_ha(kw.get("ha", "center"))
        t.set_va("center")
        t.set_fontsize(kw.get("size", st.SMALL))
        t.set_color(kw.get("color", st.BLACK))
        t.set_fontweight(kw.get("weight", "normal"))
        box = kw.get("box")
        t.set_bbox(box)
        t.set_visible(True)
        return t

    def update(self, cluster: Any, node: str, keys: Iterable[str] | None = None,
               snapshot: int | str | None = None) -> Figure:
        """Show ``node``'s chains for ``keys`` (default: every key it stores, first 10)."""
        core = cluster.core(node)
        ts = snapshot_ts(cluster, node, snapshot)
        self.boxes = []
        ti = 0
        ax = self.ax
        if core is None:
            self._text(0, 0.5, 0.5, f"{node} is crashed: its memory (and every version in it) "
                       f"is gone.\nRestart it to rebuild the chains from its log.",
                       size=st.FONT, color=st.ink(st.CRASH_COLOR))
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            self.ticks.set_segments([])
            self.title.set_text(f"{node}: crashed")
            for t in self.texts[1:]:
                t.set_visible(False)
            return self.fig
        store = core.store
        every = sorted(set(store.chains) | set(store.write_locks) | set(store.read_locks))
        fit = self._rows_that_fit()
        chosen = list(keys) if keys is not None else every[:min(MAX_KEYS, fit)]
        ticks, colors, styles = [], [], []
        width = 4
        for row, key in enumerate(chosen):
            y = -row
            chain = store.chains.get(key, [])
            shown = chain[-MAX_VERSIONS:]
            hidden = len(chain) - len(shown)
            ti = self._row_label(ti, key, y, hidden)
            seen = store.visible(key, ts) if ts is not None else None
            for col, v in enumerate(shown):
                value = "deleted" if v.deleted else shorten(repr(v.value), 14)
                hit = seen is not None and v is seen
                box = dict(boxstyle="round,pad=0.3", linewidth=2.5 if hit else 0.8,
                           facecolor=st.tint(st.BLUE, 0.75) if hit else "white",
                           edgecolor=st.BLUE if hit else st.BLACK)
                self._text(ti, col, y, f"ts {v.commit_ts} · {v.writer}\n{value}", box=box)
                ti += 1
                self.boxes.append(dict(key=key, commit_ts=v.commit_ts, value=v.value,
                                       writer=v.writer, deleted=v.deleted, seen=hit))
            end = len(shown)
            lock = store.write_locks.get(key)
            if lock is not None:
                box = dict(boxstyle="round,pad=0.3", linestyle="--", linewidth=1.2,
                           facecolor=st.tint(st.ORANGE, 0.7), edgecolor=st.ORANGE)
                self._text(ti, end, y, f"prepared {lock.tx}\n(start {lock.start_ts}), ts ?",
                           box=box)
                ti += 1
                end += 1
            readers = sorted(store.read_locks.get(key, {}))
            if readers:
                self._text(ti, end - 0.4, y - 0.38, f"read-locked by {', '.join(readers)}",
                           ha="left", color=st.ink(st.PURPLE))
                ti += 1
            if not chain and lock is None and not readers:
                self._text(ti, 0, y, "(no versions)", color=st.ink(st.GREY))
                ti += 1
            width = max(width, end)
            stamps = [v.commit_ts for v in shown]
            for value, color, style in ((store.watermark, st.GREY, "--"), (ts, st.BLUE, "-")):
                if value is not None and (value > 0 or color == st.BLUE):
                    if hidden and value < stamps[0]:
                        continue  # it falls among the "+N older" versions not drawn
                    x = bisect_right(stamps, value) - 0.5
                    ticks.append([(x, y - 0.42), (x, y + 0.42)])
                    colors.append(color)
                    styles.append(style)
        for t in self.texts[ti:]:
            t.set_visible(False)
        self.ticks.set_segments(ticks)
        self.ticks.set_colors(colors)
        self.ticks.set_linestyles(styles)
        rows = max(len(chosen), 1)
        ax.set_xlim(-1.6, width + 0.2)
        ax.set_ylim(-rows + 0.4, 0.6)
        title = f"{node}: version chains · GC watermark {store.watermark}"
        if ts is not None:
            title += f" · blue: what snapshot ts={ts} reads"
        if keys is None and len(every) > len(chosen):
            title += f" · first {len(chosen)} of {len(every)} keys (pass keys=)"
        self.title.set_text(title)
        return self.fig

    def _rows_that_fit(self) -> int:
        """How many keys the axes hold with each row as tall as a two-line version box."""
        h = text_size("ts\nv", st.SMALL, self.fig.dpi)[1] * 1.55  # the box, its pad, a gap
        return max(1, int(self.ax.bbox.height / h))

    def _row_label(self, ti: int, key: str, y: float, hidden: int) -> int:
        self._text(ti, -0.65, y, shorten(key, 12), ha="right", size=st.FONT, weight="bold")
        ti += 1
        if hidden:
            self._text(ti, -0.62, y - 0.3, f"+{hidden} older", ha="left",
                       color=st.ink(st.GREY))
            ti += 1
        return ti


def version_chains(cluster: Any, node: str, keys: Iterable[str] | None = None,
                   snapshot: int | str | None = None, ax: Axes | None = None) -> Figure:
    """Draw ``node``'s version chains; ``snapshot`` (a timestamp or a transaction id)
    highlights the version each key's read would return."""
    cluster.node(node)  # UnknownNode with the list of nodes if mistyped
    chosen = list(keys) if keys is not None else None
    n = len(chosen) if chosen is not None else MAX_KEYS
    core = cluster.core(node)
    if chosen is None and core is not None:
        s = core.store
        n = min(MAX_KEYS, len(set(s.chains) | set(s.write_locks) | set(s.read_locks)))
    height = 0.7 + 0.62 * max(n, 1)
    view = VersionsView(ax=ax, size=(7.0, height))
    if ax is None:
        view.fig.subplots_adjust(left=0.02, right=0.98, bottom=0.05 / height,
                                 top=1 - 0.35 / height)
    return view.update(cluster, node, chosen, snapshot)


__all__ = ["VersionsView", "version_chains", "snapshot_ts"]
