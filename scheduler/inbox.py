"""The inbox: raw JSON specs pushed by any Redis client, admitted in batches.

Each spec is moved (BLMOVE for the first, then up to BATCH - 1 more in one
pipeline of LMOVEs) into this scheduler's processing list before it is
admitted and removed after, so a scheduler that dies mid-admission leaves it
where another scheduler finds it (:meth:`InboxAdmitter.recover`). A batch is
admitted in one enqueue pipeline (``Admission.submit_many``); should that fail
on a bug, its specs are admitted one by one, each of which cannot be lost.

An element ``@batch:<id>`` names a batch of specs that ``enqueue_many`` stored
at ``gm:inbox:batch:{gm:inbox}:<id>`` (one element for up to thousands of
jobs, so a producer costs Redis O(1) per batch); its specs are admitted as the
operator, in pipelines of BATCH, and the batch and its reference go together.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from common import log, metrics
from common.connection import redis_errors
from common.errors import RedisUnavailable
from common.keys import INBOX_WAKE
from common.loops import Outage
from common.store import Store
from jobs.admission import INBOX, OPERATOR, Admission, BatchOutcome, RawSpec, raw_text
from jobs.bulk import unpack_batch
from jobs.spec import keep_raw

# The longest blocking wait on the inbox: the idle cost (one BLMOVE per BLOCK_S). A
# stopping scheduler does not wait for it: it pushes a wake element (:meth:`wake`).
BLOCK_S = 30.0
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

    def wake(self) -> None:
        """End the blocking wait now (at stop): a wake element, taken next, admitted as nothing.

        With several schedulers another may take it; then this one waits out BLOCK_S.
        """
        with contextlib.suppress(RedisUnavailable):
            self.store.wake_inbox()

    def admit_batch(self, batch: list[bytes]) -> None:
        """Admit elements already in our processing list, in their order: runs of raw specs
        in one enqueue pipeline each, a stored batch's specs in pipelines of BATCH."""
        wakes = [raw for raw in batch if raw == INBOX_WAKE]
        if wakes:
            self.store.forget_inbox_specs(self.processing, wakes)
        run: list[bytes] = []
        for raw in batch:
            if raw == INBOX_WAKE:
                continue
            batch_id = self.store.keys.batch_of(raw)
            if batch_id is None:
                run.append(raw)
                continue
            self.admit_specs(run)
            run = []
            self.admit_stored(raw, batch_id)
        self.admit_specs(run)

    def admit_specs(self, batch: list[bytes]) -> None:
        """Admit raw specs (as ``u/inbox``), in one enqueue pipeline if it can be."""
        if len(batch) <= 1:
            for raw in batch:
                self.admit(raw)
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

    def admit_stored(self, ref: bytes, batch_id: str) -> None:
        """Admit a batch ``enqueue_many`` stored (as the operator: only a client with the
        operator's Redis access can write the batch key), then forget it.

        Its specs carry their ids, so a batch admitted again after a crash runs none
        twice. A reference to no batch (pushed by hand) is recorded as rejected.
        """
        payload, first = self.store.inbox_batch(batch_id)
        stored = None if payload is None else unpack_batch(payload)
        if stored is None:
            why = "no stored batch of that name" if payload is None else \
                "the stored batch is not a list of specs"
            job_id = self.admission.reject(ref, f"inbox batch {batch_id}: {why}")
            metrics.INBOX_ADMITTED.labels(outcome="rejected").inc()
            self.log.warning("inbox batch reference rejected", job_id=job_id, batch=batch_id)
        else:
            specs = stored.specs
            # Taken again (a scheduler died in it): every id is claimed, none run twice.
            new_ids = stored.generated if first else [False] * len(specs)
            counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
            for start in range(0, len(specs), BATCH):
                self._admit_operator_specs(specs[start:start + BATCH],
                                           new_ids[start:start + BATCH], counts,
                                           stored.created_at)
            # One line per batch: a line per job would cost more than admitting it.
            self.log.info("inbox batch admitted", batch=batch_id, **counts)
        self.store.forget_inbox_batch(self.processing, batch_id)

    def _admit_operator_specs(self, chunk: list[dict[str, Any]], new_ids: list[bool],
                              counts: dict[str, int], created_at: int | None) -> None:
        try:
            outcomes = [self.admission.submit_many(chunk, principal=OPERATOR, trusted=True,
                                                   new_ids=new_ids, created_at=created_at)]
        except RedisUnavailable:
            raise
        except Exception:
            self.log.exception("stored batch admission failed; admitting its specs one by one")
            outcomes = [self._admit_one_operator_spec(spec) for spec in chunk]
        for outcome in outcomes:
            rejected, duplicates = len(outcome.rejected), len(outcome.duplicates)
            for result, count in (("rejected", rejected), ("duplicate", duplicates),
                                  ("accepted", len(outcome.ids) - rejected - duplicates)):
                if count:
                    counts[result] += count
                    metrics.INBOX_ADMITTED.labels(outcome=result).inc(count)

    def _admit_one_operator_spec(self, spec: RawSpec) -> BatchOutcome:
        try:
            return self.admission.submit_many([spec], principal=OPERATOR, trusted=True)
        except RedisUnavailable:
            raise
        except Exception as exc:
            self.log.exception("stored batch spec admission failed")
            job_id = self.admission.reject(raw_text(spec), f"internal error: {exc!r}")
            return BatchOutcome(ids=[job_id], rejected={0: f"internal error: {exc!r}"})

    @redis_errors
    def drain_processing(self) -> None:
        """Admit specs left in our processing list (a Redis error interrupted them)."""
        for raw in self.store.client.lrange(self.processing, 0, -1):
            if raw == INBOX_WAKE:
                self.store.forget_inbox_specs(self.processing, [raw])
                continue
            batch_id = self.store.keys.batch_of(raw)
            if batch_id is None:
                self.admit(raw)
            else:
                self.admit_stored(raw, batch_id)

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
