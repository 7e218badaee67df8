"""The Maelstrom adapter (``python -m kvlab.maelstrom``) under a small Maelstrom of our own.

Maelstrom itself ships as a release jar and cannot be installed here, so :class:`Harness` plays
its documented protocol (doc/protocol.md, doc/workloads.md, doc/services.md): it starts
several adapter processes, sends each ``init``, routes every stdout line to its destination
through a network with random delays and, for a while, a partition, answers ``lin-tso``
itself, and acts as the workload's clients. What the clients saw becomes a history for
:func:`kvlab.check` (the list-append flavour is Elle's: reads reveal the order of appends).
No timing assertions: every wait has a generous bound and only guards against hangs.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import kvlab
from kvlab.history import History

ROOT = Path(__file__).resolve().parent.parent
DEFINITE = {1, 10, 11, 12, 14, 20, 21, 22, 30}  # Maelstrom's definite error codes


class Harness:
    """Maelstrom's side of the protocol: nodes, a router, lin-tso and clients."""

    def __init__(self, tmp: Path, nodes: int = 3, seed: int = 0,
                 delay: tuple[float, float] = (0.0, 0.004), env: dict[str, str] | None = None
                 ) -> None:
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.rng = random.Random(seed)
        self.delay = delay
        self.cut: list[set[str]] = []  # partition groups; empty: healed
        self.lock = threading.Condition()
        self.queue: list[tuple[float, int, str, str]] = []  # (due, seq, dest, line)
        self.seq = itertools.count()
        self.replies: dict[tuple[str, int], dict[str, Any]] = {}
        self.ts = 0  # lin-tso's counter
        self.dropped = 0
        self.stop = False
        self.logs = [open(tmp / f"{n}.log", "wb") for n in self.ids]
        run_env = {**os.environ, "PYTHONPATH": str(ROOT), "KVLAB_TIMEOUT": "2",
                   **(env or {})}
        self.procs = {n: subprocess.Popen(
            [sys.executable, "-m", "kvlab.maelstrom"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=log, env=run_env) for n, log in zip(
            self.ids, self.logs, strict=True)}
        self.threads = [threading.Thread(target=self._read, args=(n,), daemon=True)
                        for n in self.ids]
        self.threads.append(threading.Thread(target=self._route, daemon=True))
        for t in self.threads:
            t.start()
        ids = itertools.count(1)
        for n in self.ids:
            self.send("c0", n, {"type": "init", "msg_id": next(ids), "node_id": n,
                                "node_ids": self.ids})
        for i in range(1, len(self.ids) + 1):
            assert self.wait("c0", i, 30)["type"] == "init_ok"

    # -- the network ---------------------------------------------------------------------
    def blocked(self, a: str, b: str) -> bool:
        return any((a in g) != (b in g) for g in self.cut) if a in self.ids and \
            b in self.ids else False

    def send(self, src: str, dest: str, body: dict[str, Any], delay: float | None = None
             ) -> None:
        line = json.dumps({"src": src, "dest": dest, "body": body})
        with self.lock:
            due = time.monotonic() + (self.rng.uniform(*self.delay) if delay is None else delay)
            heapq.heappush(self.queue, (due, next(self.seq), dest, line))
            self.lock.notify_all()

    def _read(self, node: str) -> None:
        for raw in self.procs[node].stdout:
            msg = json.loads(raw)
            assert msg["src"] == node, msg  # a node writes only its own messages
            dest, body = msg["dest"], msg["body"]
            if dest == "lin-tso":
                with self.lock:
                    self.ts += 1
                    ts = self.ts
                self.send("lin-tso", node, {"type": "ts_ok", "ts": ts, "msg_id": ts,
                                            "in_reply_to": body["msg_id"]})
            elif dest in self.procs:
                with self.lock:
                    cut = self.blocked(node, dest)
                    self.dropped += cut
                if not cut:
                    self.send(node, dest, body)
            else:  # a client: the reply to one of its requests
                with self.lock:
                    self.replies[(dest, body["in_reply_to"])] = body
                    self.lock.notify_all()

    def _route(self) -> None:
        while True:
            with self.lock:
                while not self.stop and (not self.queue or self.queue[0][0] > time.monotonic()):
                    self.lock.wait(None if not self.queue else
                                   max(0.0, self.queue[0][0] - time.monotonic()))
                if self.stop:
                    return
                _, _, dest, line = heapq.heappop(self.queue)
                src = json.loads(line)["src"]
                if self.blocked(src, dest):  # the partition began while it was in flight
                    self.dropped += 1
                    continue
            try:
                p = self.procs[dest].stdin
                p.write(line.encode() + b"\n")
                p.flush()
            except (BrokenPipeError, KeyError):
                pass

    def wait(self, client: str, msg_id: int, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while (client, msg_id) not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.lock.wait(left)
            return self.replies.pop((client, msg_id))

    def close(self) -> None:
        with self.lock:
            self.stop = True
            self.lock.notify_all()
        for p in self.procs.values():
            p.stdin.close()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()


def run_clients(h: Harness, clients: int, per_client: int, keys: int, workload: str,
                seed: int = 1, sequential: bool = False,
                done: list[tuple[dict, dict | None]] | None = None
                ) -> list[tuple[dict, dict | None]]:
    """Each client sends one txn at a time to a random node; returns (request, reply)."""
    rng = random.Random(seed)
    counter = {k: itertools.count(1) for k in range(1, keys + 1)}
    ops_lock = threading.RLock()
    done = [] if done is None else done

    def txn() -> list[list[Any]]:
        ops = []
        for _ in range(rng.randint(1, 3)):
            k = rng.randint(1, keys)
            if rng.random() < 0.5:
                ops.append(["r", k, None])
            else:
                with ops_lock:
                    ops.append(["append" if workload == "list" else "w", k, next(counter[k])])
        return ops

    def client(c: int) -> None:
        name = f"c{c}"
        for i in range(1, per_client + 1):
            with ops_lock:
                node = rng.choice(h.ids)
                body = {"type": "txn", "msg_id": i, "txn": txn()}
            h.send(name, node, body)
            reply = h.wait(name, i, 15)
            with ops_lock:
                done.append((body, reply))

    if sequential:
        for c in range(1, clients + 1):
            client(c)
        return done
    threads = [threading.Thread(target=client, args=(c,)) for c in range(1, clients + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return done


def to_history(done: list[tuple[dict, dict | None]]) -> tuple[History, dict[str, int]]:
    """What the clients saw, as kvlab.check's plain history (Elle's reading of it)."""
    seen_appends = set()
    for _, reply in done:
        if reply and reply["type"] == "txn_ok":
            for f, k, v in reply["txn"]:
                if f == "r" and isinstance(v, list):
                    seen_appends.update((k, x) for x in v)
    plain, stats = [], {"ok": 0, "definite": 0, "indefinite": 0, "codes": {}}
    for i, (req, reply) in enumerate(done):
        tid = f"M{i}"
        if reply is not None and reply["type"] == "txn_ok":
            stats["ok"] += 1
            ops = [[f, str(k), v] for f, k, v in reply["txn"]]
            plain.append({"id": tid, "status": "committed", "ops": ops})
            continue
        writes = [[f, str(k), v] for f, k, v in req["txn"] if f != "r"]
        if reply is not None and reply.get("code") in DEFINITE:
            stats["definite"] += 1
            stats["codes"][reply["code"]] = stats["codes"].get(reply["code"], 0) + 1
            if writes:
                plain.append({"id": tid, "status": "aborted", "ops": writes})
        else:  # indefinite: it happened if anyone saw it, else leave it out
            stats["indefinite"] += 1
            if any((k, v) in seen_appends for _, k, v in req["txn"]):
                plain.append({"id": tid, "status": "committed", "ops": writes})
    return History.from_plain(plain), stats


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def make(**kw: Any) -> Harness:
        made.append(Harness(tmp_path, **kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_list_append_with_delays_and_a_partition_is_serializable(harness):
    h = harness(nodes=3, seed=0)
    box: dict[str, Any] = {}

    done: list[tuple[dict, dict | None]] = []

    def nemesis() -> None:  # cut n1 off once a quarter of the transactions are done
        deadline = time.monotonic() + 120
        while len(done) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        with h.lock:
            h.cut = [{"n1"}, {"n2", "n3"}]
        box["cut at"] = len(done)
        time.sleep(1.5)
        with h.lock:
            h.cut = []
        box["healed at"] = len(done)

    t = threading.Thread(target=nemesis)
    t.start()
    run_clients(h, clients=4, per_client=40, keys=4, workload="list", done=done)
    t.join(130)
    assert box["cut at"] < box["healed at"] < len(done), box
    # a final read of every key on every node, once the cluster has settled
    final = []
    for n in h.ids:
        body = {"type": "txn", "msg_id": 1, "txn": [["r", k, None] for k in range(1, 5)]}
        for attempt in range(20):
            body["msg_id"] = 100 + attempt
            h.send(f"f{n}", n, dict(body))
            reply = h.wait(f"f{n}", body["msg_id"], 15)
            if reply and reply["type"] == "txn_ok":
                final.append((dict(body), reply))
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"{n} never served a final read")
    history, stats = to_history(done + final)
    assert stats["ok"] >= 40, stats
    assert stats["definite"] + stats["indefinite"] >= 1, stats  # the partition cost something
    assert h.dropped > 0  # the partition really cut messages
    lists = [dict((k, v) for _, k, v in reply["txn"]) for _, reply in final]
    assert all(lst == lists[0] for lst in lists), lists  # every replica ends the same
    for level in ("read_committed", "snapshot", "serializable"):
        report = kvlab.check(history, level=level)
        assert report.ok, report


def test_rw_register_txns_read_what_was_written(harness):
    h = harness(nodes=2, seed=3, env={"KVLAB_ISOLATION": "snapshot"})
    done = run_clients(h, clients=2, per_client=10, keys=3, workload="register",
                       sequential=True)
    # one at a time, yet a commit may still find the previous one's lock on a participant
    # whose COMMIT is in flight: kvlab never waits for a lock, it votes no (code 30)
    assert all(reply is not None and (reply["type"] == "txn_ok" or reply["code"] == 30)
               for _, reply in done), done
    for req, reply in done:  # the answer is the request with the reads filled in
        if reply["type"] == "txn_ok":
            assert [op[:2] for op in reply["txn"]] == [op[:2] for op in req["txn"]]
            assert all(op == r for op, r in zip(req["txn"], reply["txn"], strict=True)
                       if op[0] == "w")
    history, stats = to_history(done)  # one txn at a time: completion order is commit order
    assert stats["ok"] >= 10, stats
    assert kvlab.check(history, level="serializable").ok


def test_errors_use_maelstroms_codes(harness):
    h = harness(nodes=1, seed=4)
    h.send("c9", "n1", {"type": "echo", "msg_id": 1, "echo": "hi"})
    assert h.wait("c9", 1, 15)["code"] == 10  # not-supported
    h.send("c9", "n1", {"type": "txn", "msg_id": 2, "txn": [["x", 1, 2]]})
    assert h.wait("c9", 2, 15)["code"] == 12  # malformed-request
    h.send("c9", "n1", {"type": "txn", "msg_id": 3, "txn": [["append", 1, 5], ["r", 1, None]]})
    ok = h.wait("c9", 3, 15)
    assert ok == {"type": "txn_ok", "txn": [["append", 1, 5], ["r", 1, [5]]],
                  "in_reply_to": 3, "msg_id": ok["msg_id"]}
    # two transactions that read and append the same key, the second begun before the
    # first commits: serializable validation (or first committer wins) aborts one, code 30
    h.send("c9", "n1", {"type": "txn", "msg_id": 4, "txn": [["r", 2, None], ["append", 2, 1]]})
    h.send("c8", "n1", {"type": "txn", "msg_id": 4, "txn": [["r", 2, None], ["append", 2, 2]]})
    codes = {h.wait("c9", 4, 15).get("code"), h.wait("c8", 4, 15).get("code")}
    assert codes <= {None, 30}
