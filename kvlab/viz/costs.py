"""Where the time goes: what a committed transaction costs, as curves.

Two plots for chapter 11's sweeps (:mod:`kvlab.exercises.fastpath`, on the workload of
:func:`kvlab.bench_fastpath.measure`): :func:`cost_curves` draws per-transaction counts
(fsyncs, messages, ...) against the number of concurrent transactions, one line per fast-path
setting and one column per key placement; :func:`window_tradeoff` draws the group-commit
window against fsyncs per transaction and latency. Lines differ in colour, marker and dash, so
colour is never the only cue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kvlab.viz import style as st
from kvlab.viz.common import VizError, new_figure

Rows = list[dict[str, Any]]

COLORS = (st.BLACK, st.BLUE, st.VERMILLION, st.GREEN, st.PURPLE, st.ORANGE)
MARKERS = ("o", "s", "^", "D", "v", "P")
DASHES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)))
LABELS = {
    "fsyncs": "fsyncs per committed tx",
    "forced": "forced records per committed tx",
    "messages": "messages per committed tx\n(between nodes)",
    "oracle": "oracle messages per committed tx",
    "latency": "commit latency (ticks)",
    "per_kilotick": "committed tx per 1000 ticks",
}


def _line_style(i: int) -> dict[str, Any]:
    """Earlier lines are drawn wider, so a line that coincides with a later one (the window
    changes no message count) still shows around it."""
    return dict(color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                linestyle=DASHES[i % len(DASHES)], linewidth=max(3.4 - 0.6 * i, 1.4),
                markersize=max(8.0 - 1.2 * i, 4.0))


def _style(ax: Axes, xlabel: str, ylabel: str | None, title: str | None = None) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="both", labelsize=st.SMALL)
    ax.grid(True, color=st.LIGHT, linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel(xlabel, fontsize=st.FONT)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=st.FONT)
    if title:
        ax.set_title(title, fontsize=st.TITLE, loc="left")


def _check(name: str, series: Any, x: str) -> None:
    if not isinstance(series, dict) or not series:
        raise VizError(f"{name}: pass a non-empty dict {{label: rows}}, as "
                       f"kvlab.exercises.fastpath.sweep returns")
    for label, rows in series.items():
        if not rows or any(x not in r for r in rows):
            raise VizError(f"{name}: the rows of {label!r} need a {x!r} figure each")


def cost_curves(sweeps: dict[str, dict[str, Rows]],
                metrics: Sequence[str] = ("fsyncs", "messages")) -> Figure:
    """One panel per (metric, placement): each setting's ``metric`` against concurrency.

    ``sweeps``: {"spread keys": sweep, "co-located keys": sweep}, each a
    :func:`kvlab.exercises.fastpath.sweep` result ({setting: rows with "concurrency"}). Panels
    of one metric share their y axis, so the placements compare at a glance."""
    if not isinstance(sweeps, dict) or not sweeps:
        raise VizError("cost_curves: pass {placement: sweep}, e.g. {'spread keys': "
                       "fastpath.sweep(), 'co-located keys': fastpath.sweep(colocated=True)}")
    for name, series in sweeps.items():
        _check(f"cost_curves[{name!r}]", series, "concurrency")
        for metric in metrics:
            if any(metric not in r for rows in series.values() for r in rows):
                raise VizError(f"cost_curves: {metric!r} is not measured; choose from "
                               f"{sorted(LABELS)}")
    cols, rows_n = len(sweeps), len(metrics)
    width, height = min(4.3 * cols + 0.6, st.MAX_WIDTH), 2.7 * rows_n + 0.8
    fig = new_figure(width, height)
    axes = fig.subplots(rows_n, cols, squeeze=False, sharex=True, sharey="row")
    fig.subplots_adjust(left=0.9 / width, right=1 - 0.15 / width, bottom=0.6 / height,
                        top=1 - 0.75 / height, hspace=0.25, wspace=0.08)
    handles = []
    for j, (placement, series) in enumerate(sweeps.items()):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for k, (label, rows) in enumerate(series.items()):
                xs = [r["concurrency"] for r in rows]
                (line,) = ax.plot(xs, [r[metric] for r in rows], label=label, **_line_style(k))
                if i == 0 and j == 0:
                    handles.append(line)
            ax.set_xscale("log", base=2)
            ticks = sorted({r["concurrency"] for rows in series.values() for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
            ax.set_ylim(bottom=0)
            _style(ax, "concurrent transactions" if i == rows_n - 1 else "",
                   LABELS.get(metric, metric) if j == 0 else None,
                   placement if i == 0 else None)
    fig.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=st.SMALL,
               frameon=False, bbox_to_anchor=(1 - 0.1 / width, 1 - 0.05 / height),
               handlelength=2.6, columnspacing=1.2)
    return fig


def window_tradeoff(series: dict[str, Rows], default: int | None = 1) -> Figure:
    """The group-commit window (``fsync_latency``) against fsyncs per committed transaction
    (left) and commit latency (right), one line per ``series`` label ({label: rows with
    "window", "fsyncs", "latency"}, e.g. from :func:`kvlab.exercises.fastpath.window_sweep`).
    ``default`` marks the window kvlab uses unless told otherwise."""
    _check("window_tradeoff", series, "window")
    width, height = st.MAX_WIDTH, 3.6
    fig = new_figure(width, height)
    axes = fig.subplots(1, 2, squeeze=True, sharex=True)
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.6 / height,
                        top=1 - 0.75 / height, wspace=0.28)
    handles = []
    for ax, metric in zip(axes, ("fsyncs", "latency"), strict=True):
        for k, (label, rows) in enumerate(series.items()):
            (line,) = ax.plot([r["window"] for r in rows], [r[metric] for r in rows],
                              label=label, **_line_style(k))
            if metric == "fsyncs":
                handles.append(line)
        windows = sorted({r["window"] for rows in series.values() for r in rows})
        ax.set_xticks(windows, [str(w) for w in windows])
        ax.set_ylim(bottom=0)
        if default is not None and default in windows:
            ax.axvline(default, color=st.GREY, linestyle=":", linewidth=1.2, zorder=0)
            ax.text(default, 0.02, " default", transform=ax.get_xaxis_transform(),
                    fontsize=st.SMALL, color=st.ink(st.GREY, "white"), ha="left", va="bottom")
        _style(ax, "group-commit window (ticks a flush waits)", LABELS[metric])
    fig.legend(handles=handles, loc="upper right", ncols=len(handles), fontsize=st.SMALL,
               frameon=False, bbox_to_anchor=(1 - 0.1 / width, 1 - 0.05 / height),
               handlelength=2.6, columnspacing=1.2)
    return fig


__all__ = ["cost_curves", "window_tradeoff"]
