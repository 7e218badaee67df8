"""ClusterExplorer: step, break and watch a cluster from one Jupyter dashboard.

Every control calls a method of the explorer (``step``, ``deliver``, ``crash``, ...), which
calls the cluster's public API and redraws, so everything a button does can also be done, and
tested, from Python. Buttons report kvlab errors in the status line instead of raising.

Redraws are cheap: each panel owns one figure whose artists are updated in place, and a panel
whose content did not change is not re-encoded.
"""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import ipywidgets as widgets

from kvlab.cluster import Cluster, CommitHandle
from kvlab.errors import KvlabError
from kvlab.node import ISOLATION_LEVELS
from kvlab.viz.cluster_view import ClusterView
from kvlab.viz.common import png_bytes
from kvlab.viz.scene import scene_of
from kvlab.viz.sequence import SequenceView
from kvlab.viz.style import legend_html
from kvlab.viz.versions import VersionsView

_SPLIT = re.compile(r",\s*(?=[^,=\s]+\s*=)")  # commas that start a new "key=" pair


class FormError(KvlabError):
    """The transaction form could not be understood."""


def parse_keys(text: str) -> list[str]:
    """``"x, y"`` -> ``["x", "y"]`` (commas or spaces)."""
    return [k for k in re.split(r"[,\s]+", text.strip()) if k]


def parse_writes(text: str) -> dict[str, Any]:
    """``"x=1, y=hello, z=[1, 2]"`` -> ``{"x": 1, "y": "hello", "z": [1, 2]}``.

    Values are JSON when they parse as JSON, else plain strings.
    """
    out: dict[str, Any] = {}
    for part in _SPLIT.split(text.strip()) if text.strip() else []:
        key, eq, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not eq or not key or not raw:
            raise FormError(f"cannot read {part.strip()!r} as a write: write key=value pairs "
                            f"separated by commas, e.g. x=1, y=hello")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw.strip("'\"")
    return out


def factory_for(cluster: Cluster) -> Callable[[], Cluster]:
    """A function that builds a fresh cluster with ``cluster``'s constructor arguments."""
    if cluster.data_dir is not None:
        raise KvlabError("this cluster keeps its data on disk, so a fresh one would recover "
                         "the old data: pass factory=lambda: kvlab.Cluster(...) with a new "
                         "data_dir each time (or no data_dir)")
    return cluster.clone


def _button(label: str, tip: str, style: str = "") -> widgets.Button:
    return widgets.Button(description=label, tooltip=tip, button_style=style,
                          layout=widgets.Layout(width="auto"))


class ClusterExplorer:
    """A dashboard over one cluster: ``display(ClusterExplorer(cluster))`` in a notebook.

    ``factory`` builds the cluster for Reset (default: the same constructor arguments and seed
    as ``cluster``, so Reset gives a fresh, identical cluster). ``window`` is how many trace
    events the sequence diagram shows (messages, log records and faults; 2PC states are in the
    cluster view); ``log_lines`` how many lines the event log shows.
    """

    def __init__(self, cluster: Cluster | None = None, *,
                 factory: Callable[[], Cluster] | None = None, window: int = 40,
                 log_lines: int = 25) -> None:
        if cluster is None and factory is None:
            raise KvlabError("give a cluster or a factory: ClusterExplorer(kvlab.Cluster(["
                             "'n1', 'n2', 'n3'])) or ClusterExplorer(factory=make_cluster)")
        self.factory = factory or factory_for(cluster)
        self.cluster = cluster if cluster is not None else self.factory()
        self.window, self.log_lines = window, log_lines
        self.handles: list[CommitHandle] = []
        self.last_error: str | None = None
        self._mark = 0  # trace length before the last action: its events are highlighted
        self._sigs: dict[str, Any] = {}  # panel -> what it last showed (skip unchanged redraws)
        self._quiet = self._resetting = False  # set while the explorer moves widgets itself
        self._ids: list[str] = []
        self._build()
        self._bind()
        self.refresh()

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        w = widgets
        self.step_button = _button("Step", "run the next event (one delivery, flush or timer)",
                                   "primary")
        self.run_button = _button("Run", "run until nothing can make progress")
        self.play = w.Play(value=0, min=0, max=10**9, step=1, interval=600,
                           description="Play", show_repeat=False)
        self.speed = w.IntSlider(value=600, min=100, max=3000, step=100,
                                 description="ms/step", readout=True,
                                 layout=w.Layout(width="260px"))
        w.link((self.speed, "value"), (self.play, "interval"))
        self.reset_button = _button("Reset", "start again from a fresh identical cluster",
                                    "warning")
        self.status = w.HTML()
        self.messages = w.Select(options=[], rows=8, description="In flight",
                                 layout=w.Layout(width="360px"))
        self.deliver_button = _button("Deliver", "deliver the selected message now", "success")
        self.drop_button = _button("Drop", "lose the selected message", "danger")
        self.node_picker = w.Dropdown(description="Node", layout=w.Layout(width="170px"))
        self.crash_button = _button("Crash", "stop the node: memory and unflushed log lost",
                                    "danger")
        self.torn = w.Checkbox(value=False, description="torn write", indent=False,
                               layout=w.Layout(width="100px"))
        self.restart_button = _button("Restart", "recover the node from its log", "success")
        self.partition_group = w.SelectMultiple(options=[], rows=3, description="One side",
                                                layout=w.Layout(width="200px"))
        self.partition_button = _button("Partition", "cut the selected nodes off from the rest")
        self.heal_button = _button("Heal", "reconnect every node")
        self.tx_node = w.Dropdown(description="On node", layout=w.Layout(width="170px"))
        self.tx_isolation = w.Dropdown(options=list(ISOLATION_LEVELS), value="snapshot",
                                       description="Isolation", layout=w.Layout(width="250px"))
        self.tx_reads = w.Text(placeholder="x, y", description="Reads",
                               layout=w.Layout(width="250px"))
        self.tx_writes = w.Text(placeholder="x=1, y=2", description="Writes",
                                layout=w.Layout(width="250px"))
        self.tx_button = _button("Begin + commit", "begin, read, write, then commit_async: "
                                 "2PC waits for your steps", "primary")
        self.cluster_image = w.Image(format="png")
        self.sequence_image = w.Image(format="png")
        self.versions_node = w.Dropdown(description="Versions on", layout=w.Layout(width="200px"))
        self.versions_image = w.Image(format="png")
        self.log = w.HTML()
        for button, action in ((self.step_button, self.step), (self.run_button, self.run),
                               (self.reset_button, self.reset),
                               (self.deliver_button, self.deliver),
                               (self.drop_button, self.drop), (self.crash_button, self.crash),
                               (self.restart_button, self.restart),
                               (self.partition_button, self.partition),
                               (self.heal_button, self.heal),
                               (self.tx_button, self.start_transaction)):
            button.on_click(self._handler(action))
        self.play.observe(self._on_play, names="value")
        self.versions_node.observe(self._on_versions_node, names="value")
        controls = w.VBox([
            w.HTML("<b>Messages</b>"), self.messages,
            w.HBox([self.deliver_button, self.drop_button]),
            w.HTML("<b>Faults</b>"),
            w.HBox([self.node_picker, self.crash_button, self.torn, self.restart_button]),
            w.HBox([self.partition_group, w.VBox([self.partition_button, self.heal_button])]),
            w.HTML("<b>New transaction</b> (commit runs when you step)"),
            self.tx_node, self.tx_isolation, self.tx_reads, self.tx_writes, self.tx_button,
        ])
        self.widget = w.VBox([
            w.HBox([self.step_button, self.run_button, self.play, self.speed,
                    self.reset_button]),
            self.status,
            # panels keep their own size (text stays 11 px); the rows wrap rather than shrink
            w.HBox([self.cluster_image, self.sequence_image],
                   layout=w.Layout(align_items="flex-start", flex_flow="row wrap")),
            w.HTML(legend_html()),
            w.HBox([controls, w.VBox([self.versions_node, self.versions_image,
                                      w.HTML("<b>Event log</b> (▶ = last action)"),
                                      self.log])],
                   layout=w.Layout(align_items="flex-start", flex_flow="row wrap")),
        ])

    def _bind(self) -> None:
        """Point the node pickers and panels at the current cluster's nodes."""
        if not self.cluster.trace.enabled:
            raise KvlabError("the explorer draws from the trace: create the cluster with "
                             "trace=True (the default)")
        ids = list(self.cluster.ids)
        if self._ids != ids:
            self._ids = ids
            self.cluster_view = ClusterView(ids, legend=False, size=(4.2, 4.2))
            self.sequence_view = SequenceView(ids, size=(5.2, 5.6), compact=True)
            self.sequence_view.fig.subplots_adjust(left=0.1, right=0.99, top=0.99, bottom=0.01)
            self.versions_view = VersionsView(size=(5.6, 2.8))
            self.versions_view.fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02)
            for view in (self.cluster_view, self.sequence_view, self.versions_view):
                view.fig.set_dpi(100)  # shown 1:1, so 8 pt text is 11 px
            self._sigs = {}
        self._quiet = True  # no redraw per changed dropdown; the caller refreshes once
        try:
            for dd in (self.node_picker, self.tx_node, self.versions_node):
                if list(dd.options) != ids:
                    dd.options = ids
                    dd.value = ids[0]
            self.partition_group.options = ids
        finally:
            self._quiet = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- actions (what the buttons do; callable from Python too) ----------------------------
    def step(self) -> bool:
        """Run the next event; False if the cluster is quiet."""
        self._mark = len(self.cluster.trace)
        ran = self._step_once()
        self._say("stepped" if ran else "the cluster is quiet: nothing is in flight or pending")
        self.refresh()
        return ran

    def run(self, max_steps: int = 10_000) -> int:
        """Run until nothing can make progress (at most ``max_steps`` events)."""
        self._mark = len(self.cluster.trace)
        n = self.cluster.run(max_steps=max_steps)
        self._say(f"ran {n} event(s)")
        self.refresh()
        return n

    def deliver(self, msg_id: int | None = None) -> None:
        """Deliver a message now (default: the one selected in the list)."""
        msg_id = self._chosen(msg_id)
        self._mark = len(self.cluster.trace)
        self.cluster.deliver(msg_id)
        self._say(f"delivered #{msg_id}")
        self.refresh()

    def drop(self, msg_id: int | None = None) -> None:
        """Lose a message (default: the one selected in the list)."""
        msg_id = self._chosen(msg_id)
        self._mark = len(self.cluster.trace)
        self.cluster.drop(msg_id)
        self._say(f"dropped #{msg_id}")
        self.refresh()

    def crash(self, node: str | None = None, torn: bool | None = None) -> None:
        node = node or self.node_picker.value
        self._mark = len(self.cluster.trace)
        self.cluster.crash(node, torn=self.torn.value if torn is None else torn)
        self._say(f"crashed {node}")
        self.refresh()

    def restart(self, node: str | None = None) -> None:
        node = node or self.node_picker.value
        self._mark = len(self.cluster.trace)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.cluster.restart(node)
        notes = "; ".join(str(w.message) for w in caught)
        self._say(f"restarted {node}" + (f" ({notes})" if notes else ""))
        self.refresh()

    def partition(self, side: Iterable[str] | None = None) -> None:
        """Cut ``side`` (default: the nodes selected under "One side") off from the rest."""
        chosen = set(side if side is not None else self.partition_group.value)
        rest = set(self.cluster.ids) - chosen
        if not chosen or not rest:
            raise KvlabError("pick the nodes on one side of the partition (at least one, "
                             "not all)")
        self._mark = len(self.cluster.trace)
        self.cluster.partition(chosen, rest)
        self._say(f"partitioned {' '.join(map(str, sorted(chosen, key=str)))} | "
                  f"{' '.join(map(str, sorted(rest, key=str)))}")
        self.refresh()

    def heal(self) -> None:
        self._mark = len(self.cluster.trace)
        self.cluster.heal()
        self._say("healed the network")
        self.refresh()

    def start_transaction(self, node: str | None = None, reads: str | Iterable[str] | None = None,
                          writes: str | dict[str, Any] | None = None,
                          isolation: str | None = None) -> CommitHandle:
        """Begin on ``node``, read, write, then ``commit_async``: 2PC advances as you step.

        Begin and reads are synchronous in kvlab, so they run the cluster until answered.
        """
        node = node or self.tx_node.value
        reads = self.tx_reads.value if reads is None else reads
        writes = self.tx_writes.value if writes is None else writes
        reads = parse_keys(reads) if isinstance(reads, str) else list(reads)
        writes = parse_writes(writes) if isinstance(writes, str) else dict(writes)
        if not reads and not writes:
            raise FormError("give at least one read (x, y) or write (x=1, y=2)")
        n = self.cluster.node(node)
        self._mark = len(self.cluster.trace)
        tx = n.begin(isolation or self.tx_isolation.value)
        try:
            for key in reads:
                n.get(tx, key)
            for key, value in writes.items():
                n.put(tx, key, value)
            handle = n.commit_async(tx)
        except KvlabError:
            if self.cluster.up(node):
                try:
                    n.rollback(tx)
                except KvlabError:
                    pass
            raise
        self.handles.append(handle)
        self._say(f"{tx} on {node}: commit started; step to run two-phase commit")
        self.refresh()
        return handle

    def reset(self) -> None:
        """Replace the cluster by a fresh one from the factory (same arguments and seed)."""
        self.play.playing = False
        self.cluster = self.factory()
        self.handles = []
        self._mark = 0
        self._resetting = True
        try:
            self.play.value = 0
        finally:
            self._resetting = False
        self._bind()
        self._say("reset: a fresh cluster")
        self.refresh()

    # -- plumbing -----------------------------------------------------------------------------
    def _step_once(self) -> bool:
        before = len(self.cluster.trace)
        self.cluster.step()
        return len(self.cluster.trace) > before

    def _on_play(self, change: dict[str, Any]) -> None:
        """Play ticks arrive as value changes: one step per tick, stop when quiet."""
        if self._resetting or change["new"] <= change["old"]:
            return
        self._mark = len(self.cluster.trace)
        for _ in range(min(change["new"] - change["old"], 50)):
            if not self._step_once():
                self.play.playing = False
                self._say("the cluster is quiet: stopped playing")
                break
        else:
            self._say("playing")
        self.refresh()

    def _on_versions_node(self, _change: dict[str, Any]) -> None:
        if not self._quiet:
            self._guard(self.refresh)

    def _chosen(self, msg_id: int | None) -> int:
        chosen = msg_id if msg_id is not None else self.messages.value
        if chosen is None:
            raise KvlabError("no message selected: pick one in the In flight list (it is "
                             "empty when nothing is in flight)")
        return chosen

    def _say(self, text: str, error: bool = False) -> None:
        c = self.cluster
        color = "#D55E00" if error else "#333"
        self.status.value = (f"<span style='color:{color}'>{html.escape(text)}</span> · "
                             f"t={c.now} · {len(c.network.in_flight)} in flight · "
                             f"{len(c.trace)} events")

    def _guard(self, action: Callable[[], Any]) -> None:
        try:
            self.last_error = None
            action()
        except KvlabError as e:
            self.last_error = str(e)
            self._say(str(e), error=True)
            self.refresh()

    def _handler(self, action: Callable[[], Any]) -> Callable[[Any], None]:
        return lambda _button: self._guard(action)

    # -- drawing ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the panels whose content changed, and the lists."""
        c = self.cluster
        pending = c.pending()
        keep = self.messages.value
        self.messages.options = [(str(e), e.id) for e in pending]
        ids = [e.id for e in pending]
        self.messages.value = keep if keep in ids else (ids[0] if ids else None)
        scene = scene_of(c)
        sig = (scene.now, tuple(scene.up.items()), tuple(sorted(scene.groups.items())),
               tuple(f.id for f in scene.in_flight), tuple(sorted(scene.states.items())))
        self._panel("cluster", sig, self.cluster_image,
                    lambda: self.cluster_view.update(scene))
        self._panel("sequence", len(c.trace), self.sequence_image,
                    lambda: self.sequence_view.update(c.trace, last=self.window, states=False,
                                                      calls=False))
        node = self.versions_node.value
        self._panel("versions", self._versions_sig(node), self.versions_image,
                    lambda: self.versions_view.update(c, node))
        lines = c.trace[-self.log_lines:]
        first = len(c.trace) - len(lines)
        self.log.value = "<pre style='font-size:11px;line-height:1.25;margin:0'>" + "\n".join(
            ("▶ " if first + i >= self._mark else "  ") + html.escape(str(e))
            for i, e in enumerate(lines)) + "</pre>"
        if not self.status.value:
            self._say("ready")

    def _panel(self, name: str, sig: Any, image: widgets.Image, draw: Callable[[], Any]) -> None:
        if self._sigs.get(name) == sig:
            return
        image.value = png_bytes(draw())
        self._sigs[name] = sig

    def _versions_sig(self, node: str) -> Any:
        core = self.cluster.core(node)
        if core is None:
            return (node, None)
        s = core.store
        return (node, s.watermark,
                tuple((k, len(ch), ch[-1].commit_ts if ch else None) for k, ch in s.chains.items()),
                tuple((k, lk.tx) for k, lk in s.write_locks.items()),
                tuple((k, tuple(v)) for k, v in s.read_locks.items()))


__all__ = ["ClusterExplorer", "FormError", "parse_writes", "parse_keys", "factory_for"]
