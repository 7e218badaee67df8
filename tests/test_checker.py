"""The anomaly checker: planted anomalies are found, named, explained, and judged per level."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvlab.checker import LEVELS, Anomaly, CheckReport, InvalidHistory, InvalidLevel, check
from kvlab.history import History, Op, Txn

ROOT = Path(__file__).resolve().parent.parent
ALL_LEVELS = list(LEVELS)


def names(anomalies: list[Anomaly]) -> list[str]:
    return [a.name for a in anomalies]


def t(tid: str, *ops: list[Any], status: str = "committed", **extra: Any) -> dict[str, Any]:
    return {"id": tid, "status": status, "ops": list(ops), **extra}


# Hermitage's tests (github.com/ept/hermitage) as histories; transactions are listed in commit
# order. Initial values come from a T0 because None is the plain format's never-written state.
HERMITAGE = {
    # G0 needs list-append reads to reveal the version order: x says T1 < T2, y says T2 < T1.
    "G0": [t("T1", ["append", "x", 1], ["append", "y", 1]),
           t("T2", ["append", "x", 2], ["append", "y", 2]),
           t("T3", ["r", "x", [1, 2]], ["r", "y", [2, 1]])],
    "G1a": [t("T0", ["w", "x", 10]),
            t("T1", ["w", "x", 101], status="aborted"),
            t("T2", ["r", "x", 101])],
    "G1b": [t("T0", ["w", "x", 10]),
            t("T2", ["r", "x", 101]),
            t("T1", ["w", "x", 101], ["w", "x", 11])],
    "G1c": [t("T1", ["w", "x", 11], ["r", "y", 22]),
            t("T2", ["w", "y", 22], ["r", "x", 11])],
    # Observed transaction vanishes: T3 sees T2's y but T1's x, which T2 had overwritten.
    "OTV": [t("T0", ["w", "x", 10], ["w", "y", 20]),
            t("T1", ["w", "x", 11], ["w", "y", 19]),
            t("T2", ["w", "x", 12], ["w", "y", 18]),
            t("T3", ["r", "x", 11], ["r", "y", 18])],
    "P4": [t("T0", ["w", "x", 10]),
           t("T1", ["r", "x", 10], ["w", "x", 11]),
           t("T2", ["r", "x", 10], ["w", "x", 12])],
    "G-single": [t("T0", ["w", "x", 10], ["w", "y", 20]),
                 t("T2", ["r", "x", 10], ["r", "y", 20], ["w", "x", 12], ["w", "y", 18]),
                 t("T1", ["r", "x", 10], ["r", "y", 18])],
    "G2-item": [t("T0", ["w", "x", 10], ["w", "y", 20]),
                t("T1", ["r", "x", 10], ["r", "y", 20], ["w", "x", 11]),
                t("T2", ["r", "x", 10], ["r", "y", 20], ["w", "y", 21])],
    # Fekete, O'Neil & O'Neil 2004: T1 only reads, yet it makes an SI history unserializable.
    "read-only": [t("T0", ["w", "x", 0], ["w", "y", 0]),
                  t("T3", ["r", "y", 0], ["w", "y", 20]),
                  t("T1", ["r", "x", 0], ["r", "y", 20]),
                  t("T2", ["r", "x", 0], ["r", "y", 0], ["w", "x", -11])],
    "incompatible-order": [t("T1", ["append", "l", 1]),
                           t("T2", ["append", "l", 2]),
                           t("T3", ["r", "l", [1, 2]]),
                           t("T4", ["r", "l", [2]])],
    # The predicate tests: select * where value % 3 = 0 is a scan of every key, filtered.
    "G2-predicate": [t("T0", ["w", "1", 10], ["w", "2", 20]),
                     t("T1", ["scan", [None, None], [["1", 10], ["2", 20]]], ["w", "3", 30]),
                     t("T2", ["scan", [None, None], [["1", 10], ["2", 20]]], ["w", "4", 42])],
    "PMP": [t("T0", ["w", "1", 10], ["w", "2", 20]),
            t("T2", ["w", "3", 30]),
            t("T1", ["scan", [None, None], [["1", 10], ["2", 20]]],
              ["scan", [None, None], [["1", 10], ["2", 20], ["3", 30]]])],
}
EXPECTED = {"G0": "G0", "G1a": "G1a", "G1b": "G1b", "G1c": "G1c", "OTV": "G-single",
            "P4": "lost-update", "G-single": "G-single", "G2-item": "G2-item",
            "read-only": "G2-item", "incompatible-order": "incompatible-order",
            "G2-predicate": "G2", "PMP": "G-single"}


@pytest.mark.parametrize("case", list(HERMITAGE))
@pytest.mark.parametrize("level", ALL_LEVELS)
def test_planted_anomaly_is_found_exactly_and_judged_by_level(case: str, level: str) -> None:
    report = check(HERMITAGE[case], level=level)
    expected = EXPECTED[case]
    forbidden = expected in LEVELS[level]
    assert names(report.anomalies) == ([expected] if forbidden else [])
    assert names(report.allowed) == ([] if forbidden else [expected])
    assert report.ok is not forbidden
    assert bool(report) is report.ok


def test_levels_forbid_what_the_brief_says() -> None:
    assert LEVELS["read_committed"] == {"G0", "G1a", "G1b", "G1c", "incompatible-order"}
    assert LEVELS["snapshot"] == LEVELS["read_committed"] | {"G-single", "lost-update"}
    assert LEVELS["serializable"] == LEVELS["snapshot"] | {"G2-item", "G2"}


def test_read_only_anomaly_needs_the_reader() -> None:
    without_reader = [txn for txn in HERMITAGE["read-only"] if txn["id"] != "T1"]
    assert check(without_reader, "serializable").ok
    report = check(HERMITAGE["read-only"], "serializable")
    assert report.anomalies[0].txns == ["T1", "T2", "T3"]
    assert sorted(e[2] for e in report.anomalies[0].cycle) == ["rw", "rw", "wr"]


@pytest.mark.parametrize("case,cycle", [
    ("G0", [("T1", "T2", "ww", "x"), ("T2", "T1", "ww", "y")]),
    ("G1c", [("T1", "T2", "wr", "x"), ("T2", "T1", "wr", "y")]),
    ("OTV", [("T2", "T3", "wr", "y"), ("T3", "T2", "rw", "x")]),
    ("P4", [("T1", "T2", "ww", "x"), ("T2", "T1", "rw", "x")]),
    ("G-single", [("T1", "T2", "rw", "x"), ("T2", "T1", "wr", "y")]),
    ("G2-item", [("T1", "T2", "rw", "y"), ("T2", "T1", "rw", "x")]),
    ("G2-predicate", [("T1", "T2", "rw", "4"), ("T2", "T1", "rw", "3")]),
    ("PMP", [("T1", "T2", "rw", "3"), ("T2", "T1", "wr", "3")]),
])
def test_cycles_are_minimal_and_start_at_the_smallest_id(case: str, cycle: list) -> None:
    [anomaly] = check(HERMITAGE[case], "serializable").anomalies
    assert anomaly.cycle == cycle


def test_explanation_names_every_transaction_and_key_of_the_cycle() -> None:
    for case in ("G0", "G1c", "OTV", "G-single", "G2-item", "read-only", "P4"):
        [anomaly] = check(HERMITAGE[case], "serializable").anomalies
        for src, dst, _, key in anomaly.cycle:
            assert src in anomaly.explanation and dst in anomaly.explanation
            assert re.search(rf"\b{key}\b", anomaly.explanation)
        assert anomaly.keys == sorted({e[3] for e in anomaly.cycle})


def test_read_skew_explanation_says_why_each_edge_orders() -> None:
    [anomaly] = check(HERMITAGE["G-single"], "snapshot").anomalies
    text = anomaly.explanation
    assert "T1 read x=10 (written by T0) and missed T2's write x=12, so T1 comes before T2" in text
    assert "T1 read y=18 written by T2, so T2 comes before T1" in text
    assert "Snapshot isolation forbids this" in text


def test_direct_anomalies_explain_themselves() -> None:
    [g1a] = check(HERMITAGE["G1a"]).anomalies
    assert g1a.txns == ["T1", "T2"] and g1a.keys == ["x"]
    assert "T2 read x=101 written by T1, which aborted" in g1a.explanation
    [g1b] = check(HERMITAGE["G1b"]).anomalies
    assert "T1 later overwrote x with 11" in g1b.explanation
    [p4] = check(HERMITAGE["P4"]).anomalies
    assert "T1 and T2 both read x=10 (written by T0)" in p4.explanation
    [order] = check(HERMITAGE["incompatible-order"]).anomalies
    assert "T4 read l=[2] but T3 read l=[1, 2]" in order.explanation


def test_two_cycle_is_reported_even_when_a_longer_cycle_is_found_first() -> None:
    # rw edges T1->T2->T3->T1 (searched first) and T3<->T4, all one component.
    hist = [t("T1", ["r", "a", None], ["w", "c", 1]),
            t("T2", ["r", "b", None], ["w", "a", 1]),
            t("T3", ["r", "c", None], ["r", "d", None], ["w", "b", 1], ["w", "e", 1]),
            t("T4", ["r", "e", None], ["w", "d", 1])]
    [anomaly] = check(hist, "serializable").anomalies
    assert anomaly.name == "G2-item"
    assert anomaly.cycle == [("T3", "T4", "rw", "d"), ("T4", "T3", "rw", "e")]


def test_shorter_cycle_wins_over_the_first_cycle_found() -> None:
    # rw cycle T1->T2->T3->T4->T1 is found first; T2->T5->T6->T2 is shorter.
    hist = [t("T1", ["r", "a", None], ["w", "d", 1]),
            t("T2", ["r", "b", None], ["r", "e", None], ["w", "a", 1], ["w", "g", 1]),
            t("T3", ["r", "c", None], ["w", "b", 1]),
            t("T4", ["r", "d", None], ["w", "c", 1]),
            t("T5", ["r", "f", None], ["w", "e", 1]),
            t("T6", ["r", "g", None], ["w", "f", 1])]
    [anomaly] = check(hist, "serializable").anomalies
    assert len(anomaly.cycle) == 3
    assert anomaly.txns == ["T2", "T5", "T6"]


def test_one_example_per_component_and_kind_but_every_component_reported() -> None:
    skew = [t("A1", ["r", "x", None], ["r", "y", None], ["w", "x", 1]),
            t("A2", ["r", "x", None], ["r", "y", None], ["w", "y", 2]),
            t("B1", ["r", "p", None], ["r", "q", None], ["w", "p", 1]),
            t("B2", ["r", "p", None], ["r", "q", None], ["w", "q", 2])]
    report = check(skew, "serializable")
    assert [a.txns for a in report.anomalies] == [["A1", "A2"], ["B1", "B2"]]


def test_lost_update_among_three_is_one_anomaly_not_also_g_single() -> None:
    hist = [t("T0", ["w", "x", 0]),
            t("T1", ["r", "x", 0], ["w", "x", 1]),
            t("T2", ["r", "x", 0], ["w", "x", 2]),
            t("T3", ["r", "x", 0], ["w", "x", 3])]
    [anomaly] = check(hist, "snapshot").anomalies
    assert anomaly.name == "lost-update"
    assert anomaly.txns == ["T1", "T2", "T3"]
    assert anomaly.cycle == [("T1", "T2", "ww", "x"), ("T2", "T1", "rw", "x")]
    assert "only T3's survives" in anomaly.explanation


def test_blind_overwrite_of_an_unseen_write_is_g_single_not_lost_update() -> None:
    hist = [t("T1", ["w", "x", 1]), t("T2", ["r", "x", None], ["w", "x", 2])]
    assert names(check(hist, "snapshot").anomalies) == ["G-single"]


def test_read_skew_next_to_a_lost_update_is_still_reported() -> None:
    hist = HERMITAGE["P4"] + [t("T3", ["w", "y", 1], ["w", "z", 1]),
                              t("T4", ["w", "y", 2], ["w", "z", 2]),
                              t("T5", ["r", "y", 1], ["r", "z", 2])]
    assert names(check(hist, "snapshot").anomalies) == ["lost-update", "G-single"]


def test_repeated_reads_of_an_aborted_write_are_one_anomaly() -> None:
    hist = HERMITAGE["G1a"][:2] + [t("T2", ["r", "x", 101], ["r", "x", 101], ["r", "x", 10])]
    assert names(check(hist).anomalies) == ["G1a"]


def test_list_reads_with_own_appends_and_aborted_elements() -> None:
    clean = [t("T1", ["append", "l", 1]),
             t("T2", ["r", "l", [1]], ["append", "l", 2], ["r", "l", [1, 2]]),
             t("T3", ["r", "l", [1, 2]], ["append", "l", 3])]
    assert check(clean, "serializable").allowed == []
    dirty = [t("T1", ["append", "l", 1], status="aborted"),
             t("T2", ["append", "l", 2]),
             t("T3", ["r", "l", [1, 2]])]
    [anomaly] = check(dirty, "read_committed").anomalies
    assert (anomaly.name, anomaly.txns) == ("G1a", ["T1", "T3"])


def test_list_intermediate_read_and_duplicate_elements() -> None:
    hist = [t("T1", ["append", "l", 1], ["append", "l", 2]), t("T2", ["r", "l", [1]])]
    assert names(check(hist, "read_committed").anomalies) == ["G1b"]
    dup = [t("T1", ["append", "l", 1]), t("T2", ["r", "l", [1, 1]])]
    [anomaly] = check(dup, "read_committed").anomalies
    assert anomaly.name == "incompatible-order" and "appears twice" in anomaly.explanation


def test_list_append_reveals_read_skew_that_registers_order_by_commit() -> None:
    hist = [t("T1", ["append", "x", 1], ["append", "y", 1]),
            t("T2", ["r", "x", [1]], ["r", "y", [1]], ["append", "x", 2], ["append", "y", 2]),
            t("T3", ["r", "x", [1]], ["r", "y", [1, 2]])]
    assert check(hist, "snapshot").ok  # no read shows x=[1, 2]: T2's append to x is unordered
    hist.append(t("T4", ["r", "x", [1, 2]]))
    [anomaly] = check(hist, "snapshot").anomalies
    assert anomaly.name == "G-single"
    assert anomaly.cycle == [("T2", "T3", "wr", "y"), ("T3", "T2", "rw", "x")]


# -- engine-made histories: Txn/Op objects with writer and version_ts, ordered by commit_ts -------

def r(key: str, value: Any, writer: str | None, ts: int | None = None) -> Op:
    return Op("r", key, value, writer, ts)


def w(key: str, value: Any, tid: str) -> Op:
    return Op("w", key, value, tid)


def engine(*txns: Txn) -> History:
    return History(list(txns))


def test_engine_write_skew_with_repeated_values() -> None:
    # Values repeat (two txns write 0), which plain data could not resolve; writers disambiguate.
    h = engine(Txn("T1", "n1", start_ts=1, commit_ts=2, status="committed",
                   ops=[w("x", 1, "T1"), w("y", 1, "T1")]),
               Txn("T3", "n1", start_ts=3, commit_ts=5, status="committed",
                   ops=[r("x", 1, "T1", 2), r("y", 1, "T1", 2), w("x", 0, "T3")]),
               Txn("T4", "n2", start_ts=4, commit_ts=6, status="committed",
                   ops=[r("x", 1, "T1", 2), r("y", 1, "T1", 2), w("y", 0, "T4")]))
    assert check(h, "snapshot").ok
    report = check(h, "serializable")
    assert names(report.anomalies) == ["G2-item"]
    assert report.anomalies[0].cycle == [("T3", "T4", "rw", "y"), ("T4", "T3", "rw", "x")]


def test_engine_history_orders_versions_by_commit_ts_not_listing() -> None:
    h = engine(Txn("T2", commit_ts=9, status="committed", ops=[w("x", "b", "T2")]),
               Txn("T1", commit_ts=3, status="committed", ops=[w("x", "a", "T1")]),
               Txn("T3", commit_ts=10, status="committed", ops=[r("x", "a", "T1", 3)]))
    report = check(h, "serializable")
    edges = {(u, v, d["type"]) for u, v, d in report.graph.edges(data=True)}
    assert edges == {("T1", "T2", "ww"), ("T1", "T3", "wr"), ("T3", "T2", "rw")}
    assert report.ok  # T1, T3, T2 is a serial order (real-time order is not checked)


def test_engine_read_only_transactions_need_no_commit_ts() -> None:
    h = engine(Txn("T1", start_ts=0, commit_ts=1, status="committed",
                   ops=[w("x", 1, "T1"), w("y", 1, "T1")]),
               Txn("T3", start_ts=2, status="committed", ops=[r("x", 1, "T1", 1)]),
               Txn("T2", start_ts=1, commit_ts=3, status="committed",
                   ops=[w("x", 2, "T2"), w("y", 2, "T2")]),
               Txn("T4", start_ts=2, status="committed",
                   ops=[r("x", 1, "T1", 1), r("y", 2, "T2", 3)]))
    report = check(h, "snapshot")
    assert names(report.anomalies) == ["G-single"]
    assert report.anomalies[0].txns == ["T2", "T4"]


def test_engine_dirty_reads_and_deletes() -> None:
    h = engine(Txn("T1", status="aborted", ops=[w("x", 5, "T1")]),
               Txn("T2", status="active", ops=[w("y", 6, "T2")]),
               Txn("T3", commit_ts=1, status="committed",
                   ops=[Op("w", "z", None, "T3", deleted=True)]),
               Txn("T4", commit_ts=2, status="committed",
                   ops=[r("x", 5, "T1"), r("y", 6, "T2"), Op("r", "z", None, "T3", 1, True)]))
    report = check(h, "read_committed")
    assert names(report.anomalies) == ["G1a", "G1a"]
    assert "which never committed" in report.anomalies[1].explanation
    assert set(report.graph.nodes) == {"T3", "T4"}


def test_engine_g1b_and_g1c() -> None:
    h = engine(Txn("T1", commit_ts=1, status="committed",
                   ops=[w("x", 1, "T1"), r("y", 2, "T2"), w("x", 3, "T1")]),
               Txn("T2", commit_ts=2, status="committed",
                   ops=[w("y", 2, "T2"), r("x", 1, "T1")]))
    assert names(check(h, "read_committed").anomalies) == ["G1b", "G1c"]


def test_graph_has_typed_keyed_edges_and_committed_nodes_only() -> None:
    report = check(HERMITAGE["G-single"], "serializable")
    g = report.graph
    assert sorted(g.nodes) == ["T0", "T1", "T2"]
    edges = sorted((u, v, d["type"], d["key"]) for u, v, d in g.edges(data=True))
    assert edges == [("T0", "T1", "wr", "x"), ("T0", "T2", "wr", "x"), ("T0", "T2", "wr", "y"),
                     ("T0", "T2", "ww", "x"), ("T0", "T2", "ww", "y"), ("T1", "T2", "rw", "x"),
                     ("T2", "T1", "wr", "y")]
    assert report.stats == {"committed": 3, "aborted": 0, "active": 0, "edges": 7}



def test_graph_edges_are_keyed_by_type_and_key_and_carry_the_value_read() -> None:
    g = check(HERMITAGE["G-single"], "serializable").graph
    assert g.edges["T1", "T2", ("rw", "x")] == {"type": "rw", "key": "x", "value": 10,
                                                "read_from": "T0"}
    assert g.edges["T2", "T1", ("wr", "y")]["value"] == 18
    assert g.edges["T0", "T2", ("ww", "x")] == {"type": "ww", "key": "x"}

# -- clean histories ---------------------------------------------------------------------------

def test_clean_serial_history_has_no_anomalies_at_any_level() -> None:
    hist = [t("T1", ["w", "x", 1], ["append", "l", "a"]),
            t("T2", ["r", "x", 1], ["w", "x", 2], ["r", "l", ["a"]], ["append", "l", "b"]),
            t("T3", ["w", "x", 99], status="aborted"),
            t("T4", ["r", "x", 2], ["r", "l", ["a", "b"]], ["r", "y", None])]
    for level in ALL_LEVELS:
        report = check(hist, level)
        assert report.ok and report.anomalies == [] and report.allowed == []
        assert str(report).startswith("OK at level")


def run(plan: list[tuple[int, str, list[tuple[str, str]]]]) -> History:
    """Execute ``plan`` under snapshot isolation, as an engine would record it.

    Transaction i is the i-th to try to commit; its snapshot misses the last ``lag`` commits
    (lag 0 everywhere = serial).  First committer wins; ``fate`` can also abort or leave it open.
    """
    versions: dict[str, list[tuple[int, str, Any]]] = {}  # key -> [(commit_ts, writer, value)]
    history = History()
    now = 0
    for i, (lag, fate, ops) in enumerate(plan):
        tid, start = f"T{i}", max(0, now - lag)
        txn = history.add(Txn(tid, start_ts=start))
        own: dict[str, Any] = {}
        for n, (kind, key) in enumerate(ops):
            if kind == "r":
                seen = [v for v in versions.get(key, []) if v[0] <= start]
                ts, writer, value = seen[-1] if seen else (None, None, None)
                if key in own:
                    writer, value, ts = tid, own[key], None
                if key.startswith("l"):
                    value = list(value or [])
                    writer = next((x.split(".")[0] for x in reversed(value)), None)
                txn.ops.append(Op("r", key, value, writer, ts))
            elif key.startswith("l"):
                if key not in own:
                    seen = [v for v in versions.get(key, []) if v[0] <= start]
                    own[key] = list(seen[-1][2]) if seen else []
                own[key].append(f"{tid}.{n}")
                txn.ops.append(Op("append", key, f"{tid}.{n}", tid))
            else:
                own[key] = f"{tid}.{n}"
                txn.ops.append(Op("w", key, own[key], tid))
        conflict = any(versions.get(k) and versions[k][-1][0] > start for k in own)
        if conflict or fate != "commit":
            txn.status = "active" if fate == "active" and not conflict else "aborted"
            continue
        if not own:  # like kvlab's engine: read-only commits skip 2PC and get no commit_ts
            txn.status = "committed"
            continue
        now += 1
        txn.status, txn.commit_ts = "committed", now
        for key, value in own.items():
            versions.setdefault(key, []).append((now, tid, value))
    return history


KEYS = ["a", "b", "c", "l1", "l2"]
op_st = st.tuples(st.sampled_from(["r", "w"]), st.sampled_from(KEYS))
fate_st = st.sampled_from(["commit", "commit", "commit", "abort", "active"])


def plan_st(max_lag: int) -> st.SearchStrategy:
    return st.lists(st.tuples(st.integers(0, max_lag), fate_st, st.lists(op_st, max_size=6)),
                    max_size=14)


def strip_writers(history: History) -> list[dict[str, Any]]:
    plain = history.to_plain()
    for txn in plain:
        txn["ops"] = [op[:3] for op in txn["ops"]]
    return plain


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_st(max_lag=0))
def test_random_serial_histories_are_serializable(plan: list) -> None:
    history = run(plan)
    report = check(history, "serializable")
    assert report.ok and report.allowed == [], str(report)
    # The plain format without writers must infer exactly the writers the engine recorded.
    inferred = History.from_plain(strip_writers(history))
    assert [op.writer for x in inferred for op in x.reads] == \
        [op.writer for x in history for op in x.reads]
    assert check(inferred, "serializable").ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan_st(max_lag=3))
def test_random_snapshot_isolation_histories_pass_at_snapshot(plan: list) -> None:
    history = run(plan)
    report = check(history, "snapshot")
    assert report.ok, str(report)
    assert set(names(report.allowed)) <= {"G2-item"}
    serializable = check(history, "serializable")
    assert names(serializable.anomalies) == names(report.allowed)
    assert str(check(History.from_plain(history.to_plain()), "snapshot")) == str(report)


def test_random_snapshot_isolation_eventually_shows_write_skew() -> None:
    plan = [(3, "commit", [("r", "a"), ("r", "b"), ("w", "a" if i % 2 else "b")])
            for i in range(40)]
    report = check(run(plan), "serializable")
    assert report.anomalies and set(names(report.anomalies)) == {"G2-item"}


@st.composite
def arbitrary_history(draw: st.DrawFn) -> History:
    """Registers read from any writer at all, committed or not, earlier or later: anything goes."""
    n = draw(st.integers(2, 6))
    writes = {(i, key): draw(st.booleans()) for i in range(n) for key in "xyz"}
    history = History()
    for i in range(n):
        status = draw(st.sampled_from(["committed"] * 4 + ["aborted"]))
        txn = history.add(Txn(f"T{i}", status=status))
        for key in draw(st.permutations("xyz")):
            if draw(st.booleans()):
                writer = draw(st.sampled_from([None] + [j for j in range(n) if writes[j, key]
                                                        and j != i]))
                value = None if writer is None else f"T{writer}.{key}"
                txn.ops.append(Op("r", key, value, None if writer is None else f"T{writer}"))
            if writes[i, key]:
                txn.ops.append(Op("w", key, f"T{i}.{key}", f"T{i}"))
    return history


def typed_cycles(graph: Any) -> list[list[tuple[str, str, str, str]]]:
    """Every simple cycle, once per choice among parallel edges (fine for tiny graphs)."""
    out = []
    for nodes in nx.simple_cycles(nx.DiGraph(graph)):
        choices = [[(u, v, d["type"], d["key"]) for d in graph.get_edge_data(u, v).values()]
                   for u, v in zip(nodes, nodes[1:] + nodes[:1], strict=True)]
        out += [list(c) for c in itertools.product(*choices)]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arbitrary_history())
def test_verdicts_match_brute_force_cycle_enumeration(history: History) -> None:
    report = check(history, "serializable")
    rw_counts = [sum(e[2] == "rw" for e in c) for c in typed_cycles(report.graph)]
    direct = {a.name for a in report.anomalies if not a.cycle or a.name == "lost-update"}
    smallest = {"read_committed": 0, "snapshot": 1, "serializable": float("inf")}
    for level in ALL_LEVELS:
        expected_ok = not (direct & LEVELS[level]) and all(k > smallest[level] for k in rw_counts)
        assert check(history, level).ok is expected_ok, str(report)
    assert ("G1c" in names(report.anomalies)) is (0 in rw_counts)
    for a in report.anomalies:  # every cycle reported is real, closed, and named by its rw count
        if a.cycle:
            assert all(report.graph.has_edge(u, v) for u, v, _, _ in a.cycle)
            assert [e[1] for e in a.cycle] == [e[0] for e in a.cycle[1:] + a.cycle[:1]]
            rw = sum(e[2] == "rw" for e in a.cycle)
            assert {"G1c": rw == 0, "G-single": rw == 1, "lost-update": rw == 1,
                    "G2-item": rw >= 2}[a.name]


# -- plain format, reports, errors -----------------------------------------------------------

def test_plain_round_trip_keeps_everything_the_checker_uses() -> None:
    plain = HERMITAGE["G-single"] + [t("T9", ["w", "z", [1, {"a": 2}]], status="aborted",
                                       node="n2", reason="conflict", start_ts=4)]
    history = History.from_plain(plain)
    again = history.to_plain()
    assert json.loads(json.dumps(again)) == again
    assert again[-1] == {"id": "T9", "status": "aborted", "node": "n2", "start_ts": 4,
                         "reason": "conflict", "ops": [["w", "z", [1, {"a": 2}]]]}
    assert again[2]["ops"][1] == ["r", "y", 18, {"writer": "T2"}]
    assert str(check(again)) == str(check(history))


def test_report_text_and_markdown() -> None:
    report = check(HERMITAGE["G2-item"], "serializable")
    text = str(report)
    assert text.splitlines()[0] == ("FAIL, 1 forbidden anomaly at level 'serializable' "
                                    "(3 committed and 0 aborted transactions, 8 dependencies)")
    assert "G2-item (write skew): T1, T2 on x, y" in text
    assert "cycle: T1 -rw(y)-> T2 -rw(x)-> T1" in text
    md = report._repr_markdown_()
    assert md.startswith("❌") and "| forbidden | G2-item (write skew) |" in md
    assert check(HERMITAGE["G2-item"], "snapshot")._repr_markdown_().startswith("✅")
    assert "Allowed at snapshot" in str(check(HERMITAGE["G2-item"], "snapshot"))
    assert isinstance(report, CheckReport)


def test_report_text_is_deterministic_across_hash_seeds() -> None:
    plan = [(i % 4, "commit", [("r", k), ("w", KEYS[(i + j) % 5])])
            for i in range(60) for j, k in enumerate(KEYS[i % 3:i % 3 + 1])]
    plain = json.dumps(run(plan).to_plain())
    code = ("import json, sys; from kvlab.checker import check; "
            "print(check(json.loads(sys.stdin.read()), 'serializable'))")
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code], input=plain, env=env,
                              capture_output=True, text=True, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1 and "G2-item" in outputs.pop()


def test_levels_are_normalised_and_unknown_ones_rejected() -> None:
    assert check(HERMITAGE["G2-item"], "Read-Committed").level == "read_committed"
    with pytest.raises(InvalidLevel, match="use one of 'read_committed', 'snapshot'"):
        check(HERMITAGE["G2-item"], "repeatable_read")


@pytest.mark.parametrize("data,message", [
    ({"id": "T1"}, "expected a list of transactions"),
    ([["w", "x", 1]], "should be a dict with 'id' and 'ops'"),
    ([{"ops": []}], "needs an 'id' that is a non-empty string"),
    ([t("T1"), t("T1")], "appears twice; give every transaction a unique id"),
    ([t("T1", status="done")], "use one of committed, aborted, active"),
    ([{"id": "T1", "ops": [], "comit_ts": 3}], r"unknown field\(s\) \['comit_ts'\]"),
    ([{"id": "T1"}], "needs 'ops'"),
    ([t("T1", ["x", "k", 1])], "use 'r', 'w', 'append' or 'scan'"),
    ([t("T1", ["w", "", 1])], "keys are non-empty strings"),
    ([t("T1", ["w", "x"])], r"should look like \['r', 'x', 1\]"),
    ([t("T1", ["w", "x", None])], "None, which means 'never written'"),
    ([t("T1", ["append", "l", [1]])], "append elements are ints or strings"),
    ([t("T1", ["w", "x", 1]), t("T2", ["w", "x", 1]), t("T3", ["r", "x", 1])],
     "T1 and T2 all write to x, so its writer is ambiguous; give every write to a key a unique"),
    ([t("T1", ["r", "x", 5])], "no other transaction writes that value to x"),
    ([t("T1", ["w", "x", 1], ["r", "x", 2])], "reads its own latest write"),
    ([t("T1", ["w", "l", 1]), t("T2", ["append", "l", 2])], "use one flavour per key"),
    ([t("T1", ["append", "l", 1]), t("T2", ["append", "l", 1])], "must be unique per key"),
    ([t("T1", ["append", "l", 1]), t("T2", ["r", "l", [1, 7]])], "no transaction appends 7"),
    ([t("T1", ["append", "l", 1]), t("T2", ["r", "l", 1])], "list-append key"),
    ([t("T1", commit_ts=1), t("T2", ["w", "x", 1])], "T2 writes but has no commit_ts"),
    ([t("T1", ["r", "x", 1, {"writer": "T9"}])], "names writer 'T9', which is not in the"),
    ([t("T1", ["r", "x", 1, {"who": "T9"}])], "optional 4th element"),
])
def test_invalid_plain_input_says_what_to_do(data: Any, message: str) -> None:
    with pytest.raises(InvalidHistory, match=message):
        check(data)


def test_engine_history_that_contradicts_itself_is_rejected() -> None:
    h = engine(Txn("T1", commit_ts=1, status="committed", ops=[w("x", 1, "T1")]),
               Txn("T2", commit_ts=2, status="committed", ops=[r("x", 2, "T1", 1)]))
    with pytest.raises(InvalidHistory, match="T1 never wrote that value to x"):
        check(h)
    h = engine(Txn("T1", commit_ts=1, status="committed", ops=[w("x", 1, "T1")]),
               Txn("T2", commit_ts=2, status="committed", ops=[r("y", 1, "T1", 1)]))
    with pytest.raises(InvalidHistory, match="names writer T1, which never wrote y"):
        check(h)


# -- predicate reads: scans ---------------------------------------------------------------------
def scan(start: str | None, end: str | None, *rows: Any, ts: int | None = None) -> list:
    op = ["scan", [start, end], [list(r) for r in rows]]
    return op + [{"ts": ts}] if ts is not None else op


def edge_data(report: CheckReport, src: str, dst: str, kind: str, key: str) -> dict:
    return report.graph.edges[src, dst, (kind, key)]


def test_predicate_write_skew_is_g2_explained_edge_by_edge() -> None:
    report = check(HERMITAGE["G2-predicate"], "serializable")
    [a] = report.anomalies
    assert a.title == "G2 (predicate write skew)" and a.keys == ["3", "4"]
    assert "T1 scanned every key and missed T2's insert 4=42 (a phantom), so T1 comes " \
           "before T2" in a.explanation
    assert "T2 scanned every key and missed T1's insert 3=30" in a.explanation
    assert "serializable forbids it" in a.explanation
    assert edge_data(report, "T1", "T2", "rw", "4")["predicate"] == ("", None)
    snapshot = check(HERMITAGE["G2-predicate"], "snapshot")
    assert snapshot.ok and names(snapshot.allowed) == ["G2"]


def test_phantom_read_is_g_single_forbidden_from_snapshot() -> None:
    report = check(HERMITAGE["PMP"], "snapshot")
    [a] = report.anomalies
    assert a.name == "G-single"
    assert "T1 scanned every key and missed T2's insert 3=30 (a phantom)" in a.explanation
    assert "T1 read 3=30 written by T2" in a.explanation
    assert check(HERMITAGE["PMP"], "read_committed").ok


def test_a_scan_of_a_smaller_range_misses_nothing_outside_it() -> None:
    history = [t("T0", ["w", "1", 10]),
               t("T1", scan("1", "3", ["1", 10]), ["w", "3", 30]),
               t("T2", scan("1", "3", ["1", 10]), ["w", "4", 42])]
    assert check(history, "serializable").ok  # 3 and 4 are outside [1, 3): no phantom
    history[1]["ops"][0] = scan("1", None, ["1", 10])
    history[2]["ops"][0] = scan("1", None, ["1", 10])
    assert names(check(history, "serializable").anomalies) == ["G2"]


def test_item_write_skew_through_scan_rows_stays_g2_item() -> None:
    # the rows a scan returns are item reads: this is Hermitage's G2-item with scans
    history = [t("T0", ["w", "x", 10], ["w", "y", 20]),
               t("T1", scan("x", None, ["x", 10], ["y", 20]), ["w", "x", 11]),
               t("T2", scan("x", None, ["x", 10], ["y", 20]), ["w", "y", 21])]
    [a] = check(history, "serializable").anomalies
    assert a.name == "G2-item" and a.cycle == [("T1", "T2", "rw", "y"), ("T2", "T1", "rw", "x")]
    assert all("predicate" not in d for _, _, d in check(history).graph.edges(data=True))


def test_an_item_only_cycle_is_preferred_to_one_through_a_predicate_edge() -> None:
    history = [t("T0", ["w", "x", 10], ["w", "y", 20]),
               t("T1", ["r", "x", 10], ["r", "y", 20], scan("p", "q"), ["w", "x", 11],
                 ["w", "p1", 1]),
               t("T2", ["r", "x", 10], ["r", "y", 20], scan("p", "q"), ["w", "y", 21],
                 ["w", "p2", 2])]
    [a] = check(history, "serializable").anomalies
    assert a.name == "G2-item" and a.keys == ["x", "y"]


def test_a_scan_that_saw_a_delete_depends_on_the_deleter() -> None:
    history = [t("T1", ["w", "a", 1], ["w", "b", 2], commit_ts=1),
               t("T2", ["w", "b", None, {"deleted": True}], commit_ts=2),
               t("T3", scan("a", None, ["a", 1], ts=2), ["w", "z", 0], start_ts=2, commit_ts=4),
               t("T4", ["w", "b", 3], start_ts=3, commit_ts=5)]
    report = check(history, "serializable")
    assert report.ok
    wr = edge_data(report, "T2", "T3", "wr", "b")
    assert wr["predicate"] == ("a", None) and wr["read_from"] == "T2"
    assert edge_data(report, "T3", "T4", "rw", "b")["predicate"] == ("a", None)
    # T4 also missed T3's write of z: each missed the other's, one of them a phantom
    [a] = check([*history[:3], t("T4", ["r", "z", None], ["w", "b", 3], start_ts=3,
                                   commit_ts=5)], "serializable").anomalies
    assert a.name == "G2" and a.cycle == [("T3", "T4", "rw", "b"), ("T4", "T3", "rw", "z")]
    assert "T3 scanned keys >= 'a' and missed T4's insert b=3" in a.explanation


def test_a_delete_of_an_absent_key_changes_no_scan() -> None:
    history = [t("T1", ["w", "x", 1]),
               t("T2", scan("a", None, ["x", 1]), ["w", "y", 5]),
               t("T3", ["w", "k", None, {"deleted": True}], ["r", "y", None]),
               t("T4", ["w", "k", 7])]
    report = check(history, "serializable")
    assert not report.graph.has_edge("T2", "T3")  # deleting k changes nothing T2 could see
    assert edge_data(report, "T2", "T4", "rw", "k")["predicate"] == ("a", None)


def test_which_absent_version_a_scan_saw_needs_its_timestamp_once_keys_are_deleted() -> None:
    history = [t("T1", ["w", "b", 1]),
               t("T2", ["w", "b", None, {"deleted": True}]),
               t("T3", scan("a", "c"))]
    with pytest.raises(InvalidHistory, match=r"did not see b, which T2 deleted: .*ambiguous"):
        check(history)
    stamped = [t("T1", ["w", "b", 1], commit_ts=1),
               t("T2", ["w", "b", None, {"deleted": True}], commit_ts=2),
               t("T3", scan("a", "c", ts=1), start_ts=1)]
    with pytest.raises(InvalidHistory, match="scanned keys in \\['a', 'c'\\) at ts 1 without "
                                             "seeing b, but T1 wrote b=1 at ts 1"):
        check(stamped)
    stamped[2]["ops"][0] = scan("a", "c", ts=2)
    report = check(stamped)
    assert report.ok and edge_data(report, "T2", "T3", "wr", "b")["predicate"] == ("a", "c")


def test_scans_see_their_own_writes() -> None:
    history = [t("T1", ["w", "a", 1], scan("a", "b", ["a", 1]), ["w", "a", None,
                                                                  {"deleted": True}],
                 scan("a", "b"))]
    h = History.from_plain(history)
    assert h["T1"].scans[0].value[0].writer == "T1"
    assert check(h, "serializable").ok
    with pytest.raises(InvalidHistory, match="without seeing it; a transaction's scan sees its "
                                             "own writes"):
        check([t("T1", ["w", "a", 1], scan("a", "b"))])
    with pytest.raises(InvalidHistory, match="does not see what it deleted"):
        check([t("T0", ["w", "a", 1]),
               t("T1", ["w", "a", None, {"deleted": True}], scan("a", "b", ["a", 1]))])


def test_scan_rows_name_their_writers_by_unique_values() -> None:
    h = History.from_plain([t("T1", ["w", "a", 1], ["w", "b", 2]), t("T2", ["w", "b", 3]),
                            t("T3", scan(None, None, ["a", 1], ["b", 3]))])
    assert [(r.key, r.writer) for r in h["T3"].scans[0].value] == [("a", "T1"), ("b", "T2")]


@pytest.mark.parametrize("op, message", [
    (["scan", ["a"], []], r"should look like \['scan', \['a', 'm'\]"),
    (["scan", ["a", "b"], "rows"], "should look like"),
    (["scan", ["b", "a"], []], "starts at 'b', after its end 'a'"),
    (["scan", [1, None], []], "the range's start is a key string or None"),
    (["scan", ["a", "c"], [["d", 1]]], "not in the scanned range"),
    (["scan", ["a", None], [["b", 1], ["a", 1]]], "rows are listed in key order"),
    (["scan", ["a", None], [["a", None]]], "leave absent keys out"),
    (["scan", ["a", None], [["a"]]], r"should be \[key, value\]"),
    (["scan", ["a", None], [["a", 1, {"who": 1}]]], "3rd element is a dict"),
    (["scan", ["a", None], [], {"at": 3}], "optional 4th element is {'ts'"),
    (["scan", ["l", "m"], [["l", [1]]]], "list-append key"),
])
def test_malformed_scans_say_what_to_do(op: list, message: str) -> None:
    with pytest.raises(InvalidHistory, match=message):
        check([t("T0", ["append", "l", 1]), t("T1", op)])


def test_scan_plain_round_trip() -> None:
    history = History.from_plain(HERMITAGE["G2-predicate"] + [
        t("T3", scan("1", "3", ["1", 10], ["2", 20], ts=9))])
    plain = history.to_plain()
    assert json.loads(json.dumps(plain)) == plain
    assert plain[1]["ops"][0] == ["scan", [None, None], [["1", 10, {"writer": "T0"}],
                                                        ["2", 20, {"writer": "T0"}]]]
    assert plain[3]["ops"][0][3] == {"ts": 9}
    assert str(check(plain, "serializable")) == str(check(history, "serializable"))


SCAN_KEYS = ["a", "b", "c", "d"]


@st.composite
def si_scan_history(draw: st.DrawFn) -> tuple[History, list]:
    """Transactions that scan, insert, update and delete, run under snapshot isolation in a
    random interleaving (first committer wins); each scan reads the snapshot."""
    n = draw(st.integers(2, 4))
    programs = []
    for i in range(n):
        ops = []
        for j in range(draw(st.integers(1, 3))):
            if draw(st.booleans()):
                lo, hi = sorted(draw(st.lists(st.sampled_from(SCAN_KEYS + ["e"]),
                                              min_size=2, max_size=2)))
                ops.append(("scan", lo, hi))
            else:
                value = None if draw(st.integers(0, 3)) == 0 else f"T{i}.{j}"
                ops.append(("w", draw(st.sampled_from(SCAN_KEYS)), value))
        programs.append(ops)
    # an interleaving of begins and commits, each transaction's begin first
    final = list(draw(st.permutations([("b", i) for i in range(n)] +
                                      [("c", i) for i in range(n)])))
    for i in range(n):
        b, c = final.index(("b", i)), final.index(("c", i))
        if c < b:
            final[b], final[c] = final[c], final[b]
    versions: dict[str, list[tuple[int, str, Any]]] = {}
    clock, start, txns = 0, {}, {}
    for kind, i in final:
        if kind == "b":
            start[i] = clock
            continue
        tid = f"T{i + 1}"
        txn = Txn(tid, start_ts=start[i])
        own: dict[str, Any] = {}
        for op in programs[i]:
            if op[0] == "w":
                own[op[1]] = op[2]
                txn.ops.append(Op("w", op[1], op[2], tid, None, op[2] is None))
                continue
            rows = []
            for key in SCAN_KEYS:
                if op[1] <= key < op[2]:
                    if key in own:
                        if own[key] is not None:
                            rows.append(Op("r", key, own[key], tid))
                        continue
                    vs = [v for v in versions.get(key, []) if v[0] <= start[i]]
                    if vs and vs[-1][2] is not None:
                        rows.append(Op("r", key, vs[-1][2], vs[-1][1], vs[-1][0]))
            txn.ops.append(Op("scan", op[1], rows, None, start[i], end=op[2]))
        if any(versions.get(k) and versions[k][-1][0] > start[i] for k in own):
            txn.status = "aborted"
        elif own:
            clock += 1
            txn.status, txn.commit_ts = "committed", clock
            for key, value in own.items():
                versions.setdefault(key, []).append((clock, tid, value))
        else:
            txn.status = "committed"
        txns[tid] = txn
    history = History(sorted(txns.values(), key=lambda x: x.id))
    return history, programs


def serial_order_exists(history: History) -> bool:
    """Brute force: some order of the committed transactions, run one at a time, gives every
    scan exactly the rows it returned."""
    committed = [x for x in history if x.status == "committed"]
    for order in itertools.permutations(committed):
        state: dict[str, Any] = {}
        ok = True
        for txn in order:
            mine = dict(state)
            for op in txn.ops:
                if op.kind == "w":
                    mine[op.key] = op.value
                else:
                    want = [(r.key, r.value) for r in op.value]
                    got = sorted((k, v) for k, v in mine.items() if v is not None
                                 and op.key <= k and (op.end is None or k < op.end))
                    ok = ok and want == got
            state = mine
        if ok:
            return True
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(si_scan_history())
def test_random_snapshot_histories_with_scans_pass_at_snapshot_and_the_verdict_is_exact(
        drawn: tuple[History, list]) -> None:
    history, _ = drawn
    assert check(history, "snapshot").ok, str(check(history, "snapshot"))
    if check(history, "serializable").ok:  # then a serial order must exist
        assert serial_order_exists(history), str(check(history, "serializable"))


def test_networkx_is_imported_only_when_a_check_needs_it():
    """It takes a third of a second to import and slows every full collector pass, so a
    process that imports kvlab but checks nothing (an OS-process node) does not load it."""
    code = ("import sys, kvlab\n"
            "assert 'networkx' not in sys.modules\n"
            "r = kvlab.check(kvlab.workloads.run(transactions=20).history)\n"
            "assert r.ok and 'networkx' in sys.modules and r.graph.number_of_nodes() > 0\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
