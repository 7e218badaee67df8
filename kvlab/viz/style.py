"""The one visual language of every kvlab picture: colour-blind-safe Okabe-Ito colours.

A colour always means the same thing: PREPARE is orange in the cluster view, the sequence
diagram and the animation; committed is bluish green and aborted vermillion everywhere. Replies
are dashed so that colour is never the only cue.
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.colors import to_rgb

from kvlab import messages as m

# Okabe & Ito (2008), "Color Universal Design"
BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
GREEN = "#009E73"  # bluish green
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"  # reddish purple
GREY = "#999999"
LIGHT = "#DDDDDD"

KIND_COLORS: dict[str, str] = {
    m.TS_REQUEST: GREY, m.TS_REPLY: GREY,
    m.READ: PURPLE, m.READ_REPLY: PURPLE,
    m.PREPARE: ORANGE, m.VOTE_YES: GREEN, m.VOTE_NO: VERMILLION,
    m.COMMIT: BLUE, m.ABORT: VERMILLION, m.ACK: SKY_BLUE, m.STATUS: BLACK,
}
REPLY_KINDS = frozenset({m.TS_REPLY, m.READ_REPLY, m.VOTE_YES, m.VOTE_NO, m.ACK})

OUTCOME_COLORS: dict[str, str] = {
    "committed": GREEN, "aborted": VERMILLION, "committing": ORANGE, "active": SKY_BLUE,
}

STATE_COLORS: dict[str, str] = {  # 2PC states of kvlab.twopc
    "INIT": LIGHT, "ACTIVE": SKY_BLUE, "PREPARING": ORANGE, "AWAIT_TS": YELLOW,
    "PREPARED": ORANGE, "IN_DOUBT": PURPLE, "COMMITTING": BLUE, "COMMITTED": GREEN,
    "ABORTED": VERMILLION,
}

DEP_COLORS: dict[str, str] = {"ww": BLUE, "wr": GREEN, "rw": ORANGE}
DEP_STYLES: dict[str, str] = {"ww": "-", "wr": "-", "rw": "--"}  # rw = anti-dependency
CYCLE_COLOR = VERMILLION

GROUP_COLORS = (BLUE, PURPLE, GREEN, SKY_BLUE, BLACK)  # partition groups (never orange)

DURABLE_COLOR = GREEN
UNFLUSHED_COLOR = ORANGE
CHECKPOINT_COLOR = BLUE
CRASH_COLOR = VERMILLION
RESTART_COLOR = GREEN
DOWN_FACE = "#BBBBBB"

FONT = 8
SMALL = 7


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, BLACK)


def kind_style(kind: str) -> str:
    """Requests solid, replies dashed."""
    return "--" if kind in REPLY_KINDS else "-"


def outcome_color(status: str) -> str:
    return OUTCOME_COLORS.get(status, GREY)


def state_color(state: str) -> str:
    return STATE_COLORS.get(state, GREY)


def tint(color: str, amount: float = 0.7) -> tuple[float, float, float]:
    """``color`` mixed with white: a fill light enough for black text on it."""
    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def style_axes(ax: Axes, title: str | None = None) -> None:
    """Bare axes for diagrams: no frame, no ticks."""
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=FONT + 1, loc="left")


def legend_html() -> str:
    """The message colours and node marks as HTML, for dashboards that skip the figure legend."""
    def swatch(color: str, text: str, dashed: bool = False) -> str:
        line = "dashed" if dashed else "solid"
        return (f"<span style='display:inline-block;width:18px;border-top:3px {line} {color};"
                f"vertical-align:middle;margin:0 3px 0 8px'></span>{text}")

    kinds = "".join(swatch(c, k, k in REPLY_KINDS) for k, c in KIND_COLORS.items())
    nodes = (swatch(ORANGE, "ring: coordinating") + swatch(DOWN_FACE, "grey: crashed")
             + swatch(CRASH_COLOR, "dotted link: partitioned", True))
    return f"<div style='font-size:11px;line-height:1.6'>{kinds}<br>{nodes}</div>"
