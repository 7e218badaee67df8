"""One kvlab node (or the timestamp oracle) as an OS process serving TCP: ``python -m kvlab.serve``.

Connections (asyncio streams, length-prefixed JSON frames, :mod:`kvlab.proc.wire`):

* **node -> node**: each node dials each peer and only *writes* on that connection; the peer
  only reads. Reading the dialled side just waits for end-of-file, which is how a node learns,
  at once, that a peer process died (the kernel closes its sockets). A connection that comes
  (back) up is the failure detector's "peer reachable": parked retries resume (``PeerUp``).
  While a connection is down, messages to that peer are lost (and traced as drops): the
  protocol's retries are what make that safe, as with the simulated network.
* **node -> oracle**: each node dials the timestamp oracle and uses the one connection both
  ways: TS_REQUEST out, TS_REPLY back, and every ``wm_interval`` its low-watermark report out
  and the cluster's watermark back (the protocol is described in :mod:`kvlab.proc`).
* **client -> node**: :class:`kvlab.proc.RemoteCluster` sends the node's own inputs (begin,
  get, put, commit, ...) and a few read-only queries; the node assigns its own call ids, so
  any number of clients may share it.

The first frame on every connection is a hello naming the role; a peer whose node list or
placement differs from ours is refused (a mixed-up command line, not a network fault).

Everything binds 127.0.0.1 unless ``--bind`` says otherwise. There is no authentication and
no encryption: anyone who can reach the port can read and write every key, so bind beyond
localhost only on a network you trust.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kvlab.effects import Reply
from kvlab.errors import KvlabError
from kvlab.messages import TSO, Message
from kvlab.node import PLACEMENTS, Abandon, Commit, NodeConfig
from kvlab.proc import wire
from kvlab.proc.host import EventLog, Host
from kvlab.tso import TimestampOracle
from kvlab.twopc import AWAIT_TS, INIT, PREPARING, Timing
from kvlab.wal import FileDisk, Wal

log = logging.getLogger("kvlab.serve")
SEND_BUFFER_LIMIT = 32 << 20  # bytes queued to one peer before its messages count as lost
FATAL = 70  # exit status after a kvlab bug (a ProtocolError): better dead than wrong


def parse_addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_peers(text: str) -> dict[str, tuple[str, int]]:
    """``n1=127.0.0.1:7001,n2=...`` -> {node id: (host, port)}, in the order given."""
    peers: dict[str, tuple[str, int]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, addr = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r}: each peer is ID=HOST:PORT")
        if name in peers or name == TSO:
            raise ValueError(f"node id {name!r} is repeated or reserved")
        peers[name] = parse_addr(addr)
    if not peers:
        raise ValueError("--peers lists no node")
    return peers


def parse_timing(text: str | None) -> Timing:
    if not text:
        return Timing()
    kw: dict[str, int] = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        kw[name.strip()] = int(value)
    return Timing(**kw)


class Oracle:
    """The timestamp oracle (persisted as :class:`kvlab.tso.TimestampOracle` always is) and the
    low-watermark authority: W = min(newest timestamp, every node's latest bound), published
    only once every node has reported since the oracle started, and never lowered."""

    def __init__(self, path: Path, nodes: Sequence[str]) -> None:
        self.tso = TimestampOracle(path=path)
        self.nodes = set(nodes)
        self.bounds: dict[str, int] = {}
        self.published: int | None = None

    def timestamp(self, msg: Message) -> Message:
        return self.tso.handle(msg)

    def report(self, node: Any, bound: Any, max_ts: Any) -> dict[str, Any]:
        if isinstance(max_ts, int):
            self.tso.advance_to(max_ts)  # after a recovery: never reuse a timestamp
        if node in self.nodes and isinstance(bound, int):
            self.bounds[node] = bound
        if len(self.bounds) == len(self.nodes):
            w = min(self.tso.last, min(self.bounds.values()))
            self.published = w if self.published is None else max(self.published, w)
        return self.answer()

    def answer(self) -> dict[str, Any]:
        return {"t": "wm", "watermark": self.published, "last": self.tso.last}


class Link:
    """The connection this node dials to one peer (or to the oracle, with ``oracle=True``)."""

    def __init__(self, server: Server, peer: str, addr: tuple[str, int],
                 oracle: bool = False) -> None:
        self.server, self.peer, self.addr, self.oracle = server, peer, addr, oracle
        self.state = "new"  # new: first attempt still running (queue); up; down (drop)
        self.writer: asyncio.StreamWriter | None = None
        self.queue: list[tuple[bytes, Message | None, str]] = []

    @property
    def up(self) -> bool:
        return self.state == "up"

    def send(self, data: bytes, msg: Message | None = None, mid: str = "") -> str | None:
        if self.state == "up" and self.writer is not None:
            if self.writer.transport.get_write_buffer_size() > SEND_BUFFER_LIMIT:
                return f"{self.peer} is not reading (send buffer full)"
            self.writer.write(data)
            return None
        if self.state == "new" and len(self.queue) < 10_000:
            self.queue.append((data, msg, mid))
            return None
        return f"no connection to {self.peer}"

    async def run(self) -> None:
        delay = 0.02
        srv = self.server
        while True:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.addr), 3)
            except (OSError, asyncio.TimeoutError):
                self._down()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
                continue
            delay = 0.02
            writer.write(wire.frame({"t": "hello", "role": "node" if self.oracle else "peer",
                                     "from": srv.id, "nodes": srv.ids,
                                     "placement": srv.placement}))
            self.writer, self.state = writer, "up"
            queued, self.queue = self.queue, []
            for data, _, _ in queued:
                writer.write(data)
            log.info("connected to %s at %s:%d", self.peer, *self.addr)
            try:
                if self.oracle:
                    srv.oracle_connected()
                    await srv.read_oracle(reader)
                else:
                    srv.host.peer_up(self.peer)
                    while await reader.read(65536):
                        pass  # the peer never writes here: this waits for its end
            except (OSError, wire.FrameError) as e:
                log.info("link to %s failed: %s", self.peer, e)
            except asyncio.CancelledError:
                raise
            except Exception:  # a kvlab bug while handling what came in: stop
                log.exception("fatal error on the link to %s", self.peer)
                srv.stop(FATAL)
                return
            self._down()
            writer.close()
            log.info("lost the connection to %s", self.peer)

    def _down(self) -> None:
        was_new = self.state == "new"
        self.state, self.writer = "down", None
        if was_new:
            for _, msg, mid in self.queue:
                if msg is not None and self.server.host.events is not None:
                    self.server.host.event("drop", {"id": mid, "src": msg.src, "dst": msg.dst,
                                                    "kind": msg.kind, "tx": msg.tx,
                                                    "reason": f"no connection to {self.peer}"})
            self.queue.clear()


class NodeHost(Host):
    """The Host whose transport is this server's TCP links."""

    server: Server

    def transmit(self, msg: Message, mid: str) -> str | None:
        return self.server.transmit(msg, mid)

    def link_up(self, peer: Any) -> bool:
        link = self.server.links.get(peer)
        return peer == self.id or (link is not None and link.up)

    def answer(self, reply: Reply) -> None:
        self.server.answer(reply)


class Session:
    """One client connection."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.rids: dict[Any, int] = {}  # client request id -> node call id
        self.open = True

    def say(self, obj: dict[str, Any]) -> None:
        if self.open:
            self.writer.write(wire.frame(obj))


class Server:
    """A node (``role="node"``) or the standalone oracle (``role="tso"``) serving TCP."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.peers: dict[str, tuple[str, int]] = parse_peers(args.peers)
        self.ids = sorted(self.peers)
        self.placement = args.placement
        self.id = args.node
        self.role = "tso" if self.id == TSO else "node"
        if self.role == "node" and self.id not in self.peers:
            raise ValueError(f"--node {self.id} is not in --peers ({', '.join(self.peers)})")
        self.data_dir = Path(args.data_dir)
        self.log_dir = Path(args.log_dir or args.data_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.log_dir / "events.jsonl") if args.trace else None
        self.tso_addr = parse_addr(args.tso) if args.tso else None
        # without --tso, the first node listed hosts the oracle (in its own process)
        self.hosts_oracle = self.role == "tso" or (self.tso_addr is None
                                                   and self.id == next(iter(self.peers)))
        if self.role == "node" and self.tso_addr is None and not self.hosts_oracle:
            self.tso_addr = self.peers[next(iter(self.peers))]
        self.oracle: Oracle | None = None
        self.links: dict[str, Link] = {}
        self.oracle_link: Link | None = None
        self.calls: dict[int, tuple[Session, Any, str, str | None]] = {}
        self.sessions: set[Session] = set()
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.horizon_known = asyncio.Event()
        self.host: NodeHost | None = None
        self._call_ids = iter(range(_call_base(), 1 << 62))  # unique across restarts
        self._tasks: list[asyncio.Task] = []

    # -- starting and stopping -------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._fatal)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        if self.args.parent_fd is not None:  # the parent's pipe: EOF means it died
            loop.add_reader(self.args.parent_fd, self._parent_check)
        if self.hosts_oracle:
            self.oracle = Oracle(self.data_dir / "tso.json", self.ids)
        sock = self._listen_socket()
        server = await asyncio.start_server(self._accept, sock=sock)
        port = sock.getsockname()[1]
        log.info("%s (pid %d) listening on %s:%d", self.id, os.getpid(), *sock.getsockname()[:2])
        if self.role == "node":
            await self._start_node()
        self.ready.set()
        print(f"READY {self.id} {port} {os.getpid()}", flush=True)
        await self.stopping.wait()
        server.close()
        for t in self._tasks:
            t.cancel()
        for s in list(self.sessions):
            s.writer.close()
        if self.host is not None:
            await self.host.drain()
            if self.host.wal.dirty and self.exit_code == 0:
                self.host.wal.flush()
            self.host.wal.disk.close()
        if self.events is not None:
            self.events.close()
        log.info("%s stopped", self.id)
        return self.exit_code

    def _listen_socket(self) -> socket.socket:
        if self.args.listen_fd is not None:
            sock = socket.socket(fileno=self.args.listen_fd)
            sock.setblocking(False)
            return sock
        port = self.tso_addr[1] if self.role == "tso" and self.tso_addr else \
            self.args.port if self.role == "tso" else self.peers[self.id][1]
        sock = socket.socket(socket.AF_INET6 if ":" in self.args.bind else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.args.bind, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def _start_node(self) -> None:
        args = self.args
        config = NodeConfig(self.ids, self.placement, parse_timing(args.timing))
        wal = Wal(FileDisk(self.data_dir), name=f"{self.id}/wal.log")
        host = self.host = NodeHost(self.id, config, wal, tick=args.tick_ms / 1000,
                                    events=self.events, checkpoint_every=args.checkpoint_every,
                                    group_commit=args.group_commit_ms / 1000)
        host.server = self
        for p in self.ids:
            if p != self.id:
                link = self.links[p] = Link(self, p, self.peers[p])
                self._tasks.append(asyncio.create_task(link.run()))
        horizon = 0
        if self.oracle is not None:
            horizon = self.oracle.published or 0
        else:
            assert self.tso_addr is not None
            self.oracle_link = Link(self, TSO, self.tso_addr, oracle=True)
            self._tasks.append(asyncio.create_task(self.oracle_link.run()))
            # the watermark before replay (belt and braces: see kvlab.proc on why the
            # checkpoint's own horizon is already safe if the oracle cannot be reached)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.horizon_known.wait(), args.horizon_wait)
            horizon = host.watermark
        summary = host.recover(horizon, restarted=args.restart)
        log.info("%s recovered: %s", self.id, summary)
        self._tasks.append(asyncio.create_task(self._report_loop()))

    def stop(self, code: int = 0) -> None:
        self.exit_code = self.exit_code or code
        self.stopping.set()

    def _parent_check(self) -> None:
        try:
            data = os.read(self.args.parent_fd, 64)
        except OSError:
            data = b""
        if not data:
            log.info("the parent process is gone: stopping")
            asyncio.get_running_loop().remove_reader(self.args.parent_fd)
            self.stop()

    def _fatal(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        err = context.get("exception")
        if isinstance(err, (ConnectionError, wire.FrameError)):
            log.info("connection problem: %s", err)
            return
        log.error("fatal: %s", context.get("message"), exc_info=err)
        self.stop(FATAL)

    # -- the oracle link, from a node ------------------------------------------------------
    def oracle_connected(self) -> None:
        assert self.oracle_link is not None
        if self.ready.is_set():
            self._report()
        else:
            self.oracle_link.send(wire.frame({"t": "wm?"}))

    async def read_oracle(self, reader: asyncio.StreamReader) -> None:
        host = self.host
        while True:
            obj = await wire.read_frame(reader)
            if obj is None:
                return
            t = obj.get("t")
            if t == "m":
                await self.ready.wait()
                host.deliver(wire.message_from_wire(obj["m"]), obj.get("id", ""))
            elif t == "wm":
                if self.ready.is_set():
                    host.learn(obj.get("watermark"), obj.get("last"))
                else:  # before recovery: remember the watermark for Recover(horizon=...)
                    w, last = obj.get("watermark"), obj.get("last")
                    if isinstance(w, int):
                        host.watermark = max(host.watermark, w)
                    if isinstance(last, int):
                        host.seen = max(host.seen, last)
                    self.horizon_known.set()

    async def _report_loop(self) -> None:
        while True:
            self._report()
            await asyncio.sleep(self.args.wm_interval_ms / 1000)

    def _report(self) -> None:
        host = self.host
        report = {"t": "wm", "node": self.id, "bound": host.bound(), "max_ts": host.core.max_ts}
        if self.oracle is not None:
            answer = self.oracle.report(self.id, report["bound"], report["max_ts"])
            host.learn(answer["watermark"], answer["last"])
        elif self.oracle_link is not None and self.oracle_link.up:
            self.oracle_link.send(wire.frame(report))

    # -- sending ---------------------------------------------------------------------------
    def transmit(self, msg: Message, mid: str) -> str | None:
        loop = asyncio.get_running_loop()
        if msg.dst == self.id:
            loop.call_soon(self.host.deliver, msg, mid)
            return None
        if msg.dst == TSO:
            if self.oracle is not None:  # hosted here: answer on the next loop turn
                loop.call_soon(self._local_timestamp, msg, mid)
                return None
            link = self.oracle_link
        else:
            link = self.links.get(msg.dst)
        if link is None:
            return f"{msg.dst} is not a node of this cluster"
        return link.send(wire.frame({"t": "m", "id": mid, "m": wire.message_to_wire(msg)}),
                         msg, mid)

    def _local_timestamp(self, msg: Message, mid: str) -> None:
        self.host.deliver(*self._serve_timestamp(msg, mid))

    def _serve_timestamp(self, msg: Message, mid: str) -> tuple[Message, str]:
        """The oracle answers a TS_REQUEST (and traces it on the oracle's own lane)."""
        if self.events is not None:
            self.events.record("deliver", TSO, {"id": mid, "src": msg.src, "dst": TSO,
                                                "kind": msg.kind, "tx": msg.tx})
        reply = self.oracle.timestamp(msg)
        rid = f"tso:{os.getpid()}:{reply.body['ts']}"
        if self.events is not None:
            self.events.record("send", TSO, {"id": rid, "src": TSO, "dst": msg.src,
                                             "kind": reply.kind, "tx": reply.tx})
        return reply, rid

    def answer(self, reply: Reply) -> None:
        entry = self.calls.pop(reply.call, None)
        if entry is None:
            return  # the client gave up (Abandon) or went away
        session, rid, kind, tx = entry
        session.rids.pop(rid, None)
        if kind == "Commit":
            rec = self.host.core.coordinator.txs.get(tx)
            session.say({"t": "done", "rid": rid, "v": bool(reply.value),
                         "reason": rec.reason if rec is not None else "",
                         "commit_ts": rec.commit_ts if rec is not None else None})
        elif reply.error is not None:
            session.say({"t": "err", "rid": rid, "e": wire.error_to_wire(reply.error)})
        else:
            session.say({"t": "ok", "rid": rid, "v": wire.value_to_wire(reply.value)})

    # -- accepting -------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(wire.read_frame(reader), 10)
            if not hello or hello.get("t") != "hello":
                raise wire.FrameError("the first frame must be a hello")
            role = hello.get("role")
            if role == "client":
                await self._client(reader, writer)
            elif role in ("peer", "node"):
                if hello.get("nodes") != self.ids or hello.get("placement") != self.placement:
                    log.error("refusing %s: it runs nodes %s with placement %s, we run %s "
                              "with %s (start every process with the same --peers and "
                              "--placement)", hello.get("from"), hello.get("nodes"),
                              hello.get("placement"), self.ids, self.placement)
                    return
                if role == "peer" and self.role == "node":
                    await self._peer(reader, hello.get("from"))
                elif role == "node" and self.oracle is not None:
                    await self._oracle_client(reader, writer, hello.get("from"))
                else:
                    raise wire.FrameError(f"{self.id} does not serve role {role!r}")
            else:
                raise wire.FrameError(f"unknown role {role!r}")
        except (OSError, wire.FrameError, asyncio.TimeoutError) as e:
            log.info("closing a connection: %s", e)
        except asyncio.CancelledError:
            raise
        except Exception:  # a kvlab bug (ProtocolError): stop rather than carry on wrong
            log.exception("fatal error while serving a connection")
            self.stop(FATAL)
        finally:
            writer.close()

    async def _peer(self, reader: asyncio.StreamReader, src: Any) -> None:
        await self.ready.wait()
        host = self.host
        while (obj := await wire.read_frame(reader)) is not None:
            t = obj.get("t")
            if t == "m":
                msg = wire.message_from_wire(obj["m"])
                if msg.dst != self.id:
                    raise wire.FrameError(f"a message for {msg.dst} reached {self.id}")
                host.deliver(msg, obj.get("id", ""))
            elif t == "abandon" and isinstance(obj.get("call"), int):
                host.feed(Abandon(obj["call"], requester=src))

    async def _oracle_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             src: Any) -> None:
        oracle = self.oracle
        while (obj := await wire.read_frame(reader)) is not None:
            t = obj.get("t")
            if t == "m":
                reply, rid = self._serve_timestamp(wire.message_from_wire(obj["m"]),
                                                   obj.get("id", ""))
                writer.write(wire.frame({"t": "m", "id": rid, "m": wire.message_to_wire(reply)}))
            elif t == "wm":
                writer.write(wire.frame(oracle.report(src, obj.get("bound"),
                                                      obj.get("max_ts"))))
            elif t == "wm?":
                writer.write(wire.frame(oracle.answer()))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(writer)
        self.sessions.add(session)
        session.say({"t": "hello", "node": self.id, "pid": os.getpid(), "nodes": self.ids,
                     "placement": self.placement})
        try:
            while (obj := await wire.read_frame(reader)) is not None:
                t = obj.get("t")
                if t == "q":
                    session.say(self._query(obj))
                    continue
                if t == "shutdown":
                    session.say({"t": "ok", "rid": obj.get("rid"), "v": {"v": True}})
                    self.stop()
                    return
                await self.ready.wait()
                if self.host is None:
                    session.say({"t": "err", "rid": obj.get("rid"), "e": {
                        "cls": "ConfigurationError", "msg": "this is the oracle, not a node"}})
                elif t == "call":
                    self._call(session, obj)
                elif t == "abandon":
                    self._abandon(session, obj.get("rid"))
        finally:
            session.open = False
            self.sessions.discard(session)
            for call in list(session.rids.values()):
                entry = self.calls.get(call)
                if entry is not None and entry[2] != "Commit" and self.host is not None:
                    del self.calls[call]
                    self._abandon_call(call)  # nobody will read the answer

    def _call(self, session: Session, obj: dict[str, Any]) -> None:
        rid, host = obj.get("rid"), self.host
        call = next(self._call_ids)
        try:
            inp = wire.input_from_wire(obj.get("in"), call)
            out = host.core.handle(inp)
        except KvlabError as e:
            session.say({"t": "err", "rid": rid, "e": wire.error_to_wire(e)})
            return
        except wire.FrameError as e:
            session.say({"t": "err", "rid": rid,
                         "e": {"cls": "ConfigurationError", "msg": str(e)}})
            return
        if obj["in"].get("call"):
            self.calls[call] = (session, rid, type(inp).__name__, getattr(inp, "tx", None))
            session.rids[rid] = call
            if isinstance(inp, Commit):
                session.say({"t": "accepted", "rid": rid})
        else:
            session.say({"t": "ok", "rid": rid, "v": {"v": None}})
        host.apply(out)

    def _abandon(self, session: Session, rid: Any) -> None:
        call = session.rids.pop(rid, None)
        why = None
        if call is not None and call in self.calls:
            why = self.host.core.why_waiting(call)
            del self.calls[call]
            self._abandon_call(call)
        session.say({"t": "abandoned", "rid": rid, "why": why})

    def _abandon_call(self, call: int) -> None:
        self.host.abandon(call)
        for link in self.links.values():  # an owner may have parked a remote read for it
            link.send(wire.frame({"t": "abandon", "call": call}))

    def _query(self, obj: dict[str, Any]) -> dict[str, Any]:
        rid, q, host = obj.get("rid"), obj.get("q"), self.host
        try:
            v = self._answer_query(q, obj, host)
        except KvlabError as e:
            return {"t": "err", "rid": rid, "e": wire.error_to_wire(e)}
        return {"t": "ok", "rid": rid, "v": wire.value_to_wire(v)}

    def _answer_query(self, q: Any, obj: dict[str, Any], host: NodeHost | None) -> Any:
        if q == "status":
            status: dict[str, Any] = {"node": self.id, "pid": os.getpid(),
                                      "ready": self.ready.is_set(), "role": self.role}
            if host is not None:
                core = host.core
                status.update(
                    links={p: link.up for p, link in self.links.items()},
                    oracle=self.oracle is not None or bool(self.oracle_link
                                                           and self.oracle_link.up),
                    watermark=host.watermark, seen=host.seen, fsyncs=host.fsyncs,
                    in_doubt=sorted(t.id for t in core.participant.in_doubt()),
                    locks=len(core.store.write_locks),
                    undecided=sorted(core.coordinator.undecided),
                    committing=sorted(t for t, r in core.coordinator.undecided.items()
                                      if r.state in (PREPARING, AWAIT_TS)),
                    memory={"versions": core.store.version_count(),
                            "participant_txs": len(core.participant.txs),
                            "coordinator_txs": len(core.coordinator.txs),
                            "horizon": core.participant.horizon})
            if self.oracle is not None:
                status["oracle_state"] = {"last": self.oracle.tso.last,
                                          "watermark": self.oracle.published,
                                          "reported": sorted(self.oracle.bounds)}
            return status
        if host is None:
            raise wire.FrameError(f"the oracle answers only 'status', not {q!r}")
        core = host.core
        if q == "record":
            rec = core.coordinator.txs.get(obj.get("tx"))
            if rec is None or rec.state == INIT:
                return None
            return {"state": rec.state, "reason": rec.reason, "commit_ts": rec.commit_ts}
        if q == "participant":
            ptx = core.participant.txs.get(obj.get("tx"))
            return None if ptx is None else {"state": ptx.state, "commit_ts": ptx.commit_ts}
        if q == "versions":
            return list(core.store.chains.get(obj.get("key"), []))
        if q == "states":
            rows = [["coordinator", t.id, t.state] for t in core.coordinator.txs.values()]
            rows += [["participant", t.id, t.state] for t in core.participant.txs.values()]
            return rows
        if q == "checkpoint":
            host.checkpoint()
            return True
        raise wire.FrameError(f"unknown query {q!r}")


def _call_base() -> int:
    """Call ids start from the wall clock (microseconds), so a restarted node never reuses an
    id that a peer may still hold a parked remote read for."""
    import time

    return time.time_ns() // 1000


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m kvlab.serve",
        description="Run one kvlab node (or, with --node tso, the timestamp oracle) as a TCP "
                    "server. No authentication: bind beyond 127.0.0.1 only on a trusted network.")
    ap.add_argument("--node", required=True, help="this node's id, or 'tso' for the oracle")
    ap.add_argument("--peers", required=True,
                    help="every node as ID=HOST:PORT, comma-separated, the same on every process")
    ap.add_argument("--data-dir", required=True, help="where the WAL (or tso.json) lives")
    ap.add_argument("--bind", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument("--tso", default=None, metavar="HOST:PORT",
                    help="the oracle's address (default: the first node of --peers hosts it)")
    ap.add_argument("--port", type=int, default=0, help="the oracle's port (with --node tso)")
    ap.add_argument("--placement", default="all", choices=PLACEMENTS)
    ap.add_argument("--tick-ms", type=float, default=10.0,
                    help="milliseconds per Timing tick (default 10: a 60-tick timeout is 0.6 s)")
    ap.add_argument("--timing", default=None, metavar="NAME=TICKS,...",
                    help="kvlab.Timing fields, e.g. vote_timeout=60,retry_interval=20")
    ap.add_argument("--checkpoint-every", type=int, default=5000)
    ap.add_argument("--group-commit-ms", type=float, default=0.0,
                    help="wait this long before a group-commit fsync (default: end of the "
                         "event-loop turn)")
    ap.add_argument("--wm-interval-ms", type=float, default=100.0,
                    help="how often the node reports its low-watermark bound to the oracle")
    ap.add_argument("--horizon-wait", type=float, default=2.0,
                    help="seconds to wait for the oracle's watermark before replaying the WAL")
    ap.add_argument("--trace", action="store_true", help="write events.jsonl for trace()")
    ap.add_argument("--log-dir", default=None, help="where events.jsonl goes (default: data dir)")
    ap.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parent-fd", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run a node until SIGTERM (or its parent's pipe closes); return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format=f"%(asctime)s {args.node} %(levelname)s %(message)s")
    try:
        server = Server(args)
    except (ValueError, KvlabError) as e:
        print(f"python -m kvlab.serve: {e}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(server.run())
    except KvlabError as e:  # e.g. CorruptLog: refuse to start, files untouched
        log.error("%s: %s", type(e).__name__, e)
        return 1
    except OSError as e:
        log.error("cannot serve: %s", e)
        return 1


__all__ = ["main", "build_parser", "Server", "Oracle", "parse_peers"]
