"""The Hermitage scenarios, run on the engine at every isolation level."""

from __future__ import annotations

import pytest

import kvlab
from kvlab import scenarios
from kvlab.node import ISOLATION_LEVELS

# PostgreSQL's results (ept/hermitage), typed here independently of kvlab.scenarios
POSTGRES = {
    "G0": ("prevented", "prevented", "prevented"),
    "G1a": ("prevented", "prevented", "prevented"),
    "G1b": ("prevented", "prevented", "prevented"),
    "G1c": ("prevented", "prevented", "prevented"),
    "OTV": ("prevented", "prevented", "prevented"),
    "P4": ("allowed", "prevented", "prevented"),
    "G-single": ("allowed", "prevented", "prevented"),
    "G2-item": ("allowed", "allowed", "prevented"),
    "read-only": ("allowed", "allowed", "prevented"),
    "G2-predicate": ("allowed", "allowed", "prevented"),
    "PMP": ("allowed", "prevented", "prevented"),
}


@pytest.fixture(scope="module")
def table():
    return scenarios.table()


def test_table_is_observed_and_matches_postgres(table):
    assert table.matches_postgres, table.mismatches
    assert set(table.results) == set(POSTGRES)
    for name, cells in POSTGRES.items():
        for level, expected in zip(ISOLATION_LEVELS, cells, strict=True):
            assert table.cell(name, level) == expected, (name, level)
    text = str(table)
    assert "G2-item" in text and "matches PostgreSQL" in text
    assert "<table>" in table._repr_html_()


def test_a_changed_judgement_shows_as_a_mismatch(table):
    # the table is computed from runs: flip one scenario's rule and the comparison notices
    s = scenarios.SCENARIOS["P4"]
    original = s.occurred
    s.occurred = lambda r: not original(r)
    try:
        assert not scenarios.table(levels=("snapshot",)).matches_postgres
    finally:
        s.occurred = original


def test_snapshot_values_match_hermitage():
    r = scenarios.get("G-single").run("snapshot")
    assert r.reads(1) == [10, 20]
    r = scenarios.get("G-single").run("read_committed")
    assert r.reads(1) == [10, 18]
    r = scenarios.get("G1b").run("read_committed")
    assert r.reads(2) == [10, 11]  # never the intermediate 101
    r = scenarios.get("OTV").run("snapshot")
    assert r.reads(3) == [11, 19, 19, 11] and not r.committed(2)
    r = scenarios.get("OTV").run("read_committed")
    assert r.reads(3) == [11, 19, 18, 12]


def test_lost_update_loser_names_key_and_winner():
    r = scenarios.get("P4").run("snapshot")
    commits = [x for x in r.results if x.step.op == "c"]
    assert commits[0].value is True and commits[1].value is False
    assert "'1'" in commits[1].note and "first committer wins" in commits[1].note


def test_write_skew_prevented_by_read_validation_under_serializable():
    r = scenarios.get("G2-item").run("serializable")
    assert r.committed(1) and not r.committed(2)
    assert "stale" in [x for x in r.results if x.step.op == "c"][1].note


def test_replay_step_by_step_equals_run():
    s = scenarios.get("G2-item")
    rep = s.replay("snapshot")
    seen = []
    while not rep.done:
        seen.append(str(rep.step()))
    result = rep.finish()
    assert seen == [str(x) for x in s.run("snapshot").results]
    assert result.verdict == "allowed"
    assert len(seen) == len(s.steps)


def test_predicate_steps_parse_and_print_like_hermitage():
    steps = scenarios.parse("r1(value%3=0) r2(value=30) w1(3,30)")
    assert [(s.op, s.session, s.value, s.modulo) for s in steps[:2]] == [("p", 1, 0, 3),
                                                                         ("p", 2, 30, None)]
    assert " ".join(map(str, steps)) == "r1(value%3=0) r2(value=30) w1(3,30)"
    assert steps[0].matches(42) and not steps[0].matches(41) and not steps[0].matches("30")
    for bad in ("r1(value%0=1)", "r1(value>3)", "r1(value%3=)"):
        with pytest.raises(ValueError, match="r1\\(value%3=0\\)"):
            scenarios.parse(bad)


@pytest.mark.parametrize("level, second", [("read_committed", {"3": 30}), ("snapshot", {}),
                                           ("serializable", {})])
def test_pmp_second_predicate_read_at_each_level(level, second):
    r = scenarios.get("PMP").run(level)
    assert r.predicate_reads(1) == [{}, second]
    assert r.committed(1) and r.committed(2)
    assert r.final == {"1": 10, "2": 20, "3": 30}
    scans = [op for t in r.cluster.history for op in t.scans]
    assert len(scans) == 2 and all((op.key, op.end) == ("", None) for op in scans)


def test_predicate_write_skew_is_stopped_by_range_validation_at_serializable():
    for level in ("read_committed", "snapshot"):
        r = scenarios.get("G2-predicate").run(level)
        assert r.committed(1) and r.committed(2) and r.final["3"] == 30 and r.final["4"] == 42
    r = scenarios.get("G2-predicate").run("serializable")
    assert r.committed(1) and not r.committed(2)
    note = [x for x in r.results if x.step.op == "c"][1].note
    assert "phantom" in note and "inserted '3'" in note
    assert r.final == {"1": 10, "2": 20, "3": 30, "4": None}


def test_the_checker_names_the_predicate_anomalies_in_the_engine_histories():
    skew = kvlab.check(scenarios.get("G2-predicate").run("snapshot").cluster.history,
                       "serializable")
    [a] = skew.anomalies
    assert a.name == "G2" and len(a.cycle) == 2 and "(a phantom)" in a.explanation
    pmp = kvlab.check(scenarios.get("PMP").run("read_committed").cluster.history, "snapshot")
    assert [a.name for a in pmp.anomalies] == ["G-single"]
    for name in ("G2-predicate", "PMP"):
        assert kvlab.check(scenarios.get(name).run("serializable").cluster.history,
                           "serializable").ok


def test_parse_rejects_nonsense():
    with pytest.raises(ValueError, match="cannot parse"):
        scenarios.parse("x1(1)")
    with pytest.raises(KeyError, match="choose one of"):
        scenarios.get("G9")
