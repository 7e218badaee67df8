"""Carrying out one node's Outputs for real: a WAL on disk, wall-clock timers, a transport.

:class:`Host` is to one OS process what :class:`kvlab.Cluster` is to a simulated node: it feeds
inputs to a :class:`~kvlab.node.NodeCore` and carries out what comes back, in the same order
and under the same rule (``Cluster._apply`` / ``_release`` are the model):

* **records** go to :meth:`kvlab.wal.Wal.append_all` at once (the real :class:`FileDisk`);
* the output is offered to :class:`kvlab.effects.Outbox` ("log before you speak"). If a forced
  record is not durable yet, it is held and a **group-commit flush** is scheduled: one ``fsync``
  for every record appended until it runs (``group_commit`` seconds later, default at the end
  of the current event-loop turn, so everything that arrived in one turn shares one fsync). The
  flush releases the held outputs in order, exactly as the simulator's flush event does;
* **messages** go to the transport (TCP for :mod:`kvlab.proc.server`, Maelstrom's stdout for
  :mod:`kvlab.maelstrom`); a message the transport cannot deliver now is lost, which is what
  the protocol's retries are for;
* **timers** become ``loop.call_later(delay * tick)``; a timer set again replaces the old one,
  and ``cancel`` takes effect at once, even for an output that is held (as in the simulator);
* **watch** is the failure detector: a watched peer is answered with a ``PeerUp`` input when
  the transport (re)connects to it, or after the capped backoff if it is connected already;
* **replies** go back to whoever made the call (the transport knows).

Nothing here knows about sockets, so the TCP server and the Maelstrom adapter share it, and the
node code is the one the simulator runs: if this needed a change in ``node.py``, the sans-I/O
boundary would be in the wrong place.

It also keeps what the low-watermark protocol (see :mod:`kvlab.proc`) needs: the highest
timestamp this node knows the oracle has issued (``seen``) and, for every begin still waiting
for its start timestamp, what ``seen`` was when its request left (``begins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kvlab.effects import Outbox, Outputs, Reply
from kvlab.messages import TS_REPLY, TS_REQUEST, Message
from kvlab.node import Abandon, Deliver, Fire, NodeConfig, NodeCore, PeerUp, Recover
from kvlab.twopc import COMMITTING
from kvlab.wal import FileDisk, Wal

log = logging.getLogger("kvlab.proc")
_PLAIN = (str, int, float, bool, type(None))


class EventLog:
    """One process's trace as JSON lines, for :meth:`kvlab.proc.ProcessCluster.trace`.

    One ``os.write`` per event and no buffer in Python, so a SIGKILL loses nothing that was
    recorded (the page cache keeps it); wall-clock seconds, merged across processes later."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, kind: str, node: Any, data: dict[str, Any]) -> None:
        line = json.dumps({"t": time.time(), "k": kind, "n": node, "d": data}, default=str,
                          separators=(",", ":"))
        os.write(self.fd, line.encode() + b"\n")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Host:
    """Runs one :class:`NodeCore` on the current asyncio loop; subclasses are transports.

    A subclass implements :meth:`transmit` (send one message, or say why it cannot),
    :meth:`link_up` (is the peer connected now?) and :meth:`answer` (a released reply)."""

    def __init__(self, node_id: Any, config: NodeConfig, wal: Wal, *, tick: float,
                 events: EventLog | None = None, checkpoint_every: int = 5000,
                 group_commit: float = 0.0) -> None:
        self.id = node_id
        self.config = config
        self.wal = wal
        self.tick = tick
        self.events = events
        self.checkpoint_every = checkpoint_every
        self.group_commit = group_commit
        self.core = NodeCore(node_id, config)
        self.outbox = Outbox(wal)
        self.timers: dict[tuple, asyncio.TimerHandle] = {}
        self.watching: set[Any] = set()
        self.flush_due: asyncio.Handle | None = None
        self.flushing: asyncio.Future | None = None  # the fsync in flight
        self.prelog: list[Outputs] = []  # outputs whose records wait for that fsync to end
        self.checkpoint_wanted = False
        # a file disk flushes on its own thread (the loop keeps going); memory disks inline
        self.flusher = ThreadPoolExecutor(1, thread_name_prefix=f"fsync-{node_id}") \
            if isinstance(wal.disk, FileDisk) else None
        self.seen = 0  # highest timestamp known to be issued by the oracle
        self.begins: dict[int, int] = {}  # begin call -> `seen` when its TS_REQUEST was made
        self.watermark = 0
        self.fsyncs = 0
        self._ids = itertools.count(1)
        self._pid = os.getpid()

    # -- what a transport implements ---------------------------------------------------------
    def transmit(self, msg: Message, mid: str) -> str | None:
        """Send ``msg``; return None if it left, else why it was lost."""
        raise NotImplementedError

    def link_up(self, peer: Any) -> bool:
        raise NotImplementedError

    def answer(self, reply: Reply) -> None:
        raise NotImplementedError

    # -- tracing -----------------------------------------------------------------------------
    def event(self, kind: str, data: dict[str, Any], node: Any = None) -> None:
        if self.events is not None:
            self.events.record(kind, self.id if node is None else node, data)

    # -- recovery ----------------------------------------------------------------------------
    def recover(self, horizon: int, restarted: bool = False) -> dict[str, Any]:
        """Rebuild the node from its checkpoint and WAL (as ``Cluster._open`` does); ``horizon``
        is the low watermark the oracle published (0 if unknown: see :mod:`kvlab.proc`)."""
        wal = self.wal
        scan = wal.scan()  # CorruptLog: refuse to start, touch nothing
        had = bool(scan.checkpoint or scan.records or scan.torn)
        if scan.torn:
            log.warning("%s", scan.torn_message(wal.name))
        core = NodeCore(self.id, self.config)
        out = core.handle(Recover(scan.checkpoint.data if scan.checkpoint else None,
                                  scan.records, horizon))
        wal.recover(scan)
        self.core = core
        self.outbox.clear()
        self.seen = max(self.seen, core.max_ts)
        self.watermark = max(self.watermark, core.participant.horizon)
        summary = {"replayed": len(scan.records), "checkpoint": scan.checkpoint is not None,
                   "in_doubt": sorted(t.id for t in core.participant.in_doubt()),
                   "decided": sorted(t for t, r in core.coordinator.txs.items()
                                     if r.state == COMMITTING),
                   "horizon": horizon, "pid": self._pid}
        if scan.torn:
            self.event("torn", {"warning": scan.torn_message(wal.name)})
        if had or restarted:
            self.event("restart", dict(summary))
        self.apply(out)
        return summary

    # -- carrying out outputs -------------------------------------------------------------------
    def feed(self, inp: Any) -> Outputs:
        """Hand one input to the node and carry out its outputs (a KvlabError from a client
        input propagates before anything changed)."""
        out = self.core.handle(inp)
        self.apply(out)
        return out

    def apply(self, out: Outputs) -> None:
        """Log first, then (maybe after the flush) speak: ``Cluster._apply`` for real.

        While an fsync runs (on the flusher thread) the log belongs to it, so an output with
        records waits in ``prelog``, in order, and is appended the moment the fsync returns;
        so does anything after it (the rule is node-wide, and so is the order)."""
        for key in out.cancel:
            handle = self.timers.pop(key, None)
            if handle is not None:
                handle.cancel()
        if self.events is not None:
            for note in out.notes:
                self.event("state", dict(note))
        for msg in out.messages:  # a begin's start timestamp: the watermark must wait for it
            if msg.kind == TS_REQUEST and msg.body.get("purpose") == "begin":
                self.begins.setdefault(msg.body["call"], self.seen)
        for reply in out.replies:  # answered: the transaction (if any) is in min_active_ts
            self.begins.pop(reply.call, None)
        if self.flushing is not None and (out.records or self.prelog or self.outbox.waiting):
            self.prelog.append(out)  # (behind held outputs too: they are released in order)
        else:
            self._log(out)

    def _log(self, out: Outputs) -> None:
        if out.records:
            appended = self.wal.append_all([(r.type, r.data, r.force) for r in out.records])
            if self.events is not None:
                for r, rec in zip(appended, out.records, strict=True):
                    self.event("wal", {"lsn": r.lsn, "type": r.type, "tx": rec.data.get("tx"),
                                       "force": rec.force})
        if self.outbox.admit(out):
            self.release(out)
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self.flush_due is None and self.flushing is None:
            loop = asyncio.get_running_loop()
            self.flush_due = loop.call_soon(self.flush) if self.group_commit <= 0 else \
                loop.call_later(self.group_commit, self.flush)

    def release(self, out: Outputs) -> None:
        for msg in out.messages:
            self.send(msg)
        loop = asyncio.get_running_loop()
        for key, delay in out.timers:
            old = self.timers.pop(key, None)
            if old is not None:
                old.cancel()
            self.timers[key] = loop.call_later(delay * self.tick, self._fire, key)
        for reply in out.replies:
            self.answer(reply)
        for peer in out.watch:
            self.watch(peer)

    def send(self, msg: Message) -> None:
        mid = f"{self.id}:{self._pid}:{next(self._ids)}"
        if self.events is not None:
            data = {"id": mid, "src": msg.src, "dst": msg.dst, "kind": msg.kind, "tx": msg.tx}
            if msg.body and all(isinstance(v, _PLAIN) for v in msg.body.values()):
                data["body"] = msg.body
            self.event("send", data)
        why = self.transmit(msg, mid)
        if why is not None and self.events is not None:
            self.event("drop", {"id": mid, "src": msg.src, "dst": msg.dst, "kind": msg.kind,
                                "tx": msg.tx, "reason": why})

    def deliver(self, msg: Message, mid: str) -> None:
        """A message arrived from the transport."""
        if self.events is not None:
            self.event("deliver", {"id": mid, "src": msg.src, "dst": msg.dst, "kind": msg.kind,
                                   "tx": msg.tx})
        if msg.kind == TS_REPLY and isinstance(msg.body.get("ts"), int):
            self.seen = max(self.seen, msg.body["ts"])
        self.feed(Deliver(msg))

    def abandon(self, call: int) -> None:
        """The client gave up on ``call`` (it timed out or went away): forget it here."""
        self.begins.pop(call, None)
        self.feed(Abandon(call))

    def flush(self) -> None:
        """Group commit: one fsync for everything appended so far, then release what waited.

        With a real disk the fsync runs on the flusher thread, and the loop goes on handling
        messages meanwhile (their records wait in ``prelog`` for the next fsync): that is what
        lets concurrent commits share fsyncs instead of queueing behind each other."""
        self.flush_due = None
        if self.flushing is not None:
            return
        if self.flusher is None:  # a memory disk: nothing to wait for
            self._flushed(self.wal.flush())
            return
        self.flushing = asyncio.get_running_loop().run_in_executor(self.flusher, self.wal.flush)
        self.flushing.add_done_callback(self._flush_done)

    def _flush_done(self, fut: asyncio.Future) -> None:
        self.flushing = None
        self._flushed(fut.result())  # an fsync that fails is fatal: the loop's handler stops

    def _flushed(self, n: int) -> None:
        self.fsyncs += 1
        self.event("flush", {"records": n, "lsn": self.wal.flushed_lsn})
        self._release_held()
        queued, self.prelog = self.prelog, []
        for out in queued:
            if self.flushing is not None:  # a checkpoint below cannot start one, but be safe
                self.prelog.append(out)
            else:
                self._log(out)
        if self.flushing is None and (self.checkpoint_wanted
                                      or self.wal.since_checkpoint >= self.checkpoint_every):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Checkpoint now, or right after the fsync in flight."""
        if self.flushing is not None:
            self.checkpoint_wanted = True
            return
        self.checkpoint_wanted = False
        self.wal.checkpoint(self.core.checkpoint_state())
        self.event("checkpoint", {"lsn": self.wal.flushed_lsn})
        self._release_held()  # a checkpoint flushes everything held

    async def drain(self) -> None:
        """Before a clean stop: let the fsync in flight finish and log what waited for it."""
        if self.flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.flushing)
        for out in self.prelog:
            if out.records:
                self.wal.append_all([(r.type, r.data, r.force) for r in out.records])
        self.prelog = []
        if self.flusher is not None:
            self.flusher.shutdown(wait=True)

    def _release_held(self) -> None:
        for out in self.outbox.release():
            self.release(out)

    def _fire(self, key: tuple) -> None:
        self.timers.pop(key, None)
        self.event("timer", {"key": " ".join(map(str, key)),
                             "tx": key[1] if isinstance(key[1], str) else None})
        self.feed(Fire(key))

    # -- failure detection ---------------------------------------------------------------------
    def watch(self, peer: Any) -> None:
        """The node parked on ``peer``: tell it (PeerUp) when the peer is reachable. If it is
        connected now (the messages were lost some other way), wait the capped backoff first,
        as the simulator does, so a parked retry never spins."""
        self.watching.add(peer)
        if self.link_up(peer):
            t = self.config.timing
            asyncio.get_running_loop().call_later(
                (t.retry_interval << t.max_retries) * self.tick, self.peer_up, peer)

    def peer_up(self, peer: Any) -> None:
        """The transport (re)connected to ``peer``, or a watch's backoff ran out."""
        if peer in self.watching:
            self.watching.discard(peer)
            self.event("timer", {"key": f"peer-up {peer}", "tx": None})
            self.feed(PeerUp(peer))

    # -- the low watermark ---------------------------------------------------------------------
    def bound(self) -> int:
        """A lower bound on every start timestamp this node uses now or will use: its oldest
        active snapshot, else one more than the newest timestamp it has seen (any later
        request is answered with a larger one), lowered for begins still in flight."""
        b = self.seen + 1
        if self.begins:
            b = min(b, min(self.begins.values()) + 1)
        m = self.core.min_active_ts()
        return b if m is None else min(b, m)

    def learn(self, watermark: int | None, last: int | None) -> None:
        """The oracle's answer to a report: the cluster watermark and its newest timestamp."""
        if isinstance(last, int):
            self.seen = max(self.seen, last)
        if isinstance(watermark, int) and watermark > self.watermark:
            self.watermark = watermark
            removed = self.core.gc(watermark)
            if removed:
                self.event("gc", {"watermark": watermark, "removed": removed})


__all__ = ["Host", "EventLog"]
