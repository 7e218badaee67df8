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
from kvlab.viz.common import figure_ax, shorten, text_size
from kvlab.viz.scene import Scene, scene_of

R_NODE = 0.2
LIM = 1.7
_DOWN_CHIP = dict(boxstyle="round,pad=0.15", facecolor=st.DOWN_FACE, edgecolor="none")
LEGEND_W = 1.3  # inches added right of the nodes for the key
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
    """A reusable picture of one cluster's nodes; call :meth:`update` with each new scene.

    With ``legend`` the key sits in a column right of the nodes (the figure is wider for it),
    so it never covers a node, its notes or a message. Message labels are placed where they
    overlap nothing else; a label with no free spot is left out (its arrowhead stays).
    """

    def __init__(self, nodes: list[str], ax: Axes | None = None, legend: bool = True,
                 size: tuple[float, float] | None = None) -> None:
        fresh = ax is None
        w, h = size or ((5.0 + LEGEND_W, 5.0) if legend else (5.0, 5.0))
        self.fig, self.ax = figure_ax(ax, w, h)
        if fresh:
            right = 1 - (LEGEND_W / w if legend else 0.0)
            self.fig.subplots_adjust(left=0.01, right=right - 0.01, bottom=0.01, top=0.99)
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
        ax.add_patch(Rectangle((tx - 0.16, ty - 0.11), 0.32, 0.22, facecolor=st.LIGHT,
                               edgecolor=st.GREY, zorder=3, gid="node:tso"))
        ax.text(tx, ty, "tso", ha="center", va="center", fontsize=st.FONT, zorder=4)
        self.circles: dict[str, Circle] = {}
        self.rings: dict[str, Circle] = {}
        self.info: dict[str, Text] = {}
        self.names: dict[str, Text] = {}
        self._anchor: dict[str, float] = {}  # where each node's note is centred, if it fits
        for n in self.nodes:
            x, y = self.pos[n]
            self.rings[n] = ax.add_patch(Circle((x, y), R_NODE + 0.06, fill=False,
                                                edgecolor=st.ORANGE, linewidth=3, zorder=2,
                                                visible=False, gid=f"coordinator:{n}"))
            self.circles[n] = ax.add_patch(Circle((x, y), R_NODE, facecolor="white",
                                                  edgecolor=st.BLACK, linewidth=1.5, zorder=3,
                                                  gid=f"node:{n}"))
            self.names[n] = ax.text(x, y, n, ha="center", va="center", fontsize=st.TITLE,
                                    fontweight="bold", zorder=4)
            if y > 0.3 and abs(x) < 0.3:  # the top node: beside it, clear of the title
                ix, iy, ha, va = x + R_NODE + 0.12, y, "left", "center"
            else:  # below the node, where a circle layout leaves room
                ix, iy, ha, va = x, y - R_NODE - 0.1, "center", "top"
            self.info[n] = ax.text(ix, iy, "", ha=ha, va=va, fontsize=st.SMALL, zorder=4)
            self._anchor[n] = ix
        self.markers = ax.scatter(np.zeros(0), np.zeros(0), s=55, zorder=5, linewidths=0.5,
                                  edgecolors=st.BLACK, gid="messages")
        self.labels: list[Text] = [ax.text(0, 0, "", fontsize=st.SMALL, zorder=6,
                                           visible=False) for _ in range(MAX_LABELS)]
        self.highlight = ax.add_patch(FancyArrowPatch((0, 0), (0, 0), arrowstyle="-|>",
                                                      mutation_scale=14, linewidth=2.5,
                                                      zorder=4, visible=False,
                                                      shrinkA=14, shrinkB=14))
        self.cross = ax.scatter([0], [0], marker="X", s=160, color=st.CRASH_COLOR, zorder=6,
                                visible=False)
        self.title = ax.text(-LIM, LIM, "", ha="left", va="top", fontsize=st.TITLE)
        self.caption = ax.text(-LIM, -LIM, "", ha="left", va="bottom", fontsize=st.SMALL,
                               family="monospace")
        self.legend = legend
        self._legend_groups: tuple[int, ...] | None = None
        self.unlabelled = 0  # messages in flight whose label found no free spot
        self.scene: Scene | None = None

    def _legend(self, groups: tuple[int, ...]) -> None:
        """The key, right of the nodes; partition groups appear while there is a partition."""
        self._legend_groups = groups

        def proxy(label: str, **kw: Any) -> Line2D:
            return Line2D([], [], linestyle="none", markersize=10, label=label, **kw)

        handles = [proxy("up", marker="o", markerfacecolor="white", markeredgecolor=st.BLACK),
                   proxy("crashed", marker="o", markerfacecolor=st.DOWN_FACE,
                         markeredgecolor=st.GREY),
                   proxy("coordinating", marker="o", markerfacecolor="white",
                         markeredgecolor=st.ORANGE, markeredgewidth=2.5),
                   Line2D([], [], color=st.CRASH_COLOR, linestyle=":", label="cut link")]
        handles += [proxy(f"partition\ngroup {g}", marker="o", markerfacecolor="white",
                          markeredgecolor=st.GROUP_COLORS[g % len(st.GROUP_COLORS)],
                          markeredgewidth=2.5) for g in groups]
        old = self.ax.get_legend()
        if old is not None:
            old.remove()
        self.ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                       fontsize=st.SMALL, frameon=False, handlelength=1.5, borderaxespad=0.3)

    # -- update ---------------------------------------------------------------------------
    def update(self, scene: Scene) -> Figure:
        """Show ``scene``: reuses every artist, so it costs one redraw."""
        self.scene = scene
        self._px = _scale(self.ax)  # pixels per data unit, for measuring labels
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
            self.names[n].set_bbox(None if up else _DOWN_CHIP)  # the name clear of the hatch
            self.rings[n].set_visible(up and bool(scene.coordinating(n)))
            self._note(n, self._info(scene, n, up, group))
        self.links.set_colors([st.CRASH_COLOR if scene.cut(a, b) else st.LIGHT
                               for a, b in self._pairs])
        self.links.set_linestyles([":" if scene.cut(a, b) else "-" for a, b in self._pairs])
        title = f"t={scene.now} · {len(scene.in_flight)} message(s) in flight"
        if scene.groups:
            sides: dict[int, list[str]] = {}
            for n, g in sorted(scene.groups.items(), key=lambda kv: (kv[1], kv[0])):
                sides.setdefault(g, []).append(n)
            title += "\npartition: " + " | ".join(" ".join(map(str, s)) for s in sides.values())
        self.title.set_text(title)
        self._step(scene)
        self._messages(scene)
        groups = tuple(sorted(set(scene.groups.values())))
        if self.legend and groups != self._legend_groups:
            self._legend(groups)
        return self.fig

    def _note(self, n: str, text: str) -> None:
        """Set a node's note, shifted sideways if it would run off the picture."""
        t = self.info[n]
        t.set_text(text)
        x = self._anchor[n]
        if t.get_ha() == "center" and text:
            half = text_size(text, st.SMALL, self.fig.dpi)[0] / self._px / 2
            x = min(max(x, -LIM + half + 0.02), LIM - half - 0.02)
        t.set_x(x)

    @staticmethod
    def _info(scene: Scene, n: str, up: bool, group: int | None) -> str:
        if not up:
            return "CRASHED"
        lines = [f"group {group}"] if group is not None else []
        live = scene.live_states(n)
        for role, tx, state in live[:3]:
            lines.append(f"{tx} {'coord ' if role == 'coordinator' else ''}{state}")
        if len(live) > 3:
            lines.append(f"+{len(live) - 3} more")
        return "\n".join(lines)

    def _obstacles(self, scale: float) -> list[tuple[float, float, float, float]]:
        """Boxes (data units) a message label must not cover: nodes, notes, title, caption."""
        boxes = []
        for n in self.nodes:
            x, y = self.pos[n]
            r = R_NODE + 0.08
            boxes.append((x - r, x + r, y - r, y + r))
        tx, ty = self.pos[TSO]
        boxes.append((tx - 0.18, tx + 0.18, ty - 0.13, ty + 0.13))
        for t in [*self.info.values(), self.title, self.caption]:
            if t.get_text():
                boxes.append(_box(t, scale, self.fig.dpi))
        return boxes

    def _messages(self, scene: Scene) -> None:
        xy, paths, colors, sides = [], [], [], []
        per_link: dict[tuple[str, str], int] = {}
        for f in scene.in_flight:
            k = per_link.get((f.src, f.dst), 0)
            per_link[(f.src, f.dst)] = k + 1
            (x, y), angle, side = self._place(f.src, f.dst, k)
            xy.append((x, y))
            paths.append(_arrow(angle))
            colors.append(st.kind_color(f.kind))
            sides.append(side)
        scale = self._px
        r = 0.06  # a marker's half size, data units
        taken = self._obstacles(scale) + [(x - r, x + r, y - r, y + r) for x, y in xy]
        shown = 0
        self.unlabelled = 0
        for f, (x, y), (nx, ny) in zip(scene.in_flight, xy, sides, strict=True):
            spot = None
            if shown < MAX_LABELS:
                w, h = text_size(f.label, st.SMALL, self.fig.dpi)
                spot = _free_spot(x, y, nx, ny, w / scale, h / scale, taken)
            if spot is None:
                self.unlabelled += 1
                continue
            lx, ly, ha, va, box = spot
            taken.append(box)
            t = self.labels[shown]
            t.set_position((lx, ly))
            t.set_text(f.label)
            t.set_color(st.kind_ink(f.kind))
            t.set_ha(ha)
            t.set_va(va)
            t.set_visible(True)
            shown += 1
        for t in self.labels[shown:]:
            t.set_visible(False)
        self.markers.set_offsets(np.array(xy, dtype=float).reshape(-1, 2))
        self.markers.set_paths(paths)
        self.markers.set_facecolors(colors)

    def _place(self, src: str, dst: str, k: int) -> tuple[tuple[float, float], float,
                                                           tuple[float, float]]:
        """Where the ``k``-th message on a directed link sits, its heading, and the side its
        label goes (a unit vector: left of the direction of travel)."""
        ax_, ay = self.pos.get(src, (0.0, 0.0))
        bx, by = self.pos.get(dst, (0.0, 0.0))
        if src == dst:  # a node's message to itself: parked beside it, pointing at it
            tx, ty = -ay, ax_
            d = R_NODE + 0.12 + 0.13 * (k % 4)
            x, y = ax_ + tx * d, ay + ty * d
            return (x, y), math.atan2(-ty, -tx), (ax_, ay)  # label: away from the centre
        dx, dy = bx - ax_, by - ay
        length = math.hypot(dx, dy) or 1.0
        ux, uy = dx / length, dy / length
        nx, ny = -uy, ux  # left of the direction of travel: the two directions never overlap
        f = 0.3 + 0.13 * (k % 4) if length > 0.8 else 0.5
        x, y = ax_ + dx * f + nx * 0.07, ay + dy * f + ny * 0.07
        return (x, y), math.atan2(uy, ux), (nx, ny)

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
        self.caption.set_text(prefix + shorten(" ".join(str(e).split()), 64))


def _scale(ax: Axes) -> float:
    """Pixels per data unit of the (equal-aspect) axes, as they will be drawn."""
    ax.apply_aspect()
    return min(ax.bbox.width / (2 * LIM), ax.bbox.height / (2 * LIM))


def _box(t: Text, scale: float, dpi: float) -> tuple[float, float, float, float]:
    """A text's box in data units, from its alignment and measured size."""
    w, h = text_size(t.get_text(), t.get_fontsize(), dpi, family=t.get_family()[0])
    w, h = w / scale, h / scale
    x, y = t.get_position()
    x0 = {"left": x, "right": x - w}.get(t.get_ha(), x - w / 2)
    y0 = {"bottom": y, "top": y - h}.get(t.get_va(), y - h / 2)
    return x0, x0 + w, y0, y0 + h


def _free_spot(x: float, y: float, nx: float, ny: float, w: float, h: float,
               taken: list[tuple[float, float, float, float]]
               ) -> tuple[float, float, str, str, tuple[float, float, float, float]] | None:
    """A label position next to a marker at (x, y) that overlaps no box in ``taken``: on the
    marker's own side (nx, ny) first, then turning round it, then further out."""
    pad = 0.02
    base = math.atan2(ny, nx)
    for dist in (0.1, 0.22):
        for turn in (0, 45, -45, 90, -90, 135, -135, 180):
            a = base + math.radians(turn)
            dx, dy = math.cos(a), math.sin(a)
            lx, ly = x + dx * dist, y + dy * dist
            ha = "left" if dx > 0.3 else "right" if dx < -0.3 else "center"
            va = "bottom" if dy > 0.3 else "top" if dy < -0.3 else "center"
            x0 = {"left": lx, "right": lx - w}.get(ha, lx - w / 2)
            y0 = {"bottom": ly, "top": ly - h}.get(va, ly - h / 2)
            box = (x0 - pad, x0 + w + pad, y0 - pad, y0 + h + pad)
            if (-LIM <= box[0] and box[1] <= LIM and -LIM <= box[2] and box[3] <= LIM
                    and not any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3]
                                and b[2] < box[3] for b in taken)):
                return lx, ly, ha, va, box
    return None


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
