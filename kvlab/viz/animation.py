"""Animate a run: one frame per step of the cluster, drawn with the cluster view.

A frame is one *step* as ``cluster.step()`` counts them: one message delivered or dropped, one
log flush, or one timer that did something (a vote timeout, a retry), plus every crash,
restart, partition and heal. This is :func:`kvlab.viz.scene.step_indices` with the log flushes
added: a flush is the moment a forced record becomes durable and the messages waiting for it
leave ("log before you speak"), so it gets its own frame instead of being folded into the
delivery before it. Each frame shows the cluster just after its step, with the delivered
message drawn as an arrow (a cross for a drop or a crash) and the step's trace line underneath.
Frames reuse one figure and its artists.

The HTML player (:meth:`Animation.to_jshtml`) is self-contained: the first frame is the
``<img>``'s own ``src``, so it shows before (and without) any JavaScript, and the controls look
their elements up when clicked, so it does not matter when the output area lays them out.
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from collections.abc import Iterable
from typing import Any

from matplotlib.animation import FuncAnimation

from kvlab.trace import Event, Trace
from kvlab.viz import style as st
from kvlab.viz.cluster_view import LEGEND_W, ClusterView
from kvlab.viz.common import VizError, new_figure, nodes_of, png_bytes, trace_of
from kvlab.viz.scene import STEP_KINDS, Replay, Scene, noop_timer

FAULT_STEPS = ("crash", "restart", "partition", "heal")
FRAME_KINDS = (*STEP_KINDS, "flush")
FRAME_NOTE = ("one frame per step: a delivery or drop, a log flush, a timer that acted, "
              "or a fault")


def frame_indices(trace: Trace) -> list[int]:
    """Positions of the events that get a frame (see the module docstring)."""
    return [i for i, e in enumerate(trace)
            if e.kind in FRAME_KINDS and not (e.kind == "timer" and noop_timer(trace, i))]


def replay_frames(trace: Trace, nodes: Iterable[str]) -> list[Scene]:
    """One scene per frame: the cluster just after that step and its consequences."""
    idx = frame_indices(trace)
    r = Replay(nodes)
    scenes: list[Scene] = []
    pos = 0
    for n, i in enumerate(idx):
        end = idx[n + 1] if n + 1 < len(idx) else len(trace)
        while pos < end:
            r.apply(trace[pos])
            pos += 1
        s = r.scene(trace[i])
        s.step, s.steps = n + 1, len(idx)
        scenes.append(s)
    return scenes


def _flush_txs(trace: Trace, i: int, end: int) -> set[Any]:
    """The transactions a flush at ``i`` is about: those of the records it made durable and of
    what it released (the events up to ``end``, the next frame, on the same node)."""
    e = trace[i]
    lsn, count = e.data.get("lsn", 0), e.data.get("records", 0)
    txs: set[Any] = set()
    found = 0
    for j in range(i - 1, -1, -1):
        if found >= count:
            break
        p = trace[j]
        if p.node != e.node:
            continue
        if p.kind in ("crash", "restart"):
            break
        if p.kind == "wal" and lsn - count < p.data.get("lsn", 0) <= lsn:
            txs.update(p.txs)
            found += 1
    for j in range(i + 1, end):
        if trace[j].node == e.node:
            txs.update(trace[j].txs)
    txs.discard(None)
    return txs


def _scenes_for(trace: Trace, ids: list[str], wanted: set[Any]) -> list[Scene]:
    scenes = replay_frames(trace, ids)
    idx = frame_indices(trace)
    keep = []
    for n, (s, i) in enumerate(zip(scenes, idx, strict=True)):
        e = s.event
        if e.kind in FAULT_STEPS or not wanted.isdisjoint(e.txs):
            keep.append(s)
        elif e.kind == "flush":
            end = idx[n + 1] if n + 1 < len(idx) else len(trace)
            if _flush_txs(trace, i, end) & wanted:
                keep.append(s)
    return keep


class Animation(FuncAnimation):
    """A FuncAnimation that shows itself in Jupyter as kvlab's own small HTML player."""

    scenes: list[Scene]

    @property
    def steps(self) -> list[Event]:
        """The trace event behind each frame, in order."""
        return [s.event for s in self.scenes]

    def frames_png(self) -> list[bytes]:
        """Every frame as PNG bytes, drawn at the figure's dpi (shown 1:1 by the player)."""
        out = []
        for i in range(len(self.scenes)):
            self._func(i)
            out.append(png_bytes(self._fig, fast=False))
        if self.scenes:
            self._func(0)
        return out

    def to_jshtml(self, fps: float | None = None, embed_frames: bool = True,
                  default_mode: str | None = None) -> str:
        """The player as HTML; same signature as matplotlib's (``embed_frames`` and
        ``default_mode`` are accepted for compatibility; frames are always embedded)."""
        interval = 1000.0 / fps if fps else float(self._interval)
        return player_html(self.frames_png(), interval,
                           [" ".join(str(s.event).split()) for s in self.scenes])

    def _repr_html_(self) -> str:
        return self.to_jshtml()

    def __del__(self) -> None:
        """Silent: matplotlib warns about unrendered animations because pyplot would lose
        them, but these never go through pyplot, so an unrendered one is just unused."""


_BUTTON = ("font-size:13px;padding:2px 8px;margin:0 2px;cursor:pointer;"
           "border:1px solid #888;border-radius:3px;background:#f4f4f4;color:#222")


def player_html(frames: list[bytes], interval: float, captions: list[str]) -> str:
    """A self-contained player: the first frame is in the ``<img>`` itself; buttons, a slider
    and a "step k of N" counter drive the rest with a few lines of inline JavaScript."""
    if not frames:
        raise VizError("nothing to play: no frames")
    pid = "kvlab_anim_" + uuid.uuid4().hex
    uris = ["data:image/png;base64," + base64.b64encode(f).decode("ascii") for f in frames]
    n = len(uris)
    w, h = _png_size(frames[0])
    first = html.escape(captions[0]) if captions else ""
    api = f"window.{pid}"
    js_frames = json.dumps([None, *uris[1:]])  # frame 0 is read back from the <img>
    js_caps = json.dumps(captions).replace("</", "<\\/")
    b = f'style="{_BUTTON}"'
    box = "display:inline-block;font-family:sans-serif;font-size:13px;color:#222"
    return f"""<div id="{pid}" class="kvlab-anim" style="{box}">
<img id="{pid}-img" src="{uris[0]}" width="{w}" height="{h}" alt="step 1 of {n}: {first}"
     style="display:block;width:{w}px;height:{h}px;max-width:none">
<div style="margin:6px 0 2px 0;display:flex;align-items:center;gap:4px;flex-wrap:wrap">
<button {b} title="first step" onclick="{api}&&{api}.go(0)">&laquo; First</button>
<button {b} title="previous step" onclick="{api}&&{api}.by(-1)">&lsaquo; Back</button>
<button {b} id="{pid}-play" title="play / pause" onclick="{api}&&{api}.play()">Play &#9654;</button>
<button {b} title="next step" onclick="{api}&&{api}.by(1)">Next &rsaquo;</button>
<button {b} title="last step" onclick="{api}&&{api}.go({n - 1})">Last &raquo;</button>
<input id="{pid}-slider" type="range" min="0" max="{n - 1}" step="1" value="0"
       aria-label="step" style="flex:1 1 120px;margin:0 6px"
       oninput="{api}&&{api}.go(parseInt(this.value))">
<span id="{pid}-count" style="font-size:13px;font-variant-numeric:tabular-nums">step 1 of {n}</span>
</div>
<div style="font-size:12px;color:#444">{FRAME_NOTE}</div>
</div>
<script>
(function () {{
  var id = "{pid}", frames = {js_frames}, caps = {js_caps}, interval = {interval:.0f};
  var at = 0, timer = null;
  function el(s) {{ return document.getElementById(id + "-" + s); }}
  function go(k) {{
    var img = el("img");
    if (!img) return;
    if (frames[0] === null) frames[0] = img.getAttribute("src");
    at = Math.max(0, Math.min(frames.length - 1, k));
    img.src = frames[at];
    img.alt = "step " + (at + 1) + " of " + frames.length + ": " + caps[at];
    el("slider").value = at;
    el("count").textContent = "step " + (at + 1) + " of " + frames.length;
  }}
  function stop() {{
    if (timer) {{ clearInterval(timer); timer = null; }}
    var p = el("play"); if (p) p.innerHTML = "Play &#9654;";
  }}
  function play() {{
    if (timer) {{ stop(); return; }}
    if (at >= frames.length - 1) go(0);
    timer = setInterval(function () {{
      if (!el("img") || at >= frames.length - 1) stop(); else go(at + 1);
    }}, interval);
    el("play").innerHTML = "Pause &#10074;&#10074;";
  }}
  window[id] = {{go: function (k) {{ stop(); go(k); }}, by: function (d) {{ stop(); go(at + d); }},
                play: play}};
}})();
</script>"""


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (so the <img> has its size before it loads)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def animate(source: Any, *, tx: str | Iterable[str] | None = None, last: int | None = None,
            interval: int = 700, nodes: list[str] | None = None) -> Animation:
    """Animate a cluster's trace (or a Trace): ``FuncAnimation`` with one frame per step.

    ``tx`` keeps the steps of some transactions (their deliveries, drops, timers and the log
    flushes of their records) and every fault; ``last`` the last N steps. Show it with
    ``anim.to_jshtml()`` (or just as a cell's value in Jupyter).
    """
    trace = trace_of(source)
    ids = list(nodes) if nodes is not None else nodes_of(source, trace)
    if tx is not None:
        wanted = {tx} if isinstance(tx, str) else set(tx)
        scenes = _scenes_for(trace, ids, wanted)
    else:
        scenes = replay_frames(trace, ids)
    if last is not None:
        if last < 1:
            raise VizError(f"last={last}: pass a positive number of steps, or None for all")
        scenes = scenes[-last:]
    if not scenes:
        raise VizError("nothing to animate: the trace has no steps (deliveries, drops, "
                       "flushes, faults or timeouts) yet; step or run the cluster first, or "
                       "widen tx=/last=")
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


__all__ = ["animate", "Animation", "frame_indices", "replay_frames", "player_html",
           "FRAME_KINDS"]
