"""The boundary between the client API and whatever runs the nodes.

:class:`kvlab.client.Node` (argument checks, the history, typed errors) talks only to a
:class:`Driver`: the simulated :class:`kvlab.Cluster` is one, a cluster of OS processes another.
A driver feeds inputs to a node's state machine (:class:`kvlab.node.NodeCore`), carries out the
outputs (obeying :class:`kvlab.effects.Outbox`) and runs until a call's reply exists.

:func:`public` wraps every public entry point of a driver and of its node handles: it takes the
driver's re-entrant lock (so any thread may call any method), refuses calls on a closed driver,
writes the outermost call to the driver's journal (what Reset and Back replay), and re-raises a
kvlab error from the public call itself, so a traceback shows the user's line and the message,
not ten frames of engine internals (a :class:`~kvlab.errors.ProtocolError` keeps its frames:
it is a kvlab bug, and they are what a bug report needs).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kvlab.errors import ClusterClosed, KvlabError, ProtocolError

F = TypeVar("F", bound=Callable[..., Any])


class Driver(Protocol):
    """What :class:`kvlab.client.Node` needs from whatever runs the nodes."""

    lock: threading.RLock
    history: Any  # kvlab.History, or None when history recording is off

    def is_up(self, node: Any) -> bool: ...

    def call(self, node: Any, make: Callable[[int], Any], what: str) -> Any:
        """Feed ``make(call_id)`` to the node and run until its reply; return or raise it."""

    def tell(self, node: Any, inp: Any) -> None:
        """Feed an input that has no reply (a buffered write, a rollback)."""

    def start_commit(self, node: Any, tx: str, handle: Any) -> None:
        """Start 2PC for ``tx``; settle ``handle`` (``handle._settle(bool, reason, ts)``) when
        the outcome is known."""

    def wait(self, node: Any, ready: Callable[[], bool], what: str) -> None:
        """Run until ``ready()``; raise a typed error if that cannot happen."""

    def record_call(self, node: Any, op: str, **data: Any) -> None: ...

    def coordinator_record(self, node: Any, tx: str) -> Any:
        """The node's coordinator record of ``tx`` (state, reason, commit_ts), or None."""

    def versions(self, node: Any, key: str) -> list: ...


class _Calls:
    """Per-driver bookkeeping that :func:`public` needs: the lock, nesting, the journal."""

    def __init__(self, journal: bool) -> None:
        self.lock = threading.RLock()
        self.depth = 0
        self.closed = False
        self.journal: list[tuple] | None = [] if journal else None
        self.handles = 0  # commit handles made so far (journal entries name them by number)


def public(journal: bool = True, after_close: bool = False) -> Callable[[F], F]:
    """Decorate a public method of a driver (``self._calls``) or a handle (``self._owner``)."""

    def wrap(fn: F) -> F:
        name = fn.__name__

        @functools.wraps(fn)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls: _Calls = self._calls
            with calls.lock:
                outer = calls.depth == 0
                if calls.closed and not after_close:
                    raise ClusterClosed(
                        f"{name}() on a closed cluster: its logs are closed. Create a new "
                        f"Cluster (with the same data_dir to recover what was durable).")
                if outer and journal and calls.journal is not None:
                    # (no keywords: None, not {}: a tuple holding a dict stays tracked by the
                    # collector for good; Cluster.journal gives {} back)
                    calls.journal.append((self._journal_target(), name, args, kwargs or None))
                calls.depth += 1
                try:
                    return fn(self, *args, **kwargs)
                except KvlabError as err:
                    if outer and not isinstance(err, ProtocolError):
                        raise err.with_traceback(None) from None
                    raise
                finally:
                    calls.depth -= 1

        return method  # type: ignore[return-value]

    return wrap


__all__ = ["Driver", "public"]
