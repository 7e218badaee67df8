"""``python -m kvlab.maelstrom``: a kvlab node that speaks Maelstrom's protocol, so Jepsen's Elle
can check kvlab.

Maelstrom (https://github.com/jepsen-io/maelstrom) runs a node binary per server, feeds it
newline-delimited JSON messages on stdin (``{"src", "dest", "body"}``) and reads its messages
from stdout. This adapter is one such binary:

* ``init`` (``node_id``, ``node_ids``) creates the :class:`~kvlab.node.NodeCore` for this node
  (placement ``"all"``: every node stores every key) and answers ``init_ok``;
* ``txn`` requests of the ``txn-list-append`` and ``txn-rw-register`` workloads run as one
  kvlab transaction on this node: ``["r", k, null]`` is a get, ``["w", k, v]`` a put, and
  ``["append", k, v]`` a get and a put of the list plus ``v``, in order; then two-phase
  commit. ``txn_ok`` carries the transaction with the reads filled in. Keys of any JSON type
  are stored under their JSON text, so ``1`` and ``"1"`` stay distinct;
* kvlab's own node-to-node messages (PREPARE, VOTE, COMMIT, ...) travel as Maelstrom messages
  ``{"type": "kvlab", "m": [...]}`` through Maelstrom's network, which delays, reorders and
  partitions them; timestamps come from Maelstrom's ``lin-tso`` service (``ts`` /
  ``ts_ok``), a linearizable oracle, which is what kvlab's design assumes.

Errors (Maelstrom's codes; all definite, so Elle may assume the transaction did not happen):
11 ``temporarily-unavailable`` when no start timestamp came or a read waited too long behind
an in-doubt transaction (nothing was committed: the transaction is rolled back), 30
``txn-conflict`` when a participant voted no, 14 ``abort`` for any other abort (a vote
timeout), 12 ``malformed-request`` for a transaction that is not a list of micro-ops, and 10
``not-supported`` for other request types. A commit always ends with a definite outcome here:
the coordinator decides within its vote and timestamp timeouts.

Settings come from the environment, since Maelstrom passes no arguments: ``KVLAB_ISOLATION``
(default ``serializable``; kvlab's serializable level with a linearizable oracle also keeps
real-time order), ``KVLAB_TICK_MS`` (10), ``KVLAB_TIMEOUT`` (seconds a begin or a read may
wait, 5), ``KVLAB_DATA_DIR`` (a WAL per node under it; default a memory disk, since Maelstrom
does not restart nodes).

No low watermark here: nodes never garbage-collect or forget finished transactions. That is
safe (the participant's horizon stays 0, so no PREPARE is ever refused as stale, and every
duplicate is recognised by its remembered record) and costs memory that grows with the
number of transactions, which a Maelstrom run (seconds to minutes) can afford.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from kvlab.effects import Reply
from kvlab.errors import KvlabError
from kvlab.messages import TS_REPLY, TSO, Message
from kvlab.node import ISOLATION_LEVELS, Begin, Commit, Get, NodeConfig, Rollback, Write
from kvlab.proc.host import Host
from kvlab.proc.wire import FrameError, message_from_wire, message_to_wire
from kvlab.twopc import Timing
from kvlab.wal import FileDisk, MemoryDisk, Wal

log = logging.getLogger("kvlab.maelstrom")
TEMPORARILY_UNAVAILABLE, MALFORMED, ABORT, TXN_CONFLICT, NOT_SUPPORTED = 11, 12, 14, 30, 10
OPS = ("r", "w", "append")


class _Timeout(Exception):
    pass


class _MaelstromHost(Host):
    adapter: Adapter

    def transmit(self, msg: Message, mid: str) -> str | None:
        a = self.adapter
        if msg.dst == self.id:
            asyncio.get_running_loop().call_soon(self.deliver, msg, mid)
        elif msg.dst == TSO:
            a.ask_tso(msg)
        else:
            a.send(msg.dst, {"type": "kvlab", "id": mid, "m": message_to_wire(msg)})
        return None  # Maelstrom's network decides what is lost; we cannot tell

    def link_up(self, peer: Any) -> bool:
        return True  # no connections to watch: a parked retry resumes after the backoff

    def answer(self, reply: Reply) -> None:
        fut = self.adapter.futures.pop(reply.call, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)


class Adapter:
    """One Maelstrom node: parses messages, runs transactions, carries kvlab's messages."""

    def __init__(self, write: Callable[[str], None], isolation: str = "serializable",
                 tick: float = 0.01, timeout: float = 5.0, data_dir: str | None = None) -> None:
        if isolation not in ISOLATION_LEVELS:
            raise ValueError(f"KVLAB_ISOLATION must be one of {ISOLATION_LEVELS}")
        self.write, self.isolation, self.tick, self.timeout = write, isolation, tick, timeout
        self.data_dir = data_dir
        self.node_id: str | None = None
        self.host: _MaelstromHost | None = None
        self.futures: dict[int, asyncio.Future] = {}
        self._msg_ids = itertools.count(1)
        self._calls = itertools.count(time.time_ns() // 1000)
        self._tso: dict[int, Message] = {}  # lin-tso msg_id -> the TS_REQUEST it answers

    # -- Maelstrom I/O -----------------------------------------------------------------------
    def send(self, dest: Any, body: dict[str, Any]) -> None:
        body.setdefault("msg_id", next(self._msg_ids))
        self.write(json.dumps({"src": self.node_id, "dest": dest, "body": body},
                              separators=(",", ":")))

    def reply(self, to: Any, request: dict[str, Any], body: dict[str, Any]) -> None:
        if "msg_id" in request:
            body["in_reply_to"] = request["msg_id"]
        self.send(to, body)

    def error(self, to: Any, request: dict[str, Any], code: int, text: str) -> None:
        self.reply(to, request, {"type": "error", "code": code, "text": text})

    def ask_tso(self, msg: Message) -> None:
        mid = next(self._msg_ids)
        self._tso[mid] = msg
        while len(self._tso) > 10_000:  # answers that never came: forget the oldest
            del self._tso[next(iter(self._tso))]
        self.send("lin-tso", {"type": "ts", "msg_id": mid})

    def handle(self, line: str) -> None:
        """One line from stdin."""
        try:
            msg = json.loads(line)
            src, body = msg["src"], msg["body"]
            kind = body["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("not a Maelstrom message: %.200s", line)
            return
        if kind == "init":
            self._init(src, body)
        elif kind == "ts_ok" and self.host is not None:
            req = self._tso.pop(body.get("in_reply_to"), None)
            if req is not None and isinstance(body.get("ts"), int):
                self.host.deliver(Message(TSO, req.src, TS_REPLY, req.tx,
                                          {**req.body, "ts": body["ts"]}), "")
        elif kind == "error" or "in_reply_to" in body:
            self._tso.pop(body.get("in_reply_to"), None)  # e.g. an error from lin-tso: lost
        elif self.host is None:
            if kind != "kvlab":  # a peer's message is just lost; a client hears why
                self.error(src, body, TEMPORARILY_UNAVAILABLE, "not initialised yet")
        elif kind == "kvlab":
            try:
                msg = message_from_wire(body.get("m"))
            except FrameError as e:
                log.warning("dropping a malformed kvlab message: %s", e)
                return
            self.host.deliver(msg, body.get("id", ""))
        elif kind == "txn":
            task = asyncio.get_running_loop().create_task(self._txn(src, body))
            task.add_done_callback(_reraise)
        else:
            self.error(src, body, NOT_SUPPORTED, f"kvlab does not serve {kind!r} requests")

    def _init(self, src: Any, body: dict[str, Any]) -> None:
        node_id, node_ids = body.get("node_id"), body.get("node_ids")
        if not isinstance(node_id, str) or not isinstance(node_ids, list) \
                or node_id not in node_ids:
            self.error(src, body, MALFORMED, "init needs node_id and node_ids")
            return
        self.node_id = node_id
        disk = FileDisk(os.path.join(self.data_dir, node_id)) if self.data_dir else MemoryDisk()
        host = self.host = _MaelstromHost(node_id, NodeConfig(list(node_ids), "all", Timing()),
                                          Wal(disk, name=f"{node_id}/wal.log"), tick=self.tick)
        host.adapter = self
        host.recover(0)
        self.reply(src, body, {"type": "init_ok"})

    # -- transactions ------------------------------------------------------------------------
    async def _call(self, make: Callable[[int], Any], timeout: float | None) -> Any:
        call = next(self._calls)
        fut = self.futures[call] = asyncio.get_running_loop().create_future()
        try:
            self.host.feed(make(call))
        except BaseException:
            self.futures.pop(call, None)
            raise
        try:
            reply: Reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.futures.pop(call, None)
            self.host.abandon(call)
            raise _Timeout from None
        if reply.error is not None:
            raise reply.error
        return reply.value

    async def _txn(self, client: Any, body: dict[str, Any]) -> None:
        ops = body.get("txn")
        if not isinstance(ops, list) or not all(
                isinstance(op, list) and len(op) == 3 and op[0] in OPS for op in ops):
            self.error(client, body, MALFORMED, "txn is a list of [f, k, v] with f in r, w, "
                                                "append")
            return
        try:
            tx, _ = await self._call(lambda c: Begin(c, self.isolation), self.timeout)
        except _Timeout:
            self.error(client, body, TEMPORARILY_UNAVAILABLE,
                       "no start timestamp from lin-tso in time")
            return
        done: list[list[Any]] = []
        try:
            for f, k, v in ops:
                key = json.dumps(k, sort_keys=True)
                if f == "w":
                    self.host.feed(Write(tx, key, v))
                    done.append([f, k, v])
                    continue
                res = await self._call(lambda c, key=key: Get(c, tx, key), self.timeout)
                if f == "r":
                    done.append([f, k, res.value])
                else:
                    current = res.value if isinstance(res.value, list) else []
                    self.host.feed(Write(tx, key, [*current, v]))
                    done.append([f, k, v])
        except (_Timeout, KvlabError) as e:
            self._rollback(tx)
            if isinstance(e, _Timeout):
                self.error(client, body, TEMPORARILY_UNAVAILABLE,
                           f"a read waited more than {self.timeout:g} s (an in-doubt "
                           f"transaction holds the key); {tx} rolled back")
            else:
                self.error(client, body, MALFORMED, f"{type(e).__name__}: {e}")
            return
        try:
            committed = await self._call(lambda c: Commit(c, tx), 120.0)
        except _Timeout:  # should not happen: the coordinator decides within its timeouts
            self.error(client, body, 0, f"{tx}: no outcome in 120 s (indefinite)")
            return
        if committed:
            self.reply(client, body, {"type": "txn_ok", "txn": done})
            return
        rec = self.host.core.coordinator.txs.get(tx)
        reason = rec.reason if rec is not None else "aborted"
        self.error(client, body, TXN_CONFLICT if "voted no" in reason else ABORT,
                   f"{tx} {reason}")

    def _rollback(self, tx: str) -> None:
        try:
            self.host.feed(Rollback(tx))
        except KvlabError:
            pass


def _reraise(task: asyncio.Task) -> None:
    """A transaction's task failed with something unexpected (a kvlab bug): let the loop's
    exception handler see it now, not when the task is garbage-collected."""
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()


def main() -> int:
    """Serve Maelstrom on stdin/stdout until stdin closes."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s kvlab.maelstrom %(levelname)s %(message)s")
    out = sys.stdout

    def write(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    adapter = Adapter(write, isolation=os.environ.get("KVLAB_ISOLATION", "serializable"),
                      tick=float(os.environ.get("KVLAB_TICK_MS", "10")) / 1000,
                      timeout=float(os.environ.get("KVLAB_TIMEOUT", "5")),
                      data_dir=os.environ.get("KVLAB_DATA_DIR") or None)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        eof = asyncio.Event()

        def fatal(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            log.error("fatal: %s", context.get("message"), exc_info=context.get("exception"))
            os._exit(70)  # a kvlab bug: die loudly rather than answer wrongly

        loop.set_exception_handler(fatal)

        def pump() -> None:  # a thread: stdin lines onto the loop, in order
            for raw in sys.stdin.buffer:
                loop.call_soon_threadsafe(adapter.handle, raw.decode("utf-8", "replace"))
            loop.call_soon_threadsafe(eof.set)

        threading.Thread(target=pump, name="stdin", daemon=True).start()
        await eof.wait()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
