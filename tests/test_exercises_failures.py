"""Chapter 5 exercise: the crash points of the coordinator that leave participants in doubt."""

from __future__ import annotations

from kvlab.exercises.failures import (
    check_in_doubt_steps,
    exercise_cluster,
    in_doubt_after_crash,
    total_steps,
)


def decision_flush_step() -> int:
    """The step whose flush makes the DECISION durable (and sends the COMMITs)."""
    c, tx = exercise_cluster()
    k = 0
    while True:
        k += 1
        events = c.step()
        if any(e.kind == "send" and e.data["kind"] == "COMMIT" for e in events):
            return k


def test_the_coordinator_is_not_a_participant():
    c, tx = exercise_cluster()
    assert sorted(e.dst for e in c.pending()) == ["n1", "n2"]
    assert c.run() == total_steps()


def test_in_doubt_exactly_until_the_decision_is_durable():
    d = decision_flush_step()
    for k in range(total_steps() + 1):
        assert bool(in_doubt_after_crash(k)) == (k < d), k
    assert in_doubt_after_crash(0) == ["n1", "n2"]  # the PREPAREs were already on the wire


def test_the_true_set_is_correct_in_any_iterable_form():
    d = decision_flush_step()
    assert check_in_doubt_steps(list(range(d))).ok
    assert check_in_doubt_steps(set(range(d))).ok
    assert check_in_doubt_steps(tuple(reversed(range(d)))).ok


def test_missing_steps_are_counted_without_naming_them():
    d = decision_flush_step()
    fb = check_in_doubt_steps(range(1, d))  # forgets step 0
    assert not fb.ok
    assert "you left out 1 step(s)" in fb.message
    assert "still delivered after it" in fb.message


def test_an_extra_step_is_named_with_a_way_to_see_it():
    d = decision_flush_step()
    fb = check_in_doubt_steps(list(range(d + 1)))
    assert not fb.ok
    assert f"after step {d} no participant is in doubt" in fb.message
    assert f"{d} of your steps are right" in fb.message
    one = check_in_doubt_steps([0, d])  # one right, one wrong
    assert not one.ok and "1 of your steps is right" in one.message


def test_placeholder_and_malformed_answers_get_a_hint():
    assert "set `answer`" in check_in_doubt_steps(None).message
    assert "not '3'" in check_in_doubt_steps("3").message
    assert "not a step number" in check_in_doubt_steps([1.5]).message
    assert "outside the commit" in check_in_doubt_steps([99]).message
