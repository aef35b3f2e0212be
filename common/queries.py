"""Read-only views over the jobs of a namespace (``gristmill jobs list``)."""

from __future__ import annotations

from common.connection import redis_errors
from common.fleet import Fleet
from common.models import TERMINAL_STATUSES, Job, Kind, Status
from common.store import Store

SCAN_LIMIT = 5000


@redis_errors
def candidate_ids(store: Store, fleet: Fleet, group: str, status: Status | None) -> list[str]:
    """Ids of one group that may have ``status``, from the indexes that hold them."""
    g = store.keys.group(group)
    pipe = store.client.pipeline(transaction=False)
    if status in (None, Status.QUEUED):
        pipe.lrange(g.ready, 0, SCAN_LIMIT)
        pipe.zrange(g.scheduled, 0, SCAN_LIMIT)
    if status in (None, Status.RUNNING):
        for worker in fleet.workers():
            if worker.group == group:
                pipe.lrange(g.running(worker.worker_id), 0, -1)
    if status is None or status in TERMINAL_STATUSES:
        pipe.zrange(g.completed, 0, SCAN_LIMIT, desc=True)
    return [i.decode() for answer in pipe.execute() for i in answer]


@redis_errors
def list_jobs(
    store: Store,
    fleet: Fleet,
    *,
    status: Status | None = None,
    kind: Kind | None = None,
    group: str | None = None,
    limit: int = 50,
) -> list[Job]:
    """Jobs matching the filters, newest first."""
    groups = [group] if group else sorted(g.decode() for g in store.client.smembers(store.keys.groups))
    jobs: list[Job] = []
    for name in groups:
        ids = list(dict.fromkeys(candidate_ids(store, fleet, name, status)))
        pipe = store.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(store.keys.group(name).job(job_id))
        for fields in pipe.execute():
            if not fields:
                continue
            job = Job.from_redis(fields)
            if (status is None or job.status == status) and (kind is None or job.kind == kind):
                jobs.append(job)
    jobs.sort(key=lambda j: (j.completed_at or j.created_at, j.created_at), reverse=True)
    return jobs[:limit]
