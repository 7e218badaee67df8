"""The public API: basic operations, values, errors, placement, initialize, data_dir."""

from __future__ import annotations

import pytest
from conftest import NODES, key_owned_by, read, write

import kvlab
from kvlab.history import History, Txn


# -- basic operations -------------------------------------------------------------------------
def test_put_commit_then_read_on_every_node(cluster):
    tx = write(cluster, "n1", x=1)
    assert tx.startswith("T")
    for n in NODES:
        assert read(cluster, n, "x") == 1


def test_missing_key_reads_none(cluster):
    assert read(cluster, "n2", "never-written") is None


def test_put_get_overwrite_delete_within_one_transaction(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    assert n1.get(tx, "x") is None
    n1.put(tx, "x", 1)
    assert n1.get(tx, "x") == 1
    n1.put(tx, "x", 2)
    assert n1.get(tx, "x") == 2
    n1.delete(tx, "x")
    assert n1.get(tx, "x") is None
    n1.put(tx, "x", 3)
    assert n1.get(tx, "x") == 3
    assert n1.commit(tx) is True
    assert read(cluster, "n3", "x") == 3


def test_last_write_in_a_transaction_wins(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", "a")
    n1.delete(tx, "x")
    assert n1.commit(tx)
    assert read(cluster, "n2", "x") is None


def test_delete_committed_key(cluster):
    write(cluster, "n1", x=1)
    n2 = cluster.node("n2")
    tx = n2.begin()
    assert n2.get(tx, "x") == 1
    n2.delete(tx, "x")
    assert n2.commit(tx)
    for n in NODES:
        assert read(cluster, n, "x") is None
    write(cluster, "n3", x="again")
    assert read(cluster, "n1", "x") == "again"


def test_delete_of_a_missing_key_commits(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.delete(tx, "nothing")
    assert n1.commit(tx)
    assert read(cluster, "n2", "nothing") is None


def test_rollback_discards_writes(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.rollback(tx)
    assert read(cluster, "n1", "x") is None
    out = n1.outcome(tx)
    assert out.status == "aborted" and not out.committed
    assert "rolled back" in str(out)
    assert cluster.history[tx].status == "aborted"


def test_transaction_ids_are_unique_across_nodes(cluster):
    ids = [cluster.node(n).begin() for n in NODES * 3]
    assert len(set(ids)) == len(ids)


def test_outcome_of_a_committed_transaction(cluster):
    tx = write(cluster, "n1", x=1)
    out = cluster.node("n1").outcome(tx)
    assert isinstance(out, kvlab.Outcome)
    assert out.tx == tx and out.committed and out.status == "committed"
    assert isinstance(out.commit_ts, int) and out.commit_ts > cluster.history[tx].start_ts
    assert str(out).startswith(f"{tx}: ")
    cluster.run()
    assert cluster.node("n1").outcome(tx).committed


def test_outcome_of_an_active_transaction(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    out = n1.outcome(tx)
    assert out.status == "active" and out.commit_ts is None and not out.committed


def test_read_only_commit_is_committed_without_commit_ts(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.get(tx, "x")
    assert n1.commit(tx) is True
    out = n1.outcome(tx)
    assert out.committed and "read-only" in out.reason


def test_commit_async_handle(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    h = n1.commit_async(tx)
    assert isinstance(h, kvlab.CommitHandle)
    assert h.tx == tx and h.node == "n1"
    assert h.done is False and h.committed is None
    assert "running" in repr(h)
    assert n1.outcome(tx).status == "committing"
    assert h.wait() is True
    assert h.done and h.committed is True
    assert "committed" in repr(h)
    assert read(cluster, "n2", "x") == 1


def test_commit_async_of_a_read_only_transaction_is_done_at_once(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    h = n1.commit_async(tx)
    assert h.done and h.committed is True
    assert cluster.pending() == []


def test_history_records_operations_in_program_order(cluster):
    write(cluster, "n1", x=1)
    n2 = cluster.node("n2")
    tx = n2.begin(isolation="serializable")
    n2.get(tx, "x")
    n2.put(tx, "y", [1])
    n2.delete(tx, "x")
    n2.get(tx, "y")
    assert n2.commit(tx)
    h = cluster.history
    assert isinstance(h, History) and tx in h
    t = h[tx]
    assert isinstance(t, Txn)
    assert (t.id, t.node, t.isolation, t.status) == (tx, "n2", "serializable", "committed")
    assert t.commit_ts > t.start_ts
    assert [(o.kind, o.key, o.value, o.deleted) for o in t.ops] == [
        ("r", "x", 1, False), ("w", "y", [1], False), ("w", "x", None, True),
        ("r", "y", [1], False)]
    assert t.ops[0].writer == h.committed[0].id
    assert t.ops[3].writer == tx  # a read of its own write
    assert len(h.committed) == 2


def test_node_handles(cluster):
    assert cluster.node("n1") is cluster["n1"]
    assert [n.id for n in cluster.nodes] == NODES
    assert cluster.node("n2").up and cluster.up("n2")
    cluster.crash("n2")
    assert not cluster.node("n2").up and not cluster.up("n2")
    assert "crashed" in repr(cluster.node("n2"))
    cluster.restart("n2")
    assert cluster.up("n2")


def test_step_run_pending_deliver_drop(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.commit_async(tx)
    env = cluster.pending()
    assert [(e.kind, e.src, e.dst, e.tx) for e in env] == [("PREPARE", "n1", n, tx)
                                                            for n in NODES]
    assert all(isinstance(e.id, int) for e in env)
    got = cluster.deliver(env[2].id)
    assert [(e.kind, e.data.get("kind")) for e in got][0] == ("deliver", "PREPARE")
    assert env[2].id not in [e.id for e in cluster.pending()]
    cluster.drop(env[1].id)
    assert cluster.trace[-1].kind == "drop" and cluster.trace[-1].data["id"] == env[1].id
    events = cluster.step()
    assert len(events) >= 1 and events[0].kind in ("deliver", "flush")
    assert cluster.run() > 0
    assert cluster.pending() == []
    assert cluster.run() == 0
    # n2 never got its PREPARE: the coordinator timed out waiting for the vote
    out = n1.outcome(tx)
    assert out.status == "aborted" and "n2" in out.reason


def test_trace_views(cluster):
    tx = write(cluster, "n1", x=1)
    cluster.run()
    t = cluster.trace
    assert all(isinstance(line, str) for line in t.lines())
    assert len(t.lines()) == len(t)
    assert [e.seq for e in t] == list(range(len(t)))
    prep = t.filter(kind="send", tx=tx)
    assert {e.data["kind"] for e in prep} >= {"PREPARE", "VOTE_YES", "COMMIT", "ACK"}
    assert all(e.node == "n2" for e in t.filter(node="n2"))
    assert len(t.digest()) == 64


# -- values -----------------------------------------------------------------------------------
VALUES = [0, -7, 2**70, 3.5, -0.25, 1e300, "", "héllo ✓", True, False, [], {},
          [1, "a", None, [2.5, {"k": False}]], {"a": {"b": [1, 2, {"c": None}]}, "": 0}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_every_json_type_round_trips(cluster, value):
    write(cluster, "n1", v=value)
    for n in NODES:
        got = read(cluster, n, "v")
        assert got == value and type(got) is type(value)


def test_values_keep_their_type_through_the_wal(cluster):
    """A crashed node replays its WAL (JSON): values come back equal and with the same types."""
    values = {f"v{i}": v for i, v in enumerate(VALUES)}
    write(cluster, "n1", **values)
    cluster.run()
    cluster.crash("n2")
    cluster.restart("n2")
    for k, v in values.items():
        got = read(cluster, "n2", k)
        assert got == v and type(got) is type(v)


def test_bool_and_int_stay_distinct(cluster):
    write(cluster, "n1", b=True, i=1)
    assert read(cluster, "n2", "b") is True
    got = read(cluster, "n2", "i")
    assert got == 1 and type(got) is int


def test_tuple_is_stored_as_a_list(cluster):
    write(cluster, "n1", t=(1, 2))
    assert read(cluster, "n1", "t") == [1, 2]


def test_stored_value_is_a_copy_of_the_argument(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    value = {"list": [1, 2], "d": {"k": 1}}
    n1.put(tx, "x", value)
    value["list"].append(3)
    value["d"]["k"] = 99
    value["new"] = True
    assert n1.get(tx, "x") == {"list": [1, 2], "d": {"k": 1}}
    assert n1.commit(tx)
    assert read(cluster, "n2", "x") == {"list": [1, 2], "d": {"k": 1}}


def test_returned_value_is_a_copy(cluster):
    write(cluster, "n1", x=[1, [2]], d={"a": [1]})
    n2 = cluster.node("n2")
    tx = n2.begin()
    got = n2.get(tx, "x")
    got.append(3)
    got[1].append(4)
    n2.get(tx, "d")["a"].append(2)
    assert n2.get(tx, "x") == [1, [2]]
    assert n2.get(tx, "d") == {"a": [1]}
    assert read(cluster, "n1", "x") == [1, [2]]
    assert cluster.history[tx].ops[0].value == [1, [2]]  # the history kept its own copy


def test_own_write_read_back_is_a_copy(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", [1])
    n1.get(tx, "x").append(2)
    assert n1.get(tx, "x") == [1]
    assert n1.commit(tx)
    assert read(cluster, "n3", "x") == [1]


# -- errors -----------------------------------------------------------------------------------
def test_every_error_is_a_kvlab_error():
    for name in ("TransactionNotFound", "TransactionClosed", "NodeUnavailable", "UnknownNode",
                 "InvalidKey", "InvalidValue", "CorruptLog", "SimulationTimeout",
                 "MessageNotFound", "ProtocolError"):
        assert issubclass(getattr(kvlab, name), kvlab.KvlabError)


@pytest.mark.parametrize("op", ["get", "put", "delete", "commit", "commit_async", "rollback"])
def test_unknown_transaction(cluster, op):
    n1 = cluster.node("n1")
    args = {"get": ("T999", "x"), "put": ("T999", "x", 1), "delete": ("T999", "x")}.get(
        op, ("T999",))
    with pytest.raises(kvlab.TransactionNotFound, match="T999") as e:
        getattr(n1, op)(*args)
    assert "begin()" in str(e.value)
    with pytest.raises(kvlab.TransactionNotFound, match="T999"):
        n1.outcome("T999")


@pytest.mark.parametrize("op", ["get", "put", "delete", "commit", "rollback"])
def test_transaction_from_another_node(cluster, op):
    tx = cluster.node("n1").begin()
    n2 = cluster.node("n2")
    args = {"get": (tx, "x"), "put": (tx, "x", 1), "delete": (tx, "x")}.get(op, (tx,))
    with pytest.raises(kvlab.TransactionNotFound, match="n2") as e:
        getattr(n2, op)(*args)
    assert tx in str(e.value) and "this node" in str(e.value)
    with pytest.raises(kvlab.TransactionNotFound):
        n2.outcome(tx)
    # the transaction itself is unharmed
    n1 = cluster.node("n1")
    n1.put(tx, "x", 1)
    assert n1.commit(tx)


@pytest.mark.parametrize("how", ["committed", "read-only", "rolled back", "aborted"])
@pytest.mark.parametrize("op", ["get", "put", "delete", "commit", "commit_async", "rollback"])
def test_finished_transaction(cluster, how, op):
    n1 = cluster.node("n1")
    tx = n1.begin()
    if how == "committed":
        n1.put(tx, "x", 1)
        assert n1.commit(tx)
        cluster.run()
    elif how == "read-only":
        assert n1.commit(tx)
    elif how == "rolled back":
        n1.rollback(tx)
    else:
        n1.put(tx, "x", 1)
        write(cluster, "n2", x=2)  # a concurrent writer commits first
        assert n1.commit(tx) is False
    args = {"get": (tx, "x"), "put": (tx, "x", 1), "delete": (tx, "x")}.get(op, (tx,))
    with pytest.raises(kvlab.TransactionClosed, match=tx) as e:
        getattr(n1, op)(*args)
    word = {"committed": "committed", "read-only": "committed", "rolled back": "aborted",
            "aborted": "aborted"}[how]
    assert word in str(e.value) and "begin a new transaction" in str(e.value)


def test_transaction_is_closed_while_its_commit_is_running(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    h = n1.commit_async(tx)
    with pytest.raises(kvlab.TransactionClosed, match="committing"):
        n1.put(tx, "x", 2)
    with pytest.raises(kvlab.TransactionClosed):
        n1.commit(tx)
    assert h.wait()
    assert read(cluster, "n2", "x") == 1


BAD_KEYS = [1, 1.5, "", None, b"x", ("x",), ["x"], object()]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
@pytest.mark.parametrize("op", ["get", "put", "delete"])
def test_bad_keys(cluster, key, op):
    n1 = cluster.node("n1")
    tx = n1.begin()
    args = (tx, key, 1) if op == "put" else (tx, key)
    with pytest.raises(kvlab.InvalidKey, match="non-empty str") as e:
        getattr(n1, op)(*args)
    assert repr(key) in str(e.value)
    assert n1.outcome(tx).status == "active"  # the transaction survives the mistake


class Thing:
    pass


BAD_VALUES = [float("nan"), float("inf"), float("-inf"), object(), Thing(), {1, 2},
              frozenset(), None, b"bytes", 1 + 2j, {1: "int key"}, {("t",): 1},
              [1, {2}], {"a": float("nan")}, [[[object()]]], {"a": {"b": b"x"}}]


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_bad_values(cluster, value):
    n1 = cluster.node("n1")
    tx = n1.begin()
    with pytest.raises(kvlab.InvalidValue) as e:
        n1.put(tx, "x", value)
    assert str(e.value)
    assert n1.get(tx, "x") is None  # nothing was buffered
    assert n1.commit(tx)
    assert cluster.pending() == []  # read-only: nothing to prepare


def test_none_value_points_to_delete(cluster):
    n1 = cluster.node("n1")
    with pytest.raises(kvlab.InvalidValue, match="delete"):
        n1.put(n1.begin(), "x", None)


def test_nan_message_is_helpful(cluster):
    n1 = cluster.node("n1")
    with pytest.raises(kvlab.InvalidValue, match="finite"):
        n1.put(n1.begin(), "x", float("nan"))


def test_unsupported_type_is_named(cluster):
    n1 = cluster.node("n1")
    with pytest.raises(kvlab.InvalidValue, match="set"):
        n1.put(n1.begin(), "x", {1})
    with pytest.raises(kvlab.InvalidValue, match="Thing"):
        n1.put(n1.begin(), "x", Thing())


@pytest.mark.parametrize("op", ["begin", "get", "put", "delete", "commit", "commit_async",
                                "rollback"])
def test_calls_on_a_crashed_node(cluster, op):
    n2 = cluster.node("n2")
    tx = n2.begin()
    cluster.crash("n2")
    args = {"begin": (), "get": (tx, "x"), "put": (tx, "x", 1), "delete": (tx, "x")}.get(
        op, (tx,))
    with pytest.raises(kvlab.NodeUnavailable, match="n2") as e:
        getattr(n2, op)(*args)
    assert "restart" in str(e.value)


def test_transaction_of_a_crashed_node_is_gone_after_restart(cluster):
    n2 = cluster.node("n2")
    tx = n2.begin()
    n2.put(tx, "x", 1)
    cluster.crash("n2")
    out = n2.outcome(tx)
    assert out.status == "aborted" and "crashed" in out.reason
    cluster.restart("n2")
    with pytest.raises(kvlab.TransactionNotFound):
        n2.put(tx, "x", 2)
    assert read(cluster, "n2", "x") is None


def test_commit_with_a_crashed_participant_aborts_and_names_it(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    cluster.crash("n3")
    assert n1.commit(tx) is False
    out = n1.outcome(tx)
    assert out.status == "aborted" and "n3" in out.reason and "vote" in out.reason
    cluster.restart("n3")
    cluster.run()
    assert read(cluster, "n3", "x") is None
    write(cluster, "n1", x=2)  # no lock was left behind
    assert read(cluster, "n3", "x") == 2


def test_commit_across_a_partition_aborts(cluster):
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    cluster.partition({"n1"}, {"n2", "n3"})
    assert n1.commit(tx) is False
    assert "n2" in n1.outcome(tx).reason
    cluster.heal()
    cluster.run()
    for n in NODES:
        assert read(cluster, n, "x") is None
        assert cluster.core(n).store.write_locks == {}


@pytest.mark.parametrize("call", [
    lambda c: c.node("n9"), lambda c: c["n9"], lambda c: c.crash("n9"),
    lambda c: c.restart("n9"), lambda c: c.up("n9"), lambda c: c.partition({"n9"}, {"n1"}),
    lambda c: c.core("n9"), lambda c: c.wal("n9")])
def test_unknown_node(cluster, call):
    with pytest.raises(kvlab.UnknownNode, match="n9") as e:
        call(cluster)
    assert "n1" in str(e.value)  # the message lists the real nodes


@pytest.mark.parametrize("nodes", [[], ["a", "a"], ["a", ""], ["tso"], ["a", 1]])
def test_bad_node_lists(nodes):
    with pytest.raises(kvlab.ConfigurationError, match="distinct non-empty strings"):
        kvlab.Cluster(nodes)


def test_bad_placement():
    with pytest.raises(kvlab.KvlabError, match="partitioned"):
        kvlab.Cluster(NODES, placement="sharded")


@pytest.mark.parametrize("isolation", ["bogus", "SNAPSHOT", "", None])
def test_bad_isolation(cluster, isolation):
    with pytest.raises(kvlab.KvlabError, match="snapshot") as e:
        cluster.node("n1").begin(isolation=isolation)
    assert "read_committed" in str(e.value) and "serializable" in str(e.value)


@pytest.mark.parametrize("isolation", ["snapshot", "read_committed", "serializable"])
def test_every_isolation_level_begins(cluster, isolation):
    tx = cluster.node("n1").begin(isolation=isolation)
    assert cluster.history[tx].isolation == isolation


def test_deliver_or_drop_of_an_unknown_message(cluster):
    with pytest.raises(kvlab.MessageNotFound, match="12345") as e:
        cluster.deliver(12345)
    assert "pending()" in str(e.value)
    with pytest.raises(kvlab.MessageNotFound):
        cluster.drop(12345)
    n1 = cluster.node("n1")
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.commit_async(tx)
    env = cluster.pending()[0]
    cluster.deliver(env.id)
    with pytest.raises(kvlab.MessageNotFound):
        cluster.deliver(env.id)  # already delivered
    with pytest.raises(kvlab.MessageNotFound):
        cluster.drop(env.id)


@pytest.mark.parametrize("call", [
    lambda: kvlab.Cluster(NODES, latency=(0, 1)),
    lambda: kvlab.Cluster(NODES, latency=(5, 2)),
    lambda: kvlab.Cluster(NODES, loss=1.0),
    lambda: kvlab.Cluster(NODES, loss=-0.1),
    lambda: kvlab.Cluster(NODES).partition({"n1"}, {"n1", "n2"}),
    lambda: kvlab.Cluster(NODES).deliver("not-an-id"),
], ids=["latency-zero", "latency-reversed", "loss-one", "loss-negative",
        "partition-overlap", "deliver-str"])
def test_configuration_misuse_raises_kvlab_error(call):
    with pytest.raises(kvlab.KvlabError):
        call()


# -- placement --------------------------------------------------------------------------------
def test_partitioned_read_goes_to_the_owner(pcluster):
    key = key_owned_by("n3")
    write(pcluster, "n3", **{key: "v"})
    pcluster.run()
    n1 = pcluster.node("n1")
    tx = n1.begin()
    assert n1.get(tx, key) == "v"
    msgs = [(e.data["kind"], e.data["src"], e.data["dst"])
            for e in pcluster.trace.filter(kind="deliver", tx=tx)]
    assert msgs == [("READ", "n1", "n3"), ("READ_REPLY", "n3", "n1")]
    assert n1.commit(tx)
    sent = [e.data["kind"] for e in pcluster.trace.filter(kind="send", tx=tx)]
    assert sent == ["READ", "READ_REPLY"]  # and no 2PC for the read-only commit


def test_partitioned_local_read_sends_nothing(pcluster):
    key = key_owned_by("n1")
    write(pcluster, "n2", **{key: 5})
    pcluster.run()
    n1 = pcluster.node("n1")
    tx = n1.begin()
    assert n1.get(tx, key) == 5
    assert len(pcluster.trace.filter(kind="send", tx=tx)) == 0


def test_partitioned_commit_involves_only_owners_of_written_keys(pcluster):
    k2, k3 = key_owned_by("n2"), key_owned_by("n3")
    n1 = pcluster.node("n1")
    tx = n1.begin()
    n1.put(tx, k2, "a")
    n1.put(tx, k3, "b")
    assert n1.commit(tx)
    pcluster.run()
    prepares = pcluster.trace.filter(kind="send", tx=tx)
    assert sorted(e.data["dst"] for e in prepares if e.data["kind"] == "PREPARE") == ["n2", "n3"]
    assert sorted(e.data["dst"] for e in prepares if e.data["kind"] == "COMMIT") == ["n2", "n3"]
    # the coordinator n1 is no participant: it logs only its decision and the END
    assert [e.data["type"] for e in pcluster.trace.filter(kind="wal", node="n1")] == [
        "DECISION", "END"]
    # each key is stored only by its owner
    assert [v.value for v in pcluster.node("n2").versions(k2)] == ["a"]
    assert pcluster.node("n1").versions(k2) == [] and pcluster.node("n3").versions(k2) == []
    assert [v.value for v in pcluster.node("n3").versions(k3)] == ["b"]
    for n in NODES:
        assert read(pcluster, n, k2) == "a" and read(pcluster, n, k3) == "b"


def test_partitioned_single_owner_commit(pcluster):
    k = key_owned_by("n2")
    tx = write(pcluster, "n2", **{k: 1})
    pcluster.run()
    sends = {(e.data["kind"], e.data["src"], e.data["dst"])
             for e in pcluster.trace.filter(kind="send", tx=tx)}
    assert sends == {("PREPARE", "n2", "n2"), ("VOTE_YES", "n2", "n2"), ("TS_REQUEST", "n2", "tso"),
                     ("TS_REPLY", "tso", "n2"), ("COMMIT", "n2", "n2"), ("ACK", "n2", "n2")}


@pytest.mark.parametrize("key", [" ", "ключ", "a/b:c", "\x00", "k" * 5000])
def test_unusual_but_valid_keys(pcluster, key):
    write(pcluster, "n1", **{key: "v"})
    for n in NODES:
        assert read(pcluster, n, key) == "v"


def test_partitioned_placement_accepts_or_rejects_every_str_key(pcluster):
    key = "\ud800"  # a str, but not encodable as UTF-8
    n1 = pcluster.node("n1")
    tx = n1.begin()
    try:
        n1.put(tx, key, 1)
    except kvlab.InvalidKey:
        return  # rejecting it up front would be fine too
    assert n1.commit(tx)
    assert read(pcluster, "n2", key) == 1


def test_all_placement_prepares_every_node(cluster):
    tx = write(cluster, "n1", x=1)
    prepares = [e.data["dst"] for e in cluster.trace.filter(kind="send", tx=tx)
                if e.data["kind"] == "PREPARE"]
    assert sorted(prepares) == NODES


# -- initialize -------------------------------------------------------------------------------
@pytest.fixture
def fresh_default():
    kvlab.reset_default()
    yield
    kvlab.reset_default()


def test_initialize_shares_one_cluster(fresh_default):
    a = kvlab.initialize("n1", NODES)
    b = kvlab.initialize("n2", NODES)
    assert isinstance(a, kvlab.Node) and a.id == "n1" and b.id == "n2"
    assert a.cluster is b.cluster
    tx = a.begin()
    a.put(tx, "x", "shared")
    assert a.commit(tx)
    t2 = b.begin()
    assert b.get(t2, "x") == "shared"
    assert kvlab.initialize("n1", NODES) is a


def test_reset_default_forgets_the_clusters(fresh_default):
    a = kvlab.initialize("n1", NODES)
    tx = a.begin()
    a.put(tx, "x", 1)
    assert a.commit(tx)
    kvlab.reset_default()
    b = kvlab.initialize("n1", NODES)
    assert b.cluster is not a.cluster
    t2 = b.begin()
    assert b.get(t2, "x") is None


def test_initialize_distinguishes_node_lists(fresh_default):
    a = kvlab.initialize("n1", ["n1", "n2"])
    b = kvlab.initialize("n1", NODES)
    assert a.cluster is not b.cluster
    assert a.cluster.ids == ["n1", "n2"]


def test_initialize_unknown_node(fresh_default):
    with pytest.raises(kvlab.UnknownNode, match="n9"):
        kvlab.initialize("n9", NODES)


def test_initialize_passes_options(fresh_default):
    a = kvlab.initialize("n1", NODES, placement="partitioned")
    assert a.cluster.placement == "partitioned"


# -- data_dir ---------------------------------------------------------------------------------
def test_data_dir_writes_real_files_and_reopens(tmp_path):
    c = kvlab.Cluster(NODES, seed=0, data_dir=tmp_path)
    write(c, "n1", x={"a": [1, 2]}, y="s")
    c.run()
    c.close()
    for n in NODES:
        assert (tmp_path / n / "wal.log").stat().st_size > 0
    c2 = kvlab.Cluster(NODES, seed=0, data_dir=tmp_path)
    try:
        for n in NODES:
            assert read(c2, n, "x") == {"a": [1, 2]}
            assert read(c2, n, "y") == "s"
        tx = write(c2, "n2", x=2)
        assert c2.history[tx].start_ts > 0
        assert read(c2, "n3", "x") == 2
    finally:
        c2.close()


def test_context_manager_closes(tmp_path):
    with kvlab.Cluster(NODES, data_dir=tmp_path) as c:
        write(c, "n1", x=1)
    with kvlab.Cluster(NODES, data_dir=tmp_path) as c:
        assert read(c, "n2", "x") == 1
