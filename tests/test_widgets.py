"""ClusterExplorer: every control changes the cluster exactly as its label says (headless)."""

from __future__ import annotations

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
    assert "▶" in ex.log.value


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
