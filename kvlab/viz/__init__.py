"""Pictures of a kvlab cluster: what it is doing now, and what it did.

Every view is a function returning a matplotlib Figure (pass ``ax=`` to draw into your own
axes). Views only read the cluster, its trace and its state; they never drive it.

=========================  ====================================================
``cluster_view(c)``        nodes, links, the oracle, messages in flight, faults
``sequence_diagram(c)``    space-time diagram of the trace (filter: tx, window)
``version_chains(c, n)``   MVCC versions, prepared locks, GC watermark, snapshot
``transaction_timeline``   begin / prepare / decide of each transaction
``dependency_graph(r)``    the checker's graph with the anomalous cycle
``state_diagram(role, c)`` 2PC state machine from the engine's own tables
``wal_view(c, n)``         durable vs unflushed log records
``animate(c)``             one frame per step (see :mod:`kvlab.viz.scene`)
``cost_curves(sweeps)``    cost per transaction vs concurrency (chapter 11)
``window_tradeoff(rows)``  group-commit window vs fsyncs and latency
=========================  ====================================================

Colours are the same everywhere (:mod:`kvlab.viz.style`, colour-blind-safe Okabe-Ito).
"""

from kvlab.viz import style
from kvlab.viz.animation import Animation, animate
from kvlab.viz.cluster_view import ClusterView, cluster_view
from kvlab.viz.common import VizError, png_bytes
from kvlab.viz.costs import cost_curves, window_tradeoff
from kvlab.viz.depgraph import cycle_text, dependency_graph
from kvlab.viz.scene import STEP_KINDS, Scene, replay_steps, scene_of
from kvlab.viz.sequence import SequenceView, sequence_diagram
from kvlab.viz.statediagram import state_diagram
from kvlab.viz.timeline import transaction_timeline
from kvlab.viz.versions import VersionsView, version_chains
from kvlab.viz.walview import wal_view

__all__ = [
    "cluster_view", "sequence_diagram", "version_chains", "transaction_timeline",
    "dependency_graph", "state_diagram", "wal_view", "animate", "Animation", "ClusterView",
    "SequenceView", "VersionsView", "Scene", "scene_of", "replay_steps", "STEP_KINDS",
    "VizError", "png_bytes", "cycle_text", "style", "cost_curves", "window_tradeoff",
]
