"""The 2PC state machines, drawn from the engine's own transition tables.

Nothing here lists a state or a transition: every box and arrow comes from
:data:`kvlab.twopc.COORDINATOR_TRANSITIONS` / :data:`~kvlab.twopc.PARTICIPANT_TRANSITIONS`
(and the recovery entry :data:`~kvlab.twopc.COORDINATOR_RECOVERY`), so the picture cannot drift
from the code. Boxes are laid out in columns by the longest path from the initial state (the
table's first key), the happy path along the top. States where live transactions are now are
filled and list those transactions.
"""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from kvlab import twopc
from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax
from kvlab.viz.scene import is_live

TABLES = {"coordinator": twopc.COORDINATOR_TRANSITIONS,
          "participant": twopc.PARTICIPANT_TRANSITIONS}
ENTRIES = {"coordinator": twopc.COORDINATOR_RECOVERY, "participant": {}}
BOX_W, BOX_H, DX, DY = 1.6, 0.62, 2.4, 1.5


def states_of(table: dict[str, dict[str, str]]) -> list[str]:
    """Every state the table mentions, in table order (targets after their sources)."""
    out = list(table)
    for moves in table.values():
        out += [s for s in moves.values() if s not in out]
    return out


def layout(table: dict[str, dict[str, str]]) -> dict[str, tuple[float, float]]:
    """Columns by longest path from the first state; within a column, table order downwards."""
    states = states_of(table)
    layer = dict.fromkeys(states, 0)
    for _ in states:  # relax: longest path in the DAG of non-self transitions
        changed = False
        for s, moves in table.items():
            for t in moves.values():
                if t != s and t != states[0] and layer[t] < layer[s] + 1 <= len(states):
                    layer[t] = layer[s] + 1
                    changed = True
        if not changed:
            break
    rows: dict[int, int] = {}
    pos = {}
    for s in states:
        r = rows.get(layer[s], 0)
        rows[layer[s]] = r + 1
        pos[s] = (layer[s] * DX, -r * DY)
    return pos


def state_diagram(role: str = "coordinator", source: Any = None, ax: Axes | None = None, *,
                  tx: str | None = None) -> Figure:
    """Draw the ``role`` ("coordinator" or "participant") state machine.

    ``source`` (a Cluster, or a ``cluster.states()`` dict) marks where each unfinished
    transaction is now; ``tx`` narrows that to one transaction (finished or not).
    """
    if role not in TABLES:
        raise VizError(f"role={role!r}: choose 'coordinator' or 'participant'")
    table = TABLES[role]
    pos = layout(table)
    current = _current(role, source, tx)
    width = max(x for x, _ in pos.values()) + BOX_W + 1.6
    height = -min(y for _, y in pos.values()) + BOX_H + 2.2
    fig, ax = figure_ax(ax, min(width * 0.8, 12), min(height * 0.8 + 0.3, 8))
    st.style_axes(ax, f"2PC {role} states (from kvlab.twopc)"
                  + (f" · {tx}" if tx else " · filled: where live transactions are now"))
    ax.set_xlim(-1.4, width - 1.4)
    ax.set_ylim(-height + 1.6, 1.5)
    ax.set_aspect("equal")  # arcs and their label positions agree only at equal scale
    boxes = {}
    for s, (x, y) in pos.items():
        here = current.get(s, [])
        box = FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                             boxstyle="round,pad=0.02,rounding_size=0.15", zorder=3,
                             facecolor=st.tint(st.state_color(s), 0.2 if here else 0.8),
                             edgecolor=st.BLACK, linewidth=3 if here else 1,
                             gid=f"state:{s}")
        boxes[s] = ax.add_patch(box)
        loops = [e for e, t in table.get(s, {}).items() if t == s]
        ax.text(x, y + (0.08 if loops else 0), s, ha="center", va="center", fontsize=st.FONT,
                zorder=4, fontweight="bold" if here else "normal", gid=f"label:{s}")
        if loops:  # transitions that stay put, listed in the box rather than drawn as loops
            ax.text(x, y - 0.16, "↻ " + ", ".join(loops), ha="center", va="center",
                    fontsize=st.SMALL - 1.5, color=st.BLACK, zorder=4, gid=f"loops:{s}")
        if here:
            more = f" +{len(here) - 4}" if len(here) > 4 else ""
            ax.text(x, y - BOX_H / 2 - 0.08, " ".join(here[:4]) + more, ha="center", va="top",
                    fontsize=st.SMALL, color=st.BLUE, zorder=4, gid=f"now:{s}")
    _transitions(ax, table, pos, boxes)
    first = states_of(table)[0]
    x0, y0 = pos[first]
    ax.add_patch(Circle((x0 - BOX_W / 2 - 0.45, y0), 0.07, color=st.BLACK, zorder=3))
    ax.add_patch(FancyArrowPatch((x0 - BOX_W / 2 - 0.38, y0), (x0, y0), patchB=boxes[first],
                                 arrowstyle="-|>", mutation_scale=12, zorder=2,
                                 gid=f"entry:{first}"))
    for event, target in ENTRIES[role].items():  # below right of the target: a free corner
        x, y = pos[target]
        start = (x + DX * 0.55, y - DY * 0.6)
        ax.add_patch(FancyArrowPatch(start, (x, y), patchB=boxes[target], arrowstyle="-|>",
                                     mutation_scale=12, linestyle="--", zorder=2,
                                     gid=f"entry:{target}"))
        ax.text(start[0] + 0.05, start[1], event + "\n(on restart, from the WAL)",
                fontsize=st.SMALL, va="top", ha="left", style="italic")
    return fig


def _current(role: str, source: Any, tx: str | None) -> dict[str, list[str]]:
    """state -> ["T3@n1", ...] for the transactions to highlight."""
    if source is None:
        return {}
    states = source.states() if hasattr(source, "states") else source
    if not isinstance(states, dict):
        raise VizError(f"expected a Cluster or a cluster.states() dict, got "
                       f"{type(source).__name__}")
    out: dict[str, list[str]] = {}
    for (node, r, t), s in sorted(states.items()):
        if r == role and (t == tx if tx is not None else is_live(role, s)):
            out.setdefault(s, []).append(f"{t}@{node}")
    return out


def _transitions(ax: Axes, table: dict[str, dict[str, str]],
                 pos: dict[str, tuple[float, float]], boxes: dict[str, Any]) -> None:
    arrows: dict[tuple[str, str], list[str]] = {}
    for s, moves in table.items():
        for event, t in moves.items():
            arrows.setdefault((s, t), []).append(event)
    for (s, t), events in arrows.items():
        (x0, y0), (x1, y1) = pos[s], pos[t]
        text = "\n".join(events)
        if s == t:
            continue  # listed inside the box
        span = abs(x1 - x0) / DX
        rad = 0.0 if span <= 1 else (-0.22 if y1 == y0 == 0 else 0.2)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), patchA=boxes[s], patchB=boxes[t],
                                     connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=12, zorder=2, color=st.BLACK,
                                     gid=f"transition:{s}->{t}"))
        dx, dy = x1 - x0, y1 - y0
        mx, my = (x0 + x1) / 2 + 0.5 * rad * dy, (y0 + y1) / 2 - 0.5 * rad * dx
        ax.text(mx, my, text, ha="center", va="center", fontsize=st.SMALL - 0.5, zorder=4,
                bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none",
                          alpha=0.9))


__all__ = ["state_diagram", "layout", "states_of", "TABLES"]
