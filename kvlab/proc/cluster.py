"""ProcessCluster: one OS process per node (plus one for the timestamp oracle) on this machine.

It starts ``python -m kvlab.serve`` for every node and for the oracle, talks to them through
:class:`kvlab.proc.RemoteCluster` (so ``pc.node("n1")`` is the classic API), and can kill a
node for real (SIGKILL: no flush, no goodbye) and restart it (a new process replays its WAL and
resolves its in-doubt transactions with the others).

Clean-up, so no process or port outlives the cluster:

* the parent binds every listening socket itself (port 0: the kernel picks a free port) and
  hands it to the child (``pass_fds``), so there is no window in which another program can
  take the port; a restart binds the same port again (``SO_REUSEADDR``);
* all the cluster's processes share one process group (the oracle leads it), and
  :meth:`close` stops them with SIGTERM (they flush their logs), then SIGKILL after a grace
  period, and reaps every one;
* every child watches a pipe whose write end only the parent holds: when the parent dies for
  any reason (the notebook kernel killed, even with SIGKILL), the pipe reads end-of-file and
  the children stop. (``PR_SET_PDEATHSIG`` was the other option; it fires when the *thread*
  that forked the child exits, which in a threaded client is too early, and it is Linux only);
* :func:`atexit` closes every cluster still open when the interpreter exits normally.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kvlab
from kvlab.cluster import check_node_ids
from kvlab.driver import public
from kvlab.errors import ConfigurationError, KvlabError, NodeUnavailable
from kvlab.messages import TSO
from kvlab.node import PLACEMENTS
from kvlab.proc.client import RemoteCluster
from kvlab.trace import Trace
from kvlab.twopc import Timing

_LIVE: weakref.WeakSet[ProcessCluster] = weakref.WeakSet()
_GROUP = sys.version_info >= (3, 11)  # Popen(process_group=...) exists


class CannotStart(NodeUnavailable):
    """A node process could not be started (or did not become ready in time)."""


def _close_all() -> None:
    for pc in list(_LIVE):
        with contextlib.suppress(Exception):
            pc.close()


atexit.register(_close_all)


def _listener(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class ProcessCluster(RemoteCluster):
    """A cluster of real processes on this machine, with the simulator's classic API.

    Parameters
    ----------
    nodes: node ids (strings), e.g. ``["n1", "n2", "n3"]``.
    data_dir: each node's WAL and checkpoint under ``data_dir/<node>``, the oracle's state in
        ``data_dir/tso.json`` (the simulator's layout), logs and event logs next to them.
        Reopening the same directory recovers it. None: a temporary directory, removed by
        :meth:`close`.
    placement: ``"all"`` or ``"partitioned"``, as for :class:`kvlab.Cluster`.
    timing: protocol timeouts in ticks (:class:`kvlab.Timing`); ``tick`` seconds per tick
        (default 10 ms: the default 60-tick vote timeout is 0.6 s of wall-clock time).
    call_timeout: seconds a call may wait before :class:`kvlab.proc.CallTimeout`.
    start_timeout: seconds a process may take to start and connect to its peers.
    trace: every process writes an event log, merged by :meth:`trace` (off: faster).
    history: record every transaction made through this object for :func:`kvlab.check`.
    checkpoint_every: log records after which a node checkpoints and truncates its log.
    group_commit: seconds a node waits before its group-commit fsync (0: end of loop turn).
    """

    def __init__(self, nodes: Iterable[Any], data_dir: str | os.PathLike[str] | None = None, *,
                 placement: str = "all", timing: Timing | None = None, tick: float = 0.01,
                 call_timeout: float = 30.0, start_timeout: float = 60.0, trace: bool = True,
                 history: bool = True, checkpoint_every: int = 5000,
                 group_commit: float = 0.0) -> None:
        ids = check_node_ids(nodes)
        if not all(isinstance(n, str) for n in ids):
            raise ConfigurationError(f"ProcessCluster node ids are strings (they name "
                                     f"processes and directories), got {ids!r}")
        bad = [n for n in ids if not n.replace("-", "").replace("_", "").isalnum()]
        if bad:
            raise ConfigurationError(f"node ids {bad} must be letters, digits, '-' or '_' "
                                     f"(each one names a directory)")
        if placement not in PLACEMENTS:
            raise ConfigurationError(f"unknown placement {placement!r}: choose 'all' or "
                                     f"'partitioned'")
        if timing is not None and not isinstance(timing, Timing):
            raise ConfigurationError(f"timing must be a kvlab.Timing(...), got {timing!r}")
        for name, v in (("tick", tick), ("call_timeout", call_timeout),
                        ("start_timeout", start_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigurationError(f"{name} is a positive number of seconds, got {v!r}")
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="kvlab-pc-") if data_dir is None
                             else data_dir)
        self.placement, self.tick = placement, float(tick)
        self.timing = timing or Timing()
        self.start_timeout = float(start_timeout)
        self.checkpoint_every, self.group_commit = checkpoint_every, group_commit
        self._tracing = trace
        self._procs: dict[str, subprocess.Popen] = {}
        self._t0 = time.time()
        self._pgid: int | None = None
        self._watch_r, self._watch_w = os.pipe()  # children exit when the write end closes
        self._spawn_lock = threading.Lock()
        socks = {}
        try:
            for n in [TSO, *ids]:
                (self.data_dir / n).mkdir(parents=True, exist_ok=True)
                socks[n] = _listener()
        except OSError as e:
            for s in socks.values():
                s.close()
            self._close_pipe()
            raise CannotStart(f"cannot listen on 127.0.0.1 here ({e}): this environment "
                              f"does not allow local servers") from None
        self.ports = {n: s.getsockname()[1] for n, s in socks.items()}
        super().__init__({n: ("127.0.0.1", self.ports[n]) for n in ids},
                         call_timeout=call_timeout, history=history, trace=trace)
        _LIVE.add(self)
        try:
            for n in [TSO, *ids]:
                self._spawn(n, socks.pop(n))
            self._ready(ids, self.start_timeout)
        except BaseException:
            for s in socks.values():
                s.close()
            self.close()
            raise

    # -- processes -----------------------------------------------------------------------
    def _command(self, name: str, fd: int, restart: bool) -> list[str]:
        peers = ",".join(f"{n}=127.0.0.1:{self.ports[n]}" for n in self.ids)
        t = self.timing
        timing = ",".join(f"{f}={getattr(t, f)}" for f in (
            "vote_timeout", "ts_timeout", "decision_timeout", "retry_interval", "max_retries",
            "keep_outcomes"))
        cmd = [sys.executable, "-m", "kvlab.serve", "--node", name, "--peers", peers,
               "--tso", f"127.0.0.1:{self.ports[TSO]}", "--placement", self.placement,
               "--tick-ms", repr(self.tick * 1000), "--timing", timing,
               "--checkpoint-every", str(self.checkpoint_every),
               "--group-commit-ms", repr(self.group_commit * 1000),
               "--listen-fd", str(fd), "--parent-fd", str(self._watch_r)]
        if name == TSO:
            cmd += ["--data-dir", str(self.data_dir), "--log-dir", str(self.data_dir / TSO)]
        else:
            cmd += ["--data-dir", str(self.data_dir / name)]
        if self._tracing:
            cmd.append("--trace")
        if restart:
            cmd.append("--restart")
        return cmd

    def _spawn(self, name: str, sock: socket.socket, restart: bool = False) -> None:
        env = dict(os.environ)
        root = str(Path(kvlab.__file__).resolve().parent.parent)  # works from a source tree
        env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") \
            else root
        extra: dict[str, Any] = {}
        if _GROUP:
            leader = self._pgid is not None and self._alive(TSO)
            extra["process_group"] = self._pgid if leader else 0
        else:
            extra["start_new_session"] = True
        log = open(self.data_dir / name / "node.log", "ab")
        try:
            proc = subprocess.Popen(
                self._command(name, sock.fileno(), restart), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env=env, close_fds=True,
                pass_fds=(sock.fileno(), self._watch_r), **extra)
        except OSError as e:
            raise CannotStart(f"cannot start a process for {name} ({e}): this environment "
                              f"does not allow it") from None
        finally:
            log.close()
            sock.close()  # the child has its own copy; ours must not keep the port open
        self._procs[name] = proc
        if name == TSO and _GROUP:
            self._pgid = proc.pid

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _ready(self, names: list[str], timeout: float, joined: str | None = None) -> None:
        """Wait until every named node has recovered and is connected to every live peer
        and to the oracle (and, after a restart, until the live peers reach ``joined``)."""
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            for n in list(pending):
                if not self._alive(n):
                    raise CannotStart(f"{n} exited during start-up (status "
                                      f"{self._procs[n].returncode}); its log ends:\n"
                                      f"{self.logs(n, 15)}")
                if self._node_ready(n, joined):
                    pending.remove(n)
            if not self._alive(TSO):
                raise CannotStart(f"the timestamp oracle exited; its log ends:\n"
                                  f"{self.logs(TSO, 15)}")
            if pending and time.monotonic() > deadline:
                raise CannotStart(f"{', '.join(pending)} did not become ready within "
                                  f"{timeout:g} s; the log of {pending[0]} ends:\n"
                                  f"{self.logs(pending[0], 15)}")
            if pending:
                with self.lock:  # waiting releases the lock: other threads carry on
                    self._cond.wait(0.02)

    def _node_ready(self, n: str, joined: str | None) -> bool:
        with self.lock:
            try:
                s = self._query(n, "status")
            except KvlabError:
                return False
        if not s.get("ready") or not s.get("oracle"):
            return False
        live = [p for p in s["links"] if self._alive(p)]
        if not all(s["links"][p] for p in live):
            return False
        if joined is not None and n == joined:
            for p in live:
                with self.lock:
                    try:
                        ps = self._query(p, "status")
                    except KvlabError:
                        return False
                if not ps.get("links", {}).get(joined):
                    return False
        return True

    # -- public API -------------------------------------------------------------------------
    @public(journal=False, after_close=True)
    def up(self, node_id: Any) -> bool:
        """True while the node's process runs."""
        self.node(node_id)
        return self._alive(node_id)

    @public(journal=False, after_close=True)
    def pid(self, node_id: Any) -> int | None:
        """The node's process id while it runs, else None."""
        self.node(node_id)
        return self._procs[node_id].pid if self._alive(node_id) else None

    @property
    def pids(self) -> dict[str, int]:
        """Every running process of this cluster (nodes and the oracle ``"tso"``)."""
        return {n: p.pid for n, p in self._procs.items() if p.poll() is None}

    @public(journal=False)
    def kill(self, node_id: Any) -> bool:
        """SIGKILL the node's process: no flush, no goodbye. Its unflushed log tail is lost,
        exactly like a simulated crash; calls waiting on it raise NodeUnavailable. Killing a
        node that is down changes nothing and returns False."""
        self.node(node_id)
        if not self._alive(node_id):
            return False
        proc = self._procs[node_id]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        conn = self._conns.get(node_id)
        if conn is not None:
            conn._dead(f"{node_id} was killed (SIGKILL)")
            self._cond.notify_all()
        if self._trace:
            self._events.append((time.time(), "crash", node_id,  # what it lost: unknowable
                                 {"signal": "SIGKILL", "pid": proc.pid, "lost_records": "?"}))
        return True

    @public(journal=False)
    def restart(self, node_id: Any) -> bool:
        """Start a new process for a node that is down: it replays its checkpoint and WAL,
        asks the coordinators of its in-doubt transactions, and resumes phase 2 of the
        commits it had decided. Returns once it is connected both ways to every live peer
        (then settles commits whose outcome the client missed: :meth:`resolve`).
        Restarting a node that is up changes nothing and returns False."""
        self.node(node_id)
        if self._alive(node_id):
            return False
        try:
            sock = _listener(self.ports[node_id])
        except OSError as e:
            raise CannotStart(f"cannot listen on 127.0.0.1:{self.ports[node_id]} again for "
                              f"{node_id} ({e}): another program took the port; close this "
                              f"cluster and reopen its data_dir") from None
        self._spawn(node_id, sock, restart=True)
        self._ready([node_id], self.start_timeout, joined=node_id)
        self.resolve()
        return True

    @public(journal=False, after_close=True)
    def logs(self, node_id: Any, lines: int = 20) -> str:
        """The last lines of a node's log (``"tso"``: the oracle's)."""
        if node_id != TSO:
            self.node(node_id)
        path = self.data_dir / node_id / "node.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @public(journal=False, after_close=True)
    def trace(self) -> Trace:
        """Every process's event log and this client's calls and kills, merged in wall-clock
        order (one clock: the processes share this machine), since this cluster started.
        Times are milliseconds; :func:`kvlab.viz.sequence_diagram` draws it."""
        rows: list[tuple[float, int, int, str, Any, dict[str, Any]]] = []
        for src, name in enumerate([TSO, *self.ids]):
            path = self.data_dir / name / "events.jsonl"
            with contextlib.suppress(OSError), open(path, "rb") as f:
                for i, line in enumerate(f):
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # the last line of a killed process may be cut
                    if e["t"] >= self._t0:
                        rows.append((e["t"], src, i, e["k"], e["n"], e["d"]))
        for i, (t, kind, node, data) in enumerate(self._events):
            rows.append((t, -1, i, kind, node, dict(data)))
        rows.sort(key=lambda r: r[:3])
        trace = Trace()
        for t, _, _, kind, node, data in rows:
            trace.record(round((t - self._t0) * 1000, 2), kind, node, data)
        return trace

    @public(journal=False, after_close=True)
    def close(self) -> None:
        """Stop every process (SIGTERM: they flush their logs; SIGKILL after 10 s), reap them
        and close every connection. ``ProcessCluster(same ids, same data_dir)`` recovers.
        Closing twice changes nothing."""
        if self._calls.closed:
            return
        super().close()
        procs = [p for n, p in self._procs.items() if n != TSO] + \
            [p for n, p in self._procs.items() if n == TSO]  # the oracle last
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    p.kill()
                p.wait()
        # no killpg here: every process of ours is reaped by now, and a group id whose
        # members are all gone may already belong to someone else
        self._close_pipe()
        _LIVE.discard(self)
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _close_pipe(self) -> None:
        for fd in (self._watch_r, self._watch_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._watch_r = self._watch_w = -1

    def __enter__(self) -> ProcessCluster:
        return self

    def is_up(self, node: Any) -> bool:
        return self._alive(node)

    def __repr__(self) -> str:
        if self.closed:
            return f"<kvlab.ProcessCluster {', '.join(self.ids)} (closed)>"
        ups = ", ".join(f"{n} pid {self._procs[n].pid}" if self._alive(n) else f"{n} (down)"
                        for n in self.ids)
        return f"<kvlab.ProcessCluster [{ups}] data_dir={str(self.data_dir)!r}>"


__all__ = ["ProcessCluster", "CannotStart"]
