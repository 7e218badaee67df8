"""The checker's dependency graph, with the cycle that makes an anomaly drawn in vermillion.

Transactions are placed on a circle in id order (fixed, so the same history always gives the
same picture). Edges are coloured by type: ww (write-write, blue), wr (write-read, green) and
rw (read-write anti-dependency, orange, dashed); each is labelled with its type and key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import networkx as nx
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax, text_size

Edge = tuple[str, str, str, Any]  # (src, dst, type, key)


def _natural(s: Any) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(s))]


def _cycle_edges(cycle: Any) -> list[tuple[Any, Any, str | None, Any]]:
    """Normalise a cycle: edge tuples (2 to 4 long), or a list of nodes (closed for you)."""
    if cycle is None:
        return []
    cycle = getattr(cycle, "cycle", cycle)
    items = list(cycle)
    if items and all(isinstance(c, (tuple, list)) for c in items):
        out = []
        for c in items:
            if not 2 <= len(c) <= 4:
                raise VizError(f"cycle edge {c!r}: use (src, dst[, type[, key]])")
            src, dst, *rest = c
            out.append((src, dst, rest[0] if rest else None, rest[1] if len(rest) > 1 else None))
        return out
    return [(items[i], items[(i + 1) % len(items)], None, None) for i in range(len(items))]


def _matches(u: Any, v: Any, data: dict[str, Any], want: list) -> bool:
    return any(u == a and v == b and (t is None or data.get("type") == t)
               and (k is None or data.get("key") == k) for a, b, t, k in want)


def dependency_graph(source: Any, cycle: Any = None, ax: Axes | None = None, *,
                     anomaly: int = 0, title: str | None = None) -> Figure:
    """Draw a checker report (``.graph`` + ``.anomalies``) or a bare networkx graph.

    ``cycle`` (edge tuples ``(src, dst, type, key)``, a list of transactions, or an anomaly)
    is highlighted; by default anomaly number ``anomaly`` of the report is (forbidden ones
    first, then those the level allows, so a write skew under snapshot still shows).
    """
    graph = source if isinstance(source, nx.Graph) else getattr(source, "graph", None)
    if not isinstance(graph, nx.DiGraph):  # MultiDiGraph is a DiGraph subclass
        raise VizError(f"expected a checker report or a networkx DiGraph/MultiDiGraph, got "
                       f"{type(source).__name__}")
    name, hot_nodes = None, set()
    found = list(getattr(source, "anomalies", None) or [])
    allowed = list(getattr(source, "allowed", None) or [])
    if cycle is None and found + allowed:
        if not 0 <= anomaly < len(found + allowed):
            raise VizError(f"anomaly={anomaly}: the report has {len(found)} forbidden and "
                           f"{len(allowed)} allowed anomalies; pick an index below "
                           f"{len(found + allowed)}")
        cycle = (found + allowed)[anomaly]
    if cycle is not None and hasattr(cycle, "cycle"):  # an Anomaly
        name = getattr(cycle, "title", None) or getattr(cycle, "name", None)
        if name and cycle in allowed:
            name += f" (allowed at {getattr(source, 'level', 'this level')})"
        hot_nodes = set(getattr(cycle, "txns", []) or [])
        cycle = cycle.cycle
    want = _cycle_edges(cycle)
    on_cycle = {n for e in want for n in e[:2]} | hot_nodes
    nodes = sorted(graph.nodes, key=_natural)
    fig, ax = figure_ax(ax, 6.0, 6.0)
    ax.set_aspect("equal")
    st.style_axes(ax)
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.45, 1.45)
    pos = {n: (math.cos(math.pi / 2 - 2 * math.pi * i / max(len(nodes), 1)),
               math.sin(math.pi / 2 - 2 * math.pi * i / max(len(nodes), 1)))
           for i, n in enumerate(nodes)}
    if len(nodes) == 1:
        pos[nodes[0]] = (0.0, 0.0)
    multi = graph.is_multigraph()
    edges = graph.edges(keys=True, data=True) if multi else (
        (u, v, None, d) for u, v, d in graph.edges(data=True))
    seen: dict[frozenset, int] = {}
    ax.apply_aspect()
    scale = min(ax.bbox.width, ax.bbox.height) / 2.9  # pixels per data unit
    taken = [(x - 0.13, x + 0.13, y - 0.13, y + 0.13) for x, y in pos.values()]  # the nodes
    for u, v, k, data in edges:
        if u == v:
            continue
        if "key" not in data and isinstance(k, str):  # add_edge(u, v, key="x") names the key
            data = {**data, "key": k}
        pair = frozenset((u, v))
        i = seen.get(pair, 0)
        seen[pair] = i + 1
        _edge(ax, pos[u], pos[v], u, v, data, 0.12 + 0.18 * i, _matches(u, v, data, want),
              taken, scale)
    for n in nodes:
        hot = n in on_cycle
        x, y = pos[n]
        ax.scatter([x], [y], s=900, zorder=3, gid=f"tx:{n}",
                   color=st.tint(st.CYCLE_COLOR, 0.6) if hot else "white",
                   edgecolors=st.CYCLE_COLOR if hot else st.BLACK, linewidths=2 if hot else 1)
        ax.text(x, y, str(n), ha="center", va="center", fontsize=st.FONT, zorder=4,
                color=st.text_on(st.tint(st.CYCLE_COLOR, 0.6) if hot else "white"))
    _legend(ax, bool(want))
    if title is None:
        title = name or ("dependency graph" if not want else "dependency graph with a cycle")
        if want:
            title += "\n" + cycle_text(want)
    if not nodes:
        title = "no transactions: the dependency graph is empty"
    ax.set_title(title, fontsize=st.TITLE, loc="left")
    return fig


def _edge(ax: Axes, p: tuple[float, float], q: tuple[float, float], u: Any, v: Any,
          data: dict[str, Any], rad: float, hot: bool, taken: list, scale: float) -> None:
    kind = data.get("type", "?")
    key = data.get("key")
    color = st.CYCLE_COLOR if hot else st.DEP_COLORS.get(kind, st.GREY)
    ax.add_patch(FancyArrowPatch(p, q, connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                 mutation_scale=14, shrinkA=17, shrinkB=17,
                                 linestyle=st.DEP_STYLES.get(kind, "-"), color=color,
                                 linewidth=2.8 if hot else 1.2, alpha=1.0 if hot else 0.8,
                                 zorder=2 if hot else 1, gid=f"edge:{u}->{v}:{kind}:{key}"))
    # the label goes on the arc3 curve (a quadratic Bezier): halfway if that spot is free,
    # else a little towards either end, so labels of parallel edges do not overlap
    dx, dy = q[0] - p[0], q[1] - p[1]
    cx, cy = (p[0] + q[0]) / 2 + rad * dy, (p[1] + q[1]) / 2 - rad * dx
    label = kind if key is None else f"{kind} {key}"
    w, h = text_size(label, st.SMALL, ax.figure.dpi, "bold" if hot else "normal")
    w, h = w / scale / 2 + 0.03, h / scale / 2 + 0.02
    spots = []
    for f in (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78):
        mx = (1 - f) ** 2 * p[0] + 2 * f * (1 - f) * cx + f * f * q[0]
        my = (1 - f) ** 2 * p[1] + 2 * f * (1 - f) * cy + f * f * q[1]
        spots.append((mx - w, mx + w, my - h, my + h))
    box = next((b for b in spots if not any(b[0] < o[1] and o[0] < b[1] and b[2] < o[3]
                                            and o[2] < b[3] for o in taken)), spots[0])
    taken.append(box)
    ax.text((box[0] + box[1]) / 2, (box[2] + box[3]) / 2, label, fontsize=st.SMALL,
            ha="center", va="center", color=st.ink(color), zorder=4,
            fontweight="bold" if hot else "normal",
            bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none"))


def _legend(ax: Axes, cycle: bool) -> None:
    handles = [Line2D([], [], color=st.DEP_COLORS[t], linestyle=st.DEP_STYLES[t], label=label)
               for t, label in (("ww", "ww: overwrote"), ("wr", "wr: read from"),
                                ("rw", "rw: read before overwritten"))]
    if cycle:
        handles.append(Line2D([], [], color=st.CYCLE_COLOR, linewidth=2.8, label="cycle"))
    ax.legend(handles=handles, loc="lower left", fontsize=st.SMALL, frameon=False,
              borderaxespad=0)


def cycle_text(cycle: Sequence[Edge]) -> str:
    """``T1 -rw(x)-> T2 -rw(y)-> T1``: a cycle as one line."""
    edges = _cycle_edges(cycle)
    if not edges:
        return ""
    return " ".join(f"{a} -{t or ''}{f'({k})' if k is not None else ''}->"
                    for a, _b, t, k in edges) + f" {edges[0][0]}"


__all__ = ["dependency_graph", "cycle_text"]
