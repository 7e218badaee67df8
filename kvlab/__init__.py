"""kvlab: run, step through, break and recover a distributed transactional key-value store.

>>> import kvlab
>>> cluster = kvlab.Cluster(["n1", "n2", "n3"], seed=0)
>>> n1 = cluster.node("n1")
>>> tx = n1.begin()
>>> n1.put(tx, "x", 1)
>>> n1.commit(tx)
True
"""

from kvlab import audit, classic, scenarios, workloads
from kvlab.checker import Anomaly, CheckReport, check
from kvlab.classic import initialize, reset_default
from kvlab.cluster import Cluster, CommitHandle, Node, Outcome
from kvlab.errors import (
    ClusterClosed,
    ConfigurationError,
    CorruptLog,
    InvalidKey,
    InvalidValue,
    KvlabError,
    MessageNotFound,
    NodeUnavailable,
    ProtocolError,
    SimulationTimeout,
    TransactionClosed,
    TransactionNotFound,
    UnknownNode,
)
from kvlab.history import History
from kvlab.proc import ProcessCluster
from kvlab.twopc import Rules, Timing
from kvlab.wal import TornTailWarning

__version__ = "0.1.0"

__all__ = [
    "Cluster", "Node", "CommitHandle", "Outcome", "initialize", "reset_default", "History",
    "ProcessCluster",
    "check", "CheckReport", "Anomaly", "scenarios", "workloads", "audit", "classic",
    "Timing", "Rules", "TornTailWarning", "KvlabError", "ClusterClosed", "TransactionNotFound",
    "TransactionClosed",
    "ConfigurationError", "NodeUnavailable", "UnknownNode", "InvalidKey", "InvalidValue",
    "CorruptLog", "SimulationTimeout", "MessageNotFound", "ProtocolError",
]
