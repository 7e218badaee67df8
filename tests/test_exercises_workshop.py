"""Chapter 7's workshop checks: each accepts the solutions and rejects wrong answers helpfully."""

from __future__ import annotations

import pytest

import kvlab
from kvlab.exercises import Feedback
from kvlab.exercises import workshop as w

CHECKS = [w.check_both_abort, w.check_snapshot, w.check_break_atomicity, w.check_anomaly,
          w.check_unblock, w.check_weakest_levels]


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_placeholder_is_not_yet_and_explains_the_format(check):
    fb = check(None)
    assert isinstance(fb, Feedback) and not fb.ok
    assert "still None" in fb.message
    assert str(fb).startswith("✘ not yet")
    assert check(None) == fb  # deterministic: nbval compares the stored output


# -- task 1 -----------------------------------------------------------------------------------
def test_seat_race_is_deterministic_and_alice_wins_by_default():
    a, b = w.seat_race(), w.seat_race()
    assert str(a) == str(b)
    assert [e.kind for e in a.cluster.pending()] == ["PREPARE"] * 6
    race = w.deliver_then_run([])
    assert race.cluster["n1"].outcome(race.alice).committed
    assert not race.cluster["n2"].outcome(race.bob).committed


def _prepare_ids() -> tuple[dict[tuple[str, str], int], w.SeatRace]:
    race = w.seat_race()
    return {(e.tx, e.dst): e.id for e in race.cluster.pending()}, race


@pytest.mark.parametrize("which", ["bob first on n1", "each wins one node"])
def test_both_abort_accepts_orders_where_nobody_wins(which):
    ids, race = _prepare_ids()
    a, b = race.alice, race.bob
    picks = [ids[(b, "n1")]] if which == "bob first on n1" else [ids[(a, "n1")], ids[(b, "n2")]]
    fb = w.check_both_abort(picks)
    assert fb.ok, fb.message
    assert "nobody gets the seat" in fb.message


def test_both_abort_rejects_an_order_with_a_winner():
    ids, race = _prepare_ids()
    fb = w.check_both_abort([ids[(race.bob, n)] for n in w.NODES])  # Bob wins everywhere
    assert not fb.ok
    assert f"{race.bob} still committed" in fb.message
    assert "locked" in fb.message
    assert not w.check_both_abort([ids[(race.alice, "n1")]]).ok


@pytest.mark.parametrize("picks, expect", [
    ([], "default order"), ([999], "not in flight"), ("21", "list of message ids"),
    ([21, 21], "not in flight"), ([True], "list of message ids"),
])
def test_both_abort_rejects_malformed_picks(picks, expect):
    fb = w.check_both_abort(picks)
    assert not fb.ok and expect in fb.message


# -- task 2 -----------------------------------------------------------------------------------
def _story_ids() -> dict[str, str]:
    """Writer ids by the value they wrote, read off the story (not hard-coded)."""
    story = w.snapshot_story()
    return {line.split("x=")[1].split()[0].rstrip(","): line.split()[1]
            for line in story.lines if "put x=" in line}


def test_snapshot_accepts_the_newest_version_committed_before_the_snapshot():
    ids = _story_ids()
    fb = w.check_snapshot((15, ids["15"]))
    assert fb.ok, fb.message
    assert w.check_snapshot([15, ids["15"]]).ok


def test_snapshot_rejects_the_traps_with_the_reason():
    ids = _story_ids()
    late = w.check_snapshot((20, ids["20"]))
    assert not late.ok and "committed at ts" in late.message and "snapshot" in late.message
    rolled = w.check_snapshot((30, ids["30"]))
    assert not rolled.ok and "did not commit" in rolled.message
    older = w.check_snapshot((10, ids["10"]))
    assert not older.ok and "newest" in older.message
    mixed = w.check_snapshot((10, ids["15"]))
    assert not mixed.ok and "never wrote x=10" in mixed.message
    assert "took part" in w.check_snapshot((15, "T999")).message
    assert "pair" in w.check_snapshot(15).message


def test_snapshot_never_reveals_the_answer_when_wrong():
    ids = _story_ids()
    for value, writer in ((20, ids["20"]), (30, ids["30"]), (10, ids["10"])):
        msg = w.check_snapshot((value, writer)).message
        assert "x=15" not in msg and ids["15"] not in msg


# -- task 3 -----------------------------------------------------------------------------------
def test_commit_steps_lists_every_step():
    text = w.commit_steps()
    assert text.splitlines()[0].startswith(" 1: deliver n1->n1 PREPARE")
    assert "DECISION (forced)" in text
    assert "logs DECISION;" in w.commit_steps(kvlab.Rules(force_decision=False))


def _first_breaking(rule: str) -> dict:
    for victim in w.NODES:
        for step in range(30):
            answer = {"rules": kvlab.Rules(**{rule: False}), "victim": victim, "step": step}
            if w.check_break_atomicity(answer).ok:
                return answer
    raise AssertionError(f"no crash breaks atomicity with {rule} off")


@pytest.mark.parametrize("rule", ["force_prepare", "force_decision", "force_commit"])
def test_break_atomicity_is_possible_with_every_rule_off(rule):
    answer = _first_breaking(rule)
    fb = w.check_break_atomicity(answer)
    assert "kvlab.audit caught it" in fb.message and "default Rules" in fb.message
    safe = dict(answer, rules=kvlab.Rules())
    assert not w.check_break_atomicity(safe).ok


def test_break_atomicity_accepts_the_solution():
    fb = w.check_break_atomicity(
        {"rules": kvlab.Rules(force_decision=False), "victim": "n1", "step": 11})
    assert fb.ok, fb.message
    assert "atomicity or durability broken" in fb.message


def test_break_atomicity_wants_exactly_one_rule_off():
    # n1 after 11 steps breaks atomicity with force_decision off, whatever else is off
    fb = w.check_break_atomicity({"rules": kvlab.Rules(force_decision=False, force_commit=False),
                                  "victim": "n1", "step": 11})
    assert not fb.ok and "exactly one rule" in fb.message
    assert "force_decision and force_commit" in fb.message


def test_break_atomicity_rejects_harmless_crashes_with_a_rule_specific_hint():
    fb = w.check_break_atomicity(
        {"rules": kvlab.Rules(force_decision=False), "victim": "n2", "step": 11})
    assert not fb.ok and "audit found nothing" in fb.message and "DECISION" in fb.message
    fb = w.check_break_atomicity(
        {"rules": kvlab.Rules(force_prepare=False), "victim": "n1", "step": 3})
    assert not fb.ok and "not the coordinator" in fb.message
    late = w.check_break_atomicity(
        {"rules": kvlab.Rules(force_decision=False), "victim": "n1", "step": 99})
    assert not late.ok and "already over" in late.message


@pytest.mark.parametrize("answer, expect", [
    ({"rules": kvlab.Rules(), "victim": "n1", "step": 11}, "still on"),
    ({"rules": "force_decision", "victim": "n1", "step": 11}, "kvlab.Rules"),
    ({"rules": kvlab.Rules(force_commit=False), "victim": "n9", "step": 1}, "'victim'"),
    ({"rules": kvlab.Rules(force_commit=False), "victim": "n1", "step": -1}, "'step'"),
    ({"rules": kvlab.Rules(force_commit=False), "victim": "n1"}, "exactly the keys"),
])
def test_break_atomicity_rejects_malformed_answers(answer, expect):
    fb = w.check_break_atomicity(answer)
    assert not fb.ok and expect in fb.message


# -- task 4 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", ["G-single", "read skew", "g_single", "Read-Skew"])
def test_anomaly_accepts_the_name_or_nickname(answer):
    fb = w.check_anomaly(answer)
    assert fb.ok, fb.message


def test_anomaly_rejects_other_names_with_a_hint():
    for answer in ("G2-item", "lost update", "G1c", "dirty write"):
        fb = w.check_anomaly(answer)
        assert not fb.ok and "finds no" in fb.message and "rw" in fb.message
    fb = w.check_anomaly("phantom")
    assert not fb.ok and "not an anomaly name" in fb.message


def test_the_schedule_is_prevented_by_snapshot_isolation():
    assert w.run_schedule().verdict == "allowed"
    assert w.run_schedule(level="snapshot").verdict == "prevented"


# -- task 5 -----------------------------------------------------------------------------------
def test_blocked_cluster_has_a_participant_in_doubt():
    b = w.blocked_cluster()
    assert not b.cluster.up("n1")
    assert b.cluster.states()[("n3", "participant", b.tx)] == "IN_DOUBT"
    assert "x" in b.cluster.core("n3").store.write_locks


@pytest.mark.parametrize("actions", [["restart n1", "heal"], ["heal", "restart n1"]])
def test_unblock_accepts_the_two_needed_actions(actions):
    fb = w.check_unblock(actions)
    assert fb.ok, fb.message
    assert "no shorter list" in fb.message


def test_unblock_rejects_too_few_and_too_many_actions():
    fb = w.check_unblock(["restart n1"])
    assert not fb.ok and "IN_DOUBT" in fb.message
    fb = w.check_unblock(["heal"])
    assert not fb.ok and "n1 is down" in fb.message
    fb = w.check_unblock(["crash n3", "restart n3", "heal", "restart n1"])
    assert not fb.ok and "can be done with 2" in fb.message
    assert "unknown action" in w.check_unblock(["reboot n1"]).message
    assert "list of strings" in w.check_unblock("heal").message


# -- task 6 -----------------------------------------------------------------------------------
def test_weakest_levels_accepts_the_observed_levels():
    answer = {"P4": "snapshot", "G-single": "snapshot", "G2-item": "serializable"}
    assert answer == {name: w.weakest_level(name) for name in w.TASK6}
    fb = w.check_weakest_levels(answer)
    assert fb.ok, fb.message


def test_weakest_levels_says_too_weak_or_too_strong():
    fb = w.check_weakest_levels(dict.fromkeys(w.TASK6, "read_committed"))
    assert not fb.ok and "still happens at read_committed" in fb.message
    fb = w.check_weakest_levels(dict.fromkeys(w.TASK6, "serializable"))
    assert not fb.ok and "a weaker level does too" in fb.message
    assert "is not a level" in w.check_weakest_levels(dict.fromkeys(w.TASK6, "SI")).message
    assert "exactly the keys" in w.check_weakest_levels({"P4": "snapshot"}).message


def test_anomaly_names_are_the_ones_the_check_accepts():
    names = w.anomaly_names()
    for name in (n.split(" (")[0] for n in names.split(", ")):
        assert "is not an anomaly name" not in w.check_anomaly(name).message
    assert "incompatible-order (incompatible order)" in names
    wrapped = w.anomaly_names(width=40)
    assert max(map(len, wrapped.splitlines())) <= 40
    assert wrapped.replace("\n", " ") == names  # wrapped between words, never inside a name
