"""Engine histories under each isolation level show exactly the anomalies that level allows."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvlab
from kvlab import scenarios, workloads
from kvlab.node import ISOLATION_LEVELS

FAULTS = workloads.Faults(crash_rate=0.05, loss=0.01, latency=(1, 6))


@pytest.mark.parametrize("level", ISOLATION_LEVELS)
@pytest.mark.parametrize("kind", workloads.KINDS)
def test_workload_histories_pass_the_checker_at_their_level(level, kind):
    r = workloads.run(kind, transactions=1500, concurrency=8, keys=6, isolation=level,
                      seed=11, faults=FAULTS)
    assert r.committed > 300 and r.aborted > 0
    assert r.cluster.trace.filter("crash"), "the run must include crashes"
    report = kvlab.check(r.history, level)
    assert report.ok, str(report)
    if kind == "bank" and level != "read_committed":  # RC allows lost updates and read skew
        assert set(workloads.bank_totals(r.history)) == {100 * 6}


def test_snapshot_allows_write_skew_and_serializable_prevents_it_in_random_workloads():
    si = workloads.run("register", transactions=2000, concurrency=8, keys=4, seed=5)
    report = kvlab.check(si.history, "serializable")
    assert not report.ok
    assert {a.name for a in report.anomalies} == {"G2-item"}  # and nothing worse
    assert kvlab.check(si.history, "snapshot").ok
    ser = workloads.run("register", transactions=2000, concurrency=8, keys=4, seed=5,
                        isolation="serializable")
    assert kvlab.check(ser.history, "serializable").ok
    assert ser.abort_rate > si.abort_rate  # validation is what prevents the skew


def test_read_committed_shows_lost_updates_that_snapshot_prevents():
    rc = workloads.run("bank", transactions=1000, concurrency=8, keys=4, seed=2,
                       isolation="read_committed", read_only=0.0)
    names = {a.name for a in kvlab.check(rc.history, "snapshot").anomalies}
    assert "lost-update" in names
    assert kvlab.check(rc.history, "read_committed").ok


@pytest.mark.parametrize(("name", "ran_at", "checked_at", "anomaly"), [
    ("P4", "read_committed", "snapshot", "lost-update"),
    ("G-single", "read_committed", "snapshot", "G-single"),
    ("G2-item", "snapshot", "serializable", "G2-item"),
    ("read-only", "snapshot", "serializable", "G2-item"),
])
def test_checker_names_the_anomaly_a_scenario_produced(name, ran_at, checked_at, anomaly):
    result = scenarios.get(name).run(ran_at)
    assert result.verdict == "allowed"
    report = kvlab.check(result.cluster.history, checked_at)
    assert anomaly in {a.name for a in report.anomalies}
    assert kvlab.check(result.cluster.history, ran_at).ok
    prevented = scenarios.get(name).run(checked_at)
    assert kvlab.check(prevented.cluster.history, checked_at).ok


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(level=st.sampled_from(ISOLATION_LEVELS), kind=st.sampled_from(workloads.KINDS),
       seed=st.integers(0, 10_000), concurrency=st.integers(2, 12), keys=st.integers(3, 12),
       skew=st.sampled_from(["uniform", "zipf"]), read_only=st.floats(0, 0.6),
       crash_rate=st.sampled_from([0.0, 0.05, 0.2]), loss=st.sampled_from([0.0, 0.02]),
       placement=st.sampled_from(["all", "partitioned"]))
def test_random_workloads_with_faults_never_show_a_forbidden_anomaly(
        level, kind, seed, concurrency, keys, skew, read_only, crash_rate, loss, placement):
    r = workloads.run(kind, transactions=300, concurrency=concurrency, keys=keys, skew=skew,
                      read_only=read_only, isolation=level, seed=seed, placement=placement,
                      faults=workloads.Faults(crash_rate=crash_rate, loss=loss, latency=(1, 8)))
    report = kvlab.check(r.history, level)
    assert report.ok, str(report)


@pytest.mark.parametrize("seed", [2, 4, 6])
def test_heavy_faults_keep_atomicity_and_the_bank_invariant(seed):
    # seeds that once produced a stale presumed-abort answer reaching a committed participant
    r = workloads.run("bank", transactions=500, concurrency=8, keys=10, seed=seed,
                      faults=workloads.Faults(crash_rate=0.3, loss=0.1, latency=(1, 20)))
    assert r.committed > 0
    assert kvlab.check(r.history, "snapshot").ok
    assert kvlab.audit.audit(r.cluster).ok
    assert set(workloads.bank_totals(r.history)) <= {1000}
    stale = [e for e in r.cluster.trace.filter("state")
             if e.data.get("event") == "stale presumed abort"]
    assert all(e.data["old"] == "COMMITTED" for e in stale)
