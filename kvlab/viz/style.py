"""The one visual language of every kvlab picture: colour-blind-safe Okabe-Ito colours.

A colour always means the same thing: PREPARE is orange in the cluster view, the sequence
diagram and the animation; committed is bluish green and aborted vermillion everywhere. Replies
are dashed so that colour is never the only cue.

Readable at a glance: lines and fills use the Okabe-Ito colours themselves, but text uses
:func:`ink`, a darker shade of the same hue with at least 4.5:1 contrast (WCAG AA) against the
light backgrounds text sits on, and every font is at least 11 px at 100 dpi (``SMALL`` pt x
100 / 72), the lowest dpi kvlab's notebooks and the explorer show figures at.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb, to_rgba

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
    m.SCAN: PURPLE, m.SCAN_REPLY: PURPLE,
    m.DECISION_REQ: BLACK, m.DECISION_REPLY: BLACK,  # cooperative termination
    m.P1A: BLACK, m.P1B: BLACK, m.P2A: ORANGE, m.P2B: GREEN,  # Paxos Commit
    m.NACK: VERMILLION, m.LEARNED: SKY_BLUE, m.MAY_FORGET: BLACK, m.NOT_YET: BLACK,
    m.ONE_PHASE: BLUE, m.RESOLVE: BLACK,  # one-phase commit
    m.BATCH: GREY,  # kvlab.batching: what is inside decides
}
REPLY_KINDS = frozenset({m.TS_REPLY, m.READ_REPLY, m.VOTE_YES, m.VOTE_NO, m.ACK, m.SCAN_REPLY,
                         m.DECISION_REPLY, m.P1B, m.P2B, m.NACK, m.NOT_YET})

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

# Text sizes in points. A figure is shown at >= 100 dpi (notebooks, explorer panels), so
# SMALL = 8 pt is 11.1 px there: the smallest text any view draws.
MIN_DPI = 100
MIN_PX = 11.0
SMALL = 8
FONT = 9
TITLE = 10

# The widest a figure gets (inches): at 100 dpi a PNG wider than a notebook's output area
# (about 900-1000 px) is scaled down by the browser, and its text shrinks with it.
MAX_WIDTH = 9.0

# Text contrast: WCAG AA for normal text, checked against the darkest background that text sits
# on without a box of its own (BAND, a partition band in the sequence diagram).
CONTRAST = 4.5
BAND = "#EEEEEE"


def _linear(c: float) -> float:
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: object) -> float:
    """WCAG 2 relative luminance of an opaque colour (0 black .. 1 white)."""
    r, g, b = to_rgb(color)
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def contrast(a: object, b: object) -> float:
    """WCAG 2 contrast ratio of two opaque colours (1 .. 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def over(color: object, background: object) -> tuple[float, float, float]:
    """``color`` (maybe translucent) composited over an opaque ``background``."""
    r, g, b, a = to_rgba(color)
    br, bg, bb = to_rgb(background)
    return (r * a + br * (1 - a), g * a + bg * (1 - a), b * a + bb * (1 - a))


@lru_cache(maxsize=256)
def ink(color: str, background: str = BAND) -> str:
    """The text shade of ``color``: same hue, darkened until it has ``CONTRAST`` against
    ``background`` (so on white, or any lighter fill, it reads at least as well)."""
    h, lum, s = colorsys.rgb_to_hls(*to_rgb(color))
    while contrast(colorsys.hls_to_rgb(h, lum, s), background) < CONTRAST + 0.05 and lum > 0:
        lum = max(0.0, lum - 0.01)
    return to_hex(colorsys.hls_to_rgb(h, lum, s))


def text_on(fill: object) -> str:
    """Black or white, whichever reads better on ``fill`` (for labels inside filled shapes)."""
    return BLACK if contrast(BLACK, fill) >= contrast("#FFFFFF", fill) else "#FFFFFF"


def kind_color(kind: str) -> str:
    return KIND_COLORS.get(kind, BLACK)


def kind_ink(kind: str) -> str:
    """Text colour of a message kind: its line colour, darkened to be readable."""
    return ink(kind_color(kind))


def kind_style(kind: str) -> str:
    """Requests solid, replies dashed."""
    return "--" if kind in REPLY_KINDS else "-"


def outcome_color(status: str) -> str:
    return OUTCOME_COLORS.get(status, GREY)


def outcome_ink(status: str) -> str:
    return ink(outcome_color(status))


def state_color(state: str) -> str:
    return STATE_COLORS.get(state, GREY)


def state_ink(state: str) -> str:
    return ink(state_color(state))


def tint(color: str, amount: float = 0.7) -> tuple[float, float, float]:
    """``color`` mixed with white: a fill light enough for black text on it."""
    r, g, b = to_rgb(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount)


def style_axes(ax: Axes, title: str | None = None) -> None:
    """Bare axes for diagrams: no frame, no ticks."""
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=TITLE, loc="left")


def legend_html() -> str:
    """The message colours and node marks as HTML, for dashboards that skip the figure legend."""
    def swatch(color: str, text: str, dashed: bool = False) -> str:
        line = "dashed" if dashed else "solid"
        return (f"<span style='white-space:nowrap'><span style='display:inline-block;width:18px;"
                f"border-top:3px {line} {color};vertical-align:middle;margin:0 3px 0 8px'>"
                f"</span>{text}</span>")

    def ring(color: str, text: str, face: str = "white") -> str:
        return (f"<span style='white-space:nowrap'><span style='display:inline-block;width:10px;"
                f"height:10px;border-radius:50%;border:3px solid {color};background:{face};"
                f"vertical-align:middle;margin:0 3px 0 8px'></span>{text}</span>")

    kinds = "".join(swatch(c, k, k in REPLY_KINDS) for k, c in KIND_COLORS.items())
    nodes = (ring(ORANGE, "ring: coordinating") + ring(GREY, "grey: crashed", DOWN_FACE)
             + swatch(CRASH_COLOR, "dotted link: partitioned", True))
    sides = "".join(ring(c, str(i)) for i, c in enumerate(GROUP_COLORS[:3]))
    groups = f"<span style='margin-left:8px'>node outline: partition group</span>{sides}"
    return (f"<div style='font-size:12px;line-height:1.7;color:{BLACK}'>{kinds}<br>{nodes}"
            f"{groups}</div>")
