"""ClusterExplorer: every control changes the cluster exactly as its label says (headless)."""

from __future__ import annotations

import base64
import re

import matplotlib
import pytest

import kvlab
from kvlab.widgets import ClusterExplorer, FormError, factory_for, parse_keys, parse_writes

matplotlib.use("Agg")  # kvlab.viz never imports pyplot, so this may come last

NODES = ["n1", "n2", "n3"]
PNG = b"\x89PNG"


@pytest.fixture
def ex() -> ClusterExplorer:
    return ClusterExplorer(kvlab.Cluster(NODES, seed=0))


def begin_commit(ex: ClusterExplorer, node: str = "n1", writes: str = "x=1") -> None:
    ex.tx_node.value = node
    ex.tx_reads.value = ""
    ex.tx_writes.value = writes
    ex.tx_button.click()
    assert ex.last_error is None, ex.last_error


def test_buttons_have_stable_labels(ex):
    labels = {b.description for b in (ex.step_button, ex.run_button, ex.reset_button,
                                      ex.deliver_button, ex.drop_button, ex.crash_button,
                                      ex.restart_button, ex.partition_button, ex.heal_button)}
    assert labels == {"Step", "Run", "Reset", "Deliver", "Drop", "Crash", "Restart",
                      "Partition", "Heal"}
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    for image in (ex.cluster_image, ex.sequence_image, ex.versions_image):
        assert bytes(image.value).startswith(PNG)


def test_transaction_form_begins_reads_writes_and_commits_async(ex):
    ex.tx_node.value = "n2"
    ex.tx_isolation.value = "serializable"
    ex.tx_reads.value = "z"
    ex.tx_writes.value = "x=1, y=hello, l=[1, 2]"
    ex.tx_button.click()
    assert ex.last_error is None
    c = ex.cluster
    (txn,) = list(c.history)
    assert (txn.node, txn.isolation, txn.status) == ("n2", "serializable", "active")
    assert [(o.kind, o.key, o.value) for o in txn.ops] == [
        ("r", "z", None), ("w", "x", 1), ("w", "y", "hello"), ("w", "l", [1, 2])]
    prepares = [e for e in c.pending() if e.kind == "PREPARE"]
    assert {e.dst for e in prepares} == set(NODES) and prepares[0].tx == txn.id
    assert ex.handles[-1].tx == txn.id and not ex.handles[-1].done
    assert txn.id in ex.status.value
    assert [label for label, _ in ex.messages.options] == [str(e) for e in c.pending()]


def test_step_advances_exactly_one_event(ex):
    twin = kvlab.Cluster(NODES, seed=0)
    begin_commit(ex)
    n = twin.node("n1")
    tx = n.begin()
    n.put(tx, "x", 1)
    n.commit_async(tx)
    before = ex.sequence_image.value
    for _ in range(5):
        ex.step_button.click()
        twin.step()
        assert ex.cluster.trace.digest() == twin.trace.digest()
    assert ex.sequence_image.value != before
    labels = [label for label, _ in ex.log.options]
    assert labels[-1].startswith("▶") and not labels[0].startswith("▶")
    assert len(ex.steps) == 6 and ex.steps[0] == "T1 on n1" and ex.steps[-1] == "step"


def test_step_when_quiet_says_so(ex):
    ex.step_button.click()
    assert len(ex.cluster.trace) == 0
    assert "quiet" in ex.status.value


def test_run_goes_until_quiet(ex):
    begin_commit(ex)
    ex.run_button.click()
    assert ex.cluster.pending() == [] and ex.handles[-1].committed
    assert ex.messages.options == ()


def test_deliver_and_drop_the_chosen_message(ex):
    begin_commit(ex)
    c = ex.cluster
    chosen = c.pending()[-1].id  # not the one the cluster would deliver next
    ex.messages.value = chosen
    ex.deliver_button.click()
    assert chosen not in [e.id for e in c.pending()]
    last_msg = [e for e in c.trace if e.kind in ("deliver", "drop")][-1]
    assert (last_msg.kind, last_msg.data["id"]) == ("deliver", chosen)
    victim = c.pending()[0].id
    ex.messages.value = victim
    ex.drop_button.click()
    assert victim not in [e.id for e in c.pending()]
    assert c.trace[-1].kind == "drop" and c.trace[-1].data["id"] == victim
    assert c.trace[-1].data["reason"] == "dropped by the user"


def test_deliver_with_nothing_selected_reports_instead_of_raising(ex):
    assert ex.messages.value is None
    ex.deliver_button.click()
    assert "no message selected" in ex.last_error
    assert "no message selected" in ex.status.value
    with pytest.raises(kvlab.KvlabError):
        ex.deliver()  # from Python, errors raise


def test_crash_and_restart(ex):
    begin_commit(ex)
    ex.node_picker.value = "n2"
    ex.crash_button.click()
    assert not ex.cluster.up("n2") and ex.cluster.trace[-1].kind == "crash"
    ex.restart_button.click()
    assert ex.cluster.up("n2")
    assert any(e.kind == "restart" and e.node == "n2" for e in ex.cluster.trace)


def test_torn_crash_and_restart_report_the_torn_tail(ex):
    begin_commit(ex)
    ex.run_button.click()  # END records are left unflushed
    assert ex.cluster.wal("n1").unflushed
    ex.node_picker.value = "n1"
    ex.torn.value = True
    ex.crash_button.click()
    assert ex.cluster.trace[-1].data["torn"] is True
    ex.restart_button.click()
    assert ex.cluster.up("n1") and "torn tail" in ex.status.value


def test_partition_and_heal(ex):
    ex.partition_group.value = ("n1",)
    ex.partition_button.click()
    groups = ex.cluster.network.groups
    assert groups["n1"] != groups["n2"] == groups["n3"]
    ex.heal_button.click()
    assert ex.cluster.network.groups == {}
    ex.partition_group.value = ()
    ex.partition_button.click()
    assert "one side" in ex.last_error and ex.cluster.network.groups == {}


def test_play_steps_through_the_python_observer(ex):
    begin_commit(ex)
    twin = len(ex.cluster.trace)
    ex.speed.value = 300
    assert ex.play.interval == 300
    ex.play.value = 1  # what the browser's Play widget does on each tick
    steps = len(ex.cluster.trace) - twin
    assert steps >= 1
    ex.play.playing = True
    ex.play.value = 1000  # a big jump runs to the end at most 50 steps at a time
    ex.play.value = 2000
    assert ex.cluster.pending() == []
    assert ex.play.playing is False and "quiet" in ex.status.value


def test_reset_restores_the_initial_state_deterministically(ex):
    def script() -> str:
        begin_commit(ex, "n2", "x=1")
        for _ in range(4):
            ex.step_button.click()
        ex.node_picker.value = "n3"
        ex.crash_button.click()
        ex.run_button.click()
        return ex.cluster.trace.digest()

    first_cluster = ex.cluster
    first = script()
    ex.play.value = 5
    ex.reset_button.click()
    assert ex.cluster is not first_cluster
    assert len(ex.cluster.trace) == 0 and ex.cluster.pending() == []
    assert all(ex.cluster.up(n) for n in NODES) and ex.handles == []
    assert ex.play.value == 0
    assert script() == first


def test_versions_panel_follows_the_chosen_node(ex):
    begin_commit(ex)
    ex.run_button.click()
    ex.node_picker.value = "n3"
    ex.crash_button.click()
    before = ex.versions_image.value
    ex.versions_node.value = "n3"
    assert ex.versions_image.value != before and bytes(ex.versions_image.value).startswith(PNG)


def test_factory_is_used_for_reset_and_data_dirs_need_one(tmp_path):
    made = []

    def make() -> kvlab.Cluster:
        c = kvlab.Cluster(["a", "b"], seed=7)
        made.append(c)
        return c

    ex = ClusterExplorer(factory=make)
    assert ex.cluster is made[0] and list(ex.node_picker.options) == ["a", "b"]
    ex.reset()
    assert ex.cluster is made[1]
    disk = kvlab.Cluster(NODES, data_dir=tmp_path)
    with pytest.raises(kvlab.KvlabError, match="factory="):
        factory_for(disk)
    disk.close()
    with pytest.raises(kvlab.KvlabError, match="give a cluster or a factory"):
        ClusterExplorer()


def test_form_parsing():
    assert parse_keys(" x, y z ") == ["x", "y", "z"]
    assert parse_writes("x=1, y=hello, z=[1, 2], s='a b', d={\"k\": 1}") == {
        "x": 1, "y": "hello", "z": [1, 2], "s": "a b", "d": {"k": 1}}
    assert parse_writes("") == {}
    with pytest.raises(FormError, match="key=value"):
        parse_writes("x")
    ex = ClusterExplorer(kvlab.Cluster(["n1"], seed=0))
    ex.tx_reads.value = ex.tx_writes.value = ""
    ex.tx_button.click()
    assert "at least one" in ex.last_error and len(ex.cluster.history) == 0


# -- history: Reset, Back and the History slider -----------------------------------------------
def digests_along(ex: ClusterExplorer, actions) -> list[str]:
    """Take each action (a callable on ex), return the trace digest after each."""
    out = []
    for act in actions:
        act()
        assert ex.last_error is None, ex.last_error
        out.append(ex.cluster.trace.digest())
    return out


def setup_cluster() -> kvlab.Cluster:
    """A scenario made outside the explorer: T1 committing, its PREPAREs in flight."""
    c = kvlab.Cluster(NODES, seed=3)
    n1 = c["n1"]
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.commit_async(tx)
    return c


def test_reset_replays_the_scenario_and_puts_every_control_back():
    c = setup_cluster()
    scenario = c.journal
    at_start = c.trace.digest()
    ex = ClusterExplorer(c)
    begin_commit(ex, "n2", "y=2")
    ex.partition_group.value = ("n1",)
    ex.partition_button.click()
    ex.node_picker.value = ex.tx_node.value = ex.versions_node.value = "n3"
    ex.crash_button.click()
    ex.torn.value = True
    ex.tx_writes.value = "z=9"
    ex.run_button.click()
    ex.history.value = 2
    ex.reset_button.click()
    assert ex.last_error is None
    fresh = kvlab.Cluster.replay(c.options, scenario)
    assert ex.cluster is not c and ex.cluster.trace.digest() == fresh.trace.digest() == at_start
    assert [e.kind for e in ex.cluster.pending()] == ["PREPARE"] * 3  # the demo transaction
    assert ex.partition_group.value == () and ex.torn.value is False
    assert ex.node_picker.value == ex.tx_node.value == ex.versions_node.value == "n1"
    assert ex.tx_writes.value == "" and ex.handles == []
    assert (ex.history.value, ex.history.max, ex.position, ex.steps) == (0, 0, 0, [])
    assert ex.back_button.disabled and ex.history.disabled
    assert ex.messages.value == ex.cluster.pending()[0].id
    assert "the start" in ex.history_label.value and "reset" in ex.status.value


def test_what_the_setup_cell_did_before_showing_the_explorer_is_the_start():
    ex = ClusterExplorer(kvlab.Cluster(NODES, seed=1))
    handle = ex.start_transaction("n1", writes={"x": 1, "y": 2})  # the tour's demo
    ex._repr_mimebundle_()  # what Jupyter does when the cell shows it
    at_start = ex.cluster.trace.digest()
    assert ex.steps == [] and ex.handles == [handle]
    ex.run_button.click()
    assert handle.committed and len(ex.steps) > 10
    ex.reset_button.click()
    assert ex.cluster.trace.digest() == at_start
    assert [e.kind for e in ex.cluster.pending()] == ["PREPARE"] * 3
    assert [h.tx for h in ex.handles] == [handle.tx] and not ex.handles[0].done
    ex.back_button.click()
    assert "nothing to go back to" in ex.last_error


def test_back_undoes_one_step_and_step_again_gives_the_same_trace(ex):
    begin_commit(ex)
    ex.step_button.click()
    ex.step_button.click()
    before = ex.cluster.trace.digest()
    ex.step_button.click()
    after = ex.cluster.trace.digest()
    assert before != after
    ex.back_button.click()
    assert ex.last_error is None and ex.cluster.trace.digest() == before
    assert "undid step" in ex.status.value
    ex.step_button.click()
    assert ex.cluster.trace.digest() == after
    assert ex.history.max == len(ex.steps) == 4  # the undone step was replaced, not added


def test_back_undoes_run_one_event_at_a_time():
    twin = setup_cluster()
    ex = ClusterExplorer(setup_cluster())
    ex.run_button.click()
    n = len(ex.steps)
    assert n > 10 and set(ex.steps) == {"step (Run)"}
    for _ in range(n - 1):
        twin.step()
    ex.back_button.click()
    assert ex.cluster.trace.digest() == twin.trace.digest()
    assert ex.history.value == n - 1 and ex.history.max == n


def test_back_walks_through_every_kind_of_action(ex):
    def node(name):
        return lambda: setattr(ex.node_picker, "value", name)

    chosen = []

    def pick(i):
        chosen.append(ex.cluster.pending()[i].id)
        ex.messages.value = chosen[-1]

    actions = [
        lambda: begin_commit(ex, "n1", "x=1"),
        ex.step_button.click,
        lambda: (pick(-1), ex.deliver_button.click()),
        lambda: (pick(0), ex.drop_button.click()),
        lambda: (node("n2")(), ex.crash_button.click()),
        lambda: (setattr(ex.partition_group, "value", ("n3",)), ex.partition_button.click()),
        ex.heal_button.click,
        lambda: (node("n2")(), ex.restart_button.click()),
        ex.run_button.click,
    ]
    start = ex.cluster.trace.digest()
    seen = digests_along(ex, actions)
    n = len(ex.steps)
    assert ex.steps[:8] == ["T1 on n1", "step", f"deliver #{chosen[0]}", f"drop #{chosen[1]}",
                            "crash n2", "partition n3 | n1 n2", "heal", "restart n2"]
    run_steps = n - 8
    for _ in range(run_steps):
        ex.back_button.click()
    for expected in reversed(seen[:-1]):
        assert ex.cluster.trace.digest() == expected
        ex.back_button.click()
    assert ex.position == 0 and ex.cluster.trace.digest() == start
    assert ex.back_button.disabled and ex.last_error is None
    ex.history.value = n  # the present is still there
    assert ex.cluster.trace.digest() == seen[-1]


def test_the_history_slider_shows_the_cluster_after_k_steps(ex):
    begin_commit(ex)
    present = ex.cluster
    seen = digests_along(ex, [ex.step_button.click] * 6)
    lengths = [len(ex.cluster.trace)]
    assert (ex.history.min, ex.history.max, ex.history.value) == (0, 7, 7)
    assert "step 7 of 7" in ex.history_label.value
    ex.history.value = 3
    assert ex.cluster is not present and ex.position == 3
    assert ex.cluster.trace.digest() == seen[1]  # step 3 = the transaction and two steps
    assert "step 3 of 7: step" in ex.history_label.value
    assert "looking back" in ex.history_label.value and "steps 4–7" in ex.history_label.value
    assert ex.status.value.endswith(f"{len(ex.cluster.trace)} events")
    assert len(ex.cluster.trace) < lengths[0]
    ex.history.value = 7
    assert ex.cluster is present and ex.cluster.trace.digest() == seen[-1]
    assert "looking back" not in ex.history_label.value


def test_a_new_action_while_looking_back_discards_the_future(ex):
    begin_commit(ex)
    seen = digests_along(ex, [ex.step_button.click] * 4)
    ex.history.value = 2
    ex.step_button.click()  # the same step again: the same trace (determinism)
    assert ex.cluster.trace.digest() == seen[1] and ex.history.max == 3
    ex.history.value = 1
    ex.messages.value = ex.cluster.pending()[-1].id  # not the one Step would deliver
    ex.deliver_button.click()
    assert ex.history.max == 2 and ex.steps[-1].startswith("deliver #")
    assert ex.cluster.trace.digest() != seen[0]
    ex.history.value = 0
    ex.history.value = 2
    assert ex.steps[-1].startswith("deliver #") and ex.cluster.trace[-1].kind != "flush"


def test_play_while_looking_back_continues_from_there(ex):
    begin_commit(ex)
    seen = digests_along(ex, [ex.step_button.click] * 3)
    ex.history.value = 1
    ex.play.value = 1  # one tick
    assert ex.cluster.trace.digest() == seen[0] and ex.history.max == 2


def test_calls_made_from_python_become_a_step(ex):
    begin_commit(ex)
    ex.cluster.step()  # explorer.cluster is an ordinary cluster
    ex.cluster.step()
    ex.step_button.click()
    assert ex.steps == ["T1 on n1", "calls from Python", "step"]
    after = ex.cluster.trace.digest()
    ex.back_button.click()
    ex.back_button.click()
    ex.history.value = 3
    assert ex.cluster.trace.digest() == after


def test_replay_matches_cluster_replay_and_keeps_handles(ex):
    from kvlab.widgets import replay

    begin_commit(ex, "n1", "x=1")
    ex.node_picker.value = "n2"
    ex.crash_button.click()
    ex.partition({"n1"})
    ex.run()
    ex.heal()
    ex.restart("n2")
    with pytest.raises(kvlab.KvlabError):
        ex.cluster.node("n1").put("T9", "k", 1)  # fails: journaled, skipped by both replays
    ex.run()
    journal = ex.cluster.journal
    mine, handles = replay(ex.cluster.options, journal)
    theirs = kvlab.Cluster.replay(ex.cluster.options, journal)
    assert mine.trace.digest() == theirs.trace.digest() == ex.cluster.trace.digest()
    assert [h.tx for h in handles] == ["T1"]


def test_data_dir_clusters_reset_with_the_factory_and_have_no_back(tmp_path):
    runs = iter(range(100))

    def make() -> kvlab.Cluster:
        return kvlab.Cluster(NODES, data_dir=tmp_path / str(next(runs)))

    ex = ClusterExplorer(factory=make)
    begin_commit(ex)
    ex.step_button.click()
    assert ex.back_button.disabled and ex.history.disabled
    assert "on disk" in ex.history_label.value
    with pytest.raises(kvlab.KvlabError, match="cannot be replayed in memory"):
        ex.back()
    ex.reset_button.click()
    assert ex.last_error is None and len(ex.cluster.trace) == 0
    ex._repr_mimebundle_()  # nothing to fold in, and nothing breaks
    ex.cluster.close()
    disk = kvlab.Cluster(NODES, data_dir=tmp_path / "other")
    with pytest.raises(kvlab.KvlabError, match="cannot be replayed in memory"):
        ClusterExplorer(disk)
    disk.close()


# -- the inspector -----------------------------------------------------------------------------
def race(ex: ClusterExplorer) -> None:
    """T1 on n1 and T2 on n2 both write x: T2's PREPAREs meet T1's locks and get VOTE_NO."""
    begin_commit(ex, "n1", "x=1, note=hello")
    begin_commit(ex, "n2", "x=2")
    for _ in range(6):
        ex.step_button.click()


def test_inspector_shows_a_prepares_writes_and_reads(ex):
    ex.tx_node.value = "n1"
    ex.tx_isolation.value = "serializable"  # so the PREPAREs carry the reads to validate
    ex.tx_reads.value = "r"
    ex.tx_writes.value = "x=1, y=hello, l=[1, 2, 3, 4, 5, 6, 7, 8, 9]"
    ex.tx_button.click()
    prepare = next(e for e in ex.cluster.pending() if e.kind == "PREPARE" and e.dst == "n2")
    ex.messages.value = prepare.id
    text = ex.inspector.value
    assert f"#{prepare.id} n1 → n2 PREPARE T1" in text
    assert "x=1, y=&#x27;hello&#x27;, l=[1, 2, 3, 4, 5, 6, … +3 more]" in text
    assert ">reads</td>" in text and ">r</td>" in text and ">n1, n2, n3</td>" in text
    assert "in flight" in text and "{" not in text.split("</table>")[0].split("writes")[1][:40]


def test_inspector_shows_a_vote_nos_reason_in_flight_and_from_the_log(ex):
    race(ex)
    no = next(e for e in ex.cluster.pending() if e.kind == "VOTE_NO")
    ex.messages.value = no.id
    assert "votes no on T2: key &#x27;x&#x27; is locked by prepared transaction T1" in \
        ex.inspector.value
    assert ">reason</td>" in ex.inspector.value
    ex.run_button.click()  # delivered now: the log still knows its body
    seq = next(e.seq for e in ex.cluster.trace
               if e.kind == "deliver" and e.data["id"] == no.id)
    ex.log_lines = 500
    ex.refresh()
    ex.log.value = seq
    assert "is locked by prepared transaction T1" in ex.inspector.value
    assert "delivered at t=" in ex.inspector.value


def test_inspector_shows_a_commits_timestamp_and_a_wal_record(ex):
    begin_commit(ex, "n1", "x=1")
    ex.run_button.click()
    commit = next(e for e in ex.cluster.trace if e.kind == "deliver" and e.data["kind"] ==
                  "COMMIT")
    ts = ex.handles[0].commit_ts
    html = ex.inspect_event(commit.seq)
    assert f"committed at ts {ts}" in html and ">commit_ts</td>" in html
    rec = next(e for e in ex.cluster.trace if e.kind == "wal" and e.data["type"] == "PREPARE"
               and e.node == "n2")
    html = ex.inspect_event(rec.seq)
    assert "n2 log · lsn 1 PREPARE T1" in html and "prepared (coordinator n1): x=1" in html
    assert "durable" in html
    ex.node_picker.value = "n1"
    end = [e for e in ex.cluster.trace if e.kind == "wal" and e.data["type"] == "END"][-1]
    assert "not flushed yet" in ex.inspect_event(end.seq)
    ex.crash_button.click()
    assert "lost in a crash" in ex.inspect_event(end.seq)


def test_compact_values():
    from kvlab.widgets import compact

    assert compact(list(range(20))) == "0, 1, 2, 3, 4, 5, … +14 more"
    assert compact({"a": [1, "b"]}) == "a=[1, 'b']"
    assert compact([]) == "none" and compact("x" * 500).endswith("…")


def test_html_text_is_at_least_12px(ex):
    import re

    race(ex)
    ex.messages.value = ex.cluster.pending()[0].id
    ex.history.value = 2
    parts = [ex.inspector.value, ex.history_label.value, ex.widget.children[0].value,
             ex.inspect_event(len(ex.cluster.trace) - 1)]
    sizes = [int(px) for part in parts for px in re.findall(r"font-size:\s*(\d+)px", part)]
    assert sizes and min(sizes) >= 12


def test_a_stored_notebook_shows_a_picture_of_the_explorer_not_its_widget_repr(ex):
    begin_commit(ex)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # a live page: the widget
    assert "VBox(" not in bundle["text/plain"]
    assert bundle["text/plain"].startswith("ClusterExplorer over 3 nodes (n1, n2, n3)")
    assert "3 message(s) in flight" in bundle["text/plain"]
    page = bundle["text/html"]
    # without a widget manager: the cluster and sequence panels as they are, and what is in flight
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert [base64.b64decode(p) for p in pngs] == [ex.cluster_image.value,
                                                   ex.sequence_image.value]
    assert page.count("<li>") == 3 and "PREPARE" in page
    assert "run the notebook" in page


def test_the_legend_wraps_between_entries_never_between_a_swatch_and_its_name():
    from kvlab.viz import style as st
    page = st.legend_html()
    entries = re.findall(r"<span style='white-space:nowrap'><span [^>]*></span>([^<]+)</span>",
                         page)
    assert set(st.KIND_COLORS) <= set(entries)
    assert "ring: coordinating" in entries and "grey: crashed" in entries


def test_a_batch_message_says_what_it_carries_and_for_whom():
    from kvlab.batching import pack
    from kvlab.messages import PREPARE, TS_REQUEST, TSO, Message
    from kvlab.widgets import message_html, message_summary

    inside = [Message("n1", "n2", PREPARE, "T1", {}), Message("n1", "n2", PREPARE, "T2", {}),
              Message("n1", TSO, TS_REQUEST, None, {})]
    batch = pack("n1", "n2", inside)
    assert message_summary(batch.kind, "n1", "n2", None, batch.body).startswith(
        "n1 sends n2 3 messages in one: PREPARE T1, PREPARE T2, TS_REQUEST")
    assert "#9 n1 → n2 BATCH (T1 T2)" in message_html(9, batch, "in flight")
