"""Animate a run: one frame per step, drawn with the cluster view.

A step is defined in :mod:`kvlab.viz.scene`: one message delivered or dropped, one crash,
restart, partition or heal, or one timer that did something. Each frame shows the cluster just
after its step, with the delivered message drawn as an arrow (a cross for a drop or a crash)
and the step's trace line underneath. Frames reuse one figure and its artists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from matplotlib.animation import FuncAnimation

from kvlab.trace import Event
from kvlab.viz import style as st
from kvlab.viz.cluster_view import LEGEND_W, ClusterView
from kvlab.viz.common import VizError, new_figure, nodes_of, trace_of
from kvlab.viz.scene import Scene, replay_steps

FAULT_STEPS = ("crash", "restart", "partition", "heal")


class Animation(FuncAnimation):
    """A FuncAnimation that shows itself as an HTML player in Jupyter."""

    scenes: list[Scene]

    @property
    def steps(self) -> list[Event]:
        """The trace event behind each frame, in order."""
        return [s.event for s in self.scenes]

    def _repr_html_(self) -> str:
        return self.to_jshtml()

    def __del__(self) -> None:
        """Silent: matplotlib warns about unrendered animations because pyplot would lose
        them, but these never go through pyplot, so an unrendered one is just unused."""


def animate(source: Any, *, tx: str | Iterable[str] | None = None, last: int | None = None,
            interval: int = 700, nodes: list[str] | None = None) -> Animation:
    """Animate a cluster's trace (or a Trace): ``FuncAnimation`` with one frame per step.

    ``tx`` keeps the steps of some transactions (and every fault); ``last`` the last N steps.
    Show it with ``anim.to_jshtml()`` (or just as a cell's value in Jupyter).
    """
    trace = trace_of(source)
    ids = list(nodes) if nodes is not None else nodes_of(source, trace)
    scenes = replay_steps(trace, ids)
    if tx is not None:
        wanted = {tx} if isinstance(tx, str) else set(tx)
        scenes = [s for s in scenes if s.event.kind in FAULT_STEPS or s.event.tx in wanted]
    if last is not None:
        if last < 1:
            raise VizError(f"last={last}: pass a positive number of steps, or None for all")
        scenes = scenes[-last:]
    if not scenes:
        raise VizError("nothing to animate: the trace has no steps (deliveries, drops, faults "
                       "or timeouts) yet; step or run the cluster first, or widen tx=/last=")
    for i, s in enumerate(scenes, 1):
        s.step, s.steps = i, len(scenes)
    # 100 dpi, not the notebook's setting: the frames are embedded at their pixel size, and
    # at 100 dpi the smallest text is 11 px (st.SMALL) while the player stays small
    width = 5.0 + LEGEND_W
    fig = new_figure(width, 5.0, dpi=st.MIN_DPI)
    ax = fig.add_axes((0.01, 0.01, 5.0 / width - 0.02, 0.98))
    view = ClusterView(ids, ax=ax)

    def frame(i: int) -> list:
        view.update(scenes[i])
        return []

    anim = Animation(fig, frame, frames=len(scenes), init_func=lambda: [], interval=interval,
                     repeat=False, cache_frame_data=False)
    anim.scenes = scenes
    return anim


__all__ = ["animate", "Animation"]
