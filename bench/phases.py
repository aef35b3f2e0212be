"""The measured phases of ``bench.throughput``, each against a running :class:`BenchFleet`.

Every phase enqueues through the Python client (``Gristmill.run_preview``),
waits on Redis conditions (the jobs' done lists), then reads the timestamps
the fleet wrote into each job record. Latencies are differences of those
epoch-millisecond fields, so they have 1 ms resolution.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.fleet import DEDICATED_SCRIPT, GROUP, BenchFleet, Deadline
from bench.jobs import EnqueueResult, JobTimes, enqueue_many, job_code, read_times, wait_done
from bench.stats import Summary, median, summarize
from common.clock import now_ms
from common.settings import Settings
from gristmill.client import Gristmill
from scheduler.inbox import InboxAdmitter

LANGUAGE = "python3"
UNWATCHED_NAMESPACE = "gm-bench-unwatched"
BATCH_SCRIPT = "u/bench/noop"
CPU_KINDS = ("job processes", "worker processes", "scheduler", "redis", "producer (bench)")


@dataclass(frozen=True)
class PhaseResult:
    """What one phase measured; summaries are in milliseconds."""

    name: str
    jobs: int
    statuses: dict[str, int]
    enqueue_s: float
    enqueue_rate: float
    wall_s: float | None = None  # first created_at -> last completed_at
    throughput: float | None = None  # jobs / wall_s
    start_latency: Summary | None = None  # started_at - created_at
    complete_latency: Summary | None = None  # completed_at - created_at
    start_lateness: Summary | None = None  # started_at - scheduled_for
    duration_median_ms: float | None = None  # median duration_ms written by the worker
    cpu_ms_per_job: dict[str, float] | None = None  # CPU spent per job, by process kind
    admit_s: float | None = None  # enqueue_many: a scheduler's inbox admitting the backlog
    admit_rate: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_ceiling(self) -> float | None:
        """Jobs/s the machine could complete if every core ran only the benchmark."""
        if not self.cpu_ms_per_job:
            return None
        return (os.cpu_count() or 1) * 1000 / sum(self.cpu_ms_per_job.values())

    @property
    def cpu_share(self) -> float | None:
        """Fraction of the machine's CPU time (all cores) the benchmark used during the phase."""
        if not self.cpu_ms_per_job or not self.wall_s:
            return None
        used_s = sum(self.cpu_ms_per_job.values()) * self.jobs / 1000
        return used_s / (self.wall_s * (os.cpu_count() or 1))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, dict) and key == "cpu_ms_per_job":
                out[key] = {k: round(v, 2) for k, v in value.items()}
            elif isinstance(value, Summary):
                out[key] = value.to_dict()
            elif isinstance(value, float):
                out[key] = round(value, 3)
            else:
                out[key] = value
        for key in ("cpu_ceiling", "cpu_share"):
            value = getattr(self, key)
            out[key] = None if value is None else round(value, 3)
        return out


class Phases:
    """Runs the benchmark's phases on one fleet with one producer."""

    def __init__(self, fleet: BenchFleet, deadline: Deadline, sleep_ms: int,
                 batch: bool = False) -> None:
        self.batch = batch  # phase 1 enqueues with enqueue_many (a producer that keeps up)
        self.fleet = fleet
        self.deadline = deadline
        self.code = job_code(sleep_ms)
        self.client = Gristmill(fleet.url)
        self.group = fleet.keys.group(GROUP)
        self.dedicated = fleet.mode == "dedicated"
        if self.dedicated:
            self.client.deploy_script(DEDICATED_SCRIPT, self.code, LANGUAGE)

    def _submit(self, scheduled_for: int | None = None) -> str:
        options: dict[str, Any] = {} if scheduled_for is None else {"scheduled_for": scheduled_for}
        if self.dedicated:  # by path: the workers keep that script imported
            return self.client.run_script(DEDICATED_SCRIPT, **options)
        return self.client.run_preview(self.code, LANGUAGE, **options)

    def _finish(self, ids: list[str], what: str) -> list[JobTimes]:
        wait_done(self.fleet.client, self.group, ids, self.deadline, what)
        self.fleet.check_alive()
        return read_times(self.fleet.client, self.group, ids)

    def warm_up(self, count: int) -> None:
        """Run ``count`` jobs first (Lua scripts loaded, page cache warm); not measured."""
        result = enqueue_many(lambda i: self._submit(), count, self.deadline, "warm-up jobs")
        wait_done(self.fleet.client, self.group, result.ids, self.deadline, "warm-up jobs")

    def due(self, count: int) -> PhaseResult:
        """Phase 1: ``count`` due jobs as fast as one producer can enqueue them."""
        cpu_before = self._cpu()
        if self.batch:
            started = time.perf_counter()
            spec: dict[str, Any] = {"path": DEDICATED_SCRIPT} if self.dedicated else \
                {"code": self.code, "language": LANGUAGE}
            ids = self.client.enqueue_many([dict(spec) for _ in range(count)],
                                           batch_size=200).ids
            result = EnqueueResult(ids, time.perf_counter() - started)
        else:
            result = enqueue_many(lambda i: self._submit(), count, self.deadline, "due jobs")
        times = self._finish(result.ids, "due jobs")
        cpu_after = self._cpu()
        created = [t.created_at for t in times]
        completed = [t.completed_at for t in times if t.completed_at is not None]
        wall_s = (max(completed) - min(created)) / 1000 if completed else None
        return PhaseResult(
            name="due", jobs=count, statuses=_statuses(times), enqueue_s=result.seconds,
            enqueue_rate=result.rate, wall_s=wall_s,
            throughput=count / wall_s if wall_s else None,
            start_latency=summarize(_values(t.start_latency_ms for t in times)),
            complete_latency=summarize(_values(t.complete_latency_ms for t in times)),
            duration_median_ms=_median_duration(times),
            cpu_ms_per_job={k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / count
                            for k in cpu_after},
        )

    def enqueue_only(self, count: int) -> PhaseResult:
        """The producer alone: ``count`` jobs into a namespace no process watches.

        Run when the fleet is idle, this is the enqueue rate without CPU
        contention from running jobs (phase 1 measures it under load). The
        jobs stay queued in the throw-away Redis.
        """
        settings = Settings(redis_url=self.fleet.url, namespace=UNWATCHED_NAMESPACE)
        producer = Gristmill(self.fleet.url, settings=settings)
        result = enqueue_many(lambda i: producer.run_preview(self.code, LANGUAGE), count,
                              self.deadline, "enqueue-only jobs")
        return PhaseResult(name="enqueue_only", jobs=count, statuses={"queued": count},
                           enqueue_s=result.seconds, enqueue_rate=result.rate)

    def enqueue_batched(self, count: int) -> PhaseResult:
        """The producer alone, in bulk: ``Gristmill.enqueue_many`` of ``count`` runs of a
        deployed script by path (pipelined batches of 1,000), into a namespace no one watches."""
        settings = Settings(redis_url=self.fleet.url, namespace=UNWATCHED_NAMESPACE)
        producer = Gristmill(self.fleet.url, settings=settings)
        producer.deploy_script(BATCH_SCRIPT, self.code, LANGUAGE)
        producer.enqueue_many([{"path": BATCH_SCRIPT}] * 1000)  # scripts loaded, caches warm
        specs = [{"path": BATCH_SCRIPT, "args": {}} for _ in range(count)]
        self.deadline.check("enqueue_many")
        InboxAdmitter(producer.store, producer.admission, "bench-warm", threading.Event()).admit_next(1)
        started = time.perf_counter()
        outcome = producer.enqueue_many(specs)
        seconds = time.perf_counter() - started
        queued = count - len(outcome.rejected) - len(outcome.duplicates)
        # The end-to-end ceiling: one scheduler's inbox thread admitting the backlog (in this
        # process, as the scheduler runs it), until the inbox is empty.
        self.deadline.check("admitting the enqueue_many backlog")
        admitter = InboxAdmitter(producer.store, producer.admission, "bench", threading.Event())
        started = time.perf_counter()
        while admitter.admit_next(0.01):
            self.deadline.check("admitting the enqueue_many backlog")
        admit_s = time.perf_counter() - started
        return PhaseResult(name="enqueue_many", jobs=count, statuses={"queued": queued},
                           enqueue_s=seconds, enqueue_rate=count / seconds,
                           admit_s=admit_s, admit_rate=count / admit_s)

    def _cpu(self) -> dict[str, float]:
        """CPU seconds so far: worker processes, their jobs, scheduler, Redis, this producer."""
        totals = dict.fromkeys(CPU_KINDS, 0.0)
        for name, (own, children) in self.fleet.cpu_times().items():
            if name.startswith("worker"):
                totals["worker processes"] += own
                totals["job processes"] += children
            else:
                totals[name] += own
        usage = resource.getrusage(resource.RUSAGE_SELF)
        totals["producer (bench)"] = usage.ru_utime + usage.ru_stime
        return totals

    def paced(self, count: int, rate: float) -> PhaseResult:
        """``count`` due jobs arriving at ``rate`` jobs/s, each on its own schedule (not after the
        previous one completed): enqueue -> start / completed under a steady load."""
        ids: list[str] = []
        started = time.perf_counter()
        for i in range(count):
            if i % 100 == 0:
                self.deadline.check(f"enqueueing paced jobs ({i}/{count})")
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)  # the arrival schedule itself, not a wait for the fleet
            ids.append(self._submit())
        return self._latencies("paced", ids, time.perf_counter() - started)

    def free_worker(self, count: int) -> PhaseResult:
        """One job at a time, each waited for before the next: a worker is always free."""
        ids: list[str] = []
        seconds = 0.0
        for _ in range(count):
            one = enqueue_many(lambda i: self._submit(), 1, self.deadline, "sequential jobs")
            seconds += one.seconds
            ids.extend(one.ids)
            wait_done(self.fleet.client, self.group, one.ids, self.deadline, "sequential jobs")
        return self._latencies("free_worker", ids, seconds)

    def _latencies(self, name: str, ids: list[str], enqueue_s: float) -> PhaseResult:
        """A phase's jobs, once done: enqueue -> start and -> completed, their durations."""
        times = self._finish(ids, f"{name} jobs")
        return PhaseResult(
            name=name, jobs=len(ids), statuses=_statuses(times), enqueue_s=enqueue_s,
            enqueue_rate=len(ids) / enqueue_s if enqueue_s else 0.0,
            start_latency=summarize(_values(t.start_latency_ms for t in times)),
            complete_latency=summarize(_values(t.complete_latency_ms for t in times)),
            duration_median_ms=_median_duration(times),
        )

    def scheduled(self, count: int, ahead_s: float, spread_ms: int, name: str) -> PhaseResult:
        """``count`` jobs due ``ahead_s`` from now, spread evenly over ``spread_ms``."""
        base = now_ms() + int(ahead_s * 1000)
        step = spread_ms / count if count > 1 else 0.0
        result = enqueue_many(lambda i: self._submit(base + round(i * step)), count,
                              self.deadline, f"{name} jobs")
        notes = []
        late_by = now_ms() - base
        if late_by > 0:
            notes.append(f"enqueueing took longer than the lead time: the first jobs were "
                         f"already due {late_by} ms before they were all enqueued")
        times = self._finish(result.ids, f"{name} jobs")
        return PhaseResult(
            name=name, jobs=count, statuses=_statuses(times), enqueue_s=result.seconds,
            enqueue_rate=result.rate,
            start_lateness=summarize(_values(t.start_lateness_ms for t in times)),
            complete_latency=summarize(
                _values(None if t.completed_at is None else t.completed_at - t.scheduled_for
                        for t in times)),
            duration_median_ms=_median_duration(times), notes=notes,
        )


def _values(items: Iterable[int | None]) -> list[float]:
    return [float(v) for v in items if v is not None]


def _statuses(times: list[JobTimes]) -> dict[str, int]:
    return dict(Counter(t.status for t in times))


def _median_duration(times: list[JobTimes]) -> float | None:
    durations = [float(t.duration_ms) for t in times if t.duration_ms is not None]
    return median(durations) if durations else None
