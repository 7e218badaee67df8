"""Shared fixtures and helpers for the kvlab engine tests (keep this small)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

import kvlab
from kvlab.node import owner_of
from kvlab.twopc import (
    COORDINATOR_ENTRIES,
    COORDINATOR_TRANSITIONS,
    PARTICIPANT_TRANSITIONS,
)

NODES = ["n1", "n2", "n3"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (exhaustive searches of minutes, long stress runs) run only with
    KVLAB_LONG=1, so the README's test command stays well inside CI's time budget."""
    if os.environ.get("KVLAB_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set KVLAB_LONG=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cluster():
    """A fresh in-memory three-node cluster (placement "all", latency 1, no loss)."""
    c = kvlab.Cluster(NODES, seed=0)
    yield c
    c.close()


@pytest.fixture
def pcluster():
    """Like ``cluster`` but with partitioned placement."""
    c = kvlab.Cluster(NODES, seed=0, placement="partitioned")
    yield c
    c.close()


def write(cluster: kvlab.Cluster, node: str, **values: Any) -> str:
    """Commit one transaction on ``node`` that puts ``values``; return its id."""
    n = cluster.node(node)
    tx = n.begin()
    for k, v in values.items():
        n.put(tx, k, v)
    assert n.commit(tx), n.outcome(tx)
    return tx


def read(cluster: kvlab.Cluster, node: str, key: str) -> Any:
    """Read ``key`` in a fresh read-only transaction on ``node``."""
    n = cluster.node(node)
    tx = n.begin()
    value = n.get(tx, key)
    assert n.commit(tx)
    return value


def key_owned_by(owner: str, nodes: list[str] = NODES, prefix: str = "k") -> str:
    """A key that partitioned placement puts on ``owner``."""
    for i in range(1000):
        key = f"{prefix}{i}"
        if owner_of(key, sorted(nodes)) == owner:
            return key
    raise AssertionError(f"no key found for {owner}")


def step_until(cluster: kvlab.Cluster, ready: Callable[[], bool], limit: int = 10_000) -> None:
    """Run single events until ``ready()`` holds; fail if the cluster goes quiet first."""
    for _ in range(limit):
        if ready():
            return
        if not cluster.step():
            assert ready(), "the cluster went quiet before the expected state was reached"
            return
    raise AssertionError(f"state not reached within {limit} steps")


def pending(cluster: kvlab.Cluster, kind: str, tx: str | None = None,
            dst: str | None = None) -> list:
    """In-flight envelopes of one kind (optionally for one transaction / destination)."""
    return [e for e in cluster.pending() if e.kind == kind
            and (tx is None or e.tx == tx) and (dst is None or e.dst == dst)]


def bad_transitions(notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """State notes (``old``/``new`` present) whose transition kvlab.twopc's tables do not list.

    A coordinator record is created from INIT through one of ``COORDINATOR_ENTRIES``
    (``begin`` -> ACTIVE, or ``recover decision`` -> COMMITTING).
    """
    bad = []
    for n in notes:
        if "new" not in n or n.get("role") not in ("coordinator", "participant"):
            continue
        old, event, new = n["old"], n["event"], n["new"]
        if n["role"] == "coordinator":
            if old == "INIT":
                ok = COORDINATOR_ENTRIES.get(event) == new
            else:
                ok = COORDINATOR_TRANSITIONS.get(old, {}).get(event) == new
        else:
            ok = PARTICIPANT_TRANSITIONS.get(old, {}).get(event) == new
        if not ok:
            bad.append(n)
    return bad


def reader_races_a_commit(**options: Any) -> kvlab.Cluster:
    """T2 begins once T1's commit timestamp is assigned but before n3 has T1's COMMIT, and
    reads x on n3, where T1 is still prepared: the read must wait for the outcome (the
    explorer's read race; ``options``: more Cluster settings, e.g. ``fast_reads=True``)."""
    c = kvlab.Cluster(NODES, seed=0, **options)
    n1, n3 = c["n1"], c["n3"]
    t1 = n1.begin()
    n1.put(t1, "x", 1)
    n1.commit_async(t1)
    while not any(e.kind == "COMMIT" for e in c.pending()):
        c.step()
    for e in c.pending():
        if e.kind == "COMMIT" and e.dst == "n3":
            c.drop(e.id)  # delayed: n3 learns the decision only from a resend
    t2 = n3.begin()
    n3.get_async(t2, "x")
    return c
