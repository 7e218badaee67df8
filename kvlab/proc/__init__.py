"""The same node state machines as OS processes over TCP: ``ProcessCluster`` and friends.

One classic API, two drivers. :class:`kvlab.client.Node` (argument checks, the history, typed
errors) talks to a :class:`kvlab.driver.Driver`; the simulated :class:`kvlab.Cluster` is one,
:class:`RemoteCluster` (TCP to nodes running anywhere) another, and :class:`ProcessCluster`
is a RemoteCluster that also starts, kills and restarts the processes on this machine. The
node code is untouched: a process runs the simulator's :class:`kvlab.node.NodeCore` and
carries out its Outputs with real effects (:mod:`kvlab.proc.host`).

Modules
-------
``wire``     length-prefixed JSON frames; the allow-list of objects that may cross
``host``     carrying out Outputs for real: WAL + Outbox + group commit, timers, watches
``server``   ``python -m kvlab.serve``: a node (or the oracle) on asyncio streams
``client``   :class:`RemoteCluster`, the TCP driver (blocking sockets, a thread per node)
``cluster``  :class:`ProcessCluster`: spawning, SIGKILL, restart, clean-up, the merged trace

Processes and sockets
---------------------
One process per node and one for the timestamp oracle (the simulator assumes an oracle that
never fails, so ``pc.kill`` takes node ids only; run from the command line without ``--tso``,
the first node hosts the oracle instead, and killing it stops timestamps until it is back).
Nodes dial each other (one write-only connection per direction), dial the oracle, and accept
clients. Timers are ``loop.call_later`` on the wall clock, ``tick`` seconds per Timing tick.

The low watermark, over real processes
--------------------------------------
The simulator computes the watermark from global knowledge (``Cluster._watermark``: the oracle's
newest timestamp, every live node's oldest active snapshot, timestamps in flight). It is not an
optimisation only: below it, versions are collected and a participant forgets finished
transactions and *refuses unknown PREPAREs* (a delayed duplicate PREPARE of a committed
transaction must never lock its keys again; see :mod:`kvlab.twopc`). So it must never be
too high. Over processes, the oracle is the authority:

1. every ``wm_interval`` each node reports a **bound** ``b``: no start timestamp it uses now or
   will use is below ``b``. It is the node's oldest active snapshot (``min_active_ts``), else
   ``seen + 1`` where ``seen`` is the newest timestamp the node knows was issued. That is
   causally safe: a request sent after learning ``seen`` reaches the oracle after it issued
   ``seen``, so it is answered with more. A begin still waiting for its start timestamp lowers
   the bound to ``seen_at_request + 1`` for the same reason (its answer may be in flight).
2. the oracle answers with ``W = min(last issued, every node's latest bound)`` (only once every
   node has reported since the oracle started; never lowered) and with ``last``, which raises
   the node's ``seen`` so an idle node does not hold ``W`` back.
3. the node garbage-collects (``NodeCore.gc(W)``: versions and the participant horizon).

A node that is down keeps its last bound, so W stops while it is down: conservative (a
partitioned node may still have active snapshots), and the price is memory that grows until it
is back. A restarted node fetches W before it replays its log and passes it to
``Recover(horizon=W)``; if the oracle cannot be reached it uses 0, which is still safe, because
recovery takes the larger of that and the horizon its checkpoint recorded, and every finished
transaction at or above that horizon is in the checkpoint or the log after it.

Failure detection
-----------------
A node that ran out of retries watches a peer (``Outputs.watch``): it gets a ``PeerUp`` input
when its connection to the peer is (re)established, or after the capped backoff if it is up.
A dead process is noticed at once (its sockets close); a hung one only through timeouts.
Client calls that time out are abandoned on the node (``Abandon``), so a late answer (a begin's
timestamp, a parked read) creates nothing.

Clean-up
--------
See :mod:`kvlab.proc.cluster`: one process group, SIGTERM then SIGKILL on ``close()``, atexit,
and a pipe the children watch so they stop when the parent dies, however it dies.

Determinism does not survive the trip (the wall clock and the kernel's scheduler decide the
interleaving), but the state machines are the ones the simulator explores exhaustively.
"""

from kvlab.proc.client import CallTimeout, RemoteCluster, connect
from kvlab.proc.cluster import CannotStart, ProcessCluster

__all__ = ["ProcessCluster", "RemoteCluster", "CallTimeout", "CannotStart", "connect"]
