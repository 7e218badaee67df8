"""kvlab.audit: atomicity and durability read off the replicas."""

from __future__ import annotations

import warnings

import pytest

import kvlab
from kvlab.audit import audit
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]


def run_with_crash(rules: kvlab.Rules, step: int, victim: str) -> kvlab.Cluster:
    c = kvlab.Cluster(NODES, rules=rules)
    for node, key in (("n1", "x"), ("n2", "y"), ("n3", "z")):
        tx = c[node].begin()
        c[node].put(tx, key, node)
        c[node].commit_async(tx)
    for _ in range(step):
        c.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        c.crash(victim)
        c.run()
        c.restart(victim)
    c.run()
    return c


def test_audit_passes_on_a_correct_run_with_crashes():
    for step in range(0, 40, 3):
        for victim in NODES:
            report = audit(run_with_crash(kvlab.Rules(), step, victim))
            assert report.ok, str(report)
            assert report.checked >= 1


@pytest.mark.parametrize("rule", ["force_prepare", "force_decision", "force_commit"])
def test_audit_catches_every_missing_force_rule(rule):
    caught = []
    for step in range(40):
        for victim in NODES:
            try:
                report = audit(run_with_crash(kvlab.Rules(**{rule: False}), step, victim))
            except kvlab.ProtocolError:
                continue  # the participant itself noticed the split outcome
            if not report.ok:
                caught.append(str(report))
    assert caught
    assert any("atomicity" in text for text in caught)


def test_audit_refuses_a_cluster_that_is_not_settled():
    c = kvlab.Cluster(NODES)
    tx = c["n1"].begin()
    c["n1"].put(tx, "k", 1)
    c["n1"].commit_async(tx)
    assert "cluster.run()" in str(audit(c))
    c.run()
    c.crash("n2")
    assert "restart n2" in str(audit(c))
    c.restart("n2")
    c.run()
    assert audit(c).ok


def test_audit_notices_a_replica_that_lost_a_committed_write():
    c = kvlab.Cluster(NODES)
    for value in (1, 2):
        tx = c["n1"].begin()
        c["n1"].put(tx, "k", value)
        assert c["n1"].commit(tx)
    c.run()
    assert audit(c).ok
    lost = c.core("n3").store.lose_latest("k")
    assert lost.value == 2
    report = audit(c)
    assert not report.ok and "n3" in str(report) and lost.writer in str(report)
