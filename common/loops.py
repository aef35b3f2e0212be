"""Background loops: outliving every Redis error, and dying loudly on anything else.

Each loop of a long-running process (heartbeat, cancel control, inbox, scheduler
tick, promoters, the runner's writes) treats :class:`RedisUnavailable` (a lost
connection, or a server that refuses for now: OOM, READONLY, LOADING, BUSY,
MASTERDOWN, see :mod:`common.connection`) as an *episode*: it waits with
capped backoff, logs one line when the episode starts and one when it ends,
and counts each failed round trip in ``gristmill_redis_errors_total``.

Anything else is a bug. A loop the process cannot live without is started
with :func:`vital`: when it dies, the process is told, stops, and exits
non-zero so its supervisor restarts it, instead of living on as a zombie
(a worker that claims jobs without a lease, a scheduler with a dead inbox).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from common import log, metrics
from common.retry import Backoff


class Outage:
    """Backoff and one log line per episode of Redis errors, for one loop."""

    def __init__(self, loop: str, process: str, logger: Any | None = None,
                 *, first_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.loop = loop
        self.process = process
        self.log = logger if logger is not None else log.get()
        self.backoff = Backoff(first_s, cap_s)

    @property
    def ongoing(self) -> bool:
        return self.backoff.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Count a failed round trip; the seconds to wait before the next try."""
        metrics.REDIS_ERRORS.labels(process=self.process).inc()
        if not self.ongoing:
            self.log.warning("redis unavailable; retrying with backoff", loop=self.loop,
                             error=str(exc))
        return self.backoff.next_delay()

    def ok(self) -> None:
        """A round trip succeeded: close the episode, if one was open."""
        if self.ongoing:
            self.log.info("redis available again", loop=self.loop,
                          failed_attempts=self.backoff.failures)
            self.backoff.reset()


def vital(name: str, target: Callable[[], None], on_death: Callable[[str], None]) -> threading.Thread:
    """A started daemon thread running ``target``; if it raises, ``on_death(name)`` is called.

    A vital loop returns only when its process is stopping; an exception means
    the process can no longer do its work safely.
    """

    def run() -> None:
        try:
            target()
        except BaseException:
            log.get().exception("vital thread died; the process stops", thread=name)
            on_death(name)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
