"""Chapter 8's checks: they accept the right answers and say something useful otherwise."""

from __future__ import annotations

from kvlab.exercises import explore as ex


def test_coordinator_rule_accepts_only_force_decision():
    assert ex.check_coordinator_rule("force_decision").ok
    for wrong in ("force_prepare", "force_commit"):
        fb = ex.check_coordinator_rule(wrong)
        assert not fb.ok and "participant" in fb.message
    assert "one of" in ex.check_coordinator_rule(None).message


def reader_never_waits_on_a_live_coordinator(cluster):
    for n in cluster.ids:
        core = cluster.core(n)
        if core is None:
            continue
        for w in core.waiting:
            ptx = core.participant.txs.get(w.blocked_by)
            if ptx is not None and cluster.up(ptx.coordinator):
                return f"{w.tx} waits on {n} for {w.blocked_by}, whose coordinator is up"
    return None


def test_invariant_check_accepts_a_correct_invariant_and_explains_wrong_ones():
    assert ex.check_invariant(reader_never_waits_on_a_live_coordinator).ok
    assert "should return a sentence" in ex.check_invariant(lambda c: None).message
    assert "should return None" in ex.check_invariant(lambda c: "always").message
    ignores_crashes = lambda c: next(  # noqa: E731 - a learner's one-liner
        (f"waits on {n}" for n in c.ids if c.core(n) and c.core(n).waiting), None)
    assert "crashed" in ex.check_invariant(ignores_crashes).message
    assert "raised" in ex.check_invariant(lambda c: c.core("n1").waiting[0]).message
    assert "pass the function" in ex.check_invariant(42).message
