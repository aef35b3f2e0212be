"""One group's promoter: moves due jobs to ready, sleeping exactly until the next one is due.

Redis times out a blocking pop only at its ``hz`` resolution (up to ~100 ms
late), so the promoter blocks on the wake list until shortly before the next
due time and sleeps the last stretch locally, which is precise and costs
Redis nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from common import log, metrics
from common.clock import Clock
from common.connection import block_limit_s
from common.errors import RedisUnavailable
from common.loops import Outage, vital
from common.store import Store

BATCH = 500
FINE_WAIT_MS = 150
# The longest blocking wait: a safety net for a lost nudge, and the idle cost (one
# promote per group per IDLE_BLOCK_S). Shutdown does not wait for it: it nudges.
IDLE_BLOCK_S = 60.0


def sweep_period_s(socket_timeout_s: float | None) -> float:
    """How long a promoter at rest waits between two promotes (its safety sweep, one
    ``promote.lua`` call) when no nudge wakes it earlier: ``IDLE_BLOCK_S``, cut as
    ``Store.block_s`` cuts every blocking wait to what the connection's socket timeout allows
    (27 s under the default 30 s). Redis never ends the wait early, so two sweeps of one
    promoter are at least this far apart."""
    limit = block_limit_s(socket_timeout_s)
    return IDLE_BLOCK_S if limit is None else min(IDLE_BLOCK_S, limit)


def plan_wait(next_due_ms: int | None, now: int) -> tuple[float, float]:
    """How to wait for the next due job: (seconds to block on the wake list, seconds to sleep locally)."""
    if next_due_ms is None:
        return IDLE_BLOCK_S, 0.0
    wait_ms = next_due_ms - now
    if wait_ms <= 0:
        return 0.0, 0.0
    if wait_ms <= FINE_WAIT_MS:
        return 0.0, wait_ms / 1000
    return min((wait_ms - FINE_WAIT_MS) / 1000, IDLE_BLOCK_S), 0.0


class Promoter:
    """A thread that promotes one group's due jobs."""

    def __init__(self, store: Store, group: str, stopping: threading.Event, clock: Clock) -> None:
        self.store = store
        self.group = group
        self.stopping = stopping
        self.clock = clock
        self.thread: threading.Thread | None = None
        self.log = log.get(group=group)

    def start(self, on_death: Callable[[str], None]) -> None:
        self.thread = vital(f"promote-{self.group}", self.run, on_death)

    def join(self, timeout_s: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout_s)

    def wake(self) -> None:
        """Interrupt the blocking wait (used at shutdown so it ends at once)."""
        with contextlib.suppress(RedisUnavailable):
            self.store.nudge(self.group)

    def run(self) -> None:
        outage = Outage(f"promote {self.group}", "scheduler", self.log)
        while not self.stopping.is_set():
            try:
                self.step()
            except RedisUnavailable as exc:
                self.stopping.wait(outage.failed(exc))
                continue
            outage.ok()

    def step(self) -> None:
        """Promote what is due, then wait for the next due time or a wake nudge."""
        now = self.clock()
        result = self.store.promote(self.group, now=now, batch=BATCH)
        if result.moved:
            metrics.PROMOTE_LAG.labels(group=self.group).observe(result.max_lag_ms / 1000)
            if result.moved == BATCH:
                return
        block_s, sleep_s = plan_wait(result.next_due_ms, self.clock())
        if block_s > 0:
            # Redis rounds timeouts below its resolution; never pass 0 (= forever).
            self.store.wait_for_wake(self.group, max(block_s, 0.01))
        elif sleep_s > 0:
            self.stopping.wait(sleep_s)
