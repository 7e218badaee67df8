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

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from kvlab import paxos, twopc
from kvlab.viz import style as st
from kvlab.viz.common import VizError, figure_ax, text_size
from kvlab.viz.scene import is_live

TABLES = {"coordinator": twopc.COORDINATOR_TRANSITIONS,
          "participant": twopc.PARTICIPANT_TRANSITIONS,
          "acceptor": paxos.ACCEPTOR_TRANSITIONS,  # Paxos Commit's roles (kvlab.paxos)
          "leader": paxos.LEADER_TRANSITIONS}
ENTRIES = {"coordinator": twopc.COORDINATOR_RECOVERY, "participant": {}, "acceptor": {},
           "leader": paxos.LEADER_ENTRIES}
BOX_W, BOX_H, DX, DY = 1.6, 0.62, 2.4, 1.5  # layout()'s grid units (columns, rows)
# the drawing, in inches: text padding in a box, least room between columns for a label,
# room between rows, margins
PAD, MIN_GAP, ROW_GAP, MARGIN, ENTRY = 0.07, 0.6, 0.75, 0.1, 0.65
_CHIP = dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.9)


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


def _wrap(words: list[str], width: int, first: str = "") -> str:
    """Comma-joined ``words`` in lines of at most ``width`` characters (a word never splits)."""
    lines, line = [], first
    for i, w in enumerate(words):
        piece = w + ("," if i < len(words) - 1 else "")
        if line.strip() and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line = f"{line} {piece}" if line.strip() else line + piece
    return "\n".join([*lines, line])


def _label(events: list[str]) -> str:
    """A transition's events, one per line (an event name is never split)."""
    return "\n".join(events)


class _Room:
    """Boxes (inches) already covered by a box or a label, so labels can avoid them."""

    def __init__(self, dpi: float) -> None:
        self.dpi = dpi
        self.boxes: list[tuple[float, float, float, float]] = []

    def size(self, text: str, size: float, weight: str = "normal") -> tuple[float, float]:
        w, h = text_size(text, size, self.dpi, weight)
        return w / self.dpi, h / self.dpi

    def free(self, box: tuple[float, float, float, float]) -> bool:
        return not any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3]
                       for b in self.boxes)


def state_diagram(role: str = "coordinator", source: Any = None, ax: Axes | None = None, *,
                  tx: str | None = None) -> Figure:
    """Draw the ``role`` ("coordinator" or "participant") state machine.

    ``source`` (a Cluster, or a ``cluster.states()`` dict) marks where each unfinished
    transaction is now; ``tx`` narrows that to one transaction (finished or not). Boxes are
    sized to their text and the figure to its boxes, so every label is full size and clear of
    the others (data units are inches).
    """
    if role not in TABLES:
        raise VizError(f"role={role!r}: choose one of {', '.join(map(repr, TABLES))}")
    table = TABLES[role]
    grid = {s: (round(x / DX), round(-y / DY)) for s, (x, y) in layout(table).items()}
    current = _current(role, source, tx)
    dpi = ax.figure.dpi if ax is not None else matplotlib.rcParams["figure.dpi"]
    room = _Room(dpi)
    arrows: dict[tuple[str, str], list[str]] = {}
    for s, moves in table.items():
        for event, t in moves.items():
            if t != s:
                arrows.setdefault((s, t), []).append(event)
    labels = {k: _label(v) for k, v in arrows.items()}
    fresh = ax is None
    for wrap in (None, 18):  # self-transitions on one line if the figure still fits
        names, loops, sizes = {}, {}, {}
        for s in grid:
            here = bool(current.get(s))
            names[s] = room.size(s, st.FONT, "bold" if here else "normal")
            moves = [e for e, t in table.get(s, {}).items() if t == s]
            loops[s] = ("↻ " + ", ".join(moves) if wrap is None else _wrap(moves, wrap, "↻")
                        ) if moves else ""
            lw, lh = room.size(loops[s], st.SMALL) if moves else (0.0, 0.0)
            sizes[s] = (max(names[s][0], lw) + 2 * PAD, names[s][1] + lh + 2 * PAD)
        cols = max(c for c, _ in grid.values()) + 1
        col_w = [max((sizes[s][0] for s, (c, _) in grid.items() if c == i), default=1.0)
                 for i in range(cols)]
        gaps = [max([room.size(labels[k], st.SMALL)[0] + 0.25 for k in arrows
                     if {grid[k[0]][0], grid[k[1]][0]} == {i, i + 1}
                     and grid[k[1]][1] == grid[k[0]][1]] + [MIN_GAP])
                for i in range(cols - 1)] + [0.0]
        if sum(col_w) + sum(gaps) + ENTRY <= st.MAX_WIDTH:
            break
    row_h = max(h for _, h in sizes.values()) + ROW_GAP
    left = 0.0
    xs = []
    for i in range(cols):
        xs.append(left + col_w[i] / 2)
        left += col_w[i] + gaps[i]
    pos = {s: (xs[c], -row_h * r) for s, (c, r) in grid.items()}  # inches, row 0 at y=0
    fig, ax = figure_ax(ax, 8.0, 4.0)
    ax.set_axis_off()
    boxes = {}
    for s, (x, y) in pos.items():
        here = current.get(s, [])
        w, h = sizes[s]
        fill = st.tint(st.state_color(s), 0.2 if here else 0.8)
        box = FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                             boxstyle="round,pad=0,rounding_size=0.08", zorder=3,
                             facecolor=fill, edgecolor=st.BLACK, linewidth=3 if here else 1,
                             gid=f"state:{s}")
        boxes[s] = ax.add_patch(box)
        room.boxes.append((x - w / 2, x + w / 2, y - h / 2, y + h / 2))
        ink = st.text_on(fill)
        name_y = y + h / 2 - PAD - names[s][1] / 2
        ax.text(x, name_y if loops[s] else y, s, ha="center", va="center", fontsize=st.FONT,
                color=ink, zorder=4, fontweight="bold" if here else "normal",
                gid=f"label:{s}")
        if loops[s]:  # transitions that stay put, listed in the box rather than drawn as loops
            ax.text(x, y - h / 2 + PAD, loops[s], ha="center", va="bottom",
                    fontsize=st.SMALL, color=ink, zorder=4, gid=f"loops:{s}")
        if here:
            more = f" +{len(here) - 4}" if len(here) > 4 else ""
            now = " ".join(here[:4]) + more
            nw, nh = room.size(now, st.SMALL)
            ax.text(x, y - h / 2 - 0.05, now, ha="center", va="top", fontsize=st.SMALL,
                    color=st.ink(st.BLUE), zorder=4, gid=f"now:{s}", bbox=_CHIP)
            room.boxes.append((x - nw / 2, x + nw / 2, y - h / 2 - 0.05 - nh, y - h / 2))
    _transitions(ax, arrows, labels, pos, boxes, room)
    first = states_of(table)[0]
    x0, y0 = pos[first]
    w0 = sizes[first][0]
    ax.add_patch(Circle((x0 - w0 / 2 - 0.35, y0), 0.06, color=st.BLACK, zorder=3))
    ax.add_patch(FancyArrowPatch((x0 - w0 / 2 - 0.29, y0), (x0, y0), patchB=boxes[first],
                                 arrowstyle="-|>", mutation_scale=12, zorder=2,
                                 gid=f"entry:{first}"))
    room.boxes.append((x0 - w0 / 2 - 0.41, x0, y0 - 0.1, y0 + 0.1))
    for event, target in ENTRIES[role].items():
        _entry(ax, event, target, pos, sizes, boxes, room,
               "\n(on restart,\nfrom the WAL)" if role == "coordinator" else "")
    # the picture is as big as what it holds: set the limits (and a fresh figure's size) last
    title = ((f"2PC {role} states (from kvlab.twopc)" if role in ("coordinator", "participant")
              else f"Paxos Commit {role} states (from kvlab.paxos)")
             + (f" · {tx}" if tx else " · filled: where live transactions are now"))
    tw, th = room.size(title, st.TITLE)
    x_lo = min(b[0] for b in room.boxes) - MARGIN
    x_hi = max(max(b[1] for b in room.boxes), x_lo + tw + 2 * MARGIN) + MARGIN
    y_lo = min(b[2] for b in room.boxes) - MARGIN
    y_hi = max(b[3] for b in room.boxes) + 0.15 + th + MARGIN
    ax.text(x_lo + MARGIN, y_hi - MARGIN, title, fontsize=st.TITLE, ha="left", va="top",
            gid="title")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_aspect("equal")  # arcs and their label positions agree only at equal scale
    if fresh:
        fig.set_size_inches(x_hi - x_lo, y_hi - y_lo)
        fig.subplots_adjust(left=0, right=1, bottom=0, top=1)
    return fig


def _entry(ax: Axes, event: str, target: str, pos: dict[str, tuple[float, float]],
           sizes: dict[str, tuple[float, float]], boxes: dict[str, Any], room: _Room,
           caption: str) -> None:
    """An entry (recovery, or how a leader starts): a dashed arrow into ``target`` from a free
    corner near it."""
    x, y = pos[target]
    w, h = sizes[target]
    text = event + caption
    tw, th = room.size(text, st.SMALL)
    for sx, sy in ((1, -1), (-1, -1), (1, 1), (-1, 1)):
        start = (x + sx * (w / 2 + 0.25), y + sy * (h / 2 + 0.3))
        tx = start[0] + (0.05 if sx > 0 else -0.05 - tw)
        ty = start[1] - th / 2
        box = (tx - 0.03, tx + tw + 0.03, ty - 0.03, ty + th + 0.03)
        if room.free(box):
            break
    room.boxes.append(box)
    ax.add_patch(FancyArrowPatch(start, (x, y), patchB=boxes[target], arrowstyle="-|>",
                                 mutation_scale=12, linestyle="--", zorder=2,
                                 gid=f"entry:{target}"))
    ax.text(tx, ty + th / 2, text, fontsize=st.SMALL, va="center", ha="left", style="italic")


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


def _transitions(ax: Axes, arrows: dict[tuple[str, str], list[str]],
                 labels: dict[tuple[str, str], str], pos: dict[str, tuple[float, float]],
                 boxes: dict[str, Any], room: _Room) -> None:
    """One arrow per (source, target), straight between neighbours and arcing over (top row)
    or under (other rows) the boxes it passes; its events as one label, moved along the
    arrow until it overlaps no box and no other label. Short arrows are labelled first."""
    top = max(y for _, y in pos.values())
    clear = max(b[3] - b[2] for b in room.boxes) / 2 + 0.25  # an arc's rise over a box

    def passes(x0: float, x1: float, y: float) -> int:
        return sum(1 for px, py in pos.values() if py == y and min(x0, x1) < px < max(x0, x1))

    order = sorted(arrows, key=lambda k: (abs(pos[k[1]][0] - pos[k[0]][0]), k))
    for s, t in order:
        (x0, y0), (x1, y1) = pos[s], pos[t]
        dx, dy = x1 - x0, y1 - y0
        if y0 == y1 and passes(x0, x1, y0):  # over the boxes in between (under, below top)
            lift = clear + 0.2 * (passes(x0, x1, y0) - 1)
            rad = (-2 * lift / dx) * (1 if y0 == top else -1)
        elif y0 != y1 and passes(x0, x1, y0) + passes(x0, x1, y1):
            rad = 0.2 if dx > 0 else -0.2
        elif (t, s) in arrows:  # both ways between neighbours: one arc above, one below
            rad = 0.35
        else:
            rad = 0.0
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), patchA=boxes[s], patchB=boxes[t],
                                     connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=12, zorder=2, color=st.BLACK,
                                     gid=f"transition:{s}->{t}"))
        cx, cy = (x0 + x1) / 2 + rad * dy, (y0 + y1) / 2 - rad * dx  # arc3's control point
        text = labels[(s, t)]
        w, h = room.size(text, st.SMALL)
        spots = []
        if rad == 0 and y0 == y1:  # between neighbours: just above the arrow, clear of its head
            a, b = sorted((boxes[s], boxes[t]), key=lambda p: p.get_x())
            mx = (a.get_x() + a.get_width() + b.get_x()) / 2  # the middle of the gap
            spots.append((mx - w / 2 - 0.03, mx + w / 2 + 0.03, y0 + 0.03, y0 + h + 0.07))
            spots.append((mx - w / 2 - 0.03, mx + w / 2 + 0.03, y0 - h / 2 - 0.02,
                          y0 + h / 2 + 0.02))
        for f in (0.5, 0.4, 0.6, 0.3, 0.7, 0.2, 0.8):
            bx = (1 - f) ** 2 * x0 + 2 * f * (1 - f) * cx + f * f * x1
            by = (1 - f) ** 2 * y0 + 2 * f * (1 - f) * cy + f * f * y1
            spots.append((bx - w / 2 - 0.03, bx + w / 2 + 0.03, by - h / 2 - 0.02,
                          by + h / 2 + 0.02))
        box = next((b for b in spots if room.free(b)), spots[0])
        room.boxes.append(box)
        apex = ((x0 + x1) / 2 + rad * dy / 2, (y0 + y1) / 2 - rad * dx / 2)  # for the limits
        room.boxes.append((apex[0] - 0.02, apex[0] + 0.02, apex[1] - 0.02, apex[1] + 0.02))
        ax.text((box[0] + box[1]) / 2, (box[2] + box[3]) / 2, text, ha="center", va="center",
                fontsize=st.SMALL, zorder=4, gid=f"event:{s}->{t}",
                bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none"))


__all__ = ["state_diagram", "layout", "states_of", "TABLES"]
