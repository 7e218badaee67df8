"""kvlab's node state machines as real OS processes over TCP (kvlab.proc, python -m kvlab.serve).

Only 127.0.0.1, no timing assertions (every wait has a generous bound and only guards against
hangs), and every test checks that no process of ours and no listening port outlives it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import key_owned_by

import kvlab
from kvlab.errors import KvlabError, NodeUnavailable, TransactionClosed, TransactionNotFound
from kvlab.proc import CallTimeout, ProcessCluster, connect, wire

ROOT = Path(__file__).resolve().parent.parent
NODES = ["n1", "n2", "n3"]
LEVELS = ("read_committed", "snapshot", "serializable")


# -- what the kernel says is still there -------------------------------------------------------
def listening_ports() -> set[int]:
    """Every TCP port in LISTEN state on this machine (from /proc/net/tcp and tcp6)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone: it holds no socket and no file)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children() -> set[int]:
    """Our own child processes that are still running."""
    me = os.getpid()
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == me and stat[0] != "Z":
                out.add(int(d.name))
    return out


def wait_until(ready, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


def assert_gone(pids: list[int], ports: list[int]) -> None:
    wait_until(lambda: not any(alive(p) for p in pids), 30, "every process gone")
    assert not (set(ports) & listening_ports()), "a port is still listening"


def quiet(pc: ProcessCluster, timeout: float = 90.0) -> None:
    """Wait until no live node holds a lock, doubts or runs a commit (2PC has settled)."""
    def settled() -> bool:
        for n in filter(pc.up, pc.ids):
            s = pc.status(n)
            if s["in_doubt"] or s["locks"] or s["committing"]:
                return False
        return True
    wait_until(settled, timeout, "a quiet cluster")


@pytest.fixture
def cleanup():
    """Every ProcessCluster made through this is closed, and then nothing may be left."""
    made: list[ProcessCluster] = []
    before = children()

    def make(*args: Any, **kw: Any) -> ProcessCluster:
        kw.setdefault("call_timeout", 20.0)
        made.append(ProcessCluster(*args, **kw))
        return made[-1]

    yield make
    pids, ports = [], []
    for pc in made:
        pids += list(pc.pids.values())
        ports += list(pc.ports.values())
        pc.close()
    assert_gone(pids, ports)
    assert children() <= before, "a child process outlived its cluster"


# -- the basics --------------------------------------------------------------------------------
def test_a_process_cluster_is_the_classic_api(cleanup, tmp_path):
    pc = cleanup(NODES, data_dir=tmp_path / "d")
    n1, n3 = pc.node("n1"), pc["n3"]
    assert len(set(pc.pids.values())) == 4  # three nodes and the oracle, each its own process
    tx = n1.begin()
    n1.put(tx, "x", {"nested": [1, 2.5, "three"]})
    assert n1.get(tx, "x") == {"nested": [1, 2.5, "three"]}  # read your own writes
    assert n1.commit(tx)
    assert n1.outcome(tx).committed
    r = n3.begin()
    assert n3.get(r, "x") == {"nested": [1, 2.5, "three"]}  # committed on n1, read on n3
    assert n3.get(r, "nothing") is None
    assert n3.commit(r)
    d = n3.begin()
    n3.delete(d, "x")
    n3.rollback(d)
    assert [v.writer for v in n1.versions("x")] == [tx]
    # the same typed errors as the simulator, raised from the public call
    with pytest.raises(TransactionClosed):
        n1.put(tx, "x", 2)
    with pytest.raises(TransactionNotFound):
        n1.get("T999999", "x")
    with pytest.raises(kvlab.InvalidValue):
        n1.put(n1.begin(), "y", float("nan"))
    with pytest.raises(kvlab.UnknownNode):
        pc.node("n9")
    assert kvlab.check(pc.history, level="serializable").ok


def test_sigkill_really_kills_and_restart_recovers(cleanup, tmp_path):
    pc = cleanup(NODES, data_dir=tmp_path / "d", call_timeout=5.0)
    n1, n2 = pc["n1"], pc["n2"]
    tx = n1.begin()
    n1.put(tx, "x", 1)
    assert n1.commit(tx)
    pid = pc.pid("n2")
    assert pc.kill("n2") and not alive(pid) and not n2.up and pc.pid("n2") is None
    assert not pc.kill("n2")  # already down
    with pytest.raises(NodeUnavailable, match="restart"):
        n2.begin()
    t = n1.begin()  # a participant is down: no vote, the commit aborts (after vote_timeout)
    n1.put(t, "x", 2)
    assert not n1.commit(t)
    assert "no vote from n2" in n1.outcome(t).reason
    assert pc.restart("n2") and not pc.restart("n2")
    assert pc.pid("n2") != pid
    r = n2.begin()
    assert n2.get(r, "x") == 1  # replayed from its WAL
    # the coordinator dies mid-commit: the participants are left in doubt and reads block.
    # n3 is down, so the coordinator waits for its vote (vote_timeout) while n2 prepares
    assert pc.kill("n3")
    t = n1.begin()
    n1.put(t, "x", 3)
    handle = n1.commit_async(t)
    wait_until(lambda: pc.status("n2")["in_doubt"] or handle.done, 30, "a prepared n2")
    if not handle.done:  # (else the vote timeout won the race on a slow machine: aborted)
        pc.kill("n1")
        with pytest.raises(NodeUnavailable, match="unknown"):
            handle.wait()
        assert pc.history[t].status == "active" and "unknown" in pc.history[t].reason
        late = None
        if pc.status("n2")["in_doubt"]:
            r = n2.begin()
            pc.call_timeout = 1.0  # it cannot finish: no need to wait long to see that
            with pytest.raises(CallTimeout, match=f"prepared transaction {t}"):
                n2.get(r, "x")  # the simulator's blocking problem, for real
            late = n2.get_async(r, "x")  # an async read waits for the decision instead
            pc.call_timeout = 20.0
            assert not late.done
        pc.restart("n1")
        quiet(pc)
        outcome = n1.outcome(t)
        assert outcome.status == "aborted" and "presumed abort" in outcome.reason
        assert pc.history[t].status == outcome.status  # the client's history was settled
        if late is not None:  # the async read is answered once the lock is released
            assert late.wait() == (3 if outcome.committed else 1)
            assert pc.history[r].ops[-1].value == late.value  # and it is in the history
    assert not n1.outcome(t).committed  # no vote from n3, or no decision before the kill
    assert pc.restart("n3")
    quiet(pc)
    for n in NODES:
        r = pc[n].begin()
        assert pc[n].get(r, "x") == 1
    trace = pc.trace()
    kills = [e.node for e in trace.filter(kind="crash")]
    assert kills in (["n2", "n3", "n1"], ["n2", "n3"])
    assert {e.node for e in trace.filter(kind="restart")} >= {"n2", "n3"}
    sent = {e.data["id"]: e for e in trace.filter(kind="send")}
    delivered = trace.filter(kind="deliver")
    assert delivered and all(d.data["id"] in sent for d in delivered)
    assert all(sent[d.data["id"]].seq < d.seq for d in delivered)  # one clock, causal order
    import matplotlib.pyplot as plt

    from kvlab import viz

    plt.close(viz.sequence_diagram(trace, tx=[tx, t]))  # draws a real run


def test_close_and_reopen_recovers_and_leaves_nothing_behind(tmp_path):
    d = tmp_path / "d"
    ids = ["n1", "n2"]  # two nodes are enough here (and cheaper)
    before = children()
    pc = ProcessCluster(ids, data_dir=d)
    tx = pc["n2"].begin()
    pc["n2"].put(tx, "k", "v")
    assert pc["n2"].commit(tx)
    pids, ports = list(pc.pids.values()), list(pc.ports.values())
    pc.close()
    pc.close()  # twice: nothing
    with pytest.raises(kvlab.ClusterClosed):
        pc["n1"].begin()
    assert_gone(pids, ports)
    assert children() <= before
    assert (d / "n1" / "wal.log").exists() and (d / "tso.json").exists()
    with kvlab.Cluster(ids, data_dir=d) as sim:  # the simulator's own layout: it reads it
        assert sim["n1"].get(sim["n1"].begin(), "k") == "v"
    with ProcessCluster(ids, data_dir=d) as again:
        r = again["n1"].begin()
        assert again["n1"].get(r, "k") == "v"
        pids, ports = list(again.pids.values()), list(again.ports.values())
    assert_gone(pids, ports)


def test_children_die_with_their_parent(tmp_path):
    """SIGKILL the interpreter that owns a cluster (a notebook kernel dying): no orphans."""
    code = ("import sys, time; from kvlab.proc import ProcessCluster; "
            "pc = ProcessCluster(['n1', 'n2'], data_dir='d'); "  # in tmp_path: nobody removes it
            "print(*pc.pids.values(), *pc.ports.values(), flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    try:
        line = parent.stdout.readline().split()
        assert len(line) == 6, line  # 3 pids (two nodes, the oracle) and 3 ports
        pids, ports = [int(x) for x in line[:3]], [int(x) for x in line[3:]]
        assert all(alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert_gone(pids, ports)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_serve_command_line_with_a_hosted_oracle(tmp_path):
    """Three `python -m kvlab.serve` by hand, the first node hosting the oracle."""
    socks = [socket.socket() for _ in NODES]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in zip(NODES, ports, strict=True))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "kvlab.serve", "--node", n, "--peers",
                               peers, "--data-dir", str(tmp_path / n)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
             for n in NODES]
    try:
        for p in procs:
            assert p.stdout.readline().startswith(b"READY ")
        with connect(peers, call_timeout=20) as rc:
            wait_until(lambda: all(rc.status(n)["oracle"] and all(rc.status(n)["links"].values())
                                   for n in NODES), 30, "a connected cluster")
            tx = rc["n2"].begin()
            rc["n2"].put(tx, "a", 1)
            assert rc["n2"].commit(tx)
            r = rc["n3"].begin()
            assert rc["n3"].get(r, "a") == 1
            assert "oracle_state" in rc.status("n1")  # the first node hosts the oracle
        listening = listening_ports()
        assert set(ports) <= listening
        local = Path("/proc/net/tcp").read_text()  # bound to 127.0.0.1 only (0100007F)
        for p in ports:
            assert f"0100007F:{p:04X} 00000000:0000 0A" in local
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(30) for p in procs]
    assert codes == [0, 0, 0]
    assert not (set(ports) & listening_ports())


def test_wire_refuses_what_a_client_must_not_send():
    from kvlab.node import Begin, Deliver, Get

    raw = wire.input_to_wire(Get(0, "T1", "k"))
    assert wire.input_from_wire(raw, 42) == Get(42, "T1", "k")  # the node's own call id
    assert wire.input_from_wire(wire.input_to_wire(Begin(0, "serializable")), 7).isolation \
        == "serializable"
    for name in ("Deliver", "Fire", "Recover", "Gc", "PeerUp", "Abandon", "Message", "os"):
        with pytest.raises(wire.FrameError):
            wire.input_from_wire({"type": name, "fields": {}}, 1)
    assert Deliver  # the driver's inputs stay the driver's
    v = (("T1", 5), [kvlab.node.ReadResult([1, {"a": None}], "T1", 3)], {"k": (1, 2)})
    assert wire.value_from_wire(wire.parse(wire.frame(wire.value_to_wire(v))[4:])) == v
    err = wire.error_from_wire(wire.error_to_wire(TransactionClosed("done already")))
    assert isinstance(err, TransactionClosed) and str(err) == "done already"
    assert isinstance(wire.error_from_wire({"cls": "SystemExit", "msg": ""}),
                      kvlab.ProtocolError)
    with pytest.raises(wire.FrameError):
        wire.length((wire.MAX_FRAME + 1).to_bytes(4, "big"))


# -- the bank ----------------------------------------------------------------------------------
ACCOUNTS = [f"acct{i}" for i in range(12)]
TRANSFERS = 1000


def _kill_mid_commit(pc: ProcessCluster, victim: str, watch: str, key: str) -> None:
    """SIGKILL ``victim`` while ``watch`` shows a commit in flight (``key`` of its status),
    or after a bounded wait if none shows up."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pc.status(watch)[key]:
            break
        time.sleep(0.002)
    pc.kill(victim)


def test_bank_transfers_survive_sigkill_of_a_participant_and_a_coordinator(cleanup, tmp_path):
    d = tmp_path / "bank"
    pc = cleanup(NODES, data_dir=d, trace=False)
    setup = pc["n1"].begin()
    for a in ACCOUNTS:
        pc["n1"].put(setup, a, 100)
    assert pc["n1"].commit(setup)
    total = 100 * len(ACCOUNTS)
    guard = threading.Lock()
    attempts = [0]
    committed: list[str] = []
    aborted: list[str] = []
    unknown: list[str] = []
    unexpected: list[BaseException] = []
    homes = ["n1", "n1", "n2", "n2"]  # n3 coordinates nothing: it is the pure participant

    def worker(w: int) -> None:
        rng = random.Random(w)
        while True:
            with guard:
                if attempts[0] >= TRANSFERS:
                    return
                attempts[0] += 1
            name = homes[w] if pc.up(homes[w]) else next(n for n in ("n2", "n1", "n3")
                                                         if pc.up(n))
            node = pc[name]
            tx, started = None, False
            try:
                tx = node.begin()
                a, b = rng.sample(ACCOUNTS, 2)
                amount = rng.randint(1, 5)
                va, vb = node.get(tx, a), node.get(tx, b)
                node.put(tx, a, va - amount)
                node.put(tx, b, vb + amount)
                node.put(tx, f"m/{tx}", 1)  # a marker: readable everywhere iff committed
                handle = node.commit_async(tx)
                started = True
                ok = handle.wait()
                with guard:
                    (committed if ok else aborted).append(tx)
            except NodeUnavailable:
                if started:
                    with guard:
                        unknown.append(tx)  # the coordinator died mid-commit
                else:
                    time.sleep(0.05)  # its node is down: try elsewhere
            except CallTimeout:
                if started:
                    with guard:
                        unknown.append(tx)
                elif tx is not None:
                    try:
                        node.rollback(tx)
                    except KvlabError:
                        pass
            except KvlabError:
                pass
            except BaseException as e:  # anything else is a bug
                unexpected.append(e)
                return

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(homes))]
    for t in threads:
        t.start()

    def at(n: int) -> None:
        wait_until(lambda: attempts[0] >= n or not any(t.is_alive() for t in threads), 300,
                   f"{n} transfers")

    at(250)
    _kill_mid_commit(pc, "n3", "n3", "in_doubt")  # a participant, with a prepared transaction
    start = attempts[0]
    at(start + 8)
    pc.restart("n3")
    at(600)
    _kill_mid_commit(pc, "n1", "n1", "committing")  # a coordinator, mid-commit
    start = attempts[0]
    at(start + 8)
    pc.restart("n1")
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads)
    assert not unexpected, unexpected[:3]
    assert attempts[0] >= TRANSFERS
    assert len(committed) > TRANSFERS // 4, (len(committed), len(aborted), len(unknown))
    quiet(pc)

    def markers(cluster: Any, node: str, txs: list[str]) -> dict[str, bool]:
        n = cluster[node]
        r = n.begin()
        seen = {t: n.get(r, f"m/{t}") == 1 for t in txs}
        assert sum(n.get(r, a) for a in ACCOUNTS) == total, node  # conserved, on every node
        n.commit(r)
        return seen

    everything = committed + aborted + unknown
    seen = {n: markers(pc, n, everything) for n in NODES}
    for n in NODES:
        assert all(seen[n][t] for t in committed), n  # every commit the client saw
        assert not any(seen[n][t] for t in aborted), n
        assert all(seen[n][t] == seen["n1"][t] for t in unknown), n  # atomic, all or none
    # what the nodes' records say about the commits the client missed matches the data
    pc.resolve()
    for t in unknown:
        h = pc.history[t]
        if h.status != "active":
            assert (h.status == "committed") == seen["n1"][t], t
        else:  # still unknown to the records: the data decides
            h.status = "committed" if seen["n1"][t] else "aborted"
    assert kvlab.check(pc.history, level="snapshot").ok
    # the watermark moved on every node, and participants forgot what lies below it
    assert all(pc.status(n)["watermark"] > 0 for n in NODES)
    pc.close()
    with ProcessCluster(NODES, data_dir=d, trace=False, call_timeout=20.0) as again:
        for n in NODES:
            assert all(markers(again, n, committed).values()), n
        pids, ports = list(again.pids.values()), list(again.ports.values())
    assert_gone(pids, ports)


# -- the same scenario on both drivers -------------------------------------------------------
def _anomalies(cluster: Any) -> dict[str, Any]:
    """Write skew and lost update at each isolation level: deterministic on either driver."""
    out = {}
    n1, n2 = cluster["n1"], cluster["n2"]
    for iso in LEVELS:
        s = n1.begin()
        for k in ("x", "y", "c"):
            n1.put(s, f"{iso}/{k}", 50)
        assert n1.commit(s)
        # write skew: each reads both, writes the other one
        a, b = n1.begin(iso), n2.begin(iso)
        n1.get(a, f"{iso}/x")
        n1.get(a, f"{iso}/y")
        n2.get(b, f"{iso}/x")
        n2.get(b, f"{iso}/y")
        n1.put(a, f"{iso}/x", -50)
        n2.put(b, f"{iso}/y", -50)
        skew = (n1.commit(a), n2.commit(b))
        # lost update: both read c, both write c + their own amount
        a, b = n1.begin(iso), n2.begin(iso)
        va, vb = n1.get(a, f"{iso}/c"), n2.get(b, f"{iso}/c")
        n1.put(a, f"{iso}/c", va + 1)
        n2.put(b, f"{iso}/c", vb + 2)
        lost = (n1.commit(a), n2.commit(b))
        out[iso] = (skew, lost)
    return out


def test_the_same_scenario_is_checked_the_same_on_both_drivers(cleanup):
    sim = kvlab.Cluster(NODES, seed=0)
    pc = cleanup(NODES, trace=False)
    got_sim, got_pc = _anomalies(sim), _anomalies(pc)
    assert got_sim == got_pc  # the same outcomes, transaction by transaction
    assert got_pc["snapshot"] == ((True, True), (True, False))  # skew allowed, update not
    accepted = {name: {lvl for lvl in LEVELS if kvlab.check(c.history, level=lvl).ok}
                for name, c in (("sim", sim), ("proc", pc))}
    assert accepted["sim"] == accepted["proc"] == {"read_committed"}, accepted


def test_a_delayed_duplicate_prepare_below_the_watermark_is_refused(cleanup, tmp_path):
    """The watermark is a safety mechanism (kvlab.twopc): a PREPARE of a transaction decided
    long ago, arriving late, must never lock its keys again, even at a restarted node."""
    pc = cleanup(NODES, data_dir=tmp_path / "d")
    n1 = pc["n1"]
    old = n1.begin()
    n1.put(old, "x", 1)
    assert n1.commit(old)
    start = pc.history[old].start_ts
    for i in range(3):  # newer transactions move the watermark past the old one
        t = n1.begin()
        n1.put(t, "y", i)
        assert n1.commit(t)
    wait_until(lambda: all(pc.status(n)["watermark"] > start for n in NODES), 30,
               "the watermark past the old transaction")
    pc.kill("n2")
    pc.restart("n2")  # it replays the old PREPARE and COMMIT, then forgets them below W
    restart = pc.trace().filter(kind="restart", node="n2")[-1]
    assert restart.data["horizon"] > start  # it knew the watermark before replaying
    assert ("participant", old) not in pc.states("n2")  # forgotten
    forged = socket.create_connection(("127.0.0.1", pc.ports["n2"]))
    try:
        forged.sendall(wire.frame({"t": "hello", "role": "peer", "from": "n1", "nodes": NODES,
                                   "placement": "all"}))
        body = {"start_ts": start, "isolation": "snapshot", "coordinator": "n1",
                "participants": NODES, "writes": {"x": [99, False]}, "reads": []}
        forged.sendall(wire.frame({"t": "m", "id": "late", "m": ["n1", "n2", "PREPARE", old,
                                                                 body]}))
        wait_until(lambda: any(e.data.get("event") == "stale prepare refused"
                               for e in pc.trace().filter(kind="state", node="n2", tx=old)),
                   30, "the stale PREPARE refused")
    finally:
        forged.close()
    assert pc.status("n2")["locks"] == 0  # nothing locked again
    r = pc["n2"].begin()
    assert pc["n2"].get(r, "x") == 1


def test_partitioned_placement_and_a_hung_node(cleanup):
    """Remote reads between processes; a stopped (not dead) node times out, never hangs."""
    pc = cleanup(NODES, placement="partitioned")
    keys = {n: key_owned_by(n) for n in NODES}
    t = pc["n1"].begin()
    for n, k in keys.items():
        pc["n1"].put(t, k, n)
    assert pc["n1"].commit(t)
    r = pc["n2"].begin()
    assert [pc["n2"].get(r, k) for k in keys.values()] == NODES  # two of them remote
    s = pc["n3"].begin()
    assert pc["n3"].scan(s, prefix="k") == sorted((k, n) for n, k in keys.items())
    pid = pc.pid("n3")
    os.kill(pid, signal.SIGSTOP)  # hung: its sockets stay open, it just does not answer
    try:
        r = pc["n1"].begin()
        pc.call_timeout = 1.0  # nothing can answer: a short wait shows the timeout
        with pytest.raises(CallTimeout, match="waiting for a reply from its owner"):
            pc["n1"].get(r, keys["n3"])
        with pytest.raises(CallTimeout):
            pc["n3"].begin()  # connected, but it never answers: a timeout, not a hang
    finally:
        os.kill(pid, signal.SIGCONT)
        pc.call_timeout = 20.0
    assert pc["n1"].get(r, keys["n3"]) == "n3"  # answered once it runs again
