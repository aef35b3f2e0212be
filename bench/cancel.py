"""Cancelling many queued jobs (a benchmark, not a test).

    python -m bench.cancel --jobs 100000

Starts its own Redis (a free loopback port in a temp dir), enqueues N due jobs
into one group (nobody consumes them), then measures, in order:

1. one ``cancel`` of the job in the middle of the ready list: O(1) in the
   queue's length (the id stays in ready; the start script drops it), and
   the longest time Redis was blocked by one command (SLOWLOG);
2. ``jobs cancel --status queued``: every other queued job, in batched
   scripts of 500 (``cancel_many.lua``).

Prints one line per measure (``--json`` for a machine-readable line).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from common import indexes, luascripts
from common.connection import connect
from common.keys import Keys
from common.models import Job, Kind, Status
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port

ENQUEUE_BATCH = 1000


def enqueue(store: Store, n: int) -> list[str]:
    """N due preview jobs in group ``default``, pipelined (the fast path of Store.enqueue)."""
    ids: list[str] = []
    g = store.keys.group("default")
    now = store.clock()
    for start in range(0, n, ENQUEUE_BATCH):
        pipe = store.client.pipeline(transaction=False)
        for _ in range(min(ENQUEUE_BATCH, n - start)):
            job = Job(id=str(uuid.uuid4()), kind=Kind.PREVIEW, status=Status.QUEUED, tag="bash",
                      group="default", language="bash", code="true", scheduled_for=now,
                      created_at=now)
            pipe.set(store.keys.jobloc(job.id), job.group)
            record = {**job.to_redis(), "ix": indexes.record_field(job)}
            luascripts.ENQUEUE.queue(pipe, [g.job(job.id), g.scheduled, g.ready, g.wake, g.events,
                                     *(g.index(e) for e in indexes.entries_for(job, Status.QUEUED))],
                              [job.id, job.scheduled_for, now, 0, 10_000,
                               indexes.member(job.created_at, job.id),
                               *[x for kv in record.items() for x in kv]])
            ids.append(job.id)
        luascripts.run_pipeline(store.client, pipe)
    store.client.sadd(store.keys.groups, "default")
    return ids


def slowest_command_us(store: Store) -> int:
    """The longest single command since the last SLOWLOG RESET, in microseconds."""
    entries = store.client.slowlog_get(128)
    return max((int(e["duration"]) for e in entries), default=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cancel", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="gristmill-bench-")), port=free_port())
    version = server.start()
    try:
        client = connect(server.url)
        client.config_set("slowlog-log-slower-than", 0)
        store = Store(client, Keys("gm"))
        ids = enqueue(store, ns.jobs)
        client.slowlog_reset()
        started = time.perf_counter()
        store.cancel(ids[len(ids) // 2], by="u/admin", reason="bench", retention_s=3600)
        one_ms = (time.perf_counter() - started) * 1000
        one_block_us = slowest_command_us(store)
        client.slowlog_reset()
        started = time.perf_counter()
        bulk = store.cancel_queued("default", by="u/admin", reason="bench", retention_s=3600)
        bulk_s = time.perf_counter() - started
        bulk_block_us = slowest_command_us(store)
        figures = {
            "server": version, "queued": ns.jobs,
            "cancel_one_ms": round(one_ms, 3), "cancel_one_redis_block_us": one_block_us,
            "cancel_all_canceled": bulk, "cancel_all_s": round(bulk_s, 3),
            "cancel_all_jobs_per_s": round(bulk / bulk_s), "cancel_all_longest_block_ms":
            round(bulk_block_us / 1000, 2),
        }
        if ns.json:
            print(json.dumps(figures))
        else:
            print(f"cancel one of {ns.jobs:,} queued: {one_ms:.2f} ms "
                  f"(Redis busy {one_block_us} us at most)")
            print(f"cancel all {bulk:,} queued: {bulk_s:.2f} s ({bulk / bulk_s:,.0f} jobs/s; "
                  f"Redis busy {bulk_block_us / 1000:.1f} ms at most per command) [{version}]")
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
