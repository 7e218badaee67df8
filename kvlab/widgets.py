"""ClusterExplorer: step, break and watch a cluster from one Jupyter dashboard.

Every control calls a method of the explorer (``step``, ``deliver``, ``crash``, ...), which
calls the cluster's public API and redraws, so everything a button does can also be done, and
tested, from Python. Buttons report kvlab errors in the status line instead of raising.

**History.** kvlab is deterministic: the same constructor arguments and the same public calls
give the same state and the same trace, byte for byte, and the cluster writes every public call
to its journal. So the explorer keeps the *scenario* (the journal that set the cluster up) and a
list of *steps* taken since, each a stretch of the journal, and any earlier moment is rebuilt
exactly by replaying the scenario and the first k steps. One step is one Step click, one step of
Run or Play (one ``cluster.step()``: a delivery, a flush or a timer), or one of your actions
(deliver, drop, crash, restart, partition, heal, new transaction). Back, the History slider and
Reset are such replays. A new action while looking back discards the steps after the one shown,
as an editor's undo does.

Redraws are cheap: each panel owns one figure whose artists are updated in place, and a panel
whose content did not change is not re-encoded.
"""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from kvlab.batching import txs as batch_txs
from kvlab.cluster import Cluster, CommitHandle
from kvlab.errors import KvlabError
from kvlab.node import ISOLATION_LEVELS
from kvlab.trace import Event
from kvlab.viz.cluster_view import ClusterView
from kvlab.viz.common import png_bytes
from kvlab.viz.scene import scene_of
from kvlab.viz.sequence import SequenceView
from kvlab.viz.style import legend_html
from kvlab.viz.versions import VersionsView
from kvlab.viz.walview import detail as wal_detail

_SPLIT = re.compile(r",\s*(?=[^,=\s]+\s*=)")  # commas that start a new "key=" pair
KEEP = 8  # rebuilt clusters kept for the History slider (going back to one is free)


class FormError(KvlabError):
    """The transaction form could not be understood."""


class HistoryError(KvlabError):
    """Back, the History slider or Reset cannot rebuild the moment asked for."""


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


_DISK = ("this cluster keeps its data on disk, so it cannot be replayed in memory (a replay "
         "would recover the old data)")


def factory_for(cluster: Cluster) -> Callable[[], Cluster]:
    """A function that builds a fresh cluster with ``cluster``'s constructor arguments."""
    if cluster.data_dir is not None:
        raise KvlabError(f"{_DISK}: pass factory=lambda: kvlab.Cluster(...) with a new "
                         f"data_dir each time (or no data_dir)")
    return cluster.clone


def replay(options: dict[str, Any], journal: Iterable[tuple], onto: tuple[Cluster, list[
        CommitHandle]] | None = None) -> tuple[Cluster, list[CommitHandle]]:
    """:meth:`Cluster.replay`, also returning the commit handles it re-made (the explorer lists
    its transactions' handles), and able to continue a replay (``onto``: its result).

    The same calls with the same error handling as ``Cluster.replay``; the tests check that
    both give the same trace."""
    c, handles = onto if onto is not None else (Cluster(**options), [])
    c._replay_onto(handles, journal)
    return c, handles


@dataclass(frozen=True)
class _Point:
    """A moment of the history: the end of the scenario (the first) or of one step."""

    journal: int  # journal entries up to here
    trace: int  # trace events up to here
    label: str  # what the step was
    txs: tuple[str, ...] = ()  # transactions the explorer started up to here


# -- the inspector -----------------------------------------------------------------------------
MAX_ITEMS = 6  # list and dict items shown before "… +N more"
MAX_TEXT = 160
_FIRST = ("reason", "writes", "reads", "commit_ts", "ts", "value", "key", "start_ts")
_KEY = "font-family:monospace;color:#555;padding:1px 10px 1px 0;vertical-align:top;" \
       "white-space:nowrap"
_VAL = "padding:1px 0;vertical-align:top;word-break:break-word"
_MONO = "font-family:monospace"
_WORD = re.compile(r"[\w.:/-]+")  # shown unquoted in a top-level list: keys, node ids


def _short(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def compact(value: Any, top: bool = True) -> str:
    """A value in one short line: lists and dicts without brackets at the top, at most
    MAX_ITEMS items, strings quoted only inside containers."""
    if isinstance(value, dict):
        items = [f"{k}={compact(v, False)}" for k, v in list(value.items())[:MAX_ITEMS]]
        more = len(value) - MAX_ITEMS
        text = ", ".join(items) + (f", … +{more} more" if more > 0 else "")
        return _short(text if top else "{" + text + "}")
    if isinstance(value, (list, tuple)):
        items = [v if top and isinstance(v, str) and _WORD.fullmatch(v) else compact(v, False)
                 for v in value[:MAX_ITEMS]]
        more = len(value) - MAX_ITEMS
        text = ", ".join(items) + (f", … +{more} more" if more > 0 else "")
        return _short(text if top else "[" + text + "]") if value or not top else "none"
    if isinstance(value, str):
        return _short(value if top else repr(value))
    return _short(repr(value))


def _writes(writes: Any) -> str:
    """A PREPARE's (or PREPARE record's) write set, ``{key: [value, deleted]}``."""
    if not isinstance(writes, dict):
        return compact(writes)
    items = []
    for k, v in list(writes.items())[:MAX_ITEMS]:
        deleted = isinstance(v, (list, tuple)) and len(v) == 2 and v[1] is True
        value = v[0] if isinstance(v, (list, tuple)) and len(v) == 2 else v
        items.append(f"{k} deleted" if deleted else f"{k}={compact(value, False)}")
    more = len(writes) - MAX_ITEMS
    return _short(", ".join(items) + (f", … +{more} more" if more > 0 else "")) or "none"


def _rows(fields: dict[str, Any]) -> str:
    keys = [k for k in _FIRST if k in fields] + [k for k in fields if k not in _FIRST]
    out = []
    for k in keys:
        v = fields[k]
        text = _writes(v) if k == "writes" else compact(v)
        prose = isinstance(v, str) and " " in v
        style = _VAL if prose else f"{_VAL};{_MONO}"
        out.append(f"<tr><td style='{_KEY}'>{html.escape(str(k))}</td>"
                   f"<td style='{style}'>{html.escape(text)}</td></tr>")
    return "<table style='border-collapse:collapse;font-size:12px'>" + "".join(out) + \
        "</table>" if out else "<div style='color:#555'>no fields</div>"


def _box(title: str, summary: str, body: str, note: str = "") -> str:
    parts = [f"<div style='font-size:13px;font-weight:bold;{_MONO}'>{html.escape(title)}</div>"]
    if summary:
        parts.append(f"<div style='margin:2px 0 4px 0'>{html.escape(summary)}</div>")
    parts.append(body)
    if note:
        parts.append(f"<div style='color:#555;margin-top:4px'>{html.escape(note)}</div>")
    return ("<div style='font-size:12px;line-height:1.35;border:1px solid #ccc;"
            "border-radius:3px;padding:6px 8px;background:#fafafa;color:#222'>"
            + "".join(parts) + "</div>")


def _for(tx: Any, txs: Any) -> str:
    """A title's transaction: `` T1``, or a batch's `` (T1 T2)``, or nothing."""
    return f" {tx}" if tx else f" ({' '.join(txs)})" if txs else ""


def message_summary(kind: str, src: Any, dst: Any, tx: Any, body: dict[str, Any]) -> str:
    """What a message says, in one sentence."""
    b = body
    return {
        "PREPARE": f"{src} asks {dst} to prepare {tx}: lock and log its writes, then vote",
        "VOTE_YES": f"{src} votes yes on {tx}: its PREPARE record is durable",
        "VOTE_NO": f"{src} votes no on {tx}: {b.get('reason', '?')}",
        "COMMIT": f"{src} tells {dst}: {tx} committed at ts {b.get('commit_ts')}",
        "ABORT": f"{src} tells {dst}: {tx} aborted"
                 + (" (presumed: no decision record)" if b.get("presumed") else ""),
        "ACK": f"{src} has applied {tx} durably; {dst} may forget it once all have acked",
        "TS_REQUEST": f"{src} asks the oracle for a {b.get('purpose', '')} timestamp",
        "TS_REPLY": f"the oracle gives {dst} ts {b.get('ts')} ({b.get('purpose', '')})",
        "READ": f"{src} reads {b.get('key')!r} from its owner {dst} at ts {b.get('ts')}",
        "READ_REPLY": f"{src} answers {dst}: {compact(b.get('value'), False)}"
                      + (f" (written by {b['writer']})" if b.get("writer") else ""),
        "STATUS": f"{src} is in doubt about {tx} and asks {dst} for the decision",
        "LEARNED": f"{src} ended {tx}: every participant has its outcome durably, so {dst}'s "
                   f"acceptor may forget the transaction",
        "MAY_FORGET": f"{src}'s acceptor still holds {tx} and asks its coordinator {dst} "
                      f"whether it may forget it",
        "NOT_YET": f"{src} is still at work on {tx}: LEARNED will follow, so {dst} stops asking",
        "BATCH": f"{src} sends {dst} "
                 + (f"{len(b['messages'])} messages in one: "
                    + ", ".join(f"{k} {t or ''}".rstrip() for k, t, _ in b["messages"])
                    if b.get("messages") else "several messages in one")
                 + " (kvlab.batching: delivered in order, in one go)",
    }.get(kind, "")


def message_html(msg_id: int, msg: Any, status: str) -> str:
    """A message as an HTML panel: kind, route, a sentence, and its body field by field."""
    title = f"#{msg_id} {msg.src} → {msg.dst} {msg.kind}" + _for(msg.tx, batch_txs(msg))
    return _box(title, message_summary(msg.kind, msg.src, msg.dst, msg.tx, msg.body),
                _rows(dict(msg.body)), status)


# -- the explorer ------------------------------------------------------------------------------
def _button(label: str, tip: str, style: str = "") -> widgets.Button:
    return widgets.Button(description=label, tooltip=tip, button_style=style,
                          layout=widgets.Layout(width="auto"))


_CSS = ("<style>.kvlab-log select{font-family:monospace;font-size:12px;line-height:1.3}"
        ".kvlab-log option{padding:0 2px}</style>")


class ClusterExplorer:
    """A dashboard over one cluster: ``display(ClusterExplorer(cluster))`` in a notebook.

    The *start* (what Reset and the History slider's 0 come back to) is ``cluster`` as it is
    when the explorer is made, plus whatever was done to it from Python before the explorer is
    first shown (the notebook cell that sets it up); :meth:`start_here` moves it to now.
    ``factory``: Reset calls it for a fresh cluster (whatever it does is the start) unless the
    start was moved; needed for a ``data_dir`` cluster, which cannot be replayed in memory (so
    Back and History are off for it). ``window`` is how many trace events the sequence diagram
    shows (messages, log records and faults; 2PC states are in the cluster view);
    ``log_lines`` how many lines the event log shows.
    """

    def __init__(self, cluster: Cluster | None = None, *,
                 factory: Callable[[], Cluster] | None = None, window: int = 40,
                 log_lines: int = 25) -> None:
        if cluster is None and factory is None:
            raise KvlabError("give a cluster or a factory: ClusterExplorer(kvlab.Cluster(["
                             "'n1', 'n2', 'n3'])) or ClusterExplorer(factory=make_cluster)")
        self.factory = factory or factory_for(cluster)
        self._from_factory = factory is not None
        self.cluster = cluster if cluster is not None else self.factory()
        self.window, self.log_lines = window, log_lines
        self.last_error: str | None = None
        self._mark = 0  # trace length before the last action: its events are highlighted
        self._sigs: dict[str, Any] = {}  # panel -> what it last showed (skip unchanged redraws)
        self._quiet = self._resetting = False  # set while the explorer moves widgets itself
        self._shown = self._clicked = False  # displayed yet; a control used yet
        self._ids: list[str] = []
        # what the inspector shows: ("flight", id) follows the In flight list, ("msg", id) a
        # message asked for by id, ("event", seq) a line of the event log
        self._inspect: tuple[str, int] | None = None
        self._build()
        self._bind()
        self._initial = {w: w.value for w in self._controls()}
        self._journal_len = self._epoch = 0
        self._start(self.cluster, None if self._from_factory else self.cluster.journal, {}, ())
        self.refresh()

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        w = widgets
        self.step_button = _button("Step", "run the next event (one delivery, flush or timer)",
                                   "primary")
        self.run_button = _button("Run", "run until nothing can make progress (each event is "
                                  "one step of the history)")
        self.play = w.Play(value=0, min=0, max=10**9, step=1, interval=600,
                           description="Play", show_repeat=False)
        self.speed = w.IntSlider(value=600, min=100, max=3000, step=100,
                                 description="ms/step", readout=True,
                                 layout=w.Layout(width="260px"))
        w.link((self.speed, "value"), (self.play, "interval"))
        self.back_button = _button("◀ Back", "undo the last step (one event of Step, Run or "
                                   "Play, or one of your actions), exactly, by replay")
        self.reset_button = _button("Reset", "start again from the starting scenario",
                                    "warning")
        self.history = w.IntSlider(value=0, min=0, max=0, step=1, description="History",
                                   continuous_update=False, readout=True,
                                   tooltip="the cluster after this many steps (0 = the start)",
                                   layout=w.Layout(width="420px"))
        self.history_label = w.HTML()
        self.status = w.HTML()
        self.messages = w.Select(options=[], rows=8, description="In flight",
                                 layout=w.Layout(width="360px"))
        self.deliver_button = _button("Deliver", "deliver the selected message now", "success")
        self.drop_button = _button("Drop", "lose the selected message", "danger")
        self.inspector = w.HTML(layout=w.Layout(width="360px"))
        self.node_picker = w.Dropdown(description="Node", layout=w.Layout(width="150px"))
        self.crash_button = _button("Crash", "stop the node: memory and unflushed log lost",
                                    "danger")
        self.torn = w.Checkbox(value=False, description="torn write", indent=False,
                               layout=w.Layout(width="90px"))
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
        self.log = w.Select(options=[], rows=self.log_lines, layout=w.Layout(width="540px"))
        self.log.add_class("kvlab-log")
        for button, action in ((self.step_button, self.step), (self.run_button, self.run),
                               (self.back_button, self.back),
                               (self.reset_button, self.reset),
                               (self.deliver_button, self.deliver),
                               (self.drop_button, self.drop), (self.crash_button, self.crash),
                               (self.restart_button, self.restart),
                               (self.partition_button, self.partition),
                               (self.heal_button, self.heal),
                               (self.tx_button, self.start_transaction)):
            button.on_click(self._handler(action))
        self.play.observe(self._on_play, names="value")
        self.history.observe(self._on_history, names="value")
        self.versions_node.observe(self._on_versions_node, names="value")
        self.messages.observe(self._on_pick("flight"), names="value")
        self.log.observe(self._on_pick("event"), names="value")
        controls = w.VBox([
            w.HTML("<b>Messages</b>"), self.messages,
            w.HBox([self.deliver_button, self.drop_button]),
            w.HTML("<b>Inspector</b> (pick a message in flight or a line of the event log)"),
            self.inspector,
            w.HTML("<b>Faults</b>"),
            w.HBox([self.node_picker, self.crash_button, self.torn, self.restart_button]),
            w.HBox([self.partition_group, w.VBox([self.partition_button, self.heal_button])]),
            w.HTML("<b>New transaction</b> (commit runs when you step)"),
            self.tx_node, self.tx_isolation, self.tx_reads, self.tx_writes, self.tx_button,
        ])
        self.widget = w.VBox([
            w.HTML(_CSS),
            w.HBox([self.step_button, self.run_button, self.play, self.speed,
                    self.back_button, self.reset_button]),
            w.HBox([self.history, self.history_label],
                   layout=w.Layout(align_items="center")),
            self.status,
            # panels keep their own size (text stays 11 px); the rows wrap rather than shrink
            w.HBox([self.cluster_image, self.sequence_image],
                   layout=w.Layout(align_items="flex-start", flex_flow="row wrap")),
            w.HTML(legend_html()),
            w.HBox([controls, w.VBox([self.versions_node, self.versions_image,
                                      w.HTML("<b>Event log</b> (▶ = last action; pick a "
                                             "line to inspect it)"),
                                      self.log])],
                   layout=w.Layout(align_items="flex-start", flex_flow="row wrap")),
        ])

    def _controls(self) -> list[widgets.ValueWidget]:
        """The controls Reset puts back as they were, besides the node pickers (the first
        node) and the partition side (none); not the Play speed: a preference."""
        return [self.torn, self.tx_isolation, self.tx_reads, self.tx_writes]

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
            self.versions_view = VersionsView(size=(5.4, 2.6))
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
            if list(self.partition_group.options) != ids:
                self.partition_group.options = ids
        finally:
            self._quiet = False

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        if not self._shown:  # what the setup cell did before showing it is the start
            self._shown = True
            if not self._clicked and len(self._points) > 1 and self._pos == \
                    len(self._points) - 1 and self._cannot_replay() is None:
                self.start_here()
                self._say("ready: Step runs the next event; Reset comes back to this start")
        bundle = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        # what a page without a widget manager shows instead (GitHub, nbviewer without the
        # widget state, a notebook opened before it is run): a picture, not "VBox(children=…"
        bundle["text/html"] = self.snapshot_html()
        bundle["text/plain"] = self.summary()
        return bundle

    def summary(self) -> str:
        """One line about the explorer and its cluster (a notebook's plain-text fallback)."""
        c = self.cluster
        return (f"ClusterExplorer over {len(c.ids)} nodes ({', '.join(map(str, c.ids))}) at "
                f"t={c.now}: {len(c.pending())} message(s) in flight, {len(c.trace)} events; "
                f"run the notebook to use its controls")

    def snapshot_html(self) -> str:
        """A static picture of the explorer's panels as they are now, with a note that the
        controls need a live kernel."""
        def img(widget: widgets.Image, alt: str) -> str:
            data = base64.b64encode(bytes(widget.value)).decode("ascii")
            return (f"<img src='data:image/png;base64,{data}' alt='{html.escape(alt)}' "
                    f"style='max-width:none;margin:0 4px 8px 0'>")
        pending = "".join(f"<li>{html.escape(str(e))}</li>" for e in self.cluster.pending()[:8])
        return ("<div class='kvlab-explorer-snapshot' style='font-size:13px;color:#222'>"
                "<div style='margin-bottom:4px'><b>ClusterExplorer</b> (a picture of it as "
                "this notebook last ran; run the notebook to use its buttons)</div>"
                "<div style='display:flex;flex-wrap:nowrap;overflow-x:auto;align-items:flex-start'>"
                + img(self.cluster_image, "the cluster: nodes and messages in flight")
                + img(self.sequence_image, "the sequence diagram of recent events")
                + "</div>" + legend_html()
                + (f"<div><b>In flight</b><ul style='margin:2px 0;font-family:monospace;"
                   f"font-size:12px'>{pending}</ul></div>" if pending else "")
                + "</div>")

    # -- actions (what the buttons do; callable from Python too) ----------------------------
    def step(self) -> bool:
        """Run the next event; False if the cluster is quiet."""
        self._begin()
        ran = self._step_once("step")
        self._say("stepped" if ran else "the cluster is quiet: nothing is in flight or pending")
        self.refresh()
        return ran

    def run(self, max_steps: int = 10_000) -> int:
        """Run until nothing can make progress (at most ``max_steps`` events), one
        ``cluster.step()`` at a time so that Back can undo them one by one."""
        self._begin()
        n = 0
        while n < max_steps and self._step_once("step (Run)"):
            n += 1
        busy = n == max_steps and not self.cluster.quiet
        self._say(f"ran {n} event(s)" + ("; still busy: Run again to continue" if busy else ""))
        self.refresh()
        return n

    def deliver(self, msg_id: int | None = None) -> None:
        """Deliver a message now (default: the one selected in the list)."""
        msg_id = self._chosen(msg_id)
        with self._action(f"deliver #{msg_id}"):
            self.cluster.deliver(msg_id)
        self._say(f"delivered #{msg_id}")
        self.refresh()

    def drop(self, msg_id: int | None = None) -> None:
        """Lose a message (default: the one selected in the list)."""
        msg_id = self._chosen(msg_id)
        with self._action(f"drop #{msg_id}"):
            self.cluster.drop(msg_id)
        self._say(f"dropped #{msg_id}")
        self.refresh()

    def crash(self, node: str | None = None, torn: bool | None = None) -> None:
        """Stop a node (default: the one picked): its memory and unflushed log are lost."""
        node = node or self.node_picker.value
        torn = self.torn.value if torn is None else torn
        with self._action(f"crash {node}" + (" (torn)" if torn else "")):
            crashed = self.cluster.crash(node, torn=torn)
        self._say(f"crashed {node}" if crashed else f"{node} is already down")
        self.refresh()

    def restart(self, node: str | None = None) -> None:
        """Recover a node from its log (default: the one picked)."""
        node = node or self.node_picker.value
        with self._action(f"restart {node}"), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            restarted = self.cluster.restart(node)
        notes = "; ".join(str(w.message) for w in caught)
        self._say((f"restarted {node}" if restarted else f"{node} is already up")
                  + (f" ({notes})" if notes else ""))
        self.refresh()

    def partition(self, side: Iterable[str] | None = None) -> None:
        """Cut ``side`` (default: the nodes selected under "One side") off from the rest."""
        chosen = set(side if side is not None else self.partition_group.value)
        rest = set(self.cluster.ids) - chosen
        if not chosen or not rest:
            raise KvlabError("pick the nodes on one side of the partition (at least one, "
                             "not all)")
        what = (f"{' '.join(map(str, sorted(chosen, key=str)))} | "
                f"{' '.join(map(str, sorted(rest, key=str)))}")
        with self._action(f"partition {what}"):
            self.cluster.partition(chosen, rest)
        self._say(f"partitioned {what}")
        self.refresh()

    def heal(self) -> None:
        """Reconnect every node."""
        with self._action("heal"):
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
        with self._action(f"new transaction on {node}") as act:
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
            act.label, act.tx = f"{tx} on {node}", tx
            self._handles[tx] = handle
        self._say(f"{tx} on {node}: commit started; step to run two-phase commit")
        self.refresh()
        return handle

    def back(self) -> None:
        """Go back one step (exactly, by replay); the steps after it stay until a new action,
        so the History slider can still bring them back."""
        self.play.playing = False
        if self._pos == 0:
            raise HistoryError("nothing to go back to: this is the start (Reset comes back "
                               "here too)")
        undone = self._points[self._pos].label
        self._show(self._pos - 1)
        self._say(f"back: undid {undone}")
        self.refresh()

    def goto(self, k: int) -> None:
        """Show the cluster after ``k`` steps (0 = the start; the History slider does this).
        A new action from there discards the steps after ``k``."""
        self.play.playing = False
        last = len(self._points) - 1
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= last:
            raise HistoryError(f"there is no step {k!r}: the history has steps 0 to {last}")
        self._show(k)
        self._say("the present" if k == last else f"looking back at step {k} of {last}")
        self.refresh()

    def start_here(self) -> None:
        """Make the cluster as shown the start: Reset and History's 0 come back here."""
        reason = self._cannot_replay()
        if reason is not None:
            raise HistoryError(f"{reason}, so it cannot be the start of a replay; Reset "
                               f"calls the factory")
        self._begin()
        self._start(self.cluster, self.cluster.journal, dict(self._handles),
                    self._points[self._pos].txs)
        self._say("this is now the start: Reset and History 0 come back here")
        self.refresh()

    def reset(self) -> None:
        """Go back to the start: the scenario replayed (or the factory called), every control
        as it was at the beginning."""
        self.play.playing = False
        txs: tuple[str, ...] = ()
        if self._scenario is None:
            cluster, handles = self.factory(), {}
        else:
            txs = self._points[0].txs
            cluster, made = replay(self._options, self._scenario)
            handles = {h.tx: h for h in made if h.tx in self._points[0].txs}
            if len(cluster.trace) != self._points[0].trace:
                raise HistoryError(
                    f"replaying the start gave {len(cluster.trace)} trace events, not "
                    f"{self._points[0].trace}: was the cluster changed other than through its "
                    f"public methods? Reset with factory= instead")
        self._start(cluster, self._scenario, handles, txs)
        self._resetting = True
        try:
            self.play.value = 0
        finally:
            self._resetting = False
        self._bind()
        self._quiet = True
        try:
            for control, value in self._initial.items():
                control.value = value
            for dd in (self.node_picker, self.tx_node, self.versions_node):
                dd.value = dd.options[0]
            self.partition_group.value = ()
            self.messages.value = None
            self.log.value = None
        finally:
            self._quiet = False
        self._inspect = None
        self._say("reset: back to the start")
        self.refresh()

    # -- the history --------------------------------------------------------------------------
    @property
    def handles(self) -> list[CommitHandle]:
        """The commit handles of the transactions started here (as of the moment shown)."""
        return [self._handles[t] for t in self._points[self._pos].txs if t in self._handles]

    @property
    def steps(self) -> list[str]:
        """What each step of the history was, oldest first (``len`` is the number of steps)."""
        return [p.label for p in self._points[1:]]

    @property
    def position(self) -> int:
        """How many steps the cluster shown has had (``len(steps)`` unless looking back)."""
        return self._pos

    def _start(self, cluster: Cluster, scenario: list[tuple] | None,
               handles: dict[str, CommitHandle], txs: tuple[str, ...]) -> None:
        """Make ``cluster`` the present and its journal (``scenario``; None: the factory's
        doing) the start; ``txs`` are the explorer's transactions in it."""
        self.cluster = self._present = cluster
        self._options = dict(cluster.options)
        self._scenario = list(scenario) if scenario is not None else None
        self._points = [_Point(len(cluster.journal), len(cluster.trace), "the start", txs)]
        self._pos = 0
        self._handles = handles  # tx -> handle, for the cluster shown
        self._present_handles = handles
        self._kept: OrderedDict[int, tuple[Cluster, list[CommitHandle]]] = OrderedDict()
        self._bodies: dict[int, tuple[int, Any]] = {}  # msg id -> (trace length seen, msg)
        self._epoch += 1
        self._mark = len(cluster.trace)
        self._capture()

    def _cannot_replay(self) -> str | None:
        if self._options.get("data_dir") is not None:
            return _DISK
        return None

    def _begin(self) -> None:
        """Before an action: branch off if looking back, and take in calls made from Python
        on ``explorer.cluster`` since the last step (they become a step of their own)."""
        if self._pos < len(self._points) - 1:
            self._branch()
        self._record("calls from Python")
        self._mark = len(self.cluster.trace)
        self._journal_len = len(self.cluster.journal)

    def _branch(self) -> None:
        """A new action while looking back: the moment shown becomes the present."""
        k = self._pos
        point = self._points[k]
        self._points = self._points[:k + 1]
        self._present = self.cluster
        self._present_handles = self._handles
        self._kept = OrderedDict((i, v) for i, v in self._kept.items() if i < k)
        self._bodies = {i: v for i, v in self._bodies.items() if v[0] <= point.trace}
        self._capture()

    def _record(self, label: str, tx: str | None = None, journal: int | None = None) -> bool:
        """A new point if the trace grew (calls that changed nothing join the next step)."""
        c = self.cluster
        last = self._points[-1]
        if len(c.trace) == last.trace:
            return False
        self._points.append(_Point(len(c.journal) if journal is None else journal,
                                   len(c.trace), label, last.txs + ((tx,) if tx else ())))
        self._pos = len(self._points) - 1
        self._capture()
        return True

    def _action(self, label: str) -> _Action:
        return _Action(self, label)

    def _step_once(self, label: str) -> bool:
        """One ``cluster.step()``, one step of the history; False if nothing ran. (Call
        :meth:`_begin` first: it branches off when looking back and counts the journal.)"""
        c = self.cluster
        before = len(c.trace)
        c.step()
        self._journal_len += 1  # step() is one journal entry (counted: journal copies)
        return self._record(label, journal=self._journal_len) if len(c.trace) > before \
            else False

    def _capture(self) -> None:
        """Remember the body of every message in flight, for the inspector once delivered."""
        c = self.cluster
        if c is not self._present:
            return
        n = len(c.trace)
        for i, env in c.network.in_flight.items():
            if i not in self._bodies:
                self._bodies[i] = (n, env.msg)

    def _show(self, k: int) -> None:
        """Make the cluster after ``k`` steps the one shown (the present, or a replay)."""
        if k == self._pos:
            return
        last = len(self._points) - 1
        if k == last:
            self.cluster, self._handles = self._present, self._present_handles
        else:
            reason = self._cannot_replay()
            if reason is not None:
                raise HistoryError(f"{reason}: Back and History need a cluster without "
                                   f"data_dir")
            cluster, made = self._cluster_at(k)
            txs = self._points[k].txs
            self.cluster, self._handles = cluster, {h.tx: h for h in made if h.tx in txs}
        self._pos = k
        self._epoch += 1
        self._mark = self._points[k - 1].trace if k else self._points[0].trace
        self._bind()

    def _cluster_at(self, k: int) -> tuple[Cluster, list[CommitHandle]]:
        """The cluster after ``k`` steps: kept, or replayed from the nearest kept earlier
        moment (which is used up), or from the start."""
        if k in self._kept:
            if len(self._kept[k][0].trace) == self._points[k].trace:
                self._kept.move_to_end(k)
                return self._kept[k]
            del self._kept[k]  # changed from Python while shown: rebuild it
        journal = self._present.journal
        end = self._points[k].journal
        base = max((i for i in self._kept if i < k), default=None)
        if base is not None:
            got = replay(self._options, journal[self._points[base].journal:end],
                         onto=self._kept.pop(base))
        else:
            got = replay(self._options, journal[:end])
        if len(got[0].trace) != self._points[k].trace:
            raise HistoryError(
                f"replaying step {k} gave {len(got[0].trace)} trace events, not "
                f"{self._points[k].trace}: was explorer.cluster changed other than through "
                f"its public methods?")
        self._kept[k] = got
        while len(self._kept) > KEEP:
            self._kept.popitem(last=False)
        return got

    def _update_history(self) -> None:
        last = len(self._points) - 1
        k = self._pos
        self._quiet = True
        try:
            if last >= self.history.max:
                self.history.max = last
                self.history.value = k
            else:
                self.history.value = k
                self.history.max = last
        finally:
            self._quiet = False
        disabled = self._cannot_replay() is not None
        self.history.disabled = disabled or last == 0
        self.back_button.disabled = disabled or k == 0
        if disabled:
            text = "Back and History are off: this cluster keeps its data on disk"
        elif k == 0:
            text = "the start" + (f" (of {last} step{'s' * (last > 1)})" if last else "")
        else:
            text = f"step {k} of {last}: {html.escape(self._points[k].label)}"
        if k < last:
            gone = f"step {last}" if k + 1 == last else f"steps {k + 1}–{last}"
            text += f" · <b>looking back</b>: a new action discards {gone}"
        self.history_label.value = f"<span style='font-size:13px'>{text}</span>"

    # -- plumbing -----------------------------------------------------------------------------
    def _on_play(self, change: dict[str, Any]) -> None:
        """Play ticks arrive as value changes: one step per tick, stop when quiet."""
        if self._resetting or change["new"] <= change["old"]:
            return
        self._clicked = True
        try:
            self._begin()
            for _ in range(min(change["new"] - change["old"], 50)):
                if not self._step_once("step (Play)"):
                    self.play.playing = False
                    self._say("the cluster is quiet: stopped playing")
                    break
            else:
                self._say("playing")
        except KvlabError as e:
            self.play.playing = False
            self.last_error = str(e)
            self._say(str(e), error=True)
        self.refresh()

    def _on_history(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self._clicked = True
            self._guard(lambda: self.goto(change["new"]))

    def _on_versions_node(self, _change: dict[str, Any]) -> None:
        if not self._quiet:
            self._guard(self.refresh)

    def _on_pick(self, what: str) -> Callable[[dict[str, Any]], None]:
        def pick(change: dict[str, Any]) -> None:
            if not self._quiet and change["new"] is not None:
                self._inspect = (what, change["new"])
                self._guard(self._render_inspector)
        return pick

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
        def click(_button: Any) -> None:
            self._clicked = True
            self._guard(action)
        return click

    # -- the inspector ------------------------------------------------------------------------
    def inspect_message(self, msg_id: int) -> str:
        """Show a message (in flight, or delivered earlier) in the inspector; its HTML."""
        self._inspect = ("msg", msg_id)
        return self._render_inspector()

    def inspect_event(self, seq: int) -> str:
        """Show a trace event (by its number) in the inspector; its HTML."""
        self._inspect = ("event", seq)
        return self._render_inspector()

    def _render_inspector(self) -> str:
        what = self._inspect
        if what is not None and what[0] == "event" and not 0 <= what[1] < len(
                self.cluster.trace):
            what = self._inspect = None  # that event is in the undone future
        if what is None or what[0] == "flight":
            chosen = self.messages.value
            what = ("msg", chosen) if chosen is not None else None
        if what is None:
            text = ("<div style='font-size:12px;color:#555'>nothing in flight: pick a line of "
                    "the event log</div>")
        elif what[0] == "msg":
            text = self._message_panel(what[1])
        else:
            text = self._event_panel(what[1])
        self.inspector.value = text
        return text

    def _message_panel(self, msg_id: int) -> str:
        env = self.cluster.network.in_flight.get(msg_id)
        if env is not None:
            return message_html(msg_id, env.msg, f"in flight: sent at t={env.sent_at}, due "
                                                 f"t={env.due}")
        kept = self._bodies.get(msg_id)
        if kept is None:
            return _box(f"#{msg_id}", "", "<div>its body was not seen: it was sent and "
                        "answered within one call</div>")
        return message_html(msg_id, kept[1], "no longer in flight")

    def _event_panel(self, seq: int) -> str:
        c = self.cluster
        if not 0 <= seq < len(c.trace):
            return _box(f"event {seq}", "", "<div>not in this trace (stepped back?)</div>")
        e = c.trace[seq]
        head = f"event {seq} · t={e.time} · {e.kind}" + (f" · {e.node}" if e.node is not None
                                                         else "")
        d = e.data
        if e.kind in ("send", "deliver", "drop", "duplicate"):
            what = {"send": "sent", "deliver": "delivered", "drop": "dropped",
                    "duplicate": "duplicated"}[e.kind]
            note = f"{what} at t={e.time}" + (f" ({d['reason']})" if d.get("reason") else "")
            kept = self._bodies.get(d["id"])
            env = c.network.in_flight.get(d["id"])
            msg = env.msg if env is not None else kept[1] if kept is not None else None
            if msg is not None and msg.kind == d.get("kind") and msg.src == d.get("src") \
                    and msg.dst == d.get("dst"):
                return message_html(d["id"], msg, note)
            route = f"#{d['id']} {d['src']} → {d['dst']} {d['kind']}" + _for(e.tx, e.txs)
            body = d.get("body") or {}
            summary = message_summary(d["kind"], d["src"], d["dst"], d.get("tx"), body)
            return _box(route, summary, _rows(body) if body else
                        "<div style='color:#555'>body not seen: the message was sent and "
                        + ("delivered" if d["kind"] == "BATCH" else "answered")
                        + " within one call</div>", note)
        if e.kind == "wal":
            return self._wal_panel(e)
        if e.kind == "flush":
            return _box(head, f"{e.node} made its log durable up to lsn {d.get('lsn')} "
                        f"({d.get('records')} record(s) in one fsync); what waited for them "
                        f"is sent now", _rows(dict(d)))
        return _box(head, "", _rows(dict(d)))

    def _wal_panel(self, e: Event) -> str:
        d = e.data
        wal = self.cluster.wal(e.node)
        rec = next((r for r in wal.unflushed if r.lsn == d["lsn"]), None)
        durable = rec is None
        if rec is None:
            try:
                rec = next((r for r in wal.durable()[1] if r.lsn == d["lsn"]), None)
            except KvlabError:
                rec = None
        title = f"{e.node} log · lsn {d['lsn']} {d['type']}" + _for(e.tx, e.txs)
        if rec is None or rec.type != d["type"] or rec.data.get("tx") != d.get("tx"):
            return _box(title, "", _rows({"tx": d.get("tx"), "force": d.get("force")}),
                        "no longer in the log: lost in a crash or covered by a checkpoint")
        note = ("durable (flushed)" if durable else "not flushed yet: a crash now loses it") \
            + (" · forced: what the node says next waits for it" if d.get("force") else "")
        return _box(title, wal_detail(rec), _rows(dict(rec.data)), note)

    # -- drawing ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the panels whose content changed, and the lists."""
        c = self.cluster
        pending = c.pending()
        self._quiet = True
        try:
            keep = self.messages.value
            self.messages.options = [(str(e), e.id) for e in pending]
            ids = [e.id for e in pending]
            self.messages.value = keep if keep in ids else (ids[0] if ids else None)
            lines = c.trace[-self.log_lines:]
            first = len(c.trace) - len(lines)
            keep = self.log.value
            self.log.options = [(("▶ " if first + i >= self._mark else "  ") + str(e),
                                 first + i) for i, e in enumerate(lines)]
            self.log.value = keep if keep is not None and first <= keep < len(c.trace) \
                else None
        finally:
            self._quiet = False
        scene = scene_of(c)
        sig = (scene.now, tuple(scene.up.items()), tuple(sorted(scene.groups.items())),
               tuple(f.id for f in scene.in_flight), tuple(sorted(scene.states.items())))
        self._panel("cluster", sig, self.cluster_image,
                    lambda: self.cluster_view.update(scene))
        self._panel("sequence", (self._epoch, len(c.trace)), self.sequence_image,
                    lambda: self.sequence_view.update(c.trace, last=self.window, states=False,
                                                      calls=False))
        node = self.versions_node.value
        self._panel("versions", self._versions_sig(node), self.versions_image,
                    lambda: self.versions_view.update(c, node))
        self._render_inspector()
        self._update_history()
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


class _Action:
    """``with explorer._action(label):`` one action, one step of the history, even if it
    fails after changing the cluster (a begin that timed out ran the cluster)."""

    def __init__(self, ex: ClusterExplorer, label: str) -> None:
        self.ex, self.label, self.tx = ex, label, None

    def __enter__(self) -> _Action:
        self.ex._begin()
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.ex._record(self.label + (" (failed)" if kind is not None else ""), self.tx)


__all__ = ["ClusterExplorer", "FormError", "HistoryError", "parse_writes", "parse_keys",
           "factory_for", "replay", "message_html", "compact"]
