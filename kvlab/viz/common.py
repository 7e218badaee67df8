"""Plumbing shared by every view: the error type, figure creation, and reading a source.

Figures are made with :class:`matplotlib.figure.Figure` and an Agg canvas, never through
``pyplot``: nothing global is registered, so figures cannot leak, Jupyter does not show them
twice, and they are freed like any other object.
"""

from __future__ import annotations

import sys
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kvlab.errors import KvlabError
from kvlab.messages import TSO
from kvlab.trace import Trace


class VizError(KvlabError):
    """A view was given something it cannot draw."""


def new_figure(width: float, height: float, dpi: float | None = None) -> Figure:
    """A pyplot-free figure with an Agg canvas (renders to PNG, displays once in Jupyter).

    ``dpi`` defaults to ``matplotlib.rcParams["figure.dpi"]``, so a notebook's setting applies."""
    _register_jupyter_png()
    fig = Figure(figsize=(width, height), dpi=dpi or matplotlib.rcParams["figure.dpi"])
    FigureCanvasAgg(fig)
    return fig


def figure_ax(ax: Axes | None, width: float, height: float) -> tuple[Figure, Axes]:
    """Draw into ``ax`` if given (its figure is returned), else into a fresh figure."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(width, height)
    return fig, fig.add_subplot()


def png_bytes(fig: Figure, fast: bool = True) -> bytes:
    """Render a figure to PNG bytes (what widgets.Image shows).

    ``fast`` trades a slightly bigger file for a 3-4x quicker encode (zlib level 1).
    """
    import io

    buf = io.BytesIO()
    fig.canvas.print_png(buf, pil_kwargs={"compress_level": 1} if fast else None)
    return buf.getvalue()


def trace_of(source: Any) -> Trace:
    """The trace of a Cluster, or the Trace (or list of events) itself."""
    trace = getattr(source, "trace", source)
    if isinstance(trace, Trace):
        return trace
    if isinstance(trace, list):
        return Trace(trace)
    raise VizError(f"expected a kvlab.Cluster or a kvlab.trace.Trace, got "
                   f"{type(source).__name__}; pass cluster or cluster.trace")


def nodes_of(source: Any, trace: Trace | None = None) -> list[str]:
    """Node ids: the cluster's own order, else every address the trace mentions, sorted."""
    ids = getattr(source, "ids", None)
    if ids is not None:
        return list(ids)
    seen: set[str] = set()
    for e in trace if trace is not None else trace_of(source):
        if e.node:
            seen.add(e.node)
        for k in ("src", "dst"):
            v = e.data.get(k)
            if isinstance(v, str):
                seen.add(v)
        if e.kind == "partition":
            for g in e.data.get("groups", []):
                seen.update(g)
    seen.discard(TSO)
    return sorted(seen)


def shorten(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


_registered = False


def _register_jupyter_png() -> None:
    """Let a bare Figure render as PNG in Jupyter even if pyplot was never used.

    IPython only registers its Figure formatter when a pyplot backend loads; the views avoid
    pyplot, so without this a returned figure would print as ``<Figure size ...>``.
    """
    global _registered
    if _registered or "IPython" not in sys.modules:
        return
    _registered = True
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:  # pragma: no cover - IPython half-installed
        return
    ip = get_ipython()
    if ip is None:
        return
    formatter = ip.display_formatter.formatters["image/png"]
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        formatter.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))
