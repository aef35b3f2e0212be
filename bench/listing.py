"""Listing at scale: N completed jobs, then the first and later pages of several filters.

    python -m bench.listing --jobs 1000000

Starts its own redis-server on a free loopback port (no persistence), writes
N completed jobs through a real transition script (
``reject.lua``, the one script that writes a completed record with its index
entries in one step, pipelined; the indexes are exactly those the enqueue,
start and complete scripts leave behind), then times ``common.queries.list_page``
— the code behind ``GET /api/jobs``, ``gristmill jobs list`` and the UI — for
the first page and for pages deep into each filter, and measures the memory
the listing indexes take per job (MEMORY USAGE of every ``ix:*`` key and of
``ixtrim``). Prints a JSON report. Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from common import indexes, luascripts
from common.keys import DONE_TTL_S, EVENTS_MAXLEN, Keys
from common.models import Job, Kind, Status
from common.queries import EVERYONE, JobFilter, Page, Viewer, list_page
from common.store import Store
from gristmill.embedded import find_server_binary, free_port

DAY_MS = 86_400_000
T0 = 1_750_000_000_000
USERS = 50
PATHS = 100
BATCH = 2000


def fake_job(i: int, n: int, rng: random.Random, span_ms: int) -> tuple[Job, Status]:
    """A varied job: kinds, 100 paths, 50 users (some running as a group), 3 tags, schedules."""
    user = f"u/user{rng.randrange(USERS)}"
    kind = rng.choices([Kind.SCRIPT, Kind.PREVIEW, Kind.DEPENDENCIES], [70, 20, 10])[0]
    path = f"f/team{rng.randrange(10)}/script{rng.randrange(PATHS)}" if kind != Kind.PREVIEW else None
    status = rng.choices([Status.SUCCESS, Status.FAILURE, Status.CANCELED], [90, 8, 2])[0]
    created = T0 + i * span_ms // n + rng.randrange(1000)
    job = Job(
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), kind=kind, status=Status.QUEUED,
        tag=rng.choice(["python3", "bash", "gpu"]), group="default", language="python3",
        scheduled_for=created, created_at=created, created_by=user,
        permissioned_as=user if rng.random() < 0.8 else f"g/group{rng.randrange(5)}",
        script_path=path, schedule_path=f"f/team0/nightly{rng.randrange(10)}"
        if path and rng.random() < 0.1 else None, args={"n": i},
    )
    return job, status


def populate(store: Store, n: int, seed: int) -> None:
    """Write ``n`` completed jobs with the real scripts, ``BATCH`` per pipeline round."""
    rng = random.Random(seed)
    g = store.keys.group("default")
    luascripts.load_all(store.client)
    store.client.sadd(store.keys.groups, "default")
    span = 30 * DAY_MS
    started = time.monotonic()
    for base in range(0, n, BATCH):
        batch = [fake_job(i, n, rng, span) for i in range(base, min(base + BATCH, n))]
        pipe = store.client.pipeline(transaction=False)
        for job, final in batch:
            done_at = job.created_at + rng.randrange(5000)
            record = job.model_copy(update={
                "status": final, "started_at": job.created_at + 5, "completed_at": done_at,
                "duration_ms": done_at - job.created_at - 5, "attempt": 1, "worker": "w",
            })
            ix = indexes.record_field(record)
            pipe.set(store.keys.jobloc(job.id), "default")
            luascripts.REJECT.queue(pipe, [
                g.job(job.id), g.completed, g.done(job.id), g.events, g.ixtrim,
                *(g.index(e) for e in indexes.entries_for(record, final))],
                [job.id, done_at, 30 * 86400, DONE_TTL_S, EVENTS_MAXLEN,
                 indexes.member(job.created_at, job.id), indexes.trim_line(record),
                 *_flat({**record.to_redis(), "ix": ix})])
        pipe.execute()
        # The done lists and events are the workers' business, not the listing's: keep memory honest.
        store.client.delete(*(g.done(job.id) for job, _ in batch))
        if base and base % 100_000 == 0:
            rate = base / (time.monotonic() - started)
            print(f"  {base} jobs written ({rate:.0f}/s)", file=sys.stderr, flush=True)


def _flat(fields: dict[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def redis_cpu_us(client: redis.Redis) -> float:
    """Microseconds Redis has spent running commands so far (INFO commandstats)."""
    return float(sum(v["usec"] for v in client.info("commandstats").values()))


def timed(client: redis.Redis, fn: Callable[[], Page], reps: int) -> dict[str, float]:
    """Wall-clock percentiles, and the CPU a page costs: this process's and Redis's.

    The CPU figures do not include time spent waiting for a core, so they stay
    meaningful on a shared, loaded machine where the wall-clock p99 does not.
    """
    samples = []
    redis_before, cpu_before = redis_cpu_us(client), time.process_time()
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    client_cpu_ms = (time.process_time() - cpu_before) * 1000 / reps
    redis_cpu_ms = (redis_cpu_us(client) - redis_before) / 1000 / reps
    return {"p50_ms": round(statistics.median(samples), 2), "p99_ms": round(percentile(samples, 0.99), 2),
            "max_ms": round(max(samples), 2), "client_cpu_ms": round(client_cpu_ms, 2),
            "redis_cpu_ms": round(redis_cpu_ms, 2)}


def measure(store: Store, name: str, flt: JobFilter, viewer: Viewer, reps: int,
            depths: list[int]) -> dict[str, Any]:
    """First page timings, then pages reached by following the cursor ``depth`` pages deep."""
    first = list_page(store, flt, viewer=viewer, limit=50)
    out: dict[str, Any] = {"filter": name, "rows_first_page": len(first.jobs),
                           "first_page": timed(store.client,
                                               lambda: list_page(store, flt, viewer=viewer, limit=50),
                                               reps)}
    cursor, page_no, later = first.next_cursor, 1, {}
    for depth in depths:
        while cursor is not None and page_no < depth:
            page = list_page(store, flt, viewer=viewer, cursor=cursor, limit=50)
            cursor, page_no = page.next_cursor, page_no + 1
        if cursor is None:
            break
        at = cursor
        later[f"page_{depth + 1}"] = timed(
            store.client, lambda at=at: list_page(store, flt, viewer=viewer, cursor=at, limit=50), reps)  # type: ignore[misc]
    out["later_pages"] = later
    return out


def index_memory(client: redis.Redis, keys: Keys, n: int) -> dict[str, Any]:
    g = keys.group("default")
    total, sets = 0, 0
    for key in client.scan_iter(match=g.index("*"), count=1000):
        total += client.memory_usage(key, samples=0) or 0
        sets += 1
    trim = client.memory_usage(g.ixtrim, samples=0) or 0
    record = sum(client.memory_usage(g.job(indexes.split_member(m.decode())[1])) or 0
                 for m in client.zrange(g.index("status:success"), 0, 99))
    return {"index_sets": sets, "index_bytes_per_job": round(total / n, 1),
            "ixtrim_bytes_per_job": round(trim / n, 1),
            "record_bytes_per_job_sample": round(record / 100, 1),
            "used_memory_mb": round(client.info("memory")["used_memory"] / 2**20, 1)}


def run(ns: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [find_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            store = Store(client, Keys("gm"))
            t = time.monotonic()
            populate(store, ns.jobs, ns.seed)
            written_s = time.monotonic() - t
            alice = Viewer(user="u/user1", identities=frozenset({"u/user1", "g/group1"}))
            cases = [
                ("all (admin)", JobFilter(), EVERYONE),
                ("status=failure", JobFilter(status=Status.FAILURE), EVERYONE),
                ("kind=preview", JobFilter(kind=Kind.PREVIEW), EVERYONE),
                ("path=f/team3/script7", JobFilter(path="f/team3/script7"), EVERYONE),
                ("created_by=u/user7", JobFilter(created_by="u/user7"), EVERYONE),
                ("schedule=f/team0/nightly3", JobFilter(schedule="f/team0/nightly3"), EVERYONE),
                ("tag=gpu", JobFilter(tag="gpu"), EVERYONE),
                ("status=failure & kind=script", JobFilter(status=Status.FAILURE, kind=Kind.SCRIPT),
                 EVERYONE),
                ("last day", JobFilter(created_after=T0 + 29 * DAY_MS), EVERYONE),
                ("user u/user1 (in group1): all he may see", JobFilter(), alice),
                ("user u/user1: status=failure", JobFilter(status=Status.FAILURE), alice),
            ]
            results = [measure(store, name, flt, viewer, ns.reps, [10, 100, 1000])
                       for name, flt, viewer in cases]
            return {"jobs": ns.jobs, "write_s": round(written_s, 1),
                    "load_average": [round(x, 1) for x in os.getloadavg()],
                    "write_jobs_per_s": round(ns.jobs / written_s), "page_size": 50,
                    "reps": ns.reps, "redis": client.info("server")["redis_version"],
                    "memory": index_memory(client, store.keys, ns.jobs), "cases": results}
        finally:
            proc.terminate()
            proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=200, help="timings per page")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    ns = p.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the redis-server this run started is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report = run(ns)
    text = json.dumps(report, indent=2)
    print(text)
    if ns.out:
        ns.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
