"""Chapter 3 exercise: a hand-written history that shows write skew."""

from __future__ import annotations

from kvlab.exercises.anomalies import check_write_skew

DOCTORS = [
    {"id": "T0", "ops": [["w", "alice", "on call"], ["w", "bob", "on call"]]},
    {"id": "T1", "ops": [["r", "alice", "on call"], ["r", "bob", "on call"],
                         ["w", "alice", "off"]]},
    {"id": "T2", "ops": [["r", "alice", "on call"], ["r", "bob", "on call"],
                         ["w", "bob", "off"]]},
]


def test_accepts_write_skew():
    fb = check_write_skew(DOCTORS)
    assert fb.ok, fb.message
    assert "G2-item" in fb.message and "T1 -rw(bob)-> T2 -rw(alice)-> T1" in fb.message


def test_accepts_write_skew_from_the_initial_state():
    history = [{"id": "T1", "ops": [["r", "x", None], ["r", "y", None], ["w", "x", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["r", "y", None], ["w", "y", 2]]}]
    assert check_write_skew(history).ok


def test_accepts_a_three_transaction_cycle():
    history = [{"id": "T1", "ops": [["r", "b", None], ["w", "a", 1]]},
               {"id": "T2", "ops": [["r", "c", None], ["w", "b", 1]]},
               {"id": "T3", "ops": [["r", "a", None], ["w", "c", 1]]}]
    assert check_write_skew(history).ok


def test_placeholder_explains_the_format():
    fb = check_write_skew(None)
    assert not fb.ok
    assert "answer = None" in fb.message and "'ops'" in fb.message


def test_rejects_lost_update_with_a_hint():
    history = [{"id": "T1", "ops": [["r", "x", None], ["w", "x", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["w", "x", 2]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "lost-update" in fb.message and "different key" in fb.message


def test_rejects_read_skew_with_a_hint():
    history = [{"id": "T1", "ops": [["w", "x", 1], ["w", "y", 1]]},
               {"id": "T2", "ops": [["r", "x", 1], ["r", "y", None]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "G-single" in fb.message and "same snapshot" in fb.message


def test_rejects_a_serializable_history():
    history = [{"id": "T1", "ops": [["r", "x", None], ["w", "y", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["w", "x", 2]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "nothing non-serializable" in fb.message


def test_rejects_too_few_transactions():
    for history in ([], [{"id": "T1", "ops": [["r", "x", None], ["w", "y", 1]]}]):
        fb = check_write_skew(history)
        assert not fb.ok and "at least two committed" in fb.message


def test_malformed_history_says_what_is_wrong():
    fb = check_write_skew([{"id": "T1", "ops": [["q", "x", None]]}])
    assert not fb.ok
    assert "cannot read that history" in fb.message and "'q'" in fb.message
    assert not check_write_skew("T1 writes x").ok
