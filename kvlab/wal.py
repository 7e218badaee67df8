"""The write-ahead log: framed, checksummed records on a disk that can lose its unflushed tail.

Frame layout (little endian)::

    +-----------+-----------+------------------------------+
    | length u32| crc32 u32 | payload: UTF-8 JSON object   |
    +-----------+-----------+------------------------------+

The CRC covers the length and the payload, so a damaged length is caught too. Every payload
carries its LSN; a checkpoint records the last LSN it covers and replay skips anything older, so
"write checkpoint, then truncate the log" is safe to interrupt at any point.

Two disks share one interface: :class:`MemoryDisk` (a simulated disk whose unflushed tail is lost
on crash) and :class:`FileDisk` (real files, ``os.fsync``). The driver calls :meth:`Wal.flush`
once per group of forced records, so concurrent commits share one fsync (group commit).
JSON only: nothing read back from disk is ever unpickled or evaluated.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvlab.errors import CorruptLog

_HEADER = struct.Struct("<II")


class TornTailWarning(UserWarning):
    """An incomplete or checksum-failing record at the very end of a log was cut off."""


@dataclass(slots=True)
class LogRecord:
    lsn: int
    type: str
    data: dict[str, Any]


_dumps = json.JSONEncoder(separators=(",", ":")).encode  # insertion order is deterministic
_LEN = struct.Struct("<I")


def encode(lsn: int, type_: str, data: dict[str, Any]) -> bytes:
    payload = _dumps({"lsn": lsn, "type": type_, "data": data}).encode()
    length = _LEN.pack(len(payload))
    return length + _LEN.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def _frame_at(buf: bytes, off: int) -> tuple[dict[str, Any], int] | None:
    """Decode the frame at ``off``: (payload, next offset), or None if it is not intact."""
    if off + 8 > len(buf):
        return None
    length, crc = _HEADER.unpack_from(buf, off)
    end = off + 8 + length
    if end > len(buf):
        return None
    payload = buf[off + 8:end]
    if zlib.crc32(payload, zlib.crc32(buf[off:off + 4])) != crc:
        return None
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj, end


def decode(buf: bytes, source: str = "log") -> tuple[list[LogRecord], int]:
    """All intact records and the offset where the valid log ends.

    A bad frame with nothing valid after it is a torn tail (a crash in the middle of a write):
    it is cut off with a :class:`TornTailWarning`. A bad frame *followed by* intact frames means
    bytes that were once durable have changed: that raises :class:`CorruptLog`, because replaying
    around the hole could lose a committed transaction or apply a corrupt one.
    """
    payloads: list[bytes] = []
    off, n = 0, len(buf)
    crc32, unpack = zlib.crc32, _HEADER.unpack_from
    while off < n:
        if off + 8 <= n:  # fast path for intact frames
            length, crc = unpack(buf, off)
            end = off + 8 + length
            if end <= n:
                payload = buf[off + 8:end]
                if crc32(payload, crc32(buf[off:off + 4])) == crc:
                    payloads.append(payload)
                    off = end
                    continue
        for probe in range(off + 1, n - 8):
            if _frame_at(buf, probe) is not None:
                raise CorruptLog(
                    f"{source}: record at byte {off} is damaged but intact records follow at "
                    f"byte {probe}; refusing to replay around a hole. Restore the file from a "
                    f"backup, or delete the node's data directory to start it empty.")
        warnings.warn(f"{source}: cut off a torn tail of {n - off} bytes at byte {off} "
                      f"(a write interrupted by a crash; nothing in it was acknowledged)",
                      TornTailWarning, stacklevel=3)
        break
    try:  # one parse for the whole log: the checksums already vouched for every payload
        objs = json.loads(b"[" + b",".join(payloads) + b"]")
    except ValueError:
        raise CorruptLog(f"{source}: a record passes its checksum but is not valid JSON; it was "
                         f"written by something other than kvlab") from None
    return [LogRecord(o["lsn"], o["type"], o["data"]) for o in objs], off


class MemoryDisk:
    """A simulated disk: ``durable`` survives a crash, ``pending`` (not yet flushed) does not."""

    def __init__(self) -> None:
        self.durable = bytearray()
        self.pending = bytearray()
        self.checkpoint_blob: bytes | None = None
        self.fsyncs = 0

    def append(self, frame: bytes) -> None:
        self.pending += frame

    def flush(self) -> None:
        self.durable += self.pending
        self.pending.clear()
        self.fsyncs += 1

    def crash(self, torn: int = 0) -> None:
        """Lose the unflushed tail; ``torn`` bytes of it may have reached the platter anyway."""
        self.durable += self.pending[:torn]
        self.pending.clear()

    def read_log(self) -> bytes:
        return bytes(self.durable)

    def cut(self, offset: int) -> None:
        del self.durable[offset:]

    def write_checkpoint(self, blob: bytes) -> None:
        self.checkpoint_blob = blob

    def read_checkpoint(self) -> bytes | None:
        return self.checkpoint_blob

    def truncate_log(self) -> None:
        self.durable.clear()

    def close(self) -> None:
        pass


class FileDisk:
    """Real files: ``wal.log`` (append + fsync) and ``checkpoint.json`` (write, fsync, rename)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "wal.log"
        self.ckpt_path = self.dir / "checkpoint.json"
        self.pending = bytearray()
        self.fsyncs = 0
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, frame: bytes) -> None:
        self.pending += frame

    def flush(self) -> None:
        if self.pending:
            os.write(self._fd, self.pending)
            self.pending.clear()
        os.fsync(self._fd)
        self.fsyncs += 1

    def crash(self, torn: int = 0) -> None:
        if torn:
            os.write(self._fd, self.pending[:torn])
        self.pending.clear()

    def read_log(self) -> bytes:
        return self.log_path.read_bytes()

    def cut(self, offset: int) -> None:
        os.ftruncate(self._fd, offset)
        os.fsync(self._fd)

    def write_checkpoint(self, blob: bytes) -> None:
        tmp = self.ckpt_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.ckpt_path)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)  # make the rename itself durable
        finally:
            os.close(dfd)

    def read_checkpoint(self) -> bytes | None:
        return self.ckpt_path.read_bytes() if self.ckpt_path.exists() else None

    def truncate_log(self) -> None:
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Wal:
    """One node's log: assigns LSNs, frames records, flushes, checkpoints and recovers."""

    def __init__(self, disk: MemoryDisk | FileDisk, name: str = "wal") -> None:
        self.disk = disk
        self.name = name
        self.next_lsn = 1
        self.flushed_lsn = 0  # every record up to here is durable
        self.unflushed: list[LogRecord] = []  # kept for the WAL view and the crash lesson
        self._sizes: list[int] = []  # frame size of each unflushed record
        self.since_checkpoint = 0

    def append(self, type_: str, data: dict[str, Any]) -> LogRecord:
        rec = LogRecord(self.next_lsn, type_, data)
        self.next_lsn += 1
        frame = encode(rec.lsn, type_, data)
        self.disk.append(frame)
        self.unflushed.append(rec)
        self._sizes.append(len(frame))
        self.since_checkpoint += 1
        return rec

    @property
    def dirty(self) -> bool:
        return bool(self.unflushed)

    def flush(self) -> int:
        """Make everything appended so far durable (one fsync); return how many records."""
        n = len(self.unflushed)
        self.disk.flush()
        self.flushed_lsn = self.next_lsn - 1
        self.unflushed.clear()
        self._sizes.clear()
        return n

    def crash(self, torn: bool = False) -> int:
        """Lose the unflushed tail; return how many records were lost.

        ``torn``: the crash interrupted a write, so half of the first unflushed frame reached
        the disk. Recovery must detect and cut it (never a whole frame: that would be a flush).
        """
        n = len(self.unflushed)
        self.disk.crash(max(1, self._sizes[0] // 2) if torn and self._sizes else 0)
        self.unflushed.clear()
        self._sizes.clear()
        self.next_lsn = self.flushed_lsn + 1
        return n

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Persist ``state`` (which must reflect every flushed record), then truncate the log."""
        if self.unflushed:
            self.flush()
        blob = encode(self.flushed_lsn, "CHECKPOINT", state)
        self.disk.write_checkpoint(blob)
        self.disk.truncate_log()
        self.since_checkpoint = 0

    def _checkpoint(self) -> LogRecord | None:
        """The checkpoint on disk, if any; it is written atomically, so damage is never torn."""
        blob = self.disk.read_checkpoint()
        if blob is None:
            return None
        got = _frame_at(blob, 0)
        if got is None or got[1] != len(blob):
            raise CorruptLog(f"{self.name}: checkpoint file fails its checksum. Restore it "
                             f"from a backup, or delete the node's data directory.")
        return LogRecord(got[0]["lsn"], got[0]["type"], got[0]["data"])

    def durable(self) -> tuple[LogRecord | None, list[LogRecord], int]:
        """Read-only look at the disk: the checkpoint record, the intact log records, and how
        many torn bytes follow them. Unlike :meth:`recover` it cuts nothing."""
        ck = self._checkpoint()
        buf = self.disk.read_log()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornTailWarning)
            records, end = decode(buf, source=self.name)
        return ck, records, len(buf) - end

    def recover(self) -> tuple[dict[str, Any] | None, list[LogRecord]]:
        """Read the checkpoint and the log records after it; cut a torn tail off for good."""
        ck = self._checkpoint()
        state, covered = (ck.data, ck.lsn) if ck is not None else (None, 0)
        buf = self.disk.read_log()
        records, end = decode(buf, source=self.name)
        if end < len(buf):
            self.disk.cut(end)
        records = [r for r in records if r.lsn > covered]
        last = max([covered] + [r.lsn for r in records])
        self.next_lsn = last + 1
        self.flushed_lsn = last
        self.unflushed.clear()
        self._sizes.clear()
        self.since_checkpoint = len(records)
        return state, records

    def close(self) -> None:
        if self.unflushed:
            self.flush()
        self.disk.close()
