"""Redis memory per job: what to size ``maxmemory`` by (a measurement, not a test).

    python -m bench.redis_memory [--jobs 500]

Starts its own Redis and fleet (bench/fleet.py: a free loopback port, a temp dir),
deploys a small python3 script that logs one line and returns a small object, then
measures ``used_memory`` (INFO memory) after each step:

1. queued: N jobs scheduled an hour ahead (record + scheduled entry + jobloc);
2. completed: N jobs run to success (record with result, its log stream, the
   completed index and events), with and without their done lists (kept an hour).

Prints bytes per job for each. Real jobs with large args, results or logs cost more:
add their size.
"""

from __future__ import annotations

import argparse

from bench.fleet import GROUP, NAMESPACE, BenchFleet, Deadline
from common.clock import now_ms
from common.settings import Settings
from gristmill.client import Gristmill

SCRIPT = 'def main(name: str = "world"):\n    print("hello", name)\n    return {"greeting": name}\n'


def used_memory(gm: Gristmill) -> int:
    return int(gm.redis.info("memory")["used_memory"])


def drop(gm: Gristmill, pattern: str) -> None:
    """Delete the keys matching ``pattern`` (on this benchmark's own server only)."""
    for key in list(gm.redis.scan_iter(match=pattern, count=1000)):
        gm.redis.delete(key)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.redis_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=500)
    p.add_argument("--timeout-s", type=float, default=300.0)
    ns = p.parse_args(argv)
    deadline = Deadline(ns.timeout_s)
    with BenchFleet(workers=2, concurrency=4) as fleet:
        fleet.wait_ready(deadline)
        gm = Gristmill(fleet.url, settings=Settings(redis_url=fleet.url, namespace=NAMESPACE))
        gm.deploy_script("u/admin/hello", SCRIPT, "python3")
        gm.set_route("python3", GROUP)
        base = used_memory(gm)
        later = now_ms() + 3_600_000
        for i in range(ns.jobs):
            gm.run_script("u/admin/hello", {"name": f"n{i}"}, scheduled_for=later)
        queued = used_memory(gm) - base
        # The future jobs stay queued; now as many due ones, run to completion.
        base = used_memory(gm)
        ids = [gm.run_script("u/admin/hello", {"name": f"n{i}"}) for i in range(ns.jobs)]
        for job_id in ids:
            job = gm.wait(job_id, deadline.remaining())
            assert job.status == "success", job
        first_hour = used_memory(gm) - base
        # The done lists (for waiters) expire after DONE_TTL_S; what stays is the rest.
        drop(gm, f"{NAMESPACE}:*:done:*")
        completed = used_memory(gm) - base
    print(f"{ns.jobs} jobs: queued {queued / ns.jobs:.0f} B/job; completed "
          f"{first_hour / ns.jobs:.0f} B/job in its first hour, then "
          f"{completed / ns.jobs:.0f} B/job for the retention period")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
