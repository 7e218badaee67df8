"""Chapter 6 exercise: a verify(result) oracle for bank workload runs."""

from __future__ import annotations

from kvlab import check, workloads
from kvlab.audit import audit
from kvlab.exercises.stress import check_verifier


def verify(result):
    totals = workloads.bank_totals(result.history)
    return (len(set(totals)) <= 1 and audit(result.cluster).ok
            and check(result.history, "snapshot").ok)


def test_accepts_a_complete_verifier():
    fb = check_verifier(verify)
    assert fb.ok, fb.message
    assert "rejects all three broken ones" in fb.message


def test_accepts_truthy_reports():
    def reports(result):  # AuditReport and CheckReport are truthy when ok
        return (len(set(workloads.bank_totals(result.history))) <= 1
                and bool(audit(result.cluster)) and check(result.history))
    assert check_verifier(reports).ok


def test_placeholder_and_wrong_types():
    assert "write a function verify(result)" in check_verifier(None).message
    fb = check_verifier(True)
    assert not fb.ok and "pass the function itself" in fb.message
    fb = check_verifier(lambda r: None)
    assert not fb.ok and "returned None" in fb.message


def test_errors_are_reported_not_raised():
    fb = check_verifier(lambda r: 1 / 0)
    assert not fb.ok and "ZeroDivisionError" in fb.message


def test_too_strict_on_empty_totals():
    fb = check_verifier(lambda r: len(set(workloads.bank_totals(r.history))) == 1)
    assert not fb.ok
    assert "rejected a correct snapshot run without audits" in fb.message


def test_totals_alone_miss_lost_updates():
    fb = check_verifier(lambda r: len(set(workloads.bank_totals(r.history))) <= 1)
    assert not fb.ok
    assert "accepted a read-committed run without audits" in fb.message
    assert "reads the history" in fb.message


def test_without_the_replica_audit():
    def no_audit(r):
        return len(set(workloads.bank_totals(r.history))) <= 1 and check(r.history).ok
    fb = check_verifier(no_audit)
    assert not fb.ok
    assert "silently lost the newest write" in fb.message and "reads the replicas" in fb.message


def test_accepting_everything_is_caught_by_drifting_totals():
    fb = check_verifier(lambda r: True)
    assert not fb.ok
    assert "accepted a read-committed run:" in fb.message and "totals from" in fb.message


def test_rejecting_everything():
    fb = check_verifier(lambda r: False)
    assert not fb.ok and "rejected a correct snapshot run with crashes" in fb.message
