"""The Hermitage anomaly tests (ept/hermitage) as runnable scenarios on a kvlab cluster.

Each scenario is a list of steps such as ``w1(1,11) r2(1) c1``: session 1 writes key "1",
session 2 reads it, session 1 commits. Session N runs on node ``n{N}`` and, as in PostgreSQL,
begins its transaction at its first statement. Initial data: ``1 -> 10``, ``2 -> 20``.

A *predicate read* ``r1(value%3=0)`` (or ``r1(value=30)``) is Hermitage's ``select * from test
where value % 3 = 0``: a scan of every key (:meth:`kvlab.Node.scan`), filtered by the client,
so the history records the scanned range and the checker sees its predicate dependencies. A
write of a key that does not exist yet, ``w1(3,30)``, is Hermitage's ``insert``. The two
predicate tests, G2-predicate (predicate write skew) and PMP (predicate-many-preceders, the
phantom a second scan would see), run like the others.

PostgreSQL *blocks* some steps (a write on a row another transaction has written); kvlab never
waits on writes, so the same conflict shows up at commit instead (first committer wins).
:func:`table` runs every scenario at every isolation level and reports what happened, so the
"prevented / allowed" table is an observation, not a claim.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvlab.cluster import Cluster
from kvlab.errors import ConfigurationError, KvlabError
from kvlab.node import ISOLATION_LEVELS

INITIAL = {"1": 10, "2": 20}


class UnknownScenario(KvlabError, KeyError):
    """No scenario of that name (see ``kvlab.scenarios.SCENARIOS``)."""
NODES = ["n1", "n2", "n3"]
_STEP = re.compile(r"([rwca])(\d)(?:\((\d),?(-?\d+)?\))?")
_PREDICATE = re.compile(r"r(\d)\((value(?:%([1-9]\d*))?=(-?\d+))\)")


@dataclass(frozen=True)
class Step:
    op: str  # "r", "w", "c" (commit), "a" (abort) or "p" (predicate read: scan and filter)
    session: int
    key: str | None = None
    value: int | None = None
    modulo: int | None = None  # "p": value % modulo == value (None: value == value)

    def __str__(self) -> str:
        if self.op == "w":
            return f"w{self.session}({self.key},{self.value})"
        if self.op == "r":
            return f"r{self.session}({self.key})"
        if self.op == "p":
            return f"r{self.session}({self.predicate})"
        return f"{self.op}{self.session}"

    @property
    def predicate(self) -> str:
        return f"value%{self.modulo}={self.value}" if self.modulo else f"value={self.value}"

    def matches(self, value: Any) -> bool:
        """Whether a row's value satisfies this predicate read (non-integers never do)."""
        if type(value) is not int:
            return False
        return (value % self.modulo if self.modulo else value) == self.value


def parse(steps: str) -> list[Step]:
    """``"w1(1,11) r2(1) c1"`` -> steps; ``r1(value%3=0)`` is a predicate read."""
    out = []
    for token in steps.split():
        m = _STEP.fullmatch(token)
        if m is None:
            pm = _PREDICATE.fullmatch(token)
            if pm is None:
                raise ConfigurationError(f"cannot parse step {token!r}: write r1(1), w1(1,11), "
                                         f"r1(value%3=0), r1(value=30), c1 or a1")
            s, _, modulo, value = pm.groups()
            out.append(Step("p", int(s), value=int(value),
                            modulo=int(modulo) if modulo else None))
            continue
        op, s, key, value = m.groups()
        out.append(Step(op, int(s), key, int(value) if value is not None else None))
    return out


@dataclass
class StepResult:
    step: Step
    value: Any = None  # what a read returned, or True/False for a commit
    note: str = ""

    def __str__(self) -> str:
        if self.step.op in ("r", "p"):
            return f"{self.step} = {self.value}"
        if self.step.op == "c":
            return f"{self.step} -> {'committed' if self.value else self.note}"
        return str(self.step)


@dataclass
class Result:
    """One scenario run at one level: every step's result, the final data, and the verdict."""

    scenario: Scenario
    level: str
    results: list[StepResult]
    final: dict[str, Any]
    cluster: Cluster

    def reads(self, session: int) -> list[Any]:
        return [r.value for r in self.results if r.step.op == "r" and r.step.session == session]

    def predicate_reads(self, session: int) -> list[dict[str, Any]]:
        """The rows each predicate read of ``session`` returned, as {key: value}."""
        return [r.value for r in self.results if r.step.op == "p" and r.step.session == session]

    def committed(self, session: int) -> bool:
        return any(r.value for r in self.results if r.step.op == "c"
                   and r.step.session == session)

    @property
    def anomaly(self) -> bool:
        return self.scenario.occurred(self)

    @property
    def verdict(self) -> str:
        return "allowed" if self.anomaly else "prevented"

    def __str__(self) -> str:
        lines = [f"{self.scenario.name} at {self.level}: {self.verdict}"]
        lines += [f"  {r}" for r in self.results]
        lines.append(f"  final: {self.final}")
        return "\n".join(lines)


class Replay:
    """A scenario being run one step at a time (for step-through notebooks)."""

    def __init__(self, scenario: Scenario, level: str, seed: int = 0) -> None:
        if level not in ISOLATION_LEVELS:
            raise ConfigurationError(f"unknown level {level!r}: choose one of {ISOLATION_LEVELS}")
        self.scenario, self.level = scenario, level
        self.cluster = Cluster(NODES, seed=seed)
        n1 = self.cluster["n1"]
        setup = n1.begin()
        for k, v in INITIAL.items():
            n1.put(setup, k, v)
        n1.commit(setup)
        self.cluster.run()
        self.txs: dict[int, str] = {}
        self.results: list[StepResult] = []
        self._next = 0

    @property
    def done(self) -> bool:
        return self._next >= len(self.scenario.steps)

    def step(self) -> StepResult:
        s = self.scenario.steps[self._next]
        self._next += 1
        node = self.cluster[f"n{s.session}"]
        if s.session not in self.txs:  # a session's transaction begins at its first statement
            self.txs[s.session] = node.begin(self.level)
        tx = self.txs[s.session]
        res = StepResult(s)
        if s.op == "r":
            res.value = node.get(tx, s.key)
        elif s.op == "p":  # select * where <predicate>: scan every key, filter here
            res.value = {k: v for k, v in node.scan(tx) if s.matches(v)}
        elif s.op == "w":
            node.put(tx, s.key, s.value)
        elif s.op == "c":
            res.value = node.commit(tx)
            res.note = node.outcome(tx).reason
        else:
            node.rollback(tx)
        self.results.append(res)
        return res

    def finish(self) -> Result:
        while not self.done:
            self.step()
        self.cluster.run()
        n3 = self.cluster["n3"]
        r = n3.begin()
        keys = dict.fromkeys([*INITIAL, *(s.key for s in self.scenario.steps if s.op == "w")])
        final = {k: n3.get(r, k) for k in keys}
        n3.commit(r)
        return Result(self.scenario, self.level, self.results, final, self.cluster)


@dataclass
class Scenario:
    name: str
    title: str
    steps: list[Step]
    occurred: Callable[[Result], bool]  # did the anomaly happen in this run?
    postgres: dict[str, str]  # level -> "prevented" | "allowed", from ept/hermitage
    explain: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    def replay(self, level: str = "snapshot", seed: int = 0) -> Replay:
        return Replay(self, level, seed)

    def run(self, level: str = "snapshot", seed: int = 0) -> Result:
        return self.replay(level, seed).finish()

    def __str__(self) -> str:
        return f"{self.name} ({self.title}): {' '.join(map(str, self.steps))}"


def _pg(rc: str, si: str, ser: str) -> dict[str, str]:
    return {"read_committed": rc, "snapshot": si, "serializable": ser}


P, A = "prevented", "allowed"

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("G0", "write cycles", parse("w1(1,11) w2(1,12) w1(2,21) c1 w2(2,22) c2"),
             lambda r: r.final in ({"1": 11, "2": 22}, {"1": 12, "2": 21}),
             _pg(P, P, P), "the final state mixes the two transactions' writes"),
    Scenario("G1a", "aborted reads", parse("w1(1,101) r2(1) a1 r2(1) c2"),
             lambda r: 101 in r.reads(2), _pg(P, P, P),
             "T2 reads a value written by T1, which then aborts"),
    Scenario("G1b", "intermediate reads", parse("w1(1,101) r2(1) w1(1,11) c1 r2(1) c2"),
             lambda r: 101 in r.reads(2), _pg(P, P, P),
             "T2 reads T1's intermediate value 101, which T1 overwrote before committing"),
    Scenario("G1c", "circular information flow", parse("w1(1,11) w2(2,22) r1(2) r2(1) c1 c2"),
             lambda r: r.reads(1) == [22] and r.reads(2) == [11], _pg(P, P, P),
             "each transaction sees the other's write: T1 before T2 and T2 before T1"),
    Scenario("OTV", "observed transaction vanishes",
             parse("w1(1,11) w1(2,19) w2(1,12) c1 r3(1) w2(2,18) r3(2) c2 r3(2) r3(1) c3"),
             lambda r: (11 in r.reads(3) or 19 in r.reads(3))
             and (10 in r.reads(3) or 20 in r.reads(3)), _pg(P, P, P),
             "T3 sees T1's effects, then sees data from before T1: T1 vanished"),
    Scenario("PMP", "predicate-many-preceders",
             parse("r1(value=30) w2(3,30) c2 r1(value%3=0) c1"),
             lambda r: "3" in r.predicate_reads(1)[-1], _pg(A, P, P),
             "T1's second predicate read sees the row T2 inserted after the first one found "
             "none: a phantom"),
    Scenario("P4", "lost update", parse("r1(1) r2(1) w1(1,11) w2(1,11) c1 c2"),
             lambda r: r.committed(1) and r.committed(2), _pg(A, P, P),
             "both read 10 and both write 11: one increment is lost"),
    Scenario("G-single", "read skew", parse("r1(1) r2(1) r2(2) w2(1,12) w2(2,18) c2 r1(2) c1"),
             lambda r: r.reads(1) == [10, 18], _pg(A, P, P),
             "T1 sees key 1 before T2 and key 2 after T2 (the total 10+18 never existed)"),
    Scenario("G2-item", "write skew", parse("r1(1) r1(2) r2(1) r2(2) w1(1,11) w2(2,21) c1 c2"),
             lambda r: r.committed(1) and r.committed(2), _pg(A, A, P),
             "each checks both keys, each updates a different one; both commit, though no "
             "serial order of the two gives this result"),
    Scenario("G2-predicate", "predicate write skew",
             parse("r1(value%3=0) r2(value%3=0) w1(3,30) w2(4,42) c1 c2"),
             lambda r: r.committed(1) and r.committed(2), _pg(A, A, P),
             "each finds no row with value%3=0 and inserts one; both commit, though in any "
             "serial order the second would have seen the first one's row"),
    Scenario("read-only", "Fekete's read-only anomaly",
             parse("r1(1) r1(2) w2(2,25) c2 r3(1) r3(2) c3 w1(1,0) c1"),
             lambda r: r.committed(1) and r.reads(3) == [10, 25], _pg(A, A, P),
             "T3 saw T2 but not T1, yet T1 read before T2: a read-only transaction observes "
             "a state no serial order produces"),
]}


@dataclass
class Table:
    """The observed prevented/allowed table, with PostgreSQL's results to compare."""

    results: dict[str, dict[str, Result]]

    def cell(self, scenario: str, level: str) -> str:
        return self.results[scenario][level].verdict

    def __repr__(self) -> str:
        return f"<Hermitage table: {len(self.results)} scenarios; print() it or display() it>"

    @property
    def mismatches(self) -> list[tuple[str, str, str, str]]:
        """(scenario, level, kvlab, postgres) wherever kvlab differs from PostgreSQL."""
        out = []
        for name, by_level in self.results.items():
            for level, res in by_level.items():
                pg = SCENARIOS[name].postgres[level]
                if res.verdict != pg:
                    out.append((name, level, res.verdict, pg))
        return out

    @property
    def matches_postgres(self) -> bool:
        return not self.mismatches

    def rows(self) -> list[list[str]]:
        return [[name, SCENARIOS[name].title] + [by_level[lv].verdict for lv in ISOLATION_LEVELS]
                for name, by_level in self.results.items()]

    def __str__(self) -> str:
        head = ["anomaly", "name", *ISOLATION_LEVELS]
        rows = [head] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        verdict = "matches PostgreSQL" if self.matches_postgres else \
            f"differs from PostgreSQL in {len(self.mismatches)} cells"
        return "\n".join(lines) + f"\n(observed by running each scenario; {verdict})"

    def _repr_html_(self) -> str:
        colour = {"prevented": "#009E73", "allowed": "#D55E00"}
        head = "".join(f"<th>{lv}</th>" for lv in ISOLATION_LEVELS)
        body = ""
        for name, title, *cells in self.rows():
            tds = "".join(f'<td style="color:{colour[c]}">{c}</td>' for c in cells)
            body += f"<tr><td><b>{name}</b></td><td>{title}</td>{tds}</tr>"
        return (f"<table><tr><th>anomaly</th><th>name</th>{head}</tr>{body}</table>"
                f"<p>Observed by running; {'matches' if self.matches_postgres else 'differs from'}"
                f" PostgreSQL (ept/hermitage).</p>")


def table(levels: tuple[str, ...] = ISOLATION_LEVELS, seed: int = 0) -> Table:
    """Run every scenario at every level; the table is what happened."""
    return Table({name: {lv: s.run(lv, seed) for lv in levels} for name, s in SCENARIOS.items()})


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownScenario(f"no scenario {name!r}; choose one of {list(SCENARIOS)}") from None
