"""kvlab.viz: every view renders (empty, small, large, faulty runs) and shows what it claims."""

from __future__ import annotations

import base64
import gc
import re
import warnings
from types import SimpleNamespace as NS

import matplotlib
import networkx as nx
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

import kvlab
from kvlab import twopc, viz
from kvlab.messages import KINDS
from kvlab.viz import style as st
from kvlab.viz.animation import FRAME_KINDS, frame_indices
from kvlab.viz.common import new_figure
from kvlab.viz.scene import replay_steps, step_indices
from kvlab.viz.sequence import select
from kvlab.viz.statediagram import states_of
from kvlab.wal import decode

matplotlib.use("Agg")  # kvlab.viz never imports pyplot, so this may come last

NODES = ["n1", "n2", "n3"]


# -- scenarios --------------------------------------------------------------------------------
def commit(c: kvlab.Cluster, node: str, **values: object) -> str:
    n = c.node(node)
    tx = n.begin()
    for k, v in values.items():
        n.put(tx, k, v)
    n.commit(tx)
    return tx


def start(c: kvlab.Cluster, node: str, **values: object) -> str:
    n = c.node(node)
    tx = n.begin()
    for k, v in values.items():
        n.put(tx, k, v)
    n.commit_async(tx)
    return tx


@pytest.fixture
def empty() -> kvlab.Cluster:
    return kvlab.Cluster(NODES, seed=0)


@pytest.fixture
def small() -> kvlab.Cluster:
    """One committed transaction, a second one with its PREPAREs in flight."""
    c = kvlab.Cluster(NODES, seed=0)
    commit(c, "n1", x=1)
    start(c, "n1", y=2)
    return c


@pytest.fixture(scope="module")
def faulty() -> kvlab.Cluster:
    """An in-doubt participant: n2 votes yes, crashes, sits out a partition, then recovers."""
    c = kvlab.Cluster(NODES, seed=0)
    commit(c, "n1", x=1)
    start(c, "n1", x=2)
    for _ in range(6):
        c.step()
    c.crash("n2")
    c.partition({"n1"}, {"n2", "n3"})
    c.run()
    c.heal()
    c.restart("n2")
    c.run()
    return c


@pytest.fixture(scope="module")
def large() -> kvlab.Cluster:
    """Five nodes, a dozen concurrent transactions (some conflict), a crash and a partition."""
    c = kvlab.Cluster([f"n{i}" for i in range(1, 6)], seed=3, latency=(1, 3))
    for i in range(12):
        start(c, f"n{i % 5 + 1}", **{f"k{i}": i, "hot": i})
        if i == 5:
            c.partition({"n1", "n2"}, {"n3", "n4", "n5"})
        if i == 8:
            c.crash("n4")
    c.run()
    c.heal()
    c.restart("n4")
    c.run()
    return c


# -- helpers ----------------------------------------------------------------------------------
def texts(fig: Figure) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts if t.get_visible()]
        out += [ax.get_title(loc="left"), ax.get_title()]
        out += [t.get_text() for t in ax.get_yticklabels()]
    return out


def gid(fig: Figure, name: str):
    for ax in fig.axes:
        for a in [*ax.collections, *ax.patches, *ax.texts]:
            if a.get_gid() == name:
                return a
    raise AssertionError(f"no artist with gid {name!r}")


def gids(fig: Figure, prefix: str) -> dict:
    return {a.get_gid(): a for ax in fig.axes for a in [*ax.collections, *ax.patches, *ax.texts]
            if (a.get_gid() or "").startswith(prefix)}


def count(coll) -> int:
    return len(coll.get_offsets())


# -- every view, every kind of run ------------------------------------------------------------
VIEWS = {
    "cluster": viz.cluster_view,
    "sequence": lambda c: viz.sequence_diagram(c, last=150),
    "versions": lambda c: viz.version_chains(c, c.ids[0]),
    "timeline": viz.transaction_timeline,
    "coordinator": lambda c: viz.state_diagram("coordinator", c),
    "participant": lambda c: viz.state_diagram("participant", c),
    "wal": lambda c: viz.wal_view(c, c.ids[-1]),
}


@pytest.mark.parametrize("scenario", ["empty", "small", "faulty", "large"])
@pytest.mark.parametrize("view", list(VIEWS))
def test_every_view_renders_every_run(view, scenario, request):
    c = request.getfixturevalue(scenario)
    digest = c.trace.digest()
    fig = VIEWS[view](c)
    assert isinstance(fig, Figure) and any(texts(fig))
    assert viz.png_bytes(fig).startswith(b"\x89PNG")  # really draws
    assert c.trace.digest() == digest  # views only read


# -- style ------------------------------------------------------------------------------------
def test_one_colour_per_message_kind_and_outcome_from_okabe_ito():
    okabe = {st.BLACK, st.ORANGE, st.SKY_BLUE, st.GREEN, st.YELLOW, st.BLUE, st.VERMILLION,
             st.PURPLE, st.GREY}
    assert set(KINDS) <= set(st.KIND_COLORS)
    assert set(st.KIND_COLORS.values()) <= okabe
    assert st.outcome_color("committed") != st.outcome_color("aborted")
    assert set(twopc.COORDINATOR_STATES + twopc.PARTICIPANT_STATES) <= set(st.STATE_COLORS)


# -- cluster view -----------------------------------------------------------------------------
def test_cluster_view_empty_shows_nodes_oracle_and_no_messages(empty):
    fig = viz.cluster_view(empty)
    assert isinstance(fig, Figure)
    assert set(gids(fig, "node:")) == {"node:n1", "node:n2", "node:n3", "node:tso"}
    assert count(gid(fig, "messages")) == 0
    assert any("0 message(s) in flight" in t for t in texts(fig))
    assert not any(r.get_visible() for r in gids(fig, "coordinator:").values())


def test_cluster_view_labels_each_message_in_flight_and_the_coordinator(small):
    fig = viz.cluster_view(small)
    pending = small.pending()
    assert pending and count(gid(fig, "messages")) == len(pending)
    shown = texts(fig)
    for env in pending:
        assert any(t.startswith(f"#{env.id} {env.kind}") for t in shown)
    colors = [to_hex(c) for c in gid(fig, "messages").get_facecolors()]
    assert colors == [st.kind_color(e.kind).lower() for e in pending]
    assert gid(fig, "coordinator:n1").get_visible()
    assert not gid(fig, "coordinator:n2").get_visible()


def test_cluster_view_crash_and_partition(small):
    small.crash("n3")
    small.partition({"n1"}, {"n2", "n3"})
    fig = viz.cluster_view(small)
    n3 = gid(fig, "node:n3")
    assert to_hex(n3.get_facecolor()) == st.DOWN_FACE.lower() and n3.get_hatch()
    assert to_hex(gid(fig, "node:n1").get_facecolor()) == "#ffffff"
    assert "CRASHED" in texts(fig)
    assert any("partition: n1 | n2 n3" in t for t in texts(fig))
    cut = [to_hex(c) for c in gid(fig, "links").get_colors()]
    assert cut.count(st.CRASH_COLOR.lower()) == 2  # n1-n2 and n1-n3, not n2-n3


def test_cluster_view_draws_into_given_axes_and_accepts_a_scene(small):
    fig = new_figure(4, 4)
    ax = fig.add_subplot()
    assert viz.cluster_view(viz.scene_of(small), ax=ax) is fig
    with pytest.raises(viz.VizError, match="kvlab.Cluster"):
        viz.cluster_view(42)


def test_cluster_view_large(large):
    fig = viz.cluster_view(large)
    assert len(gids(fig, "node:")) == 6


# -- sequence diagram -------------------------------------------------------------------------
def test_sequence_empty_trace(empty):
    fig = viz.sequence_diagram(empty)
    assert count(gid(fig, "arrowheads")) == 0
    assert len(gid(fig, "messages").get_segments()) == 0


def test_sequence_one_arrow_per_message_and_head_per_delivery(small):
    fig = viz.sequence_diagram(small)
    trace = small.trace
    sends = len(trace.filter("send"))
    assert len(gid(fig, "messages").get_segments()) == sends
    assert count(gid(fig, "arrowheads")) == len(trace.filter("deliver"))
    in_flight = [t for t in texts(fig) if t.endswith("(in flight)")]
    assert len(in_flight) == len(small.pending())
    assert count(gid(fig, "mark:force")) == len([e for e in trace.filter("wal")
                                                 if e.data["force"]])
    assert count(gid(fig, "mark:flush")) == len(trace.filter("flush"))
    assert any(t.startswith("t=") for t in texts(fig))  # simulated time on the left


def test_sequence_marks_crash_restart_drops_and_partition(faulty):
    fig = viz.sequence_diagram(faulty)
    trace = faulty.trace
    assert count(gid(fig, "mark:crash")) == len(trace.filter("crash")) == 1
    assert count(gid(fig, "mark:restart")) == len(trace.filter("restart")) == 1
    drops = trace.filter("drop")
    assert drops and count(gid(fig, "mark:drop")) == len(drops)
    assert sum("✕" in t for t in texts(fig)) == len(drops)
    assert len(gid(fig, "partitions").get_paths()) == 1
    assert any(t.startswith("CRASH") for t in texts(fig))
    assert any(t.startswith("partition n1") for t in texts(fig))


def test_sequence_filters_by_transaction_and_window(faulty):
    tx = faulty.history.committed[-1].id
    fig = viz.sequence_diagram(faulty, tx=tx)
    sends = [e for e in faulty.trace.filter("send") if e.tx == tx]
    assert len(gid(fig, "messages").get_segments()) == len(sends)
    assert all(e.tx in (tx, None) for e in select(faulty.trace, tx=tx))
    last = select(faulty.trace, last=12)
    assert len(last) == 12 and last == select(faulty.trace)[-12:]
    window = select(faulty.trace, since=3, until=5)
    assert window and all(3 <= e.time <= 5 for e in window)
    fig = viz.sequence_diagram(faulty, last=12)
    assert len(gid(fig, "messages").get_segments()) == len(
        {e.data["id"] for e in last if e.kind in ("send", "deliver", "drop")})
    with pytest.raises(viz.VizError, match="positive"):
        viz.sequence_diagram(faulty, last=0)


def test_sequence_large(large):
    fig = viz.sequence_diagram(large)
    assert count(gid(fig, "arrowheads")) == len(large.trace.filter("deliver"))
    assert fig.get_size_inches()[1] <= 60
    assert isinstance(viz.sequence_diagram(large.trace, last=50), Figure)  # a bare Trace


# -- version chains ---------------------------------------------------------------------------
def test_versions_show_each_version_lock_and_what_a_snapshot_sees():
    c = kvlab.Cluster(NODES, seed=0)
    writers = [commit(c, "n1", x=i) for i in range(3)]
    reader = c.node("n2").begin()
    commit(c, "n1", x=99)
    start(c, "n1", x=100)
    for _ in range(4):
        c.step()  # the PREPARE is applied: a write lock on x
    fig = viz.version_chains(c, "n1", snapshot=reader)
    shown = texts(fig)
    chain = c.node("n1").versions("x")
    assert [v.writer for v in chain[:3]] == writers
    for v in chain:
        assert f"ts {v.commit_ts} · {v.writer}\n{v.value!r}" in shown
    lock = c.core("n1").store.write_locks["x"]
    assert any(t.startswith(f"prepared {lock.tx}") for t in shown)
    seen = c.core("n1").store.visible("x", c.history[reader].start_ts)
    assert seen.value == 2
    box = next(t for ax in fig.axes for t in ax.texts
               if t.get_text() == f"ts {seen.commit_ts} · {seen.writer}\n2")
    assert box.get_bbox_patch().get_linewidth() > 2
    others = [t for ax in fig.axes for t in ax.texts if t.get_text().startswith("ts ")
              and t is not box]
    assert all(t.get_bbox_patch().get_linewidth() < 1 for t in others)
    assert any(f"snapshot ts={c.history[reader].start_ts}" in t for t in shown)


def test_versions_watermark_crash_filters_and_errors(small):
    small.run()
    small.gc()
    fig = viz.version_chains(small, "n2", keys=["y", "nope"])
    shown = texts(fig)
    assert any(f"GC watermark {small.core('n2').store.watermark}" in t for t in shown)
    assert "(no versions)" in shown and not any(t.startswith("x") for t in shown)
    with pytest.raises(viz.VizError, match="no transaction"):
        viz.version_chains(small, "n1", snapshot="T999")
    with pytest.raises(kvlab.UnknownNode):
        viz.version_chains(small, "n9")
    small.crash("n2")
    assert any("crashed" in t for t in texts(viz.version_chains(small, "n2")))


def test_versions_empty_and_large(empty, large):
    assert isinstance(viz.version_chains(empty, "n1"), Figure)
    fig = viz.version_chains(large, "n1")
    assert any("hot" == t for t in texts(fig))


# -- timeline ---------------------------------------------------------------------------------
def test_timeline_one_row_per_transaction_coloured_by_outcome(faulty):
    fig = viz.transaction_timeline(faulty)
    labels = [t for t in texts(fig) if re.match(r"T\d+ @n\d", t)]
    assert len(labels) == len(faulty.history)
    committed = len(faulty.history.committed)
    aborted = sum(t.status == "aborted" for t in faulty.history)
    assert count(gid(fig, "committed")) == committed
    assert count(gid(fig, "aborted")) == aborted
    assert len(gid(fig, "holds").get_segments()) > 0  # participants held locks


def test_timeline_from_history_alone_and_empty(faulty, empty):
    fig = viz.transaction_timeline(faulty.history)
    assert fig.axes[0].get_xlabel() == "timestamp"
    assert any("no transactions yet" in t for t in texts(viz.transaction_timeline(empty)))


def test_timeline_large_limits_rows(large):
    fig = viz.transaction_timeline(large, limit=5)
    assert len([t for t in texts(fig) if re.match(r"T\d+ @", t)]) == 5
    assert any("pass limit=" in t for t in texts(fig))


# -- dependency graph -------------------------------------------------------------------------
def write_skew() -> nx.MultiDiGraph:
    """As kvlab.checker builds it: edge attributes ``type`` and ``key``."""
    g = nx.MultiDiGraph()
    g.add_edges_from((u, v, {"type": t, "key": k}) for u, v, t, k in [
        ("T1", "T2", "wr", "x"), ("T1", "T3", "wr", "y"), ("T2", "T3", "rw", "y"),
        ("T3", "T2", "rw", "x"), ("T1", "T3", "ww", "y")])
    return g


def test_depgraph_labels_edges_and_colours_the_cycle():
    cycle = [("T2", "T3", "rw", "y"), ("T3", "T2", "rw", "x")]
    fig = viz.dependency_graph(write_skew(), cycle=cycle)
    shown = texts(fig)
    for label in ("wr x", "wr y", "rw y", "rw x", "ww y"):
        assert label in shown
    edges = gids(fig, "edge:")
    assert len(edges) == 5
    hot = {k for k, a in edges.items() if to_hex(a.get_edgecolor()) == st.CYCLE_COLOR.lower()}
    assert hot == {"edge:T2->T3:rw:y", "edge:T3->T2:rw:x"}
    assert to_hex(edges["edge:T1->T2:wr:x"].get_edgecolor()) == st.DEP_COLORS["wr"].lower()
    assert to_hex(gid(fig, "tx:T2").get_facecolors()[0]) != "#ffffff"
    assert to_hex(gid(fig, "tx:T1").get_facecolors()[0]) == "#ffffff"
    assert any("T2 -rw(y)-> T3 -rw(x)-> T2" in t for t in shown)


def test_depgraph_takes_a_report_a_node_cycle_or_a_plain_digraph():
    report = NS(graph=write_skew(), level="snapshot", anomalies=[],
                allowed=[NS(name="G2-item", txns=["T2", "T3"],
                            cycle=[("T2", "T3", "rw", "y"), ("T3", "T2", "rw", "x")])])
    fig = viz.dependency_graph(report)
    assert any("G2-item (allowed at snapshot)" in t for t in texts(fig))
    fig = viz.dependency_graph(write_skew(), cycle=["T2", "T3"])
    assert len([a for a in gids(fig, "edge:").values()
                if to_hex(a.get_edgecolor()) == st.CYCLE_COLOR.lower()]) == 2
    d = nx.DiGraph()
    d.add_edge("T1", "T2", type="ww", key="k")
    assert "ww k" in texts(viz.dependency_graph(d))
    assert any("empty" in t for t in texts(viz.dependency_graph(nx.MultiDiGraph())))
    with pytest.raises(viz.VizError):
        viz.dependency_graph([1, 2])
    with pytest.raises(viz.VizError, match="anomaly=3"):
        viz.dependency_graph(report, anomaly=3)


def test_depgraph_with_the_real_checker():
    checker = pytest.importorskip("kvlab.checker")
    c = kvlab.Cluster(["n1", "n2"], seed=0)
    commit(c, "n1", x=0, y=0)
    n1, n2 = c.node("n1"), c.node("n2")
    a, b = n1.begin(), n2.begin()
    for n, tx in ((n1, a), (n2, b)):
        n.get(tx, "x")
        n.get(tx, "y")
    n1.put(a, "x", 1)
    n2.put(b, "y", 1)
    assert n1.commit(a) and n2.commit(b)
    report = checker.check(c.history, "serializable")
    fig = viz.dependency_graph(report)
    hot = [a for a in gids(fig, "edge:").values()
           if to_hex(a.get_edgecolor()) == st.CYCLE_COLOR.lower()]
    assert len(hot) == len(report.anomalies[0].cycle) >= 2


# -- state diagrams ---------------------------------------------------------------------------
@pytest.mark.parametrize("role, table, states", [
    ("coordinator", twopc.COORDINATOR_TRANSITIONS, twopc.COORDINATOR_STATES),
    ("participant", twopc.PARTICIPANT_TRANSITIONS, twopc.PARTICIPANT_STATES)])
def test_state_diagram_has_one_box_per_state_and_arrow_per_transition(role, table, states):
    fig = viz.state_diagram(role)
    assert {k.split(":")[1] for k in gids(fig, "state:")} == set(states) == set(states_of(table))
    moves = {f"transition:{s}->{t}" for s, m in table.items() for t in m.values() if s != t}
    assert set(gids(fig, "transition:")) == moves
    for s, m in table.items():
        loops = [e for e, t in m.items() if t == s]
        if loops:
            assert gid(fig, f"loops:{s}").get_text() == "↻ " + ", ".join(loops)
    shown = " ".join(texts(fig))
    for m in table.values():
        for event in m:
            assert event in shown


def test_state_diagram_follows_the_engine_table(monkeypatch):
    monkeypatch.setitem(twopc.COORDINATOR_TRANSITIONS, "PARKED", {"wake": "PREPARING"})
    fig = viz.state_diagram("coordinator")
    assert "state:PARKED" in gids(fig, "state:")
    assert "transition:PARKED->PREPARING" in gids(fig, "transition:")


def test_state_diagram_highlights_where_live_transactions_are(small):
    states = small.states()
    live = {s for (n, r, t), s in states.items() if r == "coordinator" and s != "COMMITTED"}
    assert live == {"PREPARING", "COMMITTING"}  # T1 waits for acks, T3 for votes
    fig = viz.state_diagram("coordinator", small)
    boxes = gids(fig, "state:")
    assert all(b.get_linewidth() == (3 if k[6:] in live else 1) for k, b in boxes.items())
    tx = next(t for (n, r, t), s in states.items() if s == "PREPARING")
    assert gid(fig, "now:PREPARING").get_text() == f"{tx}@n1"
    assert "entry:COMMITTING" in gids(fig, "entry:")  # recovery enters the table there
    fig = viz.state_diagram("participant", small, tx="T1")
    assert gid(fig, "now:COMMITTED").get_text() == "T1@n1 T1@n2 T1@n3"
    with pytest.raises(viz.VizError, match="role"):
        viz.state_diagram("oracle")


# -- WAL view ---------------------------------------------------------------------------------
def wal_rows(fig: Figure, what: str) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == f"wal:{what}"]


def test_wal_view_splits_durable_and_unflushed(small):
    commit(small, "n2", z=3)
    small.run()  # the acks arrive: n2 logs END, which nothing forces
    wal = small.wal("n2")
    durable, _ = decode(wal.disk.read_log())
    fig = viz.wal_view(small, "n2")
    assert len(wal_rows(fig, "durable")) == len(durable)
    assert len(wal_rows(fig, "unflushed")) == len(wal.unflushed) >= 1
    assert f"flushed_lsn = {wal.flushed_lsn}" in texts(fig)
    assert wal_rows(fig, "unflushed")[0].startswith(f"lsn {wal.unflushed[0].lsn}")


def test_wal_view_is_read_only_and_shows_torn_tail_and_checkpoint(small):
    small.run()
    assert small.wal("n1").unflushed  # END records nobody forced
    small.crash("n1", torn=True)
    before = small.wal("n1").disk.read_log()
    fig = viz.wal_view(small, "n1")
    assert small.wal("n1").disk.read_log() == before  # nothing cut off
    assert any(t.startswith("torn tail") for t in wal_rows(fig, "torn"))
    assert any("crashed" in t for t in texts(fig))
    small.checkpoint("n2")
    fig = viz.wal_view(small, "n2")
    assert wal_rows(fig, "checkpoint")[0].startswith("checkpoint: covers lsn")


def test_wal_view_empty(empty):
    assert any("empty log" in t for t in texts(viz.wal_view(empty, "n3")))


# -- animation --------------------------------------------------------------------------------
def stepped_commit() -> tuple[kvlab.Cluster, str, int]:
    """Chapter 4's commit, stepped by hand: the cluster, the transaction, how many steps."""
    c = kvlab.Cluster(NODES, seed=0)
    tx = start(c, "n1", x=1)
    steps = 0
    while not c.quiet:
        c.step()
        steps += 1
    return c, tx, steps


def test_animation_one_frame_per_step_flushes_included():
    c, tx, steps = stepped_commit()
    assert steps == 21  # what chapter 4 walks through
    anim = viz.animate(c, tx=tx, interval=50)
    assert len(anim.scenes) == len(anim.steps) == steps
    kinds = [e.kind for e in anim.steps]
    assert kinds.count("flush") == 7 and kinds.count("deliver") == 14
    assert kinds[3:6] == ["flush"] * 3  # the PREPARE records made durable, then the votes
    vote = anim.scenes[3]
    assert any(f.kind == "VOTE_YES" for f in vote.in_flight)
    assert not any(f.kind == "VOTE_YES" for f in anim.scenes[2].in_flight)  # log first
    assert [s.step for s in anim.scenes] == list(range(1, 22))


def test_animation_frames_are_the_steps_of_the_trace(empty):
    commit(empty, "n1", x=1)
    empty.run()
    anim = viz.animate(empty, interval=50)
    frames = frame_indices(empty.trace)
    assert frames == sorted(step_indices(empty.trace)
                            + [i for i, e in enumerate(empty.trace) if e.kind == "flush"])
    assert len(anim.scenes) == len(frames) > 10
    assert [e.seq for e in anim.steps] == [empty.trace[i].seq for i in frames]
    assert {e.kind for e in anim.steps} <= set(FRAME_KINDS)
    assert "ts-retry" not in " ".join(str(e) for e in anim.steps)  # no-op timers skipped


def test_animation_player_shows_its_first_frame_without_javascript():
    c, tx, steps = stepped_commit()
    anim = viz.animate(c, tx=tx, interval=900)
    page = anim.to_jshtml()
    assert 'class="kvlab-anim"' in anim._repr_html_()  # a cell's value shows the same player
    outside = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    img = re.search(r'<img id="kvlab_anim_\w+-img" src="(data:image/png;base64,[^"]+)" '
                    r'width="(\d+)" height="(\d+)"', outside)
    assert img, "the first frame must be the <img>'s own src, outside any script"
    first = base64.b64decode(img.group(1).split(",", 1)[1])
    assert first == anim.frames_png()[0] and first.startswith(b"\x89PNG")
    assert (int(img.group(2)), int(img.group(3))) == (630, 500)  # laid out before it loads
    assert page.count("data:image/png") == steps  # each frame once: 0 in the img, rest in JS
    assert f'max="{steps - 1}"' in page and f"step 1 of {steps}" in outside
    assert "https://" not in page and "font-awesome" not in page  # works offline
    assert min(int(px) for px in re.findall(r"font-size:\s*(\d+)px", page)) >= 12
    assert outside.count("<button") == 5 and all(
        w in outside for w in ("First</button>", "Back</button>", ">Play", "Next &rsaquo;"))


def test_animation_replay_matches_the_live_cluster(faulty):
    scenes = replay_steps(faulty.trace, faulty.ids)
    last = scenes[-1]
    live = viz.scene_of(faulty)
    assert [f.id for f in last.in_flight] == [f.id for f in live.in_flight]
    assert last.up == live.up and last.groups == live.groups
    crash = next(s for s in scenes if s.event.kind == "crash")
    assert crash.up["n2"] is False and not any(k[0] == "n2" for k in crash.states)
    part = next(s for s in scenes if s.event.kind == "partition")
    assert part.groups["n1"] != part.groups["n2"] == part.groups["n3"]


def test_animation_filters_and_errors(faulty, empty):
    tx = faulty.history.committed[-1].id
    anim = viz.animate(faulty.trace, tx=tx, last=5)
    assert len(anim.scenes) == 5
    assert all(e.tx == tx or e.kind in ("crash", "restart", "partition", "heal", "flush")
               for e in anim.steps)
    assert anim.scenes[-1].step == 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del anim
        gc.collect()
    assert not caught  # no "deleted without rendering" noise: these never go through pyplot
    with pytest.raises(viz.VizError, match="nothing to animate"):
        viz.animate(empty)
