"""Every Prometheus metric of Gristmill, declared once, on one explicit registry.

Each process serves this registry on ``--metrics-port``; names are prefixed
``gristmill_`` (DESIGN.md §9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from common.errors import RedisUnavailable

REGISTRY = CollectorRegistry(auto_describe=True)
M = TypeVar("M", bound=MetricWrapperBase)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

JOBS_ENQUEUED = Counter(
    "gristmill_jobs_enqueued", "Jobs enqueued, by group and kind.", ["group", "kind"],
    registry=REGISTRY,
)
JOBS_STARTED = Counter(
    "gristmill_jobs_started", "Job attempts started, by group and kind.", ["group", "kind"],
    registry=REGISTRY,
)
JOBS_COMPLETED = Counter(
    "gristmill_jobs_completed", "Jobs completed, by group, kind and status.",
    ["group", "kind", "status"], registry=REGISTRY,
)
JOBS_RECOVERED = Counter(
    "gristmill_jobs_recovered", "Jobs of dead workers re-queued or failed, by outcome.",
    ["group", "outcome"], registry=REGISTRY,
)
INBOX_ADMITTED = Counter(
    "gristmill_inbox_specs", "Raw inbox specs admitted, by outcome (accepted, rejected, duplicate).",
    ["outcome"], registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "gristmill_job_duration_seconds", "Run time of job attempts.", ["group", "kind"],
    buckets=_DURATION_BUCKETS, registry=REGISTRY,
)
START_LATENESS = Histogram(
    "gristmill_job_start_lateness_seconds", "started_at minus scheduled_for.", ["group"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
PROMOTE_LAG = Histogram(
    "gristmill_scheduler_promote_lag_seconds",
    "How late the oldest job of a promote batch was moved to ready.", ["group"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
WORKER_BUSY = Gauge(
    "gristmill_worker_busy_slots", "Jobs this worker process is running now.", registry=REGISTRY,
)
PROCESS_START = Gauge(
    "gristmill_process_start_time_seconds",
    "When this process started (epoch s), by process (api, scheduler, worker, up). Present "
    "whenever the process answers a scrape, so alerts can tell a scheduler is up without "
    "depending on the scrape job's name.", ["process"], registry=REGISTRY,
)
_CHILDREN: dict[tuple[int, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)`` (label values in declaration order), looked up once per label
    set: the worker counts every job, and ``labels()`` takes a lock and builds a tuple each time."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found  # type: ignore[return-value]


REDIS_ERRORS = Counter(
    "gristmill_redis_errors", "Redis round trips that failed, by process.", ["process"],
    registry=REGISTRY,
)


@dataclass
class FleetSnapshot:
    """Queue depths and live workers, read from Redis when Prometheus scrapes."""

    depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, state) -> n
    live_workers: dict[str, int] = field(default_factory=dict)


class FleetCollector(Collector):
    """``gristmill_queue_depth`` and ``gristmill_live_workers``, computed at scrape time.

    Reading them on scrape rather than on a timer keeps an idle fleet silent. When
    Redis cannot be read, the scrape still succeeds, without these samples: an answer
    of 500 would make the process look down (and every alert on ``up`` fire) during a
    Redis outage, which ``gristmill_redis_errors_total`` reports instead.
    """

    def __init__(self, read: Callable[[], FleetSnapshot]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = self.read()
        except (RedisUnavailable, redis.RedisError):
            REDIS_ERRORS.labels(process="metrics").inc()
            snapshot = FleetSnapshot()
        depth = GaugeMetricFamily(
            "gristmill_queue_depth", "Jobs per group and state (scheduled, ready, running).",
            labels=["group", "state"],
        )
        for (group, state), count in sorted(snapshot.depth.items()):
            depth.add_metric([group, state], count)
        live = GaugeMetricFamily(
            "gristmill_live_workers", "Workers whose heartbeat is within the lease, by group.",
            labels=["group"],
        )
        for group, count in sorted(snapshot.live_workers.items()):
            live.add_metric([group], count)
        yield depth
        yield live


def serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics on ``addr:port`` (port 0: do not serve) from a daemon thread."""
    if port:
        start_http_server(port, addr=addr, registry=REGISTRY)
