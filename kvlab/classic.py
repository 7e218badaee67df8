"""The seed's API as free functions: one process is one node.

>>> from kvlab.classic import initialize, begin, get, put, commit, rollback
>>> initialize("n1", ["n1", "n2", "n3"])        # doctest: +ELLIPSIS
<kvlab.Node n1 (up)>
>>> tx = begin()
>>> put(tx, "x", 1)
>>> commit(tx)
True

``initialize(node_id, all_node_ids)`` makes ``node_id`` the current node of the default
in-memory cluster of ``all_node_ids``; ``begin``, ``get``, ``put``, ``delete``, ``commit`` and
``rollback`` act on the current node with exactly the semantics of the :class:`kvlab.Node`
methods. Every ``initialize`` with the same ids (in any order) is the same system, so calling
it again, or for another node, keeps the data. Node ids may be strings or ints:
``initialize(1, [1, 2, 3])``. The functions are safe to call from any thread (the cluster has
one lock); "current" is one per process, as in the seed, not one per thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from kvlab.client import Node
from kvlab.cluster import Cluster, check_node_ids
from kvlab.errors import ConfigurationError, UnknownNode

_default: dict[frozenset, Cluster] = {}
_current: Node | None = None
_guard = threading.Lock()


def initialize(node_id: Any, all_node_ids: Iterable[Any], **options: Any) -> Node:
    """Make ``node_id`` the current node of the default cluster of ``all_node_ids`` (created on
    first use with ``options``, e.g. ``seed=1``) and return its handle."""
    global _current
    ids = check_node_ids(all_node_ids)
    if node_id not in ids or isinstance(node_id, bool):
        raise UnknownNode(f"{node_id!r} is not in all_node_ids {ids}")
    key = frozenset(ids)
    with _guard:
        cluster = _default.get(key)
        if cluster is None:
            cluster = _default[key] = Cluster(ids, **options)
        elif options:
            raise ConfigurationError(f"the default cluster of {ids} already exists; call "
                                     f"kvlab.reset_default() before initialize() with new "
                                     f"options")
        _current = cluster.node(node_id)
        return _current


def reset_default() -> None:
    """Forget the clusters made by :func:`initialize` (start the classic exercise afresh)."""
    global _current
    with _guard:
        _default.clear()
        _current = None


def node() -> Node:
    """The current node's handle (what :func:`initialize` chose)."""
    if _current is None:
        raise ConfigurationError("no current node: call initialize(node_id, all_node_ids) "
                                 "first, e.g. initialize('n1', ['n1', 'n2', 'n3'])")
    return _current


def cluster() -> Cluster:
    """The default cluster the current node belongs to (to step, crash, partition ...)."""
    return node().cluster  # type: ignore[return-value]


def begin(isolation: str = "snapshot") -> str:
    """Start a transaction on the current node; returns its id."""
    return node().begin(isolation)


def get(tx_id: str, key: str) -> Any:
    return node().get(tx_id, key)


def put(tx_id: str, key: str, value: Any) -> None:
    node().put(tx_id, key, value)


def delete(tx_id: str, key: str) -> None:
    node().delete(tx_id, key)


def commit(tx_id: str) -> bool:
    """Two-phase commit: True if committed, False if aborted."""
    return node().commit(tx_id)


def rollback(tx_id: str) -> None:
    node().rollback(tx_id)


__all__ = ["initialize", "reset_default", "begin", "get", "put", "delete", "commit",
           "rollback", "node", "cluster"]
