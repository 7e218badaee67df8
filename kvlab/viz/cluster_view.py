"""The cluster at a glance: nodes, links, the oracle, and every message in flight.

Positions are fixed (nodes on a circle, the oracle in the middle) so that successive pictures
of the same cluster line up, which is what makes stepping and the animation readable.
:class:`ClusterView` keeps its artists and only updates their data, so redrawing is cheap.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle
from matplotlib.path import Path
from matplotlib.text import Text

from kvlab.messages import TSO
from kvlab.viz import style as st
from kvlab.viz.common import figure_ax, shorten
from kvlab.viz.scene import Scene, scene_of

R_NODE = 0.2
LIM = 1.7
MAX_LABELS = 24  # message labels drawn; the rest are markers only
_TRIANGLE = Path([(1.0, 0.0), (-0.7, 0.6), (-0.7, -0.6), (1.0, 0.0)],
                 [Path.MOVETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY])


def layout(nodes: list[str]) -> dict[str, tuple[float, float]]:
    """Nodes clockwise from the top; the oracle in the middle, or just off it when an even
    number of nodes would put it on a diagonal."""
    n = len(nodes)
    pos = {}
    for i, node in enumerate(nodes):
        a = math.pi / 2 - 2 * math.pi * i / n
        pos[node] = (math.cos(a), math.sin(a))
    if n % 2:
        pos[TSO] = (0.0, 0.0)
    else:
        a = math.pi / 2 - math.pi / n
        pos[TSO] = (0.32 * math.cos(a), 0.32 * math.sin(a))
    return pos


def _arrow(angle: float) -> Path:
    c, s = math.cos(angle), math.sin(angle)
    return Path(_TRIANGLE.vertices @ np.array([[c, s], [-s, c]]), _TRIANGLE.codes)


class ClusterView:
    """A reusable picture of one cluster's nodes; call :meth:`update` with each new scene."""

    def __init__(self, nodes: list[str], ax: Axes | None = None, legend: bool = True,
                 size: tuple[float, float] = (5.2, 5.0)) -> None:
        fresh = ax is None
        self.fig, self.ax = figure_ax(ax, *size)
        if fresh:
            self.fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99)
        self.nodes = list(nodes)
        self.pos = layout(self.nodes)
        ax = self.ax
        ax.set_xlim(-LIM, LIM)
        ax.set_ylim(-LIM, LIM)
        ax.set_aspect("equal")
        st.style_axes(ax)
        pairs = [(a, b) for i, a in enumerate(self.nodes) for b in self.nodes[i + 1:]]
        self._pairs = pairs
        self.links = LineCollection([(self.pos[a], self.pos[b]) for a, b in pairs],
                                    colors=st.LIGHT, linewidths=1.2, zorder=1, gid="links")
        ax.add_collection(self.links)
        ax.add_collection(LineCollection([(self.pos[n], self.pos[TSO]) for n in self.nodes],
                                         colors=st.LIGHT, linewidths=0.8, linestyles=":",
                                         zorder=1))
        tx, ty = self.pos[TSO]
        ax.add_patch(Rectangle((tx - 0.14, ty - 0.1), 0.28, 0.2, facecolor=st.LIGHT,
                               edgecolor=st.GREY, zorder=3, gid="node:tso"))
        ax.text(tx, ty, "tso", ha="center", va="center", fontsize=st.FONT, zorder=4)
        self.circles: dict[str, Circle] = {}
        self.rings: dict[str, Circle] = {}
        self.info: dict[str, Text] = {}
        for n in self.nodes:
            x, y = self.pos[n]
            self.rings[n] = ax.add_patch(Circle((x, y), R_NODE + 0.06, fill=False,
                                                edgecolor=st.ORANGE, linewidth=3, zorder=2,
                                                visible=False, gid=f"coordinator:{n}"))
            self.circles[n] = ax.add_patch(Circle((x, y), R_NODE, facecolor="white",
                                                  edgecolor=st.BLACK, linewidth=1.5, zorder=3,
                                                  gid=f"node:{n}"))
            ax.text(x, y, n, ha="center", va="center", fontsize=st.FONT + 1,
                    fontweight="bold", zorder=4)
            ha = "left" if x > 0.3 else "right" if x < -0.3 else "center"
            va = "bottom" if y > 0.3 else "top" if y < -0.3 else "center"
            d = R_NODE + 0.1
            self.info[n] = ax.text(x + d * x, y + d * y, "", ha=ha, va=va,
                                   fontsize=st.SMALL, zorder=4, linespacing=1.1)
        self.markers = ax.scatter(np.zeros(0), np.zeros(0), s=55, zorder=5, linewidths=0.5,
                                  edgecolors=st.BLACK, gid="messages")
        self.labels: list[Text] = [ax.text(0, 0, "", fontsize=st.SMALL - 0.5, zorder=6,
                                           visible=False) for _ in range(MAX_LABELS)]
        self.highlight = ax.add_patch(FancyArrowPatch((0, 0), (0, 0), arrowstyle="-|>",
                                                      mutation_scale=14, linewidth=2.5,
                                                      zorder=4, visible=False,
                                                      shrinkA=14, shrinkB=14))
        self.cross = ax.scatter([0], [0], marker="X", s=160, color=st.CRASH_COLOR, zorder=6,
                                visible=False)
        self.title = ax.text(-LIM, LIM, "", ha="left", va="top", fontsize=st.FONT + 1)
        self.caption = ax.text(-LIM, -LIM, "", ha="left", va="bottom", fontsize=st.FONT,
                               family="monospace")
        if legend:
            self._legend()
        self.scene: Scene | None = None

    def _legend(self) -> None:
        def proxy(label: str, **kw: Any) -> Line2D:
            return Line2D([], [], linestyle="none", markersize=8, label=label, **kw)

        handles = [proxy("up", marker="o", markerfacecolor="white", markeredgecolor=st.BLACK),
                   proxy("crashed", marker="o", markerfacecolor=st.DOWN_FACE,
                         markeredgecolor=st.GREY),
                   proxy("coordinating", marker="o", markerfacecolor="white",
                         markeredgecolor=st.ORANGE, markeredgewidth=2.5),
                   Line2D([], [], color=st.CRASH_COLOR, linestyle=":", label="cut link")]
        self.ax.legend(handles=handles, loc="upper right", fontsize=st.SMALL, frameon=False,
                       handlelength=1.5, borderaxespad=0)

    # -- update ---------------------------------------------------------------------------
    def update(self, scene: Scene) -> Figure:
        """Show ``scene``: reuses every artist, so it costs one redraw."""
        self.scene = scene
        for n in self.nodes:
            up = scene.up.get(n, True)
            c = self.circles[n]
            group = scene.groups.get(n) if scene.groups else None
            edge = st.GROUP_COLORS[group % len(st.GROUP_COLORS)] if group is not None else (
                st.BLACK if up else st.GREY)
            c.set_facecolor("white" if up else st.DOWN_FACE)
            c.set_edgecolor(edge)
            c.set_linewidth(3 if group is not None else 1.5)
            c.set_hatch(None if up else "xx")
            self.rings[n].set_visible(up and bool(scene.coordinating(n)))
            self.info[n].set_text(self._info(scene, n, up, group))
        self.links.set_colors([st.CRASH_COLOR if scene.cut(a, b) else st.LIGHT
                               for a, b in self._pairs])
        self.links.set_linestyles([":" if scene.cut(a, b) else "-" for a, b in self._pairs])
        self._messages(scene)
        self._step(scene)
        title = f"t={scene.now} · {len(scene.in_flight)} message(s) in flight"
        if scene.groups:
            sides: dict[int, list[str]] = {}
            for n, g in sorted(scene.groups.items(), key=lambda kv: (kv[1], kv[0])):
                sides.setdefault(g, []).append(n)
            title += "\npartition: " + " | ".join(" ".join(s) for s in sides.values())
        self.title.set_text(title)
        return self.fig

    @staticmethod
    def _info(scene: Scene, n: str, up: bool, group: int | None) -> str:
        if not up:
            return "CRASHED"
        lines = [f"group {group}"] if group is not None else []
        live = scene.live_states(n)
        for role, tx, state in live[:4]:
            lines.append(f"{tx} {'coord ' if role == 'coordinator' else ''}{state}")
        if len(live) > 4:
            lines.append(f"+{len(live) - 4} more")
        return "\n".join(lines)

    def _messages(self, scene: Scene) -> None:
        xy, paths, colors = [], [], []
        per_link: dict[tuple[str, str], int] = {}
        for i, f in enumerate(scene.in_flight):
            k = per_link.get((f.src, f.dst), 0)
            per_link[(f.src, f.dst)] = k + 1
            (x, y), angle, (lx, ly) = self._place(f.src, f.dst, k)
            xy.append((x, y))
            paths.append(_arrow(angle))
            colors.append(st.kind_color(f.kind))
            if i < MAX_LABELS:
                t = self.labels[i]
                t.set_position((lx, ly))
                t.set_text(f.label)
                t.set_color(st.kind_color(f.kind))
                nx, ny = lx - x, ly - y
                t.set_ha("left" if nx > 0.03 else "right" if nx < -0.03 else "center")
                t.set_va("bottom" if ny > 0.03 else "top" if ny < -0.03 else "center")
                t.set_visible(True)
        for t in self.labels[min(len(scene.in_flight), MAX_LABELS):]:
            t.set_visible(False)
        self.markers.set_offsets(np.array(xy, dtype=float).reshape(-1, 2))
        self.markers.set_paths(paths)
        self.markers.set_facecolors(colors)

    def _place(self, src: str, dst: str, k: int) -> tuple[tuple[float, float], float,
                                                           tuple[float, float]]:
        """Where the ``k``-th message on a directed link sits, its heading, and its label."""
        ax_, ay = self.pos.get(src, (0.0, 0.0))
        bx, by = self.pos.get(dst, (0.0, 0.0))
        if src == dst:  # a node's message to itself: parked beside it, pointing at it
            tx, ty = -ay, ax_
            d = R_NODE + 0.12 + 0.13 * (k % 4)
            x, y = ax_ + tx * d, ay + ty * d
            return (x, y), math.atan2(-ty, -tx), (x + 0.08 * tx, y + 0.08 * ty)
        dx, dy = bx - ax_, by - ay
        length = math.hypot(dx, dy) or 1.0
        ux, uy = dx / length, dy / length
        nx, ny = -uy, ux  # left of the direction of travel: the two directions never overlap
        f = 0.3 + 0.13 * (k % 4) if length > 0.8 else 0.5
        x, y = ax_ + dx * f + nx * 0.07, ay + dy * f + ny * 0.07
        return (x, y), math.atan2(uy, ux), (x + nx * 0.09, y + ny * 0.09)

    def _step(self, scene: Scene) -> None:
        """Mark the event that produced this scene (animation frames)."""
        e = scene.event
        self.highlight.set_visible(False)
        self.cross.set_visible(False)
        if e is None:
            self.caption.set_text("")
            return
        if e.kind in ("deliver", "drop"):
            a = self.pos.get(e.data["src"], (0.0, 0.0))
            b = self.pos.get(e.data["dst"], (0.0, 0.0))
            if e.kind == "deliver" and a != b:
                self.highlight.set_positions(a, b)
                self.highlight.set_color(st.kind_color(e.data["kind"]))
                self.highlight.set_visible(True)
            elif e.kind == "drop":
                self.cross.set_offsets([((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)])
                self.cross.set_visible(True)
        elif e.kind == "crash" and e.node in self.pos:
            self.cross.set_offsets([self.pos[e.node]])
            self.cross.set_visible(True)
        prefix = f"step {scene.step}/{scene.steps}  " if scene.step else ""
        self.caption.set_text(prefix + shorten(" ".join(str(e).split()), 70))


def cluster_view(source: Any, ax: Axes | None = None, legend: bool = True) -> Figure:
    """Draw a cluster (or a :class:`~kvlab.viz.scene.Scene`) as it is now.

    Nodes are circles (hatched grey when crashed, edge-coloured by partition group), an orange
    ring marks a node coordinating unfinished transactions, and each message in flight is an
    arrowhead on its link, coloured and labelled by kind.
    """
    scene = source if isinstance(source, Scene) else scene_of(source)
    view = ClusterView(scene.nodes, ax=ax, legend=legend)
    return view.update(scene)


__all__ = ["ClusterView", "cluster_view", "layout"]
