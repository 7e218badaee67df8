"""Chapter 4 exercise: a delivery order that makes both racing transactions abort."""

from __future__ import annotations

import kvlab
from kvlab.exercises.twopc import check_both_abort, race, replay, step_line


def prepare_ids():
    c, t1, t2 = race()
    by = {(e.msg.tx, e.dst): e.id for e in c.pending() if e.kind == "PREPARE"}
    return by, t1, t2


def test_race_starts_with_six_prepares_and_is_deterministic():
    a, _, _ = race()
    b, _, _ = race()
    assert [e.kind for e in a.pending()] == ["PREPARE"] * 6
    assert [str(e) for e in a.pending()] == [str(e) for e in b.pending()]


def test_each_transaction_winning_one_node_makes_both_abort():
    by, t1, t2 = prepare_ids()
    order = [by[(t1, "n1")], by[(t2, "n2")]]
    c, _, _ = replay(order)
    assert c.history[t1].status == c.history[t2].status == "aborted"
    fb = check_both_abort(order)
    assert fb.ok, fb.message
    assert "both aborted" in fb.message and "votes no at once" in fb.message


def test_envelopes_are_accepted_as_well_as_ids():
    c, t1, t2 = race()
    p = c.pending()
    order = [next(e for e in p if e.msg.tx == t2 and e.dst == "n3"),
             next(e for e in p if e.msg.tx == t1 and e.dst == "n1")]
    assert check_both_abort(order).ok


def test_default_order_lets_one_commit_and_says_so():
    fb = check_both_abort([])
    assert not fb.ok
    assert "T1 committed (every node voted yes for it)" in fb.message
    assert "which transaction's PREPARE each node receives first" in fb.message


def test_one_transaction_winning_everywhere_is_not_enough():
    by, t1, t2 = prepare_ids()
    fb = check_both_abort([by[(t2, n)] for n in ("n1", "n2", "n3")])
    assert not fb.ok and f"{t2} committed" in fb.message


def test_placeholder_and_malformed_answers_get_a_hint():
    assert "set `order`" in check_both_abort(None).message
    assert "not '5'" in check_both_abort("5").message
    assert "not a message id" in check_both_abort([5.0]).message
    assert "only once" in check_both_abort([5, 5]).message


def test_an_id_not_in_flight_is_named_with_its_position():
    fb = check_both_abort([5, 99])
    assert not fb.ok
    assert "message #99 (position 1 of your order) is not in flight" in fb.message


def test_step_line_shortens_each_step_of_a_commit_to_one_line():
    c = kvlab.Cluster(["n1", "n2", "n3"], seed=0)
    tx = c["n1"].begin()
    c["n1"].put(tx, "x", 1)
    c["n1"].commit_async(tx)
    lines = []
    while not c.quiet:
        lines.append(step_line(c.step()))
    assert len(lines) == 21 and all("\n" not in line for line in lines)
    assert lines[0] == ("t=3   n1: deliver PREPARE n1->n1 · log PREPARE [force] · participant "
                        "prepare ok: INIT→PREPARED")
    assert lines[11] == "t=8   n1: flush (fsync) · send COMMIT→n1,n2,n3"  # one send, 3 targets
    assert lines[-1].endswith("log END · coordinator all acked: COMMITTING→COMMITTED")
    assert step_line([]) == "(nothing)"
