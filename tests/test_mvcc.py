"""kvlab.mvcc.Store on its own: version chains, snapshot visibility, locks, conflicts, GC."""

from __future__ import annotations

import pytest

from kvlab.mvcc import Conflict, Store


def store_with(*versions: tuple[str, int, object, bool]) -> Store:
    """versions: (key, commit_ts, value, deleted), writer T<commit_ts>."""
    s = Store()
    for key, ts, value, deleted in versions:
        s.apply(f"T{ts}", ts, {key: (value, deleted)})
    return s


def chain(s: Store, key: str) -> list[tuple[int, object, str, bool]]:
    return [(v.commit_ts, v.value, v.writer, v.deleted) for v in s.chains.get(key, [])]


# -- visibility ------------------------------------------------------------------------------
def test_empty_store_sees_nothing():
    s = Store()
    assert s.visible("x", 100) is None
    assert s.latest("x") is None
    assert s.version_count() == 0


def test_snapshot_sees_newest_version_at_or_below_its_timestamp():
    s = store_with(("x", 5, "a", False), ("x", 10, "b", False), ("x", 15, "c", False))
    assert s.visible("x", 4) is None
    assert s.visible("x", 5).value == "a"
    assert s.visible("x", 9).value == "a"
    assert s.visible("x", 10).value == "b"
    assert s.visible("x", 14).value == "b"
    assert s.visible("x", 1000).value == "c"
    assert s.visible("x", 12).writer == "T10"
    assert s.latest("x").commit_ts == 15


def test_tombstone_is_visible_as_deleted_version():
    s = store_with(("x", 5, "a", False), ("x", 10, None, True))
    assert s.visible("x", 7).value == "a"
    v = s.visible("x", 10)
    assert v.deleted and v.value is None and v.writer == "T10"


def test_keys_are_independent():
    s = store_with(("x", 5, 1, False), ("y", 7, 2, False))
    assert s.visible("x", 6).value == 1
    assert s.visible("y", 6) is None
    assert s.visible("z", 100) is None


def test_apply_several_keys_at_one_timestamp():
    s = Store()
    s.apply("T9", 9, {"a": (1, False), "b": ([1, 2], False), "c": (None, True)})
    assert s.visible("a", 9).value == 1
    assert s.visible("b", 9).value == [1, 2]
    assert s.visible("c", 9).deleted
    assert s.version_count() == 3


def test_apply_out_of_commit_order_keeps_chain_sorted():
    # COMMIT messages of two transactions may reach a participant in either order.
    s = Store()
    s.apply("T10", 10, {"x": ("late", False)})
    s.apply("T5", 5, {"x": ("early", False)})
    assert [v.commit_ts for v in s.chains["x"]] == [5, 10]
    assert s.visible("x", 7).value == "early"
    assert s.visible("x", 11).value == "late"


def test_apply_is_idempotent_on_replay():
    s = Store()
    s.apply("T5", 5, {"x": ("a", False)})
    s.apply("T8", 8, {"x": ("b", False)})
    s.apply("T5", 5, {"x": ("a", False)})  # replayed after a checkpoint already had it
    s.apply("T8", 8, {"x": ("b", False)})
    assert chain(s, "x") == [(5, "a", "T5", False), (8, "b", "T8", False)]


# -- locks ------------------------------------------------------------------------------------
def test_blocker_only_for_prepared_writers_older_than_the_snapshot():
    s = Store()
    s.lock("T5", 5, ["x"])
    assert s.blocker("x", 10, "T10").tx == "T5"  # may commit below 10: must wait
    assert s.blocker("x", 3, "T3") is None  # started after the snapshot: commits above it
    assert s.blocker("x", 10, "T5") is None  # its own lock
    assert s.blocker("y", 10, "T10") is None


def test_unlock_releases_only_own_locks():
    s = Store()
    s.lock("T5", 5, ["x"], ["r"])
    s.unlock("T6", ["x"], ["r"])
    assert s.write_locks["x"].tx == "T5"
    assert "T5" in s.read_locks["r"]
    s.unlock("T5", ["x"], ["r"])
    assert s.write_locks == {}
    assert s.read_locks == {}


# -- conflicts --------------------------------------------------------------------------------
def test_no_conflict_on_fresh_keys():
    assert Store().conflicts("T5", 5, ["x", "y"]) == []


def test_newer_committed_version_is_a_write_write_conflict():
    s = store_with(("x", 7, 1, False))
    [c] = s.conflicts("T5", 5, ["x"])
    assert (c.key, c.other, c.how, c.other_ts) == ("x", "T7", "committed", 7)
    assert "'x'" in str(c) and "T7" in str(c) and "first committer wins" in str(c)


def test_older_committed_version_is_not_a_conflict():
    s = store_with(("x", 3, 1, False))
    assert s.conflicts("T5", 5, ["x"]) == []


def test_newer_tombstone_is_a_conflict():
    s = store_with(("x", 3, 1, False), ("x", 7, None, True))
    [c] = s.conflicts("T5", 5, ["x"])
    assert (c.key, c.other, c.how) == ("x", "T7", "committed")


def test_read_committed_skips_first_committer_wins_but_not_locks():
    s = store_with(("x", 7, 1, False))
    assert s.conflicts("T5", 5, ["x"], check_committed=False) == []
    s.lock("T6", 6, ["x"])
    [c] = s.conflicts("T5", 5, ["x"], check_committed=False)
    assert c.how == "locked" and c.other == "T6"


def test_lock_of_another_prepared_transaction_is_a_conflict():
    s = Store()
    s.lock("T5", 5, ["x"])
    [c] = s.conflicts("T6", 6, ["x"])
    assert (c.key, c.other, c.how) == ("x", "T5", "locked")
    assert "'x'" in str(c) and "T5" in str(c)
    assert s.conflicts("T5", 5, ["x"]) == []  # its own lock


def test_every_conflicting_key_is_reported():
    s = store_with(("a", 9, 1, False))
    s.lock("T4", 4, ["b"])
    got = s.conflicts("T5", 5, ["a", "b", "c"])
    assert [(c.key, c.other, c.how) for c in got] == [("a", "T9", "committed"),
                                                       ("b", "T4", "locked")]


def test_serializable_read_validation():
    s = store_with(("r", 8, 1, False))
    [c] = s.conflicts("T5", 5, [], ["r"])
    assert (c.key, c.other, c.how) == ("r", "T8", "stale-read")
    assert "stale" in str(c)
    s2 = Store()
    s2.lock("T5", 5, [], ["r"])  # a prepared serializable reader of r
    [c] = s2.conflicts("T6", 6, ["r"])
    assert (c.key, c.other, c.how) == ("r", "T5", "read-locked")
    assert s2.conflicts("T5", 5, ["r"]) == []


def test_conflict_str_names_key_and_other_transaction_for_every_kind():
    for how in ("committed", "locked", "read-locked", "stale-read"):
        text = str(Conflict("k1", "T42", how, 42))
        assert "'k1'" in text and "T42" in text, (how, text)


# -- garbage collection -----------------------------------------------------------------------
def test_gc_keeps_the_version_the_watermark_snapshot_sees_and_everything_newer():
    s = store_with(("x", 2, "a", False), ("x", 4, "b", False), ("x", 6, "c", False),
                   ("x", 8, "d", False))
    assert s.gc(5) == 1  # only "a" (ts 2) is invisible to every snapshot >= 5
    assert chain(s, "x") == [(4, "b", "T4", False), (6, "c", "T6", False),
                             (8, "d", "T8", False)]
    for ts in range(5, 10):
        assert s.visible("x", ts).value == {5: "b", 6: "c", 7: "c", 8: "d", 9: "d"}[ts]


def test_gc_watermark_equal_to_a_commit_ts():
    s = store_with(("x", 2, "a", False), ("x", 4, "b", False))
    assert s.gc(4) == 1
    assert chain(s, "x") == [(4, "b", "T4", False)]


def test_gc_never_drops_the_only_version():
    s = store_with(("x", 2, "a", False))
    assert s.gc(100) == 0
    assert s.visible("x", 100).value == "a"


def test_gc_keeps_only_the_tombstone_of_a_dead_key_so_reads_still_name_the_deleter():
    s = store_with(("x", 2, "a", False), ("x", 4, None, True))
    assert s.gc(10) == 1
    [v] = s.chains["x"]
    assert v.deleted and v.writer == "T4"
    assert s.visible("x", 10).writer == "T4"
    assert s.gc(20) == 0


def test_gc_keeps_a_tombstone_a_snapshot_may_still_read_past():
    s = store_with(("x", 2, "a", False), ("x", 6, None, True))
    s.gc(4)
    assert s.visible("x", 4).value == "a"
    assert s.visible("x", 6).deleted


def test_gc_is_monotonic():
    s = store_with(("x", 2, "a", False), ("x", 4, "b", False), ("x", 6, "c", False))
    assert s.gc(5) == 1
    assert s.gc(3) == 0  # an older watermark never re-collects
    assert s.watermark == 5
    assert s.visible("x", 5).value == "b"


def test_gc_keeps_memory_flat_over_many_overwrites():
    s = Store()
    sizes = []
    for ts in range(1, 2001):
        s.apply(f"T{ts}", ts, {"x": (ts, False), "y": ([ts], False)})
        if ts % 100 == 0:
            s.gc(ts)
            sizes.append(s.version_count())
    assert set(sizes) == {2}
    assert s.visible("x", 2000).value == 2000


# -- checkpoints ------------------------------------------------------------------------------
def test_dump_load_round_trip():
    s = store_with(("x", 2, {"a": [1, 2.5, True]}, False), ("x", 4, None, True),
                   ("y", 3, "s", False))
    t = Store()
    t.load(s.dump())
    assert t.dump() == s.dump()
    assert t.visible("x", 3).value == {"a": [1, 2.5, True]}
    assert t.visible("x", 4).deleted
    assert t.visible("y", 3).value == "s"
    t.apply("T9", 9, {"y": ("new", False)})  # the bisect index works after load
    assert t.visible("y", 8).value == "s" and t.visible("y", 9).value == "new"


@pytest.mark.parametrize("ts,expected", [(0, None), (1, "v1"), (3, "v3"), (4, "v3"), (99, "v9")])
def test_visible_matches_linear_scan(ts, expected):
    s = Store()
    for t in (1, 3, 5, 7, 9):
        s.apply(f"T{t}", t, {"x": (f"v{t}", False)})
    got = s.visible("x", ts)
    assert (got.value if got else None) == expected


# -- range reads: the sorted index, scans, range validation and range locks ------------------
def rows(s: Store, span: tuple[str, str | None], ts: int) -> list[tuple[str, object]]:
    return [(k, v.value) for k, v in s.scan(span, ts)]


def test_scan_uses_a_sorted_index_and_hides_tombstones():
    s = store_with(("m", 2, "m2", False), ("b", 3, "b3", False), ("x", 4, "x4", False),
                   ("b", 6, None, True), ("c", 7, "c7", False))
    assert s._keys == ["b", "c", "m", "x"]
    assert rows(s, ("", None), 5) == [("b", "b3"), ("m", "m2"), ("x", "x4")]
    assert rows(s, ("", None), 7) == [("c", "c7"), ("m", "m2"), ("x", "x4")]
    assert rows(s, ("c", "x"), 9) == [("c", "c7"), ("m", "m2")]
    assert s.keys_in(("a", "c")) == ["b"]  # tombstoned keys are still indexed
    assert rows(s, ("n", "n"), 9) == []


def test_load_rebuilds_the_index_and_clone_copies_it():
    s = store_with(("b", 2, 1, False), ("a", 3, 2, False))
    t = Store()
    t.load(s.dump())
    assert t._keys == ["a", "b"]
    u = t.clone()
    t.apply("T5", 5, {"c": (3, False)})
    assert u._keys == ["a", "b"] and t._keys == ["a", "b", "c"]


def test_stale_range_names_phantoms_changes_deletes_and_prepared_inserts():
    s = store_with(("a", 2, 1, False), ("c", 2, 3, False))
    s.apply("T7", 7, {"b": ("new", False)})
    [c] = s.conflicts("T5", 5, [], ranges=[("a", "z")])
    assert (c.key, c.other, c.how, c.other_ts, c.span) == ("b", "T7", "phantom", 7, ("a", "z"))
    assert "T7 inserted 'b' at ts 7" in str(c) and "keys in ['a', 'z')" in str(c)
    assert s.conflicts("T5", 5, [], ranges=[("c", None)]) == []
    assert s.conflicts("T8", 8, [], ranges=[("a", "z")]) == []  # the change is in its snapshot
    s.apply("T9", 9, {"c": (None, True)})
    [c] = s.conflicts("T8", 8, [], ranges=[("c", None)])
    assert c.how == "stale-scan" and "T9 changed 'c'" in str(c)
    s.lock("T10", 10, ["d"])  # a prepared insert has no version yet
    [c] = s.conflicts("T11", 11, [], ranges=[("d", "e")])
    assert (c.key, c.other, c.how) == ("d", "T10", "locked") and "range scanned" in str(c)
    assert s.conflicts("T10", 10, ["d"], ranges=[("d", "e")]) == []  # its own lock


def test_a_range_lock_refuses_writers_inside_it_only():
    s = Store()
    s.lock("T5", 5, [], [], [("b", "d"), ("x", None)])
    assert s.range_locks == {"T5": (("b", "d"), ("x", None))}
    for key, locked in (("a", False), ("b", True), ("cz", True), ("d", False), ("zz", True)):
        found = s.conflicts("T6", 6, [key])
        assert bool(found) is locked, key
        if locked:
            assert found[0].how == "range-locked" and found[0].other == "T5"
            assert "scanned by prepared serializable transaction T5" in str(found[0])
    assert s.conflicts("T5", 5, ["c"]) == []  # its own range
    s.unlock("T5", [])
    assert s.range_locks == {} and s.conflicts("T6", 6, ["c"]) == []


def test_scan_blocker_finds_prepared_writes_in_range_that_may_commit_below():
    s = Store()
    s.lock("T5", 5, ["k"])
    assert s.scan_blocker(("a", "z"), 6) == ("k", s.write_locks["k"])
    assert s.scan_blocker(("a", "z"), 5) is None  # started at the snapshot: commits above it
    assert s.scan_blocker(("a", "k"), 6) is None
    assert s.scan_blocker(("a", "z"), 6, tx="T5") is None


def test_range_locks_are_in_the_fingerprint_and_every_mutator_resets_it():
    s = Store()
    before = s.fingerprint()
    s.lock("T5", 5, [], [], [("a", "b")])
    locked = s.fingerprint()
    assert locked != before
    c = s.clone()
    assert c.fingerprint() == locked and c.range_locks == s.range_locks
    s.unlock("T5", [])
    assert s.fingerprint() == before and c.range_locks == {"T5": (("a", "b"),)}
