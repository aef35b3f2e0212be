"""Which of a job's log lines stay in Redis and which go to the object store (storage/logs.py).

The log sink asks :meth:`LogBudget.route` for each batch: the lines that fit
in the job's Redis budget (``max_log_bytes`` less what earlier attempts used,
less room for one marker and one note), the marker line when the spill
starts, and the lines for the spill. Without an object store everything goes
to Redis, whose own limit (``append_logs.lua``) cuts as before.
"""

from __future__ import annotations

import time

from storage.logs import SPILL_STREAM, LogSpill, log_prefix
from storage.objects import ObjectStore

MARKER_RESERVE = 4096
RETRY_AFTER_S = 5.0

Line = tuple[int, str, str]


class LogBudget:
    """One attempt's split of its lines between Redis and the object store."""

    def __init__(self, objects: ObjectStore | None, job_id: str, attempt: int, *,
                 max_bytes: int, used: int, keep_until_ms: int) -> None:
        self.left = max_bytes - used - MARKER_RESERVE
        self.spill = None if objects is None else LogSpill(
            objects, log_prefix(job_id, keep_until_ms), attempt)
        self.spilling = False
        self._failed_at = 0.0

    def route(self, lines: list[Line]) -> tuple[list[Line], list[Line]]:
        """(lines for Redis, lines for the spill)."""
        if self.spill is None:
            return lines, []
        if self.spilling:
            return [], lines
        for index, (_ts, _stream, text) in enumerate(lines):
            size = len(text.encode())
            if size > self.left:
                self.spilling = True
                marker = (lines[index][0], SPILL_STREAM, self.spill.prefix)
                return [*lines[:index], marker], lines[index:]
            self.left -= size
        return lines, []

    def send(self, lines: list[Line]) -> None:
        """Hand lines to the spill; upload when a chunk is full (not while the store is failing)."""
        assert self.spill is not None
        cooling = self.spill.error is not None and \
            time.monotonic() - self._failed_at < RETRY_AFTER_S
        self.spill.add(lines, upload=not cooling)
        if self.spill.error is not None and not cooling:
            self._failed_at = time.monotonic()

    def close(self) -> Line | None:
        """Upload the rest; a note line for Redis when some of the log could not be stored."""
        if self.spill is None or not self.spilling:
            return None
        self.spill.flush()
        lost = self.spill.dropped_bytes + self.spill.pending_bytes
        if not lost:
            return None
        return (int(time.time() * 1000), "stderr",
                f"[gristmill: {lost} bytes of this log could not be written to the object "
                f"store ({self.spill.error}); the lines kept in Redis are above]")

