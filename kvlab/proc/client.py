"""The TCP client driver: :class:`kvlab.client.Node` handles for nodes that run elsewhere.

:class:`RemoteCluster` implements :class:`kvlab.driver.Driver` over one TCP connection per node
(blocking sockets, one reader thread each). ``node.begin()``, ``get``, ``put``, ``commit`` ...
are the very same :class:`kvlab.client.Node` methods the simulator serves: the arguments are
checked, the history recorded and the errors typed before and after the driver, so the only
new code is the transport. What differs, and why:

* **Blocking is real.** A call waits (``threading.Condition`` on the driver's lock, so other
  threads run meanwhile) until the node answers, at most ``call_timeout`` seconds; then the
  client abandons the call on the node (a late answer creates nothing) and raises
  :class:`CallTimeout`, whose message says what the node was waiting for.
* **A dead node is a closed socket.** Connecting is refused, or an open connection ends: the
  call raises :class:`~kvlab.errors.NodeUnavailable` saying what to do.
* **A commit's outcome can be unknown.** If the coordinator dies after the commit started, the
  client cannot tell whether the decision became durable first (it may have: the reply is sent
  right after the fsync). ``handle.wait()`` raises NodeUnavailable, the history keeps the
  transaction as ``active`` with reason "unknown: ...", and :meth:`RemoteCluster.resolve`
  (called by :meth:`kvlab.proc.ProcessCluster.restart`) settles it from the nodes' records.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kvlab.client import CommitHandle, Node, ReadHandle
from kvlab.driver import _Calls, public
from kvlab.errors import NodeUnavailable, SimulationTimeout, UnknownNode
from kvlab.history import History
from kvlab.node import Commit, Get
from kvlab.proc import wire
from kvlab.twopc import ABORTED, COMMITTED, COMMITTING


class CallTimeout(SimulationTimeout):
    """A call on a real node did not finish within ``call_timeout`` seconds (the call was
    abandoned on the node). A subclass of SimulationTimeout, so code written for the simulator
    catches it unchanged."""


class _ThreadCalls(_Calls):
    """:class:`kvlab.driver._Calls` with a per-thread call depth: many threads wait on real
    nodes at once (each releases the lock while it waits), and each one's outermost call must
    still get the short traceback."""

    def __init__(self) -> None:
        self._local = threading.local()
        super().__init__(journal=False)

    @property  # type: ignore[override]
    def depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @depth.setter
    def depth(self, value: int) -> None:
        self._local.depth = value


class _Pending:
    __slots__ = ("done", "value", "error", "accepted", "abandoned", "why", "lost", "handle",
                 "tx", "node", "read")

    def __init__(self, node: Any) -> None:
        self.node = node
        self.done = self.accepted = self.abandoned = self.lost = False
        self.value: Any = None
        self.error: BaseException | None = None
        self.why: str | None = None
        self.handle: CommitHandle | None = None
        self.read: ReadHandle | None = None  # a get_async, settled when its answer comes
        self.tx: str | None = None


def _addr(value: Any) -> tuple[str, int]:
    if isinstance(value, str):
        host, _, port = value.rpartition(":")
        return host or "127.0.0.1", int(port)
    host, port = value
    return str(host), int(port)


class _Conn:
    """One client connection to one node, with its reader thread."""

    def __init__(self, owner: RemoteCluster, node: Any, addr: tuple[str, int]) -> None:
        self.owner, self.node, self.addr = owner, node, addr
        self.pending: dict[int, _Pending] = {}
        self.ids = itertools.count(1)
        self.alive = False
        self.reason = ""
        sock = socket.create_connection(addr, timeout=owner.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(wire.frame({"t": "hello", "role": "client"}))
            hello = wire.recv_frame(sock)
            if not hello or hello.get("t") != "hello" or hello.get("node") != node:
                raise ConnectionError(f"{addr[0]}:{addr[1]} is not node {node!r} "
                                      f"(it says {hello and hello.get('node')!r})")
            sock.settimeout(None)
            # a node that stops reading (hung, SIGSTOP) must not block a send, and with it
            # the driver's lock, for ever: after call_timeout the send fails, the node is
            # NodeUnavailable. (A socket timeout would apply to the reader thread too.)
            secs = max(1.0, owner.call_timeout)
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack("ll", int(secs), int(secs % 1 * 1e6)))
        except BaseException:
            sock.close()
            raise
        self.pid = hello.get("pid")
        self.sock = sock
        self.alive = True
        self.thread = threading.Thread(target=self._read, name=f"kvlab-client-{node}",
                                       daemon=True)
        self.thread.start()

    def request(self, obj: dict[str, Any]) -> _Pending:
        """Send one request (the caller holds the driver's lock)."""
        if not self.alive:
            raise self.owner._unavailable(self.node, self.reason)
        rid = obj["rid"] = next(self.ids)
        p = self.pending[rid] = _Pending(self.node)
        try:
            self.sock.sendall(wire.frame(obj))
        except OSError as e:
            self._dead(f"sending failed: {e}")
            raise self.owner._unavailable(self.node, self.reason) from None
        return p

    def post(self, obj: dict[str, Any]) -> None:
        """Send a frame that needs no answer kept (an abandon's answer is matched by rid)."""
        if self.alive:
            try:
                self.sock.sendall(wire.frame(obj))
            except OSError as e:
                self._dead(f"sending failed: {e}")

    def _read(self) -> None:
        owner = self.owner
        reason = "the node closed the connection"
        try:
            while (obj := wire.recv_frame(self.sock)) is not None:
                with owner.lock:
                    self._dispatch(obj)
                    owner._cond.notify_all()
        except (OSError, wire.FrameError) as e:
            reason = f"the connection failed ({e})"
        with owner.lock:
            self._dead(reason)
            owner._cond.notify_all()

    def _dispatch(self, obj: dict[str, Any]) -> None:
        t, rid = obj.get("t"), obj.get("rid")
        if t == "abandoned":
            p = self.pending.get(rid)
            if p is not None:
                p.abandoned, p.why = True, obj.get("why")
                if not p.done:
                    del self.pending[rid]
            return
        p = self.pending.get(rid)
        if p is None:
            return
        if t == "accepted":
            p.accepted = True
            return
        del self.pending[rid]
        p.done = True
        if t == "ok":
            p.value = wire.value_from_wire(obj.get("v"))
            if p.read is not None:
                h = p.read
                self.owner._handles[h.node]._record_read(h.tx, h.key, p.value)
                h._settle(p.value.value, None)
        elif t == "err":
            p.error = wire.error_from_wire(obj.get("e"))
            if p.read is not None:
                p.read._settle(None, p.error)
        elif t == "done":
            p.value = bool(obj.get("v"))
            if p.handle is not None:
                self.owner._settle(p.handle, p.value, obj.get("reason") or "",
                                   obj.get("commit_ts"))

    def _dead(self, reason: str) -> None:
        if not self.alive and self.reason:
            return
        self.alive = False
        self.reason = self.reason or reason
        for p in self.pending.values():
            if not p.done:
                p.lost = True
                if p.handle is not None:
                    self.owner._lost_commit(p)
                elif p.read is not None:
                    p.read._settle(None, self.owner._unavailable(self.node, self.reason))
        self.pending.clear()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def close(self) -> None:
        self._dead("the client closed the connection")


class RemoteCluster:
    """Classic API handles for kvlab nodes served over TCP (``python -m kvlab.serve``).

    Parameters
    ----------
    addresses: node id -> ``"host:port"`` (or ``(host, port)``), e.g. the ``--peers`` list.
    call_timeout: seconds a call may wait for its answer before :class:`CallTimeout`.
    connect_timeout: seconds to wait for a TCP connection.
    history: record every transaction for :func:`kvlab.check` (this client's calls only).
    trace: keep this client's calls for :meth:`kvlab.proc.ProcessCluster.trace`.
    """

    def __init__(self, addresses: Mapping[Any, Any], call_timeout: float = 30.0,
                 connect_timeout: float = 5.0, history: bool = True,
                 trace: bool = False) -> None:
        self.ids = list(addresses)
        self.addresses = {n: _addr(a) for n, a in addresses.items()}
        self.call_timeout = float(call_timeout)
        self.connect_timeout = float(connect_timeout)
        self._calls = _ThreadCalls()
        self.lock = self._calls.lock
        self._cond = threading.Condition(self.lock)
        self.history: History | None = History() if history else None
        self._conns: dict[Any, _Conn] = {}
        self._connecting: set[Any] = set()
        self._handles = {n: Node(self, n) for n in self.ids}
        self._unknown: list[_Pending] = []
        self._trace = trace
        self._events: list[tuple[float, str, Any, dict[str, Any]]] = []

    def _journal_target(self) -> None:
        return None

    # -- public API ------------------------------------------------------------------------
    @public(journal=False, after_close=True)
    def node(self, node_id: Any) -> Node:
        """The classic API handle of one node (also ``cluster[node_id]``)."""
        try:
            return self._handles[node_id]
        except (KeyError, TypeError):
            raise UnknownNode(f"no node {node_id!r}; this cluster has {self.ids}") from None

    __getitem__ = node

    @property
    def nodes(self) -> list[Node]:
        return [self._handles[n] for n in self.ids]

    @public(journal=False)
    def status(self, node_id: Any) -> dict[str, Any]:
        """What the node says about itself: pid, links to its peers, the watermark, in-doubt
        transactions, locks held, memory (versions and records kept)."""
        self.node(node_id)
        return self._query(node_id, "status")

    @public(journal=False)
    def states(self, node_id: Any) -> dict[tuple[str, str], str]:
        """(role, tx) -> 2PC state of every transaction the node remembers."""
        self.node(node_id)
        return {(role, tx): state for role, tx, state in self._query(node_id, "states")}

    @public(journal=False)
    def checkpoint(self, node_id: Any) -> None:
        """Make the node write a checkpoint and truncate its WAL now."""
        self.node(node_id)
        self._query(node_id, "checkpoint")

    @public(journal=False)
    def resolve(self) -> list[str]:
        """Settle commits whose coordinator died before the client heard the outcome, from
        the nodes' own records; return the transactions still unknown (ask again later).

        The coordinator's record decides if it has one; else any participant that committed
        (or aborted) it does; else, once the coordinator is back and nobody remembers the
        transaction, presumed abort: a decision is durable before anyone hears of it, and a
        committed transaction is remembered until it is far below every snapshot in use."""
        return [p.tx for p in list(self._unknown) if not self._try_resolve(p)]

    def _try_resolve(self, p: _Pending) -> bool:
        verdict = self._verdict(p)
        if verdict is None:
            return False
        self._unknown.remove(p)
        self._settle(p.handle, *verdict)
        return True

    @public(journal=False, after_close=True)
    def close(self) -> None:
        """Close every connection (the nodes keep running). Closing twice changes nothing."""
        if self._calls.closed:
            return
        self._calls.closed = True
        for conn in self._conns.values():
            conn.close()
        self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._calls.closed

    def __enter__(self) -> RemoteCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kvlab.proc.RemoteCluster {', '.join(map(str, self.ids))}>"

    # -- the Driver interface (kvlab.driver) -------------------------------------------------
    def is_up(self, node: Any) -> bool:
        try:
            return self._conn(node).alive
        except NodeUnavailable:
            return False

    def call(self, node: Any, make: Callable[[int], Any], what: str) -> Any:
        inp = make(0)  # the node assigns the real call id
        p = self._conn(node).request({"t": "call", "in": wire.input_to_wire(inp)})
        self._await(node, p, what, lambda: p.done)
        if p.error is not None:
            raise p.error
        return p.value

    def tell(self, node: Any, inp: Any) -> None:
        self.call(node, lambda _: inp, type(inp).__name__.lower() + "()")

    def start_commit(self, node: Any, tx: str, handle: CommitHandle) -> None:
        conn = self._conn(node)
        p = conn.request({"t": "call", "in": wire.input_to_wire(Commit(0, tx))})
        p.handle, p.tx = handle, tx
        self._await(node, p, f"commit({tx!r})", lambda: p.accepted or p.done)
        if p.error is not None:
            raise p.error  # refused before anything happened (e.g. TransactionClosed)
        handle.call = p  # type: ignore[assignment]  # what wait() watches
        self.record_call(node, "commit", tx=tx)

    def start_read(self, node: Any, tx: str, key: str, handle: ReadHandle) -> None:
        """Send a read and return at once (``node.get_async``): the reader thread settles
        ``handle`` when the node answers, which may be after a prepared writer is decided."""
        p = self._conn(node).request({"t": "call", "in": wire.input_to_wire(Get(0, tx, key))})
        p.read, p.tx = handle, tx
        handle.call = p  # type: ignore[assignment]  # what wait() watches

    def wait(self, node: Any, ready: Callable[[], bool], what: str, call: Any = None,
             abandon: bool = True) -> None:
        """Wait for a commit's outcome or an async read's answer (``handle.wait()``); the
        call stays on the node after a CallTimeout, so waiting again may still succeed."""
        p = call if isinstance(call, _Pending) else None
        deadline = time.monotonic() + self.call_timeout
        while not ready():
            if p is not None and p.lost:
                if p.read is not None:
                    raise NodeUnavailable(f"{node} went away while {what} was waiting: "
                                          f"restart it, then retry (a transaction begun there "
                                          f"is gone)")
                raise NodeUnavailable(
                    f"{node} went away while {what} was running: the outcome is unknown (the "
                    f"decision may have become durable just before). Restart {node}; then "
                    f"node.outcome({p.tx!r}) says how it ended.")
            left = deadline - time.monotonic()
            if left <= 0:
                if p is not None and p.read is not None:
                    raise CallTimeout(f"{what} on {node} has no answer after "
                                      f"{self.call_timeout:g} s (it may wait for a prepared "
                                      f"writer whose coordinator is down). Call handle.wait() "
                                      f"again later.")
                raise CallTimeout(f"{what} on {node} has not finished after "
                                  f"{self.call_timeout:g} s (two-phase commit is still "
                                  f"running: a participant may be down). Call handle.wait() "
                                  f"again, or node.outcome({p.tx if p else ''!r}) later.")
            self._cond.wait(left)

    def record_call(self, node: Any, op: str, **data: Any) -> None:
        if self._trace:
            data["op"] = op
            self._events.append((time.time(), "call", node, data))

    def coordinator_record(self, node: Any, tx: str) -> Any:
        for p in [p for p in self._unknown if p.tx == tx and p.node == node]:
            self._try_resolve(p)  # outcome() of a commit the client missed: ask the nodes
        try:
            rec = self._query(node, "record", tx=tx)
        except NodeUnavailable:
            return None  # outcome() falls back on the history
        return None if rec is None else types.SimpleNamespace(**rec)

    def versions(self, node: Any, key: str) -> list:
        return self._query(node, "versions", key=key)

    # -- the machinery ---------------------------------------------------------------------
    def _unavailable(self, node: Any, why: str) -> NodeUnavailable:
        host, port = self.addresses[node]
        return NodeUnavailable(f"node {node} is not available at {host}:{port} ({why}): start "
                               f"it again (kvlab.serve, or pc.restart({node!r})), then retry")

    def _conn(self, node: Any) -> _Conn:
        """The node's live connection, made if need be. Connecting can take a while (a
        process that is starting up answers the hello only once it runs), so it happens on a
        helper thread while this one waits on the condition, which frees the driver's lock:
        other threads' calls carry on meanwhile."""
        while True:
            conn = self._conns.get(node)
            if conn is not None and conn.alive:
                return conn
            if node not in self.addresses:
                raise UnknownNode(f"no node {node!r}; this cluster has {self.ids}")
            if node not in self._connecting:
                break
            self._cond.wait(0.5)  # another thread is connecting to it: use its result
        box: dict[str, Any] = {}
        self._connecting.add(node)

        def connect() -> None:
            try:
                box["conn"] = _Conn(self, node, self.addresses[node])
            except (OSError, wire.FrameError) as e:
                box["error"] = e
            with self.lock:
                self._cond.notify_all()

        threading.Thread(target=connect, name=f"kvlab-connect-{node}", daemon=True).start()
        try:
            while not box:
                self._cond.wait()
        finally:
            self._connecting.discard(node)
        if "error" in box:
            e = box["error"]
            why = "connection refused: its process is not running" \
                if isinstance(e, ConnectionRefusedError) else str(e) or type(e).__name__
            raise self._unavailable(node, why)
        if self._calls.closed:
            box["conn"].close()
            raise self._unavailable(node, "the cluster is closed")
        self._conns[node] = box["conn"]
        return box["conn"]

    def _await(self, node: Any, p: _Pending, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.call_timeout
        while not ready():
            if p.lost:
                raise NodeUnavailable(
                    f"{node} went away while {what} was running ({self._conns[node].reason}): "
                    f"restart it, then retry (a transaction begun there is gone)")
            left = deadline - time.monotonic()
            if left <= 0:
                self._time_out(node, p, what)
                return
            self._cond.wait(left)

    def _time_out(self, node: Any, p: _Pending, what: str) -> None:
        """Abandon the call on the node (it says what it was waiting for), then raise."""
        conn = self._conns[node]
        rid = next((r for r, q in conn.pending.items() if q is p), None)
        if rid is not None:
            conn.post({"t": "abandon", "rid": rid})
            until = time.monotonic() + min(5.0, self.call_timeout)
            while not (p.abandoned or p.done or p.lost) and time.monotonic() < until:
                self._cond.wait(until - time.monotonic())
        if p.done:
            return  # the answer crossed the abandon on the wire: take it
        why = p.why or "no answer"
        raise CallTimeout(f"{what} on {node} did not finish within {self.call_timeout:g} s: "
                          f"{why}. A node it needs may be down or cut off: restart it (see "
                          f"pc.status()), then try again; the call was abandoned, so a late "
                          f"answer changes nothing.")

    def _query(self, node: Any, q: str, **args: Any) -> Any:
        p = self._conn(node).request({"t": "q", "q": q, **args})
        self._await(node, p, f"{q} query", lambda: p.done)
        if p.error is not None:
            raise p.error
        return p.value

    def _settle(self, handle: CommitHandle, committed: bool, reason: str,
                commit_ts: int | None) -> None:
        handle._settle(committed, reason, commit_ts)
        h = self.history
        if h is not None and handle.tx in h:
            txn = h[handle.tx]
            txn.status = "committed" if committed else "aborted"
            txn.commit_ts, txn.reason = commit_ts, reason

    def _lost_commit(self, p: _Pending) -> None:
        """The coordinator's connection ended while a commit ran: the outcome is unknown."""
        why = f"unknown: {p.node} went away while committing"
        p.handle.reason = why
        if self.history is not None and p.tx in self.history:
            self.history[p.tx].reason = why
        self._unknown.append(p)

    def _verdict(self, p: _Pending) -> tuple[bool, str, int | None] | None:
        try:
            rec = self._query(p.node, "record", tx=p.tx)
        except NodeUnavailable:
            return None
        if rec is not None:
            if rec["state"] in (COMMITTING, COMMITTED):
                return True, rec["reason"], rec["commit_ts"]
            if rec["state"] == ABORTED:
                return False, rec["reason"], None
            return None  # still running (only the client's connection was lost)
        doubt = False
        for n in self.ids:
            try:
                ptx = self._query(n, "participant", tx=p.tx)
            except NodeUnavailable:
                doubt = True
                continue
            if ptx is None:
                continue
            if ptx["state"] == COMMITTED:
                return True, f"committed at ts {ptx['commit_ts']} (learned from {n})", \
                    ptx["commit_ts"]
            if ptx["state"] == ABORTED:
                return False, _presumed(p.node), None
            doubt = True  # prepared and still in doubt: ask again later
        if doubt:
            return None
        return False, _presumed(p.node), None


def _presumed(node: Any) -> str:
    return (f"aborted: {node} crashed before the commit decision was durable "
            f"(presumed abort)")  # the simulator's words for the same fate


def connect(addresses: Mapping[Any, Any] | Iterable[str], **options: Any) -> RemoteCluster:
    """A :class:`RemoteCluster` for nodes started with ``python -m kvlab.serve``: pass the
    same ``--peers`` text (``"n1=host:7001,n2=host:7002"``) or a mapping."""
    if isinstance(addresses, str):
        from kvlab.proc.server import parse_peers

        addresses = {n: f"{h}:{p}" for n, (h, p) in parse_peers(addresses).items()}
    return RemoteCluster(dict(addresses), **options)  # type: ignore[arg-type]


__all__ = ["RemoteCluster", "CallTimeout", "connect"]
