"""Every way of misusing kvlab raises one of these; each message says what to do next."""

from __future__ import annotations


class KvlabError(Exception):
    """Base class: catch this to catch every kvlab error."""


class TransactionNotFound(KvlabError):
    """The transaction id was never issued by this node (or belongs to another node)."""


class TransactionClosed(KvlabError):
    """The transaction already committed, aborted or was rolled back."""


class NodeUnavailable(KvlabError):
    """The node is crashed; restart it before using it."""


class ClusterClosed(KvlabError):
    """The cluster was closed: its logs are closed, nothing can run on it any more."""


class UnknownNode(KvlabError):
    """A node id that is not part of the cluster."""


class InvalidKey(KvlabError, ValueError):
    """Keys are non-empty strings."""


class InvalidValue(KvlabError, ValueError):
    """Values must be JSON-serialisable (int, float, str, bool, list, dict)."""


class CorruptLog(KvlabError):
    """A WAL or checkpoint file is damaged before its tail: recovery refuses to guess."""


class SimulationTimeout(KvlabError):
    """A synchronous call could not finish within its simulated time budget."""


class ConfigurationError(KvlabError, ValueError):
    """A setting or argument outside what kvlab supports (latency, loss, partition, isolation)."""


class MessageNotFound(KvlabError):
    """deliver()/drop() named a message that is not in flight."""


class ProtocolError(KvlabError):
    """A state machine received an input its transition table does not allow (a kvlab bug)."""
