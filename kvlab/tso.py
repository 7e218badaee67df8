"""The timestamp oracle: one counter that orders every snapshot and every commit.

Modelled as a service on the network (its requests and replies appear in the trace), like the
placement driver of TiDB or Percolator's oracle. It is assumed highly available: it never crashes
and partitions do not cut it off. With a data directory it persists an upper bound ahead of the
timestamps it hands out (one fsync per ``window`` timestamps), so a reopened cluster never reuses
a timestamp.

A node that batches (``Cluster(batch_window=w)``, kvlab.batching) sends its requests of one
window as one BATCH; the oracle answers with one BATCH of replies carrying consecutive
timestamps, in the order of the requests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kvlab.batching import pack, unpack
from kvlab.errors import CorruptLog
from kvlab.messages import BATCH, TS_REPLY, TS_REQUEST, TSO, Message


def _read_limit(path: Path) -> int:
    try:
        limit = json.loads(path.read_bytes())["limit"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        limit = None
    if type(limit) is not int or limit < 0:
        raise CorruptLog(f"{path}: the timestamp oracle's state is damaged (expected "
                         f'{{"limit": <int>}}). Reusing a timestamp would break snapshot '
                         f"isolation, so kvlab will not guess: restore the file, or delete the "
                         f"whole data directory to start empty.")
    return limit


class TimestampOracle:
    def __init__(self, start: int = 0, path: str | os.PathLike[str] | None = None,
                 window: int = 1000) -> None:
        self.path = Path(path) if path is not None else None
        self.window = window
        self.last = start
        self.limit = 0
        if self.path is not None and self.path.exists():
            self.last = max(self.last, _read_limit(self.path))
        self.limit = self.last

    def next(self) -> int:
        self.last += 1
        if self.path is not None and self.last > self.limit:
            self.limit = self.last + self.window
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                json.dump({"limit": self.limit}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        return self.last

    def handle(self, msg: Message) -> Message:
        if msg.kind == BATCH:  # a node's requests of one window: one reply, in their order
            return pack(TSO, msg.src, [self.handle(m) for m in unpack(msg)])
        assert msg.kind == TS_REQUEST
        body = dict(msg.body)
        body["ts"] = self.next()
        return Message(TSO, msg.src, TS_REPLY, msg.tx, body)

    def advance_to(self, ts: int) -> None:
        """After recovery: never hand out a timestamp at or below one already in use."""
        self.last = max(self.last, ts)
