"""The inbox: raw JSON specs pushed by any Redis client, admitted in batches.

Each spec is moved (BLMOVE for the first, then up to BATCH - 1 more in one
pipeline of LMOVEs) into this scheduler's processing list before it is
admitted and removed after, so a scheduler that dies mid-admission leaves it
where another scheduler finds it (:meth:`InboxAdmitter.recover`). A batch is
admitted in one enqueue pipeline (``Admission.submit_many``); should that fail
on a bug, its specs are admitted one by one, each of which cannot be lost.
"""

from __future__ import annotations

import threading

from common import log, metrics
from common.connection import redis_errors
from common.errors import RedisUnavailable
from common.loops import Outage
from common.store import Store
from jobs.admission import INBOX, Admission
from jobs.spec import keep_raw

BLOCK_S = 2.0  # a stopping scheduler waits at most this long for its inbox thread
BATCH = 500  # specs admitted per round trip when the inbox holds that many


class InboxAdmitter:
    """Admits ``gm:inbox`` specs for one scheduler."""

    def __init__(
        self, store: Store, admission: Admission, scheduler_id: str, stopping: threading.Event
    ) -> None:
        self.store = store
        self.admission = admission
        self.stopping = stopping
        self.inbox = store.keys.inbox
        self.processing = store.keys.inbox_processing(scheduler_id)
        self.log = log.get(scheduler_id=scheduler_id)

    def run(self) -> None:
        outage = Outage("inbox", "scheduler", self.log)
        interrupted = True  # at start, and after an error: specs may be left in processing
        while not self.stopping.is_set():
            try:
                if interrupted:
                    self.drain_processing()
                    interrupted = False
                self.admit_next(BLOCK_S)
            except RedisUnavailable as exc:
                interrupted = True
                self.stopping.wait(outage.failed(exc))
                continue
            outage.ok()
        try:
            if self.hand_back():
                self.log.info("inbox specs handed back at stop")
        except RedisUnavailable:
            self.log.warning("could not hand back the inbox processing list; "
                             "another scheduler recovers it when this one's lease expires")

    @redis_errors
    def admit_next(self, block_s: float) -> bool:
        """Take the oldest spec and admit it; False when none came within ``block_s``."""
        raw = self.store.take_inbox_spec(self.processing, block_s)
        if raw is None:
            return False
        self.admit_batch([raw, *self.store.take_inbox_specs(self.processing, BATCH - 1)])
        return True

    def admit_batch(self, batch: list[bytes]) -> None:
        """Admit specs already in our processing list, in one enqueue pipeline if it can be."""
        if len(batch) == 1:
            self.admit(batch[0])
            return
        try:
            outcome = self.admission.submit_many(batch, principal=INBOX, trusted=True)
        except RedisUnavailable:
            raise
        except Exception:
            self.log.exception("inbox batch admission failed; admitting its specs one by one")
            for raw in batch:
                self.admit(raw)
            return
        duplicates = set(outcome.duplicates)
        for i, job_id in enumerate(outcome.ids):
            result = "rejected" if i in outcome.rejected else \
                "duplicate" if i in duplicates else "accepted"
            metrics.INBOX_ADMITTED.labels(outcome=result).inc()
            self.log.info("inbox spec admitted", job_id=job_id, outcome=result)
        self.store.forget_inbox_specs(self.processing, batch)

    @redis_errors
    def drain_processing(self) -> None:
        """Admit specs left in our processing list (a Redis error interrupted them)."""
        for raw in self.store.client.lrange(self.processing, 0, -1):
            self.admit(raw)

    def admit(self, raw: bytes) -> None:
        """Admit one spec; whatever happens, it leaves a job record and the next one follows."""
        try:
            job_id, outcome = self.admission.admit_raw(raw)
        except RedisUnavailable:
            raise
        except Exception as exc:
            # A bug must not lose the spec: record it with the error and go on.
            self.log.exception("inbox admission failed")
            try:
                job_id, outcome = self.admission.reject(raw, f"internal error: {exc!r}"), "rejected"
            except RedisUnavailable:
                raise
            except Exception:
                # Not even a rejection record: keep the thread (and the specs after
                # this one) going rather than crash on the same spec at every restart.
                self.log.exception("inbox spec could not be recorded; dropped",
                                   raw_spec=keep_raw(raw[:4096]))
                job_id, outcome = "", "dropped"
        metrics.INBOX_ADMITTED.labels(outcome=outcome).inc()
        self.log.info("inbox spec admitted", job_id=job_id, outcome=outcome)
        self.store.client.lrem(self.processing, 1, raw)

    @redis_errors
    def hand_back(self) -> int:
        """Stopping: put what is left in our processing list back, as the oldest in the inbox."""
        moved = 0
        # Newest first onto the consuming end, so the oldest is taken first again.
        while self.store.client.lmove(self.processing, self.inbox, "LEFT", "RIGHT") is not None:
            moved += 1
        return moved

    @redis_errors
    def recover(self, dead_scheduler_id: str) -> None:
        """Put back the specs a dead scheduler was admitting, as the oldest in the inbox."""
        sources = [self.store.keys.inbox_processing(dead_scheduler_id)]
        if not self.store.cluster:  # a list under the name of before the cluster support
            sources.append(self.store.keys.inbox_processing_before_cluster(dead_scheduler_id))
        for source in sources:
            while self.store.client.lmove(source, self.inbox, "RIGHT", "RIGHT") is not None:
                pass
