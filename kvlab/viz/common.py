"""Plumbing shared by every view: the error type, figure creation, and reading a source.

Figures are made with :class:`matplotlib.figure.Figure` and an Agg canvas, never through
``pyplot``: nothing global is registered, so figures cannot leak, Jupyter does not show them
twice, and they are freed like any other object.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from functools import lru_cache
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag
from matplotlib.figure import Figure
from matplotlib.text import Text

try:  # the glyph-level API the text cache uses (matplotlib 3.11)
    from matplotlib.ft2font import RenderMode
except ImportError:  # pragma: no cover - older matplotlib: text is drawn the usual way
    RenderMode = None

from kvlab.errors import KvlabError
from kvlab.messages import TSO
from kvlab.trace import Trace


class VizError(KvlabError):
    """A view was given something it cannot draw."""


class _TextCachingRenderer(RendererAgg):
    """An Agg renderer that rasterises each distinct string once and then only stamps it.

    Agg renders text glyph by glyph on every draw, which is most of a redraw's time: the
    explorer's panels redraw the same labels step after step. Here the glyphs of a string
    (at one size, font, dpi and hinting) are rendered once into one alpha mask, and each draw
    paints that mask in the text's colour, at whole-pixel positions (within half a pixel of
    where Agg would put it). Rotated text and mathtext go the usual way, and so does everything
    if this matplotlib's text internals are not the ones this was written for.
    """

    def draw_text(self, gc: Any, x: float, y: float, s: str, prop: Any, angle: float,
                  ismath: bool | str = False, mtext: Text | None = None) -> None:
        if ismath or angle or not _TEXT_CACHE["ok"]:
            return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
        aa = bool(gc.get_antialiased())
        features = mtext.get_fontfeatures() if mtext is not None else None
        language = mtext.get_language() if mtext is not None else None
        key = (s, hash(prop), prop.get_size_in_points(), self.dpi, get_hinting_flag(), aa,
               None if features is None else tuple(features), language)
        masks: OrderedDict = _TEXT_CACHE["masks"]
        hit = masks.get(key)
        if hit is None:
            try:
                hit = self._mask(s, prop, aa, features, language)
            except (AttributeError, TypeError, ValueError):  # other matplotlib internals
                _TEXT_CACHE["ok"] = False
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            masks[key] = hit
            if len(masks) > 4096:
                masks.popitem(last=False)
        else:
            masks.move_to_end(key)
        mask, left, top = hit
        if mask is not None:
            height = int(self.height)
            bottom = height - (top + round(self.height - y)) + mask.shape[0]
            self._renderer.draw_text_image(mask, left + round(x), bottom, 0, gc)

    def _mask(self, s: str, prop: Any, aa: bool, features: Any, language: Any
              ) -> tuple[np.ndarray | None, int, int]:
        """The string's glyphs rendered at the origin into one alpha mask: (mask, left, top)."""
        flags = get_hinting_flag()
        font = self._prepare_font(prop)
        items = font._layout(s, flags=flags, features=features, language=language)
        size = prop.get_size_in_points()
        glyphs = []
        for item in items:
            f = item.ft_object
            f.set_size(size, self.dpi)
            f._set_transform(np.array([[0x10000, 0], [0, 0x10000]]),
                             [round(0x40 * item.x), round(0x40 * item.y)])
            bitmap = f._render_glyph(item.glyph_index, flags,
                                     RenderMode.NORMAL if aa else RenderMode.MONO)
            buf = np.array(bitmap.buffer, dtype=np.uint8)
            if not aa:
                buf *= 0xFF
            if buf.size:
                glyphs.append((buf, bitmap.left, bitmap.top))
        if not glyphs:
            return None, 0, 0
        left = min(g[1] for g in glyphs)
        right = max(g[1] + g[0].shape[1] for g in glyphs)
        top = max(g[2] for g in glyphs)
        bottom = min(g[2] - g[0].shape[0] for g in glyphs)
        mask = np.zeros((top - bottom, right - left), dtype=np.uint8)
        for buf, gl, gt in glyphs:
            r, c = top - gt, gl - left
            region = mask[r:r + buf.shape[0], c:c + buf.shape[1]]
            np.maximum(region, buf, out=region)
        return mask, left, top


_TEXT_CACHE: dict[str, Any] = {"ok": RenderMode is not None, "masks": OrderedDict()}


class _Canvas(FigureCanvasAgg):
    """FigureCanvasAgg drawing with :class:`_TextCachingRenderer` (same output, faster)."""

    def get_renderer(self) -> RendererAgg:
        w, h = self.get_width_height(physical=True)
        key = w, h, self.figure.dpi
        if self._lastKey != key:
            self.renderer = _TextCachingRenderer(w, h, self.figure.dpi)
            self._lastKey = key
        return self.renderer


def new_figure(width: float, height: float, dpi: float | None = None) -> Figure:
    """A pyplot-free figure with an Agg canvas (renders to PNG, displays once in Jupyter).

    ``dpi`` defaults to ``matplotlib.rcParams["figure.dpi"]``, so a notebook's setting applies."""
    _register_jupyter_png()
    fig = Figure(figsize=(width, height), dpi=dpi or matplotlib.rcParams["figure.dpi"])
    _Canvas(fig)
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


@lru_cache(maxsize=8)
def _ruler(dpi: float) -> tuple[Text, RendererAgg]:
    """A text artist on a tiny figure of its own, used only to measure strings."""
    fig = Figure(figsize=(1, 1), dpi=dpi)
    return fig.text(0, 0, ""), RendererAgg(8, 8, dpi)


@lru_cache(maxsize=4096)
def text_size(text: str, size: float, dpi: float, weight: str = "normal",
              family: str = "sans-serif", linespacing: float | None = None) -> tuple[float, float]:
    """(width, height) in pixels of ``text`` as matplotlib will draw it, without drawing.

    Views lay out their labels with it (so labels neither overlap nor leave the figure) in
    the time a redraw allows: each distinct string is measured once.
    """
    t, renderer = _ruler(dpi)
    t.set(text=text, fontsize=size, fontweight=weight, family=family,
          linespacing="normal" if linespacing is None else linespacing)
    box = t.get_window_extent(renderer=renderer)
    return box.width, box.height


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
