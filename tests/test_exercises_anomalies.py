"""Chapter 3 exercise: a hand-written history that shows write skew."""

from __future__ import annotations

from kvlab.exercises.anomalies import check_booking, check_write_skew

DOCTORS = [
    {"id": "T0", "ops": [["w", "alice", "on call"], ["w", "bob", "on call"]]},
    {"id": "T1", "ops": [["r", "alice", "on call"], ["r", "bob", "on call"],
                         ["w", "alice", "off"]]},
    {"id": "T2", "ops": [["r", "alice", "on call"], ["r", "bob", "on call"],
                         ["w", "bob", "off"]]},
]


def test_accepts_write_skew():
    fb = check_write_skew(DOCTORS)
    assert fb.ok, fb.message
    assert "G2-item" in fb.message and "T1 -rw(bob)-> T2 -rw(alice)-> T1" in fb.message


def test_accepts_write_skew_from_the_initial_state():
    history = [{"id": "T1", "ops": [["r", "x", None], ["r", "y", None], ["w", "x", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["r", "y", None], ["w", "y", 2]]}]
    assert check_write_skew(history).ok


def test_accepts_a_three_transaction_cycle():
    history = [{"id": "T1", "ops": [["r", "b", None], ["w", "a", 1]]},
               {"id": "T2", "ops": [["r", "c", None], ["w", "b", 1]]},
               {"id": "T3", "ops": [["r", "a", None], ["w", "c", 1]]}]
    assert check_write_skew(history).ok


def test_placeholder_explains_the_format():
    fb = check_write_skew(None)
    assert not fb.ok
    assert "answer = None" in fb.message and "'ops'" in fb.message


def test_rejects_lost_update_with_a_hint():
    history = [{"id": "T1", "ops": [["r", "x", None], ["w", "x", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["w", "x", 2]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "lost-update" in fb.message and "different key" in fb.message


def test_rejects_read_skew_with_a_hint():
    history = [{"id": "T1", "ops": [["w", "x", 1], ["w", "y", 1]]},
               {"id": "T2", "ops": [["r", "x", 1], ["r", "y", None]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "G-single" in fb.message and "same snapshot" in fb.message


def test_rejects_a_serializable_history():
    history = [{"id": "T1", "ops": [["r", "x", None], ["w", "y", 1]]},
               {"id": "T2", "ops": [["r", "x", None], ["w", "x", 2]]}]
    fb = check_write_skew(history)
    assert not fb.ok
    assert "nothing non-serializable" in fb.message


def test_rejects_too_few_transactions():
    for history in ([], [{"id": "T1", "ops": [["r", "x", None], ["w", "y", 1]]}]):
        fb = check_write_skew(history)
        assert not fb.ok and "at least two committed" in fb.message


def test_malformed_history_says_what_is_wrong():
    fb = check_write_skew([{"id": "T1", "ops": [["q", "x", None]]}])
    assert not fb.ok
    assert "cannot read that history" in fb.message and "'q'" in fb.message
    assert not check_write_skew("T1 writes x").ok


# -- booking a room: a predicate read that must see phantoms -----------------------------------
def book(node, tx, room, who):
    if not node.scan(tx, prefix=f"{room}/"):
        node.put(tx, f"{room}/{who}", "booked")


def test_accepts_a_booking_that_scans_the_room():
    fb = check_booking(book)
    assert fb.ok, fb.message
    assert "phantom" in fb.message and "predicate write skew" in fb.message
    assert "2 bookings" in fb.message  # what snapshot isolation lets through


def test_accepts_a_wider_scan():
    def wide(node, tx, room, who):
        if not [k for k, _ in node.scan(tx) if k.startswith(f"{room}/")]:
            node.put(tx, f"{room}/{who}", 1)
    assert check_booking(wide).ok


def test_placeholder_and_non_functions_explain_what_to_write():
    for answer in (None, "book"):
        fb = check_booking(answer)
        assert not fb.ok and "book(node, tx, room, who)" in fb.message


def test_rejects_bookings_that_do_not_look_first():
    def blind(node, tx, room, who):
        node.put(tx, f"{room}/{who}", 1)

    def own_key_only(node, tx, room, who):
        if node.get(tx, f"{room}/{who}") is None:
            node.put(tx, f"{room}/{who}", 1)

    def narrow_scan(node, tx, room, who):
        if not node.scan(tx, prefix=f"{room}/{who}"):
            node.put(tx, f"{room}/{who}", 1)

    for fn in (blind, own_key_only, narrow_scan):
        fb = check_booking(fn)
        assert not fb.ok and "look for existing bookings first" in fb.message, fn.__name__


def test_rejects_a_shared_key_without_a_scan_but_says_why_it_works():
    def shared(node, tx, room, who):
        if node.get(tx, room) is None:
            node.put(tx, room, who)
            node.put(tx, f"{room}/{who}", 1)
    fb = check_booking(shared)
    assert not fb.ok and "without a scan" in fb.message and "shared key" in fb.message


def test_rejects_a_missing_or_misplaced_booking():
    def nothing(node, tx, room, who):
        node.scan(tx, prefix=f"{room}/")

    def elsewhere(node, tx, room, who):
        if not node.scan(tx, prefix=f"{room}/"):
            node.put(tx, f"{room}-{who}", 1)
    for fn in (nothing, elsewhere):
        fb = check_booking(fn)
        assert not fb.ok and "'room101/alice'" in fb.message
    assert "room101-alice" in check_booking(elsewhere).message


def test_reports_errors_and_commits_inside_book():
    def boom(node, tx, room, who):
        raise ValueError("oops")

    def commits(node, tx, room, who):
        node.put(tx, f"{room}/{who}", 1)
        node.commit(tx)
    fb = check_booking(boom)
    assert not fb.ok and "raised ValueError: oops" in fb.message
    fb = check_booking(commits)
    assert not fb.ok and "leave the commit to the caller" in fb.message
