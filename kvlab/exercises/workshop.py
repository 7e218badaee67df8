"""Chapter 7, the workshop: six tasks, each with a setup function and a check.

Every check rebuilds its situation on a fresh, identically seeded cluster, runs the learner's
answer through the real engine and judges what happened. No check stores an answer: the truth
is whatever the engine does, so the checks keep working if the engine's details change.

=====  ============================  ==============================  ==========================
task   setup                         learner answers                 check
=====  ============================  ==============================  ==========================
1      :func:`seat_race`             message ids to deliver first    :func:`check_both_abort`
2      :func:`snapshot_story`        ``(value, writer)``             :func:`check_snapshot`
3      :func:`commit_steps`          a dict: rules, victim, step     :func:`check_break_atomicity`
4      :func:`run_schedule`          an anomaly name                 :func:`check_anomaly`
5      :func:`blocked_cluster`       a list of actions               :func:`check_unblock`
6      ``kvlab.scenarios``           ``{anomaly: weakest level}``    :func:`check_weakest_levels`
=====  ============================  ==============================  ==========================
"""

from __future__ import annotations

import itertools
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kvlab import scenarios
from kvlab.audit import audit
from kvlab.checker import NICKNAMES, check
from kvlab.cluster import Cluster
from kvlab.errors import ProtocolError
from kvlab.exercises import Feedback, correct, not_yet
from kvlab.node import ISOLATION_LEVELS
from kvlab.twopc import AWAIT_TS, IN_DOUBT, PREPARED, Rules
from kvlab.wal import TornTailWarning

NODES = ["n1", "n2", "n3"]
SEED = 0


def _fresh(rules: Rules | None = None) -> Cluster:
    return Cluster(NODES, seed=SEED, rules=rules)


# ---------------------------------------------------------------------------------------------
# Task 1: a delivery order in which nobody gets the seat
# ---------------------------------------------------------------------------------------------
@dataclass
class SeatRace:
    """Alice (on n1) and Bob (on n2) both try to book the last seat; their PREPAREs are in
    flight and nothing has been delivered yet."""

    cluster: Cluster
    alice: str
    bob: str

    def __str__(self) -> str:
        lines = [f"Alice's transaction {self.alice} (on n1) writes seat='alice'; "
                 f"Bob's {self.bob} (on n2) writes seat='bob'. In flight:"]
        lines += [f"  {e}" for e in self.cluster.pending()]
        return "\n".join(lines)


def seat_race() -> SeatRace:
    """A fresh cluster where two transactions race for key ``seat``, both commits started."""
    c = _fresh()
    n1, n2 = c["n1"], c["n2"]
    setup = n1.begin()
    n1.put(setup, "seat", "free")
    n1.commit(setup)
    c.run()
    alice = n1.begin()
    n1.put(alice, "seat", "alice")
    bob = n2.begin()
    n2.put(bob, "seat", "bob")
    n1.commit_async(alice)
    n2.commit_async(bob)
    return SeatRace(c, alice, bob)


def deliver_then_run(picks: Sequence[int]) -> SeatRace:
    """Replay ``picks`` on a fresh :func:`seat_race`: deliver those messages in that order,
    then let the cluster run in its default order. Raises KvlabError for an id not in flight."""
    race = seat_race()
    for pick in picks:
        race.cluster.deliver(pick)
    race.cluster.run()
    return race


def check_both_abort(picks: Any) -> Feedback:
    """Task 1: ``picks`` (message ids) must make both Alice's and Bob's transactions abort."""
    if picks is None:
        return not_yet("answer is still None: give a list of message ids (ints) to deliver "
                       "first, in order, taken from race.cluster.pending() and from what "
                       "each delivery sends.")
    if isinstance(picks, int) or not isinstance(picks, (list, tuple)) \
            or not all(isinstance(p, int) and not isinstance(p, bool) for p in picks):
        return not_yet(f"give a list of message ids (ints), not {picks!r}.")
    if not picks:
        return not_yet("an empty list delivers everything in the default order, where one of "
                       "them gets the seat. Pick the deliveries that should happen first.")
    race = seat_race()
    c = race.cluster
    for i, pick in enumerate(picks):
        ids = [e.id for e in c.pending()]
        if pick not in ids:
            return not_yet(f"pick {i + 1} (#{pick}) is not in flight at that moment; after "
                           f"{i} pick(s) the messages in flight are {ids}. A message exists "
                           f"only once the delivery that sends it has happened.")
        c.deliver(pick)
    c.run()
    a, b = c["n1"].outcome(race.alice), c["n2"].outcome(race.bob)
    if not a.committed and not b.committed:
        return correct(f"nobody gets the seat. {a}. {b}.")
    winner, loser = (a, b) if a.committed else (b, a)
    return not_yet(f"{winner.tx} still committed (and {loser.tx} aborted). A participant votes "
                   f"no when 'seat' is already locked by the other prepared transaction: make "
                   f"each transaction meet the other's lock on at least one node.")


# ---------------------------------------------------------------------------------------------
# Task 2: which version does a snapshot see?
# ---------------------------------------------------------------------------------------------
@dataclass
class Story:
    """A sequence of transactions on key ``x``; ``reader`` began at the marked moment and has
    not read yet."""

    cluster: Cluster
    reader: str
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def snapshot_story() -> Story:
    """Build the story of task 2 on a fresh cluster (the reader's read is left to you)."""
    c = _fresh()
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    lines = []
    t = n1.begin()
    n1.put(t, "x", 10)
    n1.commit(t)
    lines.append(f"1. {t} on n1: put x=10, commit")
    t = n2.begin()
    n2.put(t, "x", 15)
    n2.commit(t)
    lines.append(f"2. {t} on n2: put x=15, commit")
    slow = n3.begin()
    n3.put(slow, "x", 20)
    lines.append(f"3. {slow} on n3: put x=20 (no commit yet)")
    reader = n1.begin()
    lines.append(f"4. {reader} on n1: begin  <- the reader's snapshot")
    ok = n3.commit(slow)
    lines.append(f"5. {slow} on n3: commit -> {'committed' if ok else 'aborted'}")
    t = n2.begin()
    n2.put(t, "x", 30)
    n2.rollback(t)
    lines.append(f"6. {t} on n2: put x=30, rollback")
    lines.append(f"7. {reader} on n1: get x = ?")
    return Story(c, reader, lines)


def check_snapshot(answer: Any) -> Feedback:
    """Task 2: ``answer`` is ``(value, writer)`` of what the reader's get("x") returns."""
    if answer is None:
        return not_yet("answer is still None: give a pair (value, writer), for example "
                       "(99, 'T0') -- the value the reader gets for x and the id of the "
                       "transaction that wrote that version.")
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return not_yet(f"give a pair (value, writer), not {answer!r}.")
    value, writer = answer
    story = snapshot_story()
    c, reader = story.cluster, story.reader
    got = c["n1"].get(reader, "x")
    op = c.history[reader].ops[-1]
    if (value, writer) == (got, op.writer):
        return correct(f"{reader} reads x={got}, the version {op.writer} committed at ts "
                       f"{op.version_ts}.")
    start = c.history[reader].start_ts
    txn = c.history[writer] if isinstance(writer, str) and writer in c.history else None
    if txn is None:
        return not_yet(f"no transaction {writer!r} took part in the story; writers are ids "
                       f"like the ones printed by snapshot_story().")
    if txn.status != "committed":
        return not_yet(f"{writer} did not commit ({txn.status}), so it never wrote a version "
                       f"anyone can read.")
    if txn.commit_ts > start:
        return not_yet(f"{writer} committed at ts {txn.commit_ts}, but {reader}'s snapshot "
                       f"was taken at ts {start}. What counts: when it committed, or when it "
                       f"began?")
    mine = [v.value for v in c["n1"].versions("x") if v.writer == writer]
    if value not in mine:
        return not_yet(f"{writer} never wrote x={value!r}: check the value.")
    return not_yet(f"{writer}'s version is visible to the snapshot, but is it the newest "
                   f"version committed at or before ts {start}?")


# ---------------------------------------------------------------------------------------------
# Task 3: switch a force-log rule off and crash at the wrong moment
# ---------------------------------------------------------------------------------------------
def _commit_started(rules: Rules | None) -> tuple[Cluster, str]:
    """x=0 committed and checkpointed; then T writes x and y on every node and starts 2PC."""
    c = _fresh(rules)
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 0)
    n1.commit(t)
    c.run()
    c.checkpoint()  # the setup is durable whatever the rules: only the new commit is at stake
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.put(tx, "y", 1)
    n1.commit_async(tx)
    return c, tx


def commit_steps(rules: Rules | None = None) -> str:
    """What each ``cluster.step()`` does in task 3's commit (under ``rules``): one line per
    step, numbered from 1, so you can choose after how many steps to crash."""
    c, _ = _commit_started(rules)
    lines = []
    i = 0
    while not c.quiet:
        i += 1
        events = [e for e in c.step() if e.kind != "timer"]
        lines.append(f"{i:2}: " + "; ".join(_short(e) for e in events))
    return "\n".join(lines)


def _short(e: Any) -> str:
    d = e.data
    if e.kind in ("send", "deliver"):
        return f"{e.kind} {d['src']}->{d['dst']} {d['kind']}"
    if e.kind == "wal":
        return f"{e.node} logs {d['type']}{' (forced)' if d.get('force') else ''}"
    if e.kind == "flush":
        return f"{e.node} flushes {d['records']} record(s) to disk"
    if e.kind == "state":
        if "new" in d:
            return f"{e.node} {d['role']} {d['old']}->{d['new']}"
        return f"{e.node} {d['role']} {d['event']}"
    return f"{e.kind} {e.node or ''}".strip()


def crash_run(rules: Rules | None, victim: str, step: int) -> Cluster:
    """Task 3's experiment: start the commit, run ``step`` steps, crash ``victim``, let the
    others carry on, restart it and run until quiet (ready for :func:`kvlab.audit.audit`)."""
    c, _ = _commit_started(rules)
    for _ in range(step):
        if c.quiet:
            break
        c.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TornTailWarning)
        c.crash(victim)
        c.run()
        c.restart(victim)
    c.run()
    return c


_RULE_HINTS = {
    "force_prepare": "a participant may vote yes before its PREPARE record is on disk. Crash "
                     "a participant that is not the coordinator after it voted but before any "
                     "flush saved that record",
    "force_decision": "the coordinator may send COMMIT before its DECISION record is on disk. "
                      "Crash the coordinator once COMMITs are out but before any flush saved "
                      "the decision",
    "force_commit": "a participant may ack COMMIT before its COMMIT record is on disk, and the "
                    "coordinator forgets a transaction once everyone acked. Crash a participant "
                    "whose COMMIT record is still only in memory when the coordinator is done",
}


def check_break_atomicity(answer: Any) -> Feedback:
    """Task 3: ``answer = {"rules": kvlab.Rules(...), "victim": node, "step": n}`` must make
    :func:`kvlab.audit.audit` report broken atomicity/durability, while the same crash with the
    default rules stays harmless."""
    if answer is None:
        return not_yet("answer is still None: give a dict with 'rules' (a kvlab.Rules with one "
                       "force rule switched off), 'victim' (the node to crash) and 'step' (how "
                       "many cluster.step() calls to run before the crash).")
    if not isinstance(answer, dict) or set(answer) != {"rules", "victim", "step"}:
        return not_yet("give a dict with exactly the keys 'rules', 'victim' and 'step'.")
    rules, victim, step = answer["rules"], answer["victim"], answer["step"]
    if not isinstance(rules, Rules):
        return not_yet(f"'rules' must be a kvlab.Rules(...), not {rules!r}.")
    if victim not in NODES:
        return not_yet(f"'victim' must be one of {NODES}, not {victim!r}.")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return not_yet(f"'step' must be a whole number >= 0, not {step!r}.")
    if rules.safe:
        return not_yet("all three force rules are still on, so no crash can break atomicity "
                       "(the exhaustive crash tests prove it). Switch one off, e.g. "
                       "kvlab.Rules(force_commit=False), then choose the crash.")
    off = [r for r in ("force_prepare", "force_decision", "force_commit")
           if not getattr(rules, r)]
    if len(off) > 1:
        return not_yet(f"{' and '.join(off)} are all off: switch exactly one rule off, so "
                       f"that the crash you choose shows what that one rule protects.")
    total = commit_steps(rules).count("\n") + 1
    try:
        report = audit(crash_run(rules, victim, step))
        noticed = ""
    except ProtocolError as e:  # a participant saw the split outcome itself
        report, noticed = None, str(e)
    safe = audit(crash_run(Rules(), victim, step))
    if not safe.ok:  # pragma: no cover - would be a bug in kvlab, not in the answer
        return not_yet(f"the same crash also breaks the default rules, which is a kvlab bug "
                       f"(please report it): {safe}")
    if noticed:
        return correct(f"atomicity broke so badly that a participant noticed it itself "
                       f"({noticed}); with the default Rules the same crash is harmless.")
    if not report.ok:
        return correct(f"kvlab.audit caught it: {report}. With the default Rules the same "
                       f"crash is harmless.")
    if step >= total:
        return not_yet(f"after {total} steps the commit is already over (every record that "
                       f"will ever be written is written), so crashing {victim} at step "
                       f"{step} loses nothing. Crash earlier: see workshop.commit_steps(rules).")
    hint = "; ".join(_RULE_HINTS[r] for r in off)
    return not_yet(f"the audit found nothing: crashing {victim} after {step} steps is harmless "
                   f"even with {', '.join(off)} off. With that rule off, {hint}. "
                   f"workshop.commit_steps(rules) lists the steps under your rules.")


# ---------------------------------------------------------------------------------------------
# Task 4: which anomaly does a schedule show at read committed?
# ---------------------------------------------------------------------------------------------
SCHEDULE = "r1(1) w2(1,5) w2(2,25) c2 r1(2) c1"  # accounts 1 and 2; T2 moves 5 from 1 to 2


def run_schedule(steps: str = SCHEDULE, level: str = "read_committed") -> scenarios.Result:
    """Run a Hermitage-style schedule (``kvlab.scenarios`` notation) at ``level``; its verdict
    says "allowed" when kvlab.check finds any anomaly in the run, "prevented" otherwise."""
    s = scenarios.Scenario("schedule", "task 4", scenarios.parse(steps),
                           lambda r: not check(r.cluster.history, level="serializable").ok, {})
    return s.run(level, seed=SEED)


def _anomaly_name(text: str) -> str | None:
    def norm(t: str) -> str:
        return "".join(ch for ch in t.lower() if ch.isalnum())

    for name, nick in NICKNAMES.items():
        if norm(text) in (norm(name), norm(nick)):
            return name
    return None


def anomaly_names(width: int | None = None) -> str:
    """The anomaly names task 4 accepts, each with its nickname: those kvlab.check reports
    (wrapped at ``width`` characters, between names, if given)."""
    text = ", ".join(f"{n} ({k})" for n, k in NICKNAMES.items())
    if width is None:
        return text
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def check_anomaly(answer: Any) -> Feedback:
    """Task 4: ``answer`` names the anomaly (e.g. "G1c" or "circular information flow") that
    :data:`SCHEDULE` shows at read committed, as kvlab.check finds it in the engine's history."""
    names = anomaly_names()
    if answer is None:
        return not_yet(f"answer is still None: give the name of one anomaly: {names}.")
    name = _anomaly_name(answer) if isinstance(answer, str) else None
    if name is None:
        return not_yet(f"{answer!r} is not an anomaly name kvlab.check knows; choose one of "
                       f"{names}.")
    report = check(run_schedule().cluster.history, level="serializable")
    found = {a.name for a in report.anomalies + report.allowed}
    if name in found:
        return correct(f"kvlab.check finds {name} ({NICKNAMES[name]}) in the read-committed "
                       f"run; snapshot isolation prevents it (try run_schedule(level="
                       f"'snapshot')).")
    return not_yet(f"kvlab.check finds no {name} ({NICKNAMES[name]}) in this run. Look at what "
                   f"each read returned (print(workshop.run_schedule())), draw the "
                   f"dependencies between T1 and T2, and count the rw (anti-dependency) "
                   f"edges in the cycle.")


# ---------------------------------------------------------------------------------------------
# Task 5: unblock an in-doubt participant with the fewest actions
# ---------------------------------------------------------------------------------------------
@dataclass
class Blocked:
    """A cluster with a participant stuck in doubt (read ``cluster.states()``)."""

    cluster: Cluster
    tx: str


def blocked_cluster() -> Blocked:
    """All three nodes prepared T; n3 was cut off before the COMMIT reached it, then the
    coordinator n1 crashed. n3 asked, timed out, and parked in doubt, holding its lock."""
    c = _fresh()
    n1 = c["n1"]
    t = n1.begin()
    n1.put(t, "x", 0)
    n1.commit(t)
    c.run()
    c.checkpoint()
    tx = n1.begin()
    n1.put(tx, "x", 1)
    n1.commit_async(tx)
    while c.states()[("n1", "coordinator", tx)] != AWAIT_TS:
        c.step()
    c.partition({"n1", "n2"}, {"n3"})
    while not any(e.kind == "flush" and e.node == "n1" for e in c.step()):
        pass
    c.crash("n1")
    c.run()
    return Blocked(c, tx)


ACTIONS = ("restart n1", "restart n2", "restart n3", "crash n1", "crash n2", "crash n3", "heal")


def apply_action(cluster: Cluster, action: str) -> None:
    """One action from :data:`ACTIONS` ("restart n1", "heal", ...), then run until quiet."""
    verb, *rest = action.split()
    if verb == "heal" and not rest:
        cluster.heal()
    elif verb in ("restart", "crash") and len(rest) == 1 and rest[0] in NODES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            getattr(cluster, verb)(rest[0])
    else:
        raise ValueError(f"unknown action {action!r}: use one of {list(ACTIONS)}")
    cluster.run()


def _stuck(c: Cluster) -> list[str]:
    """What still blocks: crashed nodes, in-doubt participants, held locks."""
    out = [f"{n} is down" for n in NODES if not c.up(n)]
    out += [f"{n} is {state} for {tx}" for (n, role, tx), state in sorted(c.states().items())
            if role == "participant" and state in (PREPARED, IN_DOUBT)]
    return out


def _unblocks(actions: Sequence[str]) -> bool:
    b = blocked_cluster()
    for a in actions:
        apply_action(b.cluster, a)
    return not _stuck(b.cluster) and audit(b.cluster).ok


def check_unblock(actions: Any) -> Feedback:
    """Task 5: ``actions`` (strings from :data:`ACTIONS`) must leave every node up, nothing in
    doubt and atomicity intact, and no shorter list of actions may do the same."""
    if actions is None:
        return not_yet(f"answer is still None: give a list of actions, each one of "
                       f"{list(ACTIONS)}, applied in order (the cluster runs until quiet "
                       f"after each).")
    if isinstance(actions, str) or not isinstance(actions, (list, tuple)) \
            or not all(isinstance(a, str) for a in actions):
        return not_yet(f"give a list of strings such as 'heal', not {actions!r}.")
    bad = [a for a in actions if a not in ACTIONS]
    if bad:
        return not_yet(f"unknown action(s) {bad}: use {list(ACTIONS)}.")
    b = blocked_cluster()
    for a in actions:
        apply_action(b.cluster, a)
    stuck = _stuck(b.cluster)
    if stuck:
        return not_yet(f"after your actions, still blocked: {'; '.join(stuck)}. An in-doubt "
                       f"participant needs an answer from its coordinator: what stops that "
                       f"answer from reaching it?")
    report = audit(b.cluster)
    if not report.ok:  # pragma: no cover - would be a kvlab bug
        return not_yet(f"unblocked, but the audit fails (a kvlab bug, please report): {report}")
    for n in range(len(actions)):
        for shorter in itertools.product(ACTIONS, repeat=n):
            if _unblocks(shorter):
                return not_yet(f"that unblocks it, with {len(actions)} action(s); it can be "
                               f"done with {n}. Which of yours were not needed?")
    outcome = "committed" if b.cluster["n1"].outcome(b.tx).committed else "aborted"
    return correct(f"{b.tx} is resolved everywhere ({outcome}) with {len(actions)} action(s), "
                   f"and no shorter list of actions does it.")


# ---------------------------------------------------------------------------------------------
# Task 6: the weakest isolation level that prevents each anomaly
# ---------------------------------------------------------------------------------------------
TASK6 = ("P4", "G-single", "G2-item")


def weakest_level(anomaly: str) -> str | None:
    """Run the Hermitage scenario at each level, weakest first; the first that prevents it."""
    s = scenarios.get(anomaly)
    for level in ISOLATION_LEVELS:
        if s.run(level, seed=SEED).verdict == "prevented":
            return level
    return None


def check_weakest_levels(answer: Any) -> Feedback:
    """Task 6: ``answer`` maps each of :data:`TASK6` to the weakest isolation level at which
    kvlab prevents it (as observed by running the scenario)."""
    levels = list(ISOLATION_LEVELS)
    if answer is None:
        return not_yet(f"answer is still None: give a dict mapping each of {list(TASK6)} to one "
                       f"of {levels}.")
    if not isinstance(answer, dict) or set(answer) != set(TASK6):
        return not_yet(f"give a dict with exactly the keys {list(TASK6)}.")
    wrong = [f"{k}: {answer[k]!r} is not a level" for k in TASK6 if answer[k] not in levels]
    if wrong:
        return not_yet("; ".join(wrong) + f". Levels: {levels}.")
    problems = []
    for name in TASK6:
        truth, given = weakest_level(name), answer[name]
        if truth is None:  # pragma: no cover - every Hermitage scenario is prevented somewhere
            continue
        if levels.index(given) < levels.index(truth):
            problems.append(f"{name} still happens at {given} (see kvlab.scenarios.get("
                            f"{name!r}).run({given!r}))")
        elif levels.index(given) > levels.index(truth):
            problems.append(f"{given} prevents {name}, but a weaker level does too")
    if problems:
        return not_yet("; ".join(problems) + ".")
    return correct("each level is the weakest that prevents its anomaly, as running the "
                   "Hermitage scenarios shows.")


__all__ = [
    "ACTIONS", "NODES", "SCHEDULE", "TASK6", "Blocked", "SeatRace", "Story", "apply_action",
    "anomaly_names", "blocked_cluster", "check_anomaly", "check_both_abort",
    "check_break_atomicity", "check_snapshot", "check_unblock", "check_weakest_levels",
    "commit_steps", "crash_run",
    "deliver_then_run", "run_schedule", "seat_race", "snapshot_story", "weakest_level",
]
