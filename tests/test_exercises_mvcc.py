"""The chapter 2 exercise check: predict the value a snapshot reads (truth from the cluster)."""

from __future__ import annotations

import pytest

import kvlab
from kvlab.exercises import mvcc


@pytest.fixture
def story():
    """The notebook's story: S sees cherry (apple older, banana aborted, date later,
    elderberry rolled back)."""
    p = kvlab.Cluster(["n1", "n2", "n3"], seed=0)
    n1, n2, n3 = p.nodes
    t1 = n1.begin(); n1.put(t1, "k", "apple"); assert n1.commit(t1)  # noqa: E702
    t2 = n2.begin(); n2.put(t2, "k", "banana")  # noqa: E702
    t3 = n3.begin(); n3.put(t3, "k", "cherry"); assert n3.commit(t3)  # noqa: E702
    s = n1.begin()
    assert not n2.commit(t2)
    t4 = n3.begin(); n3.put(t4, "k", "date"); assert n3.commit(t4)  # noqa: E702
    t5 = n2.begin(); n2.put(t5, "k", "elderberry"); n2.rollback(t5)  # noqa: E702
    return p, s


def test_right_prediction(story):
    p, s = story
    fb = mvcc.check(p, s, "k", "cherry")
    assert fb, fb.message
    assert p["n1"].get(s, "k") == "cherry"  # the check agrees with the engine
    assert "newest version of 'k' with commit ts <= " in fb.message


def test_placeholder(story):
    p, s = story
    fb = mvcc.check(p, s, "k", None)
    assert not fb and "replace None" in fb.message


@pytest.mark.parametrize("answer, hint", [
    ("apple", "not the newest such version"),
    ("banana", "was aborted"),
    ("date", "after T6's snapshot was taken at ts 6"),
    ("elderberry", "was rolled back"),
    ("fig", "No transaction wrote 'fig'"),
    (1, "No transaction wrote 1"),
])
def test_wrong_predictions_get_the_rule_that_rules_them_out(story, answer, hint):
    p, s = story
    fb = mvcc.check(p, s, "k", answer)
    assert not fb
    assert hint in fb.message
    assert "cherry" not in fb.message  # never gives the answer away


def test_truth_comes_from_the_cluster_not_from_a_stored_answer(story):
    p, _ = story
    n2 = p["n2"]
    s2 = n2.begin()  # a later snapshot sees date
    assert mvcc.check(p, s2, "k", "date")
    assert not mvcc.check(p, s2, "k", "cherry")


def test_own_writes_and_missing_keys(story):
    p, s = story
    n1 = p["n1"]
    n1.put(s, "k", "mine")
    assert mvcc.check(p, s, "k", "mine")
    fb = mvcc.check(p, s, "nothing-here", None)
    assert fb and "get() returns None" in fb.message
    n1.delete(s, "k")
    assert mvcc.check(p, s, "k", None)


def test_bools_are_not_ints():
    c = kvlab.Cluster(["n1"], seed=0)
    n = c["n1"]
    t = n.begin(); n.put(t, "k", 1); assert n.commit(t)  # noqa: E702
    s = n.begin()
    assert mvcc.check(c, s, "k", 1)
    assert not mvcc.check(c, s, "k", True)


def test_unknown_transaction_and_bad_cluster(story):
    p, _ = story
    fb = mvcc.check(p, "T99", "k", "x")
    assert not fb and "no transaction 'T99'" in fb.message
    assert "pass the cluster first" in mvcc.check("p", "T1", "k", 1).message


def test_in_doubt_key_cannot_be_predicted():
    c = kvlab.Cluster(["n1", "n2", "n3"], seed=0)
    n1, n2 = c["n1"], c["n2"]
    t = n1.begin(); n1.put(t, "k", "old"); assert n1.commit(t)  # noqa: E702
    c.run()
    w = n1.begin()
    n1.put(w, "k", "new")
    n1.commit_async(w)
    while c.states().get(("n2", "participant", w)) != "PREPARED":
        c.step()
    r = n2.begin()
    fb = mvcc.check(c, r, "k", "old")
    assert not fb
    assert f"locked by prepared transaction {w}" in fb.message


def test_finished_snapshot_after_gc():
    c = kvlab.Cluster(["n1"], seed=0)
    n = c["n1"]
    for v in ("a", "b"):
        t = n.begin(); n.put(t, "k", v); assert n.commit(t)  # noqa: E702
    s = n.begin()
    unread = n.begin()
    t = n.begin(); n.put(t, "k", "c"); assert n.commit(t)  # noqa: E702
    assert n.get(s, "k") == "b"
    assert n.commit(s) and n.commit(unread)
    c.gc()
    assert mvcc.check(c, s, "k", "b")  # it read k before finishing: the history knows
    fb = mvcc.check(c, unread, "k", "b")
    assert not fb and "garbage collection" in fb.message


def test_crashed_node():
    c = kvlab.Cluster(["n1", "n2"], seed=0)
    s = c["n2"].begin()
    c.crash("n2")
    fb = mvcc.check(c, s, "k", None)
    assert not fb and "n2, where" in fb.message and "crashed" in fb.message
