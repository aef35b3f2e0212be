"""The worker's own CPU per dedicated no-op job: claim, run, complete, on a real Redis.

``python -m bench.worker_path [--jobs 3000] [--concurrency 4]`` starts its own
Redis (a free loopback port in a temp dir), deploys a no-op script, queues
``--jobs`` due jobs of it (plus a warm-up), then runs one real ``Worker`` in this
process with a dedicated pool for that script (its process sandboxed as in
production). It prints jobs per second, this process's CPU per job while
the measured jobs ran: the worker's side alone (claim_start, the runner, the
pool's exchange, the completion), without the scheduler's, Redis's or the job
process's (a child), and the worker's Redis round trips per job (writes of a
request or a pipeline, counted on every connection of this process, the
benchmark's own polls taken out). Compare two versions back to back on the same
machine. ``--json-out PATH`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from redis.connection import AbstractConnection

from bench.fleet import stop_on_sigterm
from common import log
from common.connection import connect
from common.errors import ConfigError
from common.fleet import Fleet
from common.keys import Keys
from common.models import Job, Kind, Status
from common.settings import Settings
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port
from jobs.scripts import ScriptStore
from worker.dedicated import DedicatedPool
from worker.sandbox.policy import Limits, Sandbox, choose
from worker.worker import Worker

PATH = "u/bench/path"
NO_OP = "def main(n):\n    return n\n"
WARM_UP = 50


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _sandbox() -> Sandbox:
    try:
        return choose(Limits(), "host", unsafe_shared_user=False)
    except ConfigError:
        return choose(Limits(), "host", unsafe_shared_user=True)


def _queue(store: Store, script_hash: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for n, job_id in enumerate(ids):
        store.enqueue(Job(id=job_id, kind=Kind.SCRIPT, status=Status.QUEUED,
                          tag="default", group="default", language="python3", scheduled_for=0,
                          created_at=0, script_path=PATH, script_hash=script_hash,
                          args={"n": n}), fresh_id=True)
    return ids


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_path", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--json-out", metavar="PATH", help="also write the figures as JSON")
    ns = p.parse_args(argv)
    stop_on_sigterm()  # a SIGTERM stops the worker and the Redis, as Ctrl-C does
    log.configure("json", "info")  # as a worker logs (to stderr)
    with tempfile.TemporaryDirectory(prefix="gm-worker-path-") as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port(),
                               password=secrets.token_urlsafe(16))
        server.start()
        try:
            figures = _measure(server.url, Path(tmp), ns.jobs, ns.concurrency, ns.timeout_s)
        finally:
            server.stop()
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(figures) + "\n")
    return 0


class _Writes:
    """Counts requests written to Redis by this process (each call of a connection's
    ``send_packed_command`` is one write: a command, a pipeline, a direct call's batch)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()  # slots write from threads of their own
        self._original = AbstractConnection.send_packed_command

    def __enter__(self) -> _Writes:
        original = self._original

        def counted(conn: AbstractConnection, *args: object, **kwargs: object) -> None:
            with self._lock:
                self.count += 1
            original(conn, *args, **kwargs)

        AbstractConnection.send_packed_command = counted
        return self

    def __exit__(self, *_: object) -> None:
        AbstractConnection.send_packed_command = self._original



def _measure(url: str, tmp: Path, jobs: int, concurrency: int,
             timeout_s: float) -> dict[str, float]:
    client, keys = connect(url), Keys("gm")
    store, scripts = Store(client, keys), ScriptStore(client, keys)
    version, _ = scripts.deploy(PATH, "python3", NO_OP)
    sandbox = _sandbox()
    pool = DedicatedPool((PATH,), sandbox, env={}, processes=concurrency)
    worker = Worker(store=store, scripts=scripts, fleet=Fleet(client, keys), sandbox=sandbox,
                    settings=Settings(redis_url=url, data_dir=tmp / "data"),
                    concurrency=concurrency, claim_block_s=1, dedicated=pool)
    completed = keys.group("default").completed
    deadline = time.monotonic() + timeout_s
    polls = 0

    def wait_for(count: int) -> None:
        nonlocal polls
        while True:
            polls += 1
            if client.zcard(completed) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{client.zcard(completed)} of {count} jobs done in time")
            time.sleep(0.05)  # polled seldom: the poll's CPU counts in this process

    # All queued before the worker starts: the measure begins once the warm-up jobs are done.
    ids = _queue(store, version.hash, WARM_UP + jobs)[WARM_UP:]
    thread = threading.Thread(target=worker.run, daemon=True)
    writes = _Writes()
    with writes:
        thread.start()
        try:
            wait_for(WARM_UP)
            print("measuring", flush=True)  # for a profiler to attach now
            cpu, wall, written, polls = _own_cpu_s(), time.monotonic(), writes.count, 0
            wait_for(WARM_UP + jobs)
            cpu, wall = _own_cpu_s() - cpu, time.monotonic() - wall
            written = writes.count - written - polls
        finally:
            worker.stop()
            thread.join(30)
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.group("default").job(job_id), "status")
    ok = sum(status == b"success" for status in pipe.execute())
    print(f"worker path: {jobs} dedicated no-op jobs, concurrency {concurrency}, {ok} succeeded")
    print(f"  {jobs / wall:8.1f} jobs/s")
    print(f"  {cpu / jobs * 1000:8.3f} ms CPU of the worker per job (this process, queueing "
          "excluded)")
    print(f"  {written / jobs:8.3f} Redis round trips of the worker per job")
    return {"jobs": jobs, "succeeded": ok, "jobs_per_s": jobs / wall,
            "worker_cpu_ms_per_job": cpu / jobs * 1000, "round_trips_per_job": written / jobs}


if __name__ == "__main__":
    sys.exit(main())
