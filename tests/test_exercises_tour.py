"""The chapter 1 exercise check: one atomic transfer of 10 from a to b, begun on n2."""

from __future__ import annotations

import kvlab
from kvlab.exercises import tour


def transfer(bank: kvlab.Cluster, node: str = "n2", amount: int = 10) -> str:
    n = bank[node]
    t = n.begin()
    a, b = n.get(t, "a"), n.get(t, "b")
    n.put(t, "a", a - amount)
    n.put(t, "b", b + amount)
    assert n.commit(t)
    return t


def test_bank_opens_the_accounts_everywhere():
    bank = tour.bank()
    assert bank.quiet
    for n in bank.ids:
        assert bank[n].versions("a")[-1].value == 100
        assert bank[n].versions("b")[-1].value == 50


def test_placeholder_answer_is_not_yet():
    fb = tour.check(tour.bank())
    assert not fb
    assert "no committed transaction has changed a or b yet" in fb.message
    assert str(fb).startswith("✘ not yet")


def test_one_transfer_on_n2_is_correct_even_with_commits_in_flight():
    bank = tour.bank()
    t = transfer(bank)
    assert not bank.quiet  # commit() returned before every COMMIT was delivered
    fb = tour.check(bank)
    assert fb, fb.message
    assert t in fb.message and "a = 90 and b = 60" in fb.message
    assert "✔ correct" in fb._repr_html_()


def test_aborted_attempts_do_not_count():
    bank = tour.bank()
    n2 = bank["n2"]
    t = n2.begin()
    n2.put(t, "a", 0)
    n2.rollback(t)
    transfer(bank)
    assert tour.check(bank)


def test_transfer_on_another_node_is_rejected():
    bank = tour.bank()
    transfer(bank, node="n1")
    fb = tour.check(bank)
    assert not fb
    assert "begun on n1" in fb.message and "n2" in fb.message


def test_two_transactions_are_not_atomic():
    bank = tour.bank()
    n2 = bank["n2"]
    for key, delta in (("a", -10), ("b", 10)):
        t = n2.begin()
        n2.put(t, key, n2.get(t, key) + delta)
        assert n2.commit(t)
    fb = tour.check(bank)
    assert not fb
    assert "2 committed transactions" in fb.message and "ONE transaction" in fb.message


def test_writing_only_one_account_is_rejected():
    bank = tour.bank()
    n2 = bank["n2"]
    t = n2.begin()
    n2.put(t, "a", n2.get(t, "a") - 10)
    assert n2.commit(t)
    fb = tour.check(bank)
    assert not fb
    assert "wrote only a" in fb.message


def test_blind_writes_are_rejected():
    bank = tour.bank()
    n2 = bank["n2"]
    t = n2.begin()
    n2.put(t, "a", 90)
    n2.put(t, "b", 60)
    assert n2.commit(t)
    fb = tour.check(bank)
    assert not fb
    assert "never read a and b" in fb.message


def test_wrong_amount_is_rejected():
    bank = tour.bank()
    transfer(bank, amount=5)
    fb = tour.check(bank)
    assert not fb
    assert "a is now 95" in fb.message and "total stays 150" in fb.message


def test_wrong_direction_is_rejected():
    bank = tour.bank()
    transfer(bank, amount=-10)
    fb = tour.check(bank)
    assert not fb
    assert "a is now 110" in fb.message and "gone down by 10" in fb.message


def test_a_cluster_not_from_bank_is_rejected():
    fb = tour.check(kvlab.Cluster(["n1", "n2", "n3"], seed=0))
    assert not fb and "tour.bank()" in fb.message
    fb = tour.check("bank")
    assert not fb and "pass the cluster" in fb.message


def test_a_crashed_node_is_reported():
    bank = tour.bank()
    transfer(bank)
    bank.crash("n3")
    fb = tour.check(bank)
    assert not fb and "cluster.restart('n3')" in fb.message
    bank.restart("n3")
    assert tour.check(bank)
