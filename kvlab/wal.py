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
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

try:
    from json.encoder import c_make_encoder
except ImportError:  # pragma: no cover - CPython always has it
    c_make_encoder = None

from kvlab.errors import CorruptLog, InvalidValue
from kvlab.messages import freeze, mixed_hash

_HEADER = struct.Struct("<II")


class TornTailWarning(UserWarning):
    """A partial frame at the very end of a log (a torn write) was cut off."""


@dataclass(slots=True)
class LogRecord:
    """One record. Its ``data`` must not change once logged: a :class:`MemoryDisk` encodes it
    only when its bytes are needed (a read of the log, a torn write)."""

    lsn: int
    type: str
    data: dict[str, Any]
    h: int | None = None  # _record_hash, once computed (kvlab.explore)
    frame: bytes | None = field(default=None, repr=False, compare=False)  # see frame_of


_JSON = json.JSONEncoder(separators=(",", ":"))  # insertion order is deterministic
_dumps = _JSON.encode
_MASK = (1 << 64) - 1


def _c_encoder() -> Any:
    """json's C encoder with ``_JSON``'s settings, made once (``JSONEncoder.encode`` builds one
    per call); None where it does not exist. Identical output: it is what ``encode`` runs."""
    if c_make_encoder is None:
        return None
    return c_make_encoder({}, _JSON.default, encode_basestring_ascii, None,
                          _JSON.key_separator, _JSON.item_separator, _JSON.sort_keys,
                          _JSON.skipkeys, _JSON.allow_nan)


_iterencode = _c_encoder()


def _record_hash(r: LogRecord) -> int:
    """A record's hash without its LSN (kvlab.explore sums these: a multiset of records)."""
    if r.h is None:
        r.h = mixed_hash((r.type, freeze(r.data)))
    return r.h
_LEN = struct.Struct("<I")


def encode(lsn: int, type_: str, data: dict[str, Any]) -> bytes:
    """One frame: exactly the bytes of ``{"lsn": lsn, "type": type_, "data": data}`` in compact
    JSON, framed (the object is spelled out rather than built and encoded: same bytes)."""
    global _iterencode
    if _iterencode is None or type(lsn) is not int or type(type_) is not str:
        payload = _dumps({"lsn": lsn, "type": type_, "data": data}).encode()
    else:
        try:
            body = "".join(_iterencode(data, 0))
        except BaseException:
            _iterencode = _c_encoder()  # its circular-reference markers may be left dirty
            raise
        payload = f'{{"lsn":{lsn},"type":{encode_basestring_ascii(type_)},"data":{body}}}' \
            .encode()
    length = _LEN.pack(len(payload))
    return length + _LEN.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def check_encodable(data: dict[str, Any]) -> None:
    """Raise what :func:`encode` would raise for a record with ``data`` (ValueError, TypeError,
    RecursionError), without framing it: the JSON of ``data`` is the only part that can fail."""
    global _iterencode
    if _iterencode is None:
        _dumps(data)
        return
    try:
        for _ in _iterencode(data, 0):
            pass
    except BaseException:
        _iterencode = _c_encoder()  # its circular-reference markers may be left dirty
        raise


def frame_of(r: LogRecord) -> bytes:
    """A record's frame, encoded once and kept."""
    if r.frame is None:
        r.frame = encode(r.lsn, r.type, r.data)
    return r.frame


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
    except (ValueError, RecursionError):
        return None
    return obj, end


def _record(obj: Any, source: str, off: int) -> LogRecord:
    """A decoded payload as a record, or CorruptLog if it lacks what every record has."""
    if not (isinstance(obj, dict) and type(obj.get("lsn")) is int
            and isinstance(obj.get("type"), str) and isinstance(obj.get("data"), dict)):
        raise CorruptLog(f"{source}: the record at byte {off} passes its checksum but is not a "
                         f"kvlab record (it needs an integer lsn, a type and a data object); it "
                         f"was written by something other than kvlab. Restore the file from a "
                         f"backup, or delete the node's data directory to start it empty.")
    return LogRecord(obj["lsn"], obj["type"], obj["data"])


def decode(buf: bytes, source: str = "log") -> tuple[list[LogRecord], int]:
    """All intact records and the offset where the valid log ends (``< len(buf)``: torn tail).

    Where a torn write ends and damage begins:

    * a *partial* last frame (fewer bytes than its header announces, or half a header) is a
      write that a crash interrupted. kvlab acknowledges nothing before the fsync of whole
      frames, so nothing in it was ever acknowledged: the caller may cut it off;
    * a *complete* frame whose checksum fails, or a bad frame with intact frames after it,
      means bytes that were once durable, and maybe acknowledged, have changed: that raises
      :class:`CorruptLog`, because cutting or skipping it could lose a committed transaction;
    * LSNs must go up by one from frame to frame: a gap (a deleted frame) or an LSN out of
      order (swapped frames) raises :class:`CorruptLog` too, naming the LSNs and the offset.

    Nothing is ever guessed around: recovery replays a prefix of what was written, or refuses.
    """
    payloads: list[bytes] = []
    offsets: list[int] = []
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
                    offsets.append(off)
                    off = end
                    continue
        for probe in range(off + 1, n - 8):
            if _frame_at(buf, probe) is not None:
                raise CorruptLog(
                    f"{source}: record at byte {off} is damaged but intact records follow at "
                    f"byte {probe}; refusing to replay around a hole. Restore the file from a "
                    f"backup, or delete the node's data directory to start it empty.")
        if off + 8 <= n and off + 8 + unpack(buf, off)[0] <= n:
            raise CorruptLog(
                f"{source}: the last record (byte {off}, {n - off} bytes) is complete but fails "
                f"its checksum. A crash leaves only a partial frame, so this record was written "
                f"whole, flushed and perhaps acknowledged: it is damaged, not torn, and cutting "
                f"it could lose a committed transaction. Restore the file from a backup, or "
                f"delete the node's data directory to start it empty.")
        break  # a partial last frame: a torn write, for the caller to cut
    try:  # one parse for the whole log: the checksums already vouched for every payload
        objs = json.loads(b"[" + b",".join(payloads) + b"]")
    except (ValueError, RecursionError):
        raise CorruptLog(f"{source}: a record passes its checksum but is not valid JSON; it was "
                         f"written by something other than kvlab") from None
    try:  # the common case in one pass; anything odd is found and named below
        records = [LogRecord(o["lsn"], o["type"], o["data"]) for o in objs]
        sound = {type(r.lsn) for r in records} <= {int} \
            and {type(r.type) for r in records} <= {str} \
            and {type(r.data) for r in records} <= {dict}
    except (TypeError, KeyError):
        sound = False
    if not sound:
        records = [_record(o, source, offsets[i]) for i, o in enumerate(objs)]
    if records and [r.lsn for r in records] == list(range(records[0].lsn,
                                                           records[0].lsn + len(records))):
        return records, off
    for i in range(1, len(records)):
        prev, lsn = records[i - 1].lsn, records[i].lsn
        if lsn != prev + 1:
            what = "a gap: a record is missing" if lsn > prev + 1 else "out of order"
            raise CorruptLog(
                f"{source}: the record at byte {offsets[i]} has LSN {lsn} right after LSN "
                f"{prev} ({what}); replaying it could apply a transaction's records in the "
                f"wrong order or without its decision. Restore the file from a backup, or "
                f"delete the node's data directory to start it empty.")
    return records, off


class MemoryDisk:
    """A simulated disk: what is flushed survives a crash, what is not (``pending``) does not.

    Records are kept as records and encoded into bytes only when bytes are needed (reading the
    log back for recovery or a view, a torn write, a cut): a simulated run that never reads
    its log never encodes it. What :meth:`read_log` returns is byte for byte what a
    :class:`FileDisk` holds for the same appends and flushes."""

    lazy = True  # Wal.append_all hands over records, not frames

    def __init__(self) -> None:
        self._raw = bytearray()  # the durable log's encoded prefix
        self._log: list[LogRecord | bytes] = []  # durable, after _raw, not encoded yet
        self._tail: list[LogRecord | bytes] = []  # appended, not flushed (never changed
        # in place: a clone shares it)
        self._shared = False  # _raw and _log are shared with a clone: copy before changing
        self.checkpoint_blob: bytes | None = None
        self.fsyncs = 0

    def append(self, frame: bytes) -> None:
        self._tail = [*self._tail, frame]

    def append_records(self, records: list[LogRecord]) -> None:
        self._tail = self._tail + records

    def _own(self) -> None:
        if self._shared:
            self._raw, self._log, self._shared = bytearray(self._raw), list(self._log), False

    @staticmethod
    def _bytes(items: list[LogRecord | bytes]) -> bytes:
        try:
            return b"".join(x if type(x) is bytes else frame_of(x) for x in items)
        except (TypeError, ValueError, RecursionError) as e:
            raise InvalidValue(f"a log record cannot be encoded as JSON ({e}); kvlab.client "
                               f"validates values so this should not happen: please report "
                               f"it") from None

    def _materialize(self) -> bytearray:
        if self._log:
            self._own()
            self._raw += self._bytes(self._log)
            self._log = []
        return self._raw

    @property
    def durable(self) -> bytes:
        """The durable log's bytes."""
        return bytes(self._materialize())

    @property
    def pending(self) -> bytes:
        """The bytes appended but not flushed."""
        return self._bytes(self._tail)

    def clone(self) -> MemoryDisk:
        """An independent copy, cheap: both share the bytes and records until one changes."""
        d = MemoryDisk.__new__(MemoryDisk)
        d._raw, d._log, d._tail = self._raw, self._log, self._tail
        d._shared = self._shared = True
        d.checkpoint_blob, d.fsyncs = self.checkpoint_blob, self.fsyncs
        return d

    def flush(self) -> None:
        if self._tail:
            self._own()
            self._log += self._tail
            self._tail = []
        self.fsyncs += 1

    def crash(self, torn: int = 0) -> None:
        """Lose the unflushed tail; ``torn`` bytes of it may have reached the platter anyway."""
        if torn:
            self._materialize()
            self._own()
            self._raw += self._bytes(self._tail)[:torn]
        self._tail = []

    def read_log(self) -> bytes:
        return bytes(self._materialize())

    def cut(self, offset: int) -> None:
        self._materialize()
        self._own()
        del self._raw[offset:]

    def write_checkpoint(self, blob: bytes) -> None:
        self.checkpoint_blob = blob

    def read_checkpoint(self) -> bytes | None:
        return self.checkpoint_blob

    def truncate_log(self) -> None:
        self._raw, self._log, self._shared = bytearray(), [], False

    def close(self) -> None:
        pass


class FileDisk:
    """Real files: ``wal.log`` (append + fsync) and ``checkpoint.json`` (write, fsync, rename)."""

    lazy = False  # Wal.append_all hands over encoded frames

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "wal.log"
        self.ckpt_path = self.dir / "checkpoint.json"
        self.pending = bytearray()
        self.fsyncs = 0
        self._synced = False  # sync_ahead() made everything appended durable already
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def append(self, frame: bytes) -> None:
        self.pending += frame

    def flush(self) -> None:
        if self._synced and not self.pending:  # sync_ahead() did this flush's fsync
            self._synced = False
        else:
            self._write_and_sync()
        self.fsyncs += 1

    def _write_and_sync(self) -> None:
        if self.pending:
            os.write(self._fd, self.pending)
            self.pending.clear()
        os.fsync(self._fd)

    def sync_ahead(self) -> None:
        """Do the next :meth:`flush`'s write and fsync now (see :func:`sync_together`); an
        error is left for that flush to raise."""
        try:
            self._write_and_sync()
        except OSError:
            return
        self._synced = True

    def crash(self, torn: int = 0) -> None:
        if torn:
            os.write(self._fd, self.pending[:torn])
        self.pending.clear()
        self._synced = False

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


_syncers: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): made once per process


def _sync_pool() -> ThreadPoolExecutor:
    """The threads sync_together hands fsyncs to, started once and kept (a thread start per
    fsync costs about as much as the fsync itself); a new pool in a forked child, whose
    copy of the parent's has no threads."""
    global _syncers
    pid = os.getpid()
    if _syncers is None or _syncers[0] != pid:
        _syncers = (pid, ThreadPoolExecutor(max_workers=32, thread_name_prefix="kvlab-fsync"))
    return _syncers[1]


def sync_together(disks: list[FileDisk]) -> None:
    """Write and fsync several file disks at once, one thread each (``os.fsync`` releases the
    GIL), as separate machines would; each disk's next :meth:`FileDisk.flush` then counts
    its fsync without waiting again. The caller makes sure those flushes come next, with
    nothing appended or crashed in between."""
    pool = _sync_pool()
    futures = [pool.submit(d.sync_ahead) for d in disks[1:]]
    disks[0].sync_ahead()
    for f in futures:
        f.result()


class Wal:
    """One node's log: assigns LSNs, frames records, flushes, checkpoints and recovers."""

    def __init__(self, disk: MemoryDisk | FileDisk, name: str = "wal") -> None:
        self.disk = disk
        self.name = name
        self.next_lsn = 1
        self.flushed_lsn = 0  # every record up to here is durable
        self.forced_lsn = 0  # the newest forced record: what the node says next waits for it
        self.unflushed: list[LogRecord] = []  # kept for the WAL view and the crash lesson
        self.since_checkpoint = 0
        # kvlab.explore: a running, order-free hash of the durable records (off elsewhere)
        self.track = False
        self._durable = self._torn = 0

    def clone(self) -> Wal:
        """An independent copy (memory disks only: a file cannot be forked)."""
        if not isinstance(self.disk, MemoryDisk):
            raise TypeError("only a Wal on a MemoryDisk can be cloned")
        w = Wal.__new__(Wal)
        w.__dict__.update(self.__dict__)  # every counter and flag, in one go
        w.disk, w.unflushed = self.disk.clone(), list(self.unflushed)
        return w

    def fingerprint(self) -> tuple:
        """What recovery would rebuild from the disk, and what is still unflushed.

        Order-free over records: replay treats each transaction's records on their own (its
        PREPARE always before its COMMIT), so two logs holding the same records in different
        interleavings recover the same state; LSNs only number them."""
        return (self._durable, self._torn, hash(self.disk.checkpoint_blob),
                sum(map(_record_hash, self.unflushed)) & _MASK, self.forced_lsn > self.flushed_lsn,
                self.next_lsn)

    def append(self, type_: str, data: dict[str, Any], force: bool = False) -> LogRecord:
        return self.append_all([(type_, data, force)])[0]

    def append_all(self, records: list[tuple[str, dict[str, Any], bool]]) -> list[LogRecord]:
        """Append records in order. On a file disk every frame is encoded before any is
        appended, so a record that cannot be encoded (an InvalidValue) leaves the log exactly as
        it was; a memory disk encodes only when its bytes are read (kvlab.client validates every
        value where it is written, so nothing unencodable gets this far)."""
        lsn = self.next_lsn
        out = [LogRecord(lsn + i, type_, data) for i, (type_, data, _f) in enumerate(records)]
        forced = [force for _t, _d, force in records]
        return self._append(out, forced)

    def append_records(self, records: list[Any]) -> list[LogRecord]:
        """:meth:`append_all` for objects with ``type``, ``data`` and ``force`` (the
        :class:`kvlab.effects.Record` objects of a node's outputs)."""
        lsn = self.next_lsn
        if not getattr(self.disk, "lazy", False):
            out = [LogRecord(lsn + i, r.type, r.data) for i, r in enumerate(records)]
            return self._append(out, [r.force for r in records])
        out = []  # a memory disk, the common case: _append in one pass, nothing to encode
        for r in records:
            out.append(LogRecord(lsn, r.type, r.data))
            if r.force:
                self.forced_lsn = lsn
            lsn += 1
        self.disk.append_records(out)
        self.next_lsn = lsn
        self.unflushed += out
        self.since_checkpoint += len(out)
        return out

    def _append(self, out: list[LogRecord], forced: list[bool]) -> list[LogRecord]:
        lsn = self.next_lsn
        disk = self.disk
        if getattr(disk, "lazy", False):
            disk.append_records(out)
        else:
            for rec in out:
                try:
                    frame_of(rec)
                except (TypeError, ValueError, RecursionError) as e:
                    raise InvalidValue(f"{self.name}: a {rec.type} record cannot be encoded as "
                                       f"JSON ({e}); kvlab.client validates values so this "
                                       f"should not happen: please report it") from None
            for rec in out:
                disk.append(rec.frame)
        for i, force in enumerate(forced):
            if force:
                self.forced_lsn = lsn + i
        self.next_lsn = lsn + len(out)
        self.unflushed += out
        self.since_checkpoint += len(out)
        return out

    @property
    def dirty(self) -> bool:
        return bool(self.unflushed)

    def flush(self) -> int:
        """Make everything appended so far durable (one fsync); return how many records."""
        n = len(self.unflushed)
        if self.track:
            self._durable = (self._durable + sum(map(_record_hash, self.unflushed))) & _MASK
        self.disk.flush()
        self.flushed_lsn = self.next_lsn - 1
        self.unflushed.clear()
        return n

    def crash(self, torn: bool = False) -> int:
        """Lose the unflushed tail; return how many records were lost.

        ``torn``: the crash interrupted a write, so half of the first unflushed frame reached
        the disk. Recovery must detect and cut it (never a whole frame: that would be a flush).
        """
        n = len(self.unflushed)
        if torn and self.unflushed and self.track:
            self._torn = _record_hash(self.unflushed[0])
        self.disk.crash(max(1, len(frame_of(self.unflushed[0])) // 2)
                        if torn and self.unflushed else 0)
        self.unflushed.clear()
        self.next_lsn = self.flushed_lsn + 1
        self.forced_lsn = min(self.forced_lsn, self.flushed_lsn)
        return n

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Persist ``state`` (which must reflect every flushed record), then truncate the log."""
        if self.unflushed:
            self.flush()
        blob = encode(self.flushed_lsn, "CHECKPOINT", state)
        self.disk.write_checkpoint(blob)
        self.disk.truncate_log()
        self.since_checkpoint = 0
        self._durable = self._torn = 0

    def _checkpoint(self) -> LogRecord | None:
        """The checkpoint on disk, if any; it is written atomically, so damage is never torn."""
        blob = self.disk.read_checkpoint()
        if blob is None:
            return None
        got = _frame_at(blob, 0)
        if got is None or got[1] != len(blob):
            raise CorruptLog(f"{self.name}: checkpoint file fails its checksum. Restore it "
                             f"from a backup, or delete the node's data directory.")
        return _record(got[0], f"{self.name} checkpoint", 0)

    def scan(self) -> Scan:
        """Read-only look at the disk: the checkpoint, the log records it does not cover, and
        the torn tail if there is one. Raises CorruptLog for anything it cannot trust; cuts
        nothing, so a driver can refuse (or warn) before it changes a thing."""
        ck = self._checkpoint()
        covered = ck.lsn if ck is not None else 0
        buf = self.disk.read_log()
        records, end = decode(buf, source=self.name)
        if records and records[0].lsn > covered + 1:
            raise CorruptLog(
                f"{self.name}: the log starts at LSN {records[0].lsn} (byte 0) but the "
                f"checkpoint covers only up to LSN {covered}: records {covered + 1}.."
                f"{records[0].lsn - 1} are missing. Restore the file from a backup, or delete "
                f"the node's data directory to start it empty.")
        return Scan(ck, [r for r in records if r.lsn > covered], covered, end, len(buf) - end)

    def durable(self) -> tuple[LogRecord | None, list[LogRecord], int]:
        """The checkpoint record, the intact log records and how many torn bytes follow them
        (every record on disk, including those a checkpoint already covers)."""
        ck = self._checkpoint()
        buf = self.disk.read_log()
        records, end = decode(buf, source=self.name)
        return ck, records, len(buf) - end

    def recover(self, scan: Scan | None = None) -> tuple[dict[str, Any] | None, list[LogRecord]]:
        """Read the checkpoint and the log records after it; cut a torn tail off for good."""
        scan = scan or self.scan()
        if scan.torn:
            self.disk.cut(scan.end)
        last = max([scan.covered] + [r.lsn for r in scan.records])
        self.next_lsn = last + 1
        self.flushed_lsn = self.forced_lsn = last
        self.unflushed.clear()
        self.since_checkpoint = len(scan.records)
        if self.track:
            self._durable, self._torn = sum(map(_record_hash, scan.records)) & _MASK, 0
        return (scan.checkpoint.data if scan.checkpoint else None), scan.records

    def close(self) -> None:
        if self.unflushed:
            self.flush()
        self.disk.close()


@dataclass(slots=True)
class Scan:
    """What :meth:`Wal.scan` found on disk."""

    checkpoint: LogRecord | None
    records: list[LogRecord]  # those the checkpoint does not cover
    covered: int  # the checkpoint's LSN (0 without one)
    end: int  # where the intact log ends
    torn: int  # bytes of a torn write after ``end``

    def torn_message(self, name: str) -> str:
        return (f"{name}: cut off a torn tail of {self.torn} bytes at byte {self.end} (a partial "
                f"frame: a write interrupted by a crash, never fsynced whole, so nothing in it "
                f"was acknowledged)")
