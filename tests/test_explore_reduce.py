"""kvlab.explore's reduction (sleep sets): the same states as the full search, fewer choices made.

The reduction only skips choices whose state is reached by another order of the same choices,
so it must visit exactly the states the full search visits, each at the same breadth-first
depth. These tests compare the two graphs state by state, and show that a wrong independence
relation (two of the relation's rules taken out) loses states the comparison catches.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from conftest import reader_races_a_commit

import kvlab
from kvlab import bench, explore
from kvlab.cluster import _collector_paused
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]


def one_commit(protocol: str = "2pc") -> Any:
    def setup() -> kvlab.Cluster:
        c = kvlab.Cluster(NODES, seed=0, commit_protocol=protocol)
        n1 = c["n1"]
        t = n1.begin()
        n1.put(t, "x", 1)
        n1.commit_async(t)
        return c
    return setup


def remote_commit(protocol: str = "paxos") -> kvlab.Cluster:
    """n1 coordinates one write to y, which n2 owns (tests/test_paxos.py's explorer setup)."""
    c = kvlab.Cluster(NODES, seed=0, commit_protocol=protocol, placement="partitioned")
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "y", 1)
    n1.commit_async(t)
    return c


def graph(setup: Any, reduce: bool, strategy: str = "bfs", **budgets: int
          ) -> tuple[explore.Result, dict[int, int]]:
    """Run the search with its test hook: every state found, with its schedule's length."""
    found: dict[int, int] = {}
    b = {"crashes": 0, "drops": 0, "duplicates": 0, "timeouts": 0, **budgets}
    with warnings.catch_warnings(), _collector_paused():
        warnings.simplefilter("ignore", TornTailWarning)
        r = explore._run(setup, b, [explore.safety], [explore.finished], None, None, strategy,
                         None, False, reduce, found)
    return r, found


def assert_same_graph(setup: Any, strategy: str = "bfs", **budgets: int) -> None:
    full, fg = graph(setup, False, strategy, **budgets)
    red, rg = graph(setup, True, strategy, **budgets)
    assert full.status == red.status == "exhausted", (full, red)
    missing = set(fg) - set(rg)
    assert not missing, f"the reduction lost {len(missing)} of {len(fg)} states"
    assert set(rg) == set(fg), "the reduction found states the full search does not"
    assert red.states == full.states and red.terminal == full.terminal
    if strategy == "bfs":  # each state at its shortest depth: BFS schedules stay shortest
        assert rg == fg
    assert red.transitions < full.transitions and red.slept > 0  # and it does prune


@pytest.mark.parametrize("setup, budgets, strategy", [
    (one_commit(), {}, "bfs"),
    (one_commit(), {"crashes": 1}, "bfs"),
    (one_commit(), {"crashes": 1}, "dfs"),
    (one_commit("cooperative"), {}, "bfs"),
    (reader_races_a_commit, {"crashes": 1}, "bfs"),
    (reader_races_a_commit, {"timeouts": 1}, "dfs"),
    (reader_races_a_commit, {"duplicates": 1, "drops": 1}, "bfs"),
], ids=["2pc", "2pc-crash", "2pc-crash-dfs", "cooperative", "read-race-crash",
        "read-race-timeout-dfs", "read-race-duplicate-drop"])
def test_the_reduced_search_visits_exactly_the_states_of_the_full_search(setup, budgets,
                                                                         strategy):
    assert_same_graph(setup, strategy, **budgets)


@pytest.mark.slow
@pytest.mark.parametrize("setup, budgets", [
    (one_commit(), {"timeouts": 1}),
    (one_commit(), {"drops": 1}),
    (one_commit(), {"duplicates": 1}),
    (one_commit(), {"crashes": 1, "timeouts": 1}),
    (one_commit(), {"crashes": 1, "drops": 1}),
    (one_commit(), {"crashes": 1, "duplicates": 1}),
    (one_commit("cooperative"), {"crashes": 1}),
    (remote_commit, {}),
    (remote_commit, {"crashes": 1}),
    (bench.two_commits, {}),
], ids=["timeout", "drop", "duplicate", "crash-timeout", "crash-drop", "crash-duplicate",
        "cooperative-crash", "paxos-remote", "paxos-remote-crash", "two-commits"])
def test_the_reduced_search_visits_exactly_the_states_of_the_full_search_larger(setup,
                                                                                budgets):
    assert_same_graph(setup, "bfs", **budgets)


# -- a wrong independence relation is caught ---------------------------------------------------
def without_merges(u: Any, t: Any, last: bool) -> bool:
    """The relation without its merge rule: a delivery is taken as independent of the sender's
    next step even when that step re-sends the same message (which merges with it)."""
    return u[0] != t[0] and not ((u[1] is explore._CRASH or last) and (
        t[1] is explore._CRASH or last) and (u[1] is explore._CRASH or t[1] is explore._CRASH))


def without_last(u: Any, t: Any, last: bool) -> bool:
    """The relation without its end-of-run rule: the last delivery is taken as independent
    of a crash, though it ends the run (and the search expands no crash after that)."""
    return real_independent(u, t, False)


real_independent = explore._independent


@pytest.mark.parametrize("wrong, setup, budgets", [
    (without_last, one_commit(), {"crashes": 1}),
    (without_last, reader_races_a_commit, {"crashes": 1}),
    (without_merges, reader_races_a_commit, {"timeouts": 1}),
    (lambda u, t, last: True, one_commit(), {}),
], ids=["end-of-run", "end-of-run-read-race", "merges", "everything-independent"])
def test_a_wrong_independence_relation_loses_states_and_the_comparison_says_so(
        monkeypatch, wrong, setup, budgets):
    monkeypatch.setattr(explore, "_independent", wrong)
    with pytest.raises(AssertionError, match="the reduction lost"):
        assert_same_graph(setup, "bfs", **budgets)
