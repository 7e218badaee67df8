"""Chapter 11's exercise and helpers: what a commit costs with and without the fast path."""

from __future__ import annotations

import matplotlib
import pytest

from kvlab import viz
from kvlab.exercises import fastpath as ex
from kvlab.viz import VizError

RIGHT = {"2pc": {1: (4, 3), 2: (8, 5), 3: (12, 7)},
         "one_phase": {1: (2, 1), 2: (8, 5), 3: (12, 7)}}


def test_the_right_answer_passes_as_tuples_or_lists():
    assert ex.check_costs(RIGHT).ok
    assert ex.check_costs({m: {k: list(v) for k, v in cells.items()}
                           for m, cells in RIGHT.items()}).ok


def test_the_truth_is_what_the_trace_counts():
    for mode, cells in RIGHT.items():
        for k, pair in cells.items():
            assert ex.exercise_costs(k, mode == "one_phase") == pair, (mode, k)


def test_wrong_answers_fail_without_giving_the_answer_away():
    everywhere = {**RIGHT, "one_phase": {k: (2, 1) for k in ex.KS}}  # "one-phase always applies"
    fb = ex.check_costs(everywhere)
    assert not fb.ok
    assert "one_phase, k=2: messages too low and forced records too low" in fb.message
    assert "one_phase, k=3" in fb.message and "2pc" not in fb.message.split(".")[0]
    assert "(8, 5)" not in fb.message and "12" not in fb.message
    no_decision = {m: {k: (4 * k, 2 * k) for k in ex.KS} for m in ex.MODES}  # forgot DECISION
    fb = ex.check_costs({**no_decision, "one_phase": RIGHT["one_phase"]})
    assert not fb.ok and fb.message.startswith("2pc, k=1: forced records too low; 2pc, k=2")
    assert "messages" not in fb.message.split(".")[0]


def test_placeholder_and_malformed_answers_get_a_hint():
    assert "set `answer`" in ex.check_costs(None).message
    assert "exactly the keys" in ex.check_costs({"2pc": RIGHT["2pc"]}).message
    assert "exactly the keys" in ex.check_costs([1, 2]).message
    assert "the keys 1, 2 and 3" in ex.check_costs({**RIGHT, "2pc": {1: (4, 3)}}).message
    assert "give a pair" in ex.check_costs({**RIGHT, "2pc": {**RIGHT["2pc"], 2: 8}}).message
    assert "two whole numbers" in ex.check_costs(
        {**RIGHT, "2pc": {**RIGHT["2pc"], 2: (8, 5, 1)}}).message
    assert "two whole numbers" in ex.check_costs(
        {**RIGHT, "2pc": {**RIGHT["2pc"], 2: (8.0, True)}}).message
    with pytest.raises(ValueError, match="k is one of"):
        ex.exercise_setup(4, False)


def test_one_commit_counted():
    c, tx, h = ex.single_commit(one_phase=False)
    assert ex.commit_costs(c, h) == {"messages": 4, "oracle": 2, "forced": 3, "fsyncs": 3,
                                     "ticks": 6}
    assert ex.forced_records(c, tx) == ["n2 PREPARE", "n1 DECISION", "n2 COMMIT"]
    c, tx, h = ex.single_commit(one_phase=True)
    assert ex.commit_costs(c, h) == {"messages": 2, "oracle": 2, "forced": 1, "fsyncs": 1,
                                     "ticks": 4}
    assert ex.forced_records(c, tx) == ["n2 COMMIT"] and h.committed


def test_the_sweep_behaves_as_the_chapter_says():
    co = ex.sweep(colocated=True, concurrency=(1, 8), n=24)
    spread = ex.sweep(concurrency=(1, 8), n=24)
    base, one, window = co["2PC"], co["+ one-phase"], co["+ window 2"]
    assert [r["committed"] for r in base] == [r["committed"] for r in one] == [24, 24]
    assert [r["forced"] for r in base] == [3.0, 3.0]
    assert [r["forced"] for r in one] == [1.0, 1.0]  # one forced record per co-located tx
    for b, o, w in zip(base, one, window, strict=True):
        assert o["messages"] == pytest.approx(b["messages"] - 2)  # no VOTE_YES, no COMMIT
        assert w["messages"] == b["messages"] and w["forced"] == b["forced"]
        assert w["latency"] > b["latency"] > o["latency"]
    for series in (*co.values(), *spread.values()):
        alone, busy = series
        assert alone["fsyncs"] == alone["forced"]  # one at a time: a flush per forced record
        assert busy["fsyncs"] < alone["fsyncs"]  # company shares flushes
    assert window[1]["fsyncs"] < base[1]["fsyncs"]
    assert 1 < spread["+ one-phase"][0]["forced"] < spread["2PC"][0]["forced"]  # a third apply
    assert "+ one-phase" in ex.sweep_lines(co, "forced")[2]
    for series in (co, spread):  # batching: fewer messages under load, to the oracle too
        alone, busy = series["+ batching (window 0)"]
        base_alone, base_busy = series["2PC"]
        assert alone["messages"] == base_alone["messages"]  # one at a time: nothing to gather
        assert alone["oracle"] == base_alone["oracle"]
        assert busy["messages"] < base_busy["messages"]
        assert busy["oracle"] < base_busy["oracle"]
    for series in (co, spread):  # and fewer forced records: one per delivered batch
        alone, busy = series["+ batching (window 0)"]
        assert alone["forced"] == series["2PC"][0]["forced"]  # alone: batches of one message
        assert busy["forced"] < series["2PC"][1]["forced"]
    assert ex.sweep_lines(co, "forced")[-1].startswith("+ batching (window 0) ")


def test_batching_merges_messages_and_forced_records():
    _, plain, costs = ex.batched_commits(None)
    _, batched, batched_costs = ex.batched_commits(0)
    assert costs == {"messages": 16, "oracle": 8, "forced": 12, "fsyncs": 8}
    # four BATCHes (PREPAREs, votes, COMMITs, ACKs), one to the oracle (the four commit
    # timestamp requests) and one back; the 12 forced records become one per batch, in 3 flushes
    assert batched_costs == {"messages": 4, "oracle": 2, "forced": 3, "fsyncs": 3}
    def batches(events):
        return [e for e in events if e.kind == "send" and e.data["kind"] == "BATCH"]
    assert batches(plain) == [] and len(batches(batched)) == 6
    logged = [(e.node, e.data["type"], e.data["force"]) for e in batched if e.kind == "wal"]
    # n2's four PREPAREs, n1's four DECISIONs, n2's four COMMITs, n1's four ENDs
    assert logged == [("n2", "BATCH", True), ("n1", "BATCH", True), ("n2", "BATCH", True),
                      ("n1", "BATCH", False)]
    flushes = [e.data["records"] for e in batched if e.kind == "flush"]
    assert flushes == [1, 1, 1]
    # each transaction's forced records are the batches it shares
    c, _, _ = ex.batched_commits(0)
    assert ex.forced_records(c, "T2") == ["n2 BATCH", "n1 BATCH", "n2 BATCH"]


def test_the_window_trades_fsyncs_for_latency():
    rows = ex.window_sweep(windows=(0, 1, 4), concurrency=(16,), n=32)[16]
    assert rows[0]["fsyncs"] == rows[0]["forced"]  # window 0: every record its own fsync
    assert rows[0]["fsyncs"] > rows[1]["fsyncs"] > rows[2]["fsyncs"]
    assert rows[0]["latency"] < rows[1]["latency"] < rows[2]["latency"]


def test_fast_reads_remove_the_wait_not_the_value():
    slow, fast = ex.read_wait(False), ex.read_wait(True)
    assert slow[1] == fast[1] == 0
    assert fast[0] < slow[0]


def test_the_cost_plots_are_legible_and_refuse_bad_input(monkeypatch):
    from test_viz_legibility import problems

    monkeypatch.setitem(matplotlib.rcParams, "figure.dpi", 100)
    co = ex.sweep(colocated=True, concurrency=(1, 4), n=12)
    fig = viz.cost_curves({"spread keys": ex.sweep(concurrency=(1, 4), n=12),
                           "co-located keys": co})
    assert len(fig.axes) == 4 and problems(fig) == []
    windows = ex.window_sweep(windows=(0, 1, 2), concurrency=(4,), n=12)
    fig = viz.window_tradeoff({"2PC, 4 at a time": windows[4]})
    assert problems(fig) == []
    assert any(t.get_text().strip() == "default" for ax in fig.axes for t in ax.texts)
    with pytest.raises(VizError, match="placement"):
        viz.cost_curves({})
    with pytest.raises(VizError, match="not measured"):
        viz.cost_curves({"co": co}, metrics=("joules",))
    with pytest.raises(VizError, match="'window'"):
        viz.window_tradeoff({"x": co["2PC"]})
