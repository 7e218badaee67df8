"""Chapter 9's exercise and helpers: crash points that block under each commit protocol."""

from __future__ import annotations

from kvlab import explore
from kvlab.exercises import nonblocking as ex

RIGHT = {"2pc": set(range(1, 11)), "cooperative": set(range(2, 10)), "paxos": set()}


def test_the_right_answer_passes_in_any_iterable_form():
    assert ex.check_blocking_steps(RIGHT).ok
    assert ex.check_blocking_steps({k: sorted(v, reverse=True) for k, v in RIGHT.items()}).ok
    assert ex.check_blocking_steps({"2pc": range(1, 11), "cooperative": tuple(range(2, 10)),
                                    "paxos": []}).ok


def test_the_truth_is_what_crash_points_measures():
    for protocol, steps in RIGHT.items():
        points = explore.crash_points(ex.exercise_setup(protocol), "n3")
        assert {k for k, _, why in points if why} == steps, protocol
    assert len(ex.exercise_steps("2pc")) == 15 and len(ex.exercise_steps("paxos")) == 35


def test_wrong_answers_fail_without_giving_the_answer_away():
    two_pc_for_all = {p: RIGHT["2pc"] for p in ex.PROTOCOLS}  # "nothing helps"
    fb = ex.check_blocking_steps(two_pc_for_all)
    assert not fb.ok
    assert "cooperative: after step 1 nobody is blocked" in fb.message
    assert "paxos: after step 1 nobody is blocked" in fb.message
    assert "2pc:" not in fb.message
    missing = ex.check_blocking_steps({**RIGHT, "cooperative": set(range(3, 10))})
    assert not missing.ok and "cooperative: you left out 1 step(s)" in missing.message
    assert "2, " not in missing.message  # the missing step is counted, not named


def test_placeholder_and_malformed_answers_get_a_hint():
    assert "set `answer`" in ex.check_blocking_steps(None).message
    assert "exactly the keys" in ex.check_blocking_steps({"2pc": [1]}).message
    assert "exactly the keys" in ex.check_blocking_steps([1, 2]).message
    assert "not a step number" in ex.check_blocking_steps({**RIGHT, "paxos": [1.5]}).message
    assert "outside the commit" in ex.check_blocking_steps({**RIGHT, "2pc": [99]}).message
    assert "not '3'" in ex.check_blocking_steps({**RIGHT, "paxos": "3"}).message


def test_chapter_helpers():
    assert ex.spans([]) == "none" and ex.spans([2, 3, 4, 7, 9, 10]) == "2-4, 7, 9-10"
    c, tx, h = ex.start_commit("paxos")
    assert ex.until_voted(c) == 13  # BEGIN flushed, then the three P2A rounds have left
    c.crash("n1")
    c.run()
    assert ex.states(c, tx) == {"n2": "COMMITTED", "n3": "COMMITTED"} and h.committed
    c, tx, h = ex.start_commit("2pc")
    assert ex.until_voted(c) == 6
    lines = ex.blocking_rows({"2pc": ex.setup_for("2pc"), "paxos": ex.setup_for("paxos")})
    assert lines[1].split()[:3] == ["2pc", "21", "13"] and lines[2].split()[2] == "0"
    from kvlab.paxos import LEADER_TRANSITIONS
    assert "PHASE1 -> PHASE2: majority promised" in ex.table_lines(LEADER_TRANSITIONS)
    costs = ex.cost_lines()
    assert len(costs) == 5 and costs[-1].startswith("paxos F=1")
