"""The part of a job's log beyond what Redis keeps (``max_log_bytes``), in the object store.

Writer (:class:`LogSpill`, driven by the worker's log sink): once a job's
lines would pass its Redis budget, the sink writes one marker entry into the
job's Redis stream (stream ``object``, line = the object prefix) and every
later line of that attempt goes to the spill, uploaded as JSON-lines chunks
``<prefix><attempt:03d>-<seq:06d>.jsonl`` of about ``CHUNK_BYTES`` while the
job runs. When the store fails, chunks are kept in memory up to
``PENDING_CAP_BYTES`` and retried with the next one; past that they are
dropped and counted (one line says so): the Redis part, the result and the
job's completion never wait for the store.

Reader (:class:`SpillReader`): a marker entry is replaced by the lines of its
attempt's chunks, so ``job logs``, the API and the UI read one whole log.

Retention: the prefix is ``logs/<day>/<job id>/``, where ``<day>`` is the
UTC date by which the job's record is certainly gone (its start + timeout +
retention + one day); :func:`sweep` deletes every day before today, so the
stored part expires with the record without a per-object expiry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from common.store import LogEntry, Store
from storage.objects import ObjectStore, StorageError

SPILL_STREAM = "object"
CHUNK_BYTES = 1 << 20
PENDING_CAP_BYTES = 64 << 20
DAY_MS = 86_400_000
LOGS = "logs/"


def day_of(keep_until_ms: int) -> str:
    """The UTC day after ``keep_until_ms``: what is stored under it may go once that day is past."""
    return datetime.fromtimestamp(keep_until_ms / 1000 + 86_400, UTC).strftime("%Y-%m-%d")


def log_prefix(job_id: str, keep_until_ms: int) -> str:
    return f"{LOGS}{day_of(keep_until_ms)}/{job_id}/"


class LogSpill:
    """Uploads one attempt's lines past the Redis budget, in chunks (single writer thread)."""

    def __init__(self, store: ObjectStore, prefix: str, attempt: int) -> None:
        self.store = store
        self.prefix = prefix
        self.attempt = attempt
        self.seq = 0
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.pending: list[tuple[str, bytes]] = []  # chunks the store refused, to send again
        self.pending_bytes = 0
        self.dropped_bytes = 0
        self.error: str | None = None

    def add(self, lines: list[tuple[int, str, str]], *, upload: bool = True) -> None:
        """Buffer lines; with ``upload``, send a chunk once one is full."""
        for ts, stream, text in lines:
            row = json.dumps({"t": ts, "s": stream, "l": text}, ensure_ascii=False).encode() + b"\n"
            self.buffer.append(row)
            self.buffered += len(row)
        if upload and self.buffered >= CHUNK_BYTES:
            self.flush()
        elif self.buffered >= PENDING_CAP_BYTES:  # the store is failing: keep memory bounded
            self.dropped_bytes += self.buffered
            self.buffer, self.buffered = [], 0

    def flush(self) -> None:
        """Upload what is buffered (and what failed before); never raises."""
        if self.buffer:
            key = f"{self.prefix}{self.attempt:03d}-{self.seq:06d}.jsonl"
            self.seq += 1
            self.pending.append((key, b"".join(self.buffer)))
            self.pending_bytes += self.buffered
            self.buffer, self.buffered = [], 0
        while self.pending:
            key, data = self.pending[0]
            try:
                self.store.put(key, data)
            except StorageError as exc:
                self.error = str(exc)
                self._bound()
                return
            self.pending.pop(0)
            self.pending_bytes -= len(data)
        self.error = None

    def _bound(self) -> None:
        while self.pending_bytes > PENDING_CAP_BYTES and self.pending:
            _key, data = self.pending.pop(0)
            self.pending_bytes -= len(data)
            self.dropped_bytes += len(data)


class SpillReader:
    """Expands marker entries into the stored lines, and finds chunks written since."""

    def __init__(self, store: ObjectStore | None) -> None:
        self.store = store
        self.read: dict[str, tuple[LogEntry, int]] = {}  # marker id -> (marker, chunks read)

    def expand(self, entries: list[LogEntry]) -> Iterator[LogEntry]:
        for entry in entries:
            if entry.stream != SPILL_STREAM:
                yield entry
                continue
            self.read[entry.id] = (entry, 0)
            yield from self._chunks(entry.id)

    def more(self) -> Iterator[LogEntry]:
        """Lines of chunks uploaded since the last read, for every marker seen."""
        for marker_id in list(self.read):
            yield from self._chunks(marker_id)

    def _chunks(self, marker_id: str) -> Iterator[LogEntry]:
        marker, done = self.read[marker_id]
        if self.store is None:
            if done == 0:
                self.read[marker_id] = (marker, 1)
                yield _note(marker, "this log continues in the object store, which this process "
                            "is not configured for (GRISTMILL_OBJECT_STORE_URL)")
            return
        try:
            keys = [k for k in self.store.keys(marker.line)
                    if k.removeprefix(marker.line).startswith(f"{marker.attempt:03d}-")]
            for index in range(done, len(keys)):
                for number, raw in enumerate(self.store.get(keys[index]).splitlines()):
                    row = json.loads(raw)
                    yield LogEntry(id=f"{marker.id}/{index}/{number}", attempt=marker.attempt,
                                   ts_ms=int(row["t"]), stream=str(row["s"]), line=str(row["l"]))
                self.read[marker_id] = (marker, index + 1)
        except (StorageError, ValueError, KeyError) as exc:
            yield _note(marker, f"the rest of this log is in the object store, which cannot be "
                        f"read now ({exc})")


def read_logs(store: Store, objects: ObjectStore | None, job_id: str, *, follow: bool = False,
              after: str = "0-0") -> Iterator[LogEntry]:
    """``Store.iter_logs`` with the stored parts read in place of their markers (and, when
    following, the chunks written since). Ids of stored lines are ``<marker id>/<chunk>/<n>``."""
    spills = SpillReader(objects)
    while True:
        entries = store.logs(job_id, after=after)
        yield from spills.expand(entries)
        if entries:
            after = entries[-1].id
            continue
        if not follow or store.get_job(job_id).is_terminal:
            # One last read: lines written just before completion.
            yield from spills.expand(store.logs(job_id, after=after))
            yield from spills.more()
            return
        yield from spills.more()
        for entry in spills.expand(store.logs(job_id, after=after, block_ms=1000)):
            after = stream_id(entry.id)
            yield entry


def stream_id(entry_id: str) -> str:
    """The Redis stream id of an entry (a stored line's id starts with its marker's)."""
    return entry_id.split("/", 1)[0]


def _note(marker: LogEntry, text: str) -> LogEntry:
    return LogEntry(id=marker.id, attempt=marker.attempt, ts_ms=marker.ts_ms, stream="stderr",
                    line=f"[gristmill: {text}]")


def sweep(store: ObjectStore, now_ms: int | None = None) -> int:
    """Delete the stored log parts and results of every day before today; how many objects
    went."""
    today = datetime.fromtimestamp((now_ms or time.time() * 1000) / 1000, UTC).strftime("%Y-%m-%d")
    removed = 0
    for day_prefix in [*store.prefixes(LOGS), *store.prefixes("results/")]:
        day = day_prefix.rstrip("/").rsplit("/", 1)[-1]
        if day < today:
            keys = store.keys(day_prefix)
            for start in range(0, len(keys), 1000):
                store.delete(keys[start:start + 1000])
            removed += len(keys)
    return removed
