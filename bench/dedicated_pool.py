"""The dedicated pool alone: a no-op job's round trip through DedicatedPool.run (a probe).

    python -m bench.dedicated_pool [--jobs 2000] [--processes 4]

No Redis and no runner: one worker-side DedicatedPool and its sandboxed
processes (isolated where the machine allows, as the tests choose), so the
figures are what the dedicated path itself costs: the latency of one job at a
time (p50/p90/p99), then jobs/s and the worker-side CPU per job with 4
threads calling it at once, as a worker's 4 slots do.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time

from common.errors import ConfigError
from worker.dedicated import DedicatedPool
from worker.executors.outcome import Outcome
from worker.sandbox.policy import Limits, Sandbox, choose
from worker.sandbox.warm import ForkServer

CODE = "def main():\n    return 1\n"
SLOTS = 4


def _sandbox(server: ForkServer) -> Sandbox:
    try:
        base = choose(Limits(), "host", unsafe_shared_user=False)
    except ConfigError:
        base = choose(Limits(), "host", unsafe_shared_user=True)
    return dataclasses.replace(base, server=server)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dedicated_pool", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--processes", type=int, default=SLOTS, help="--dedicated-processes")
    ns = p.parse_args(argv)
    server = ForkServer.start()
    sandbox = _sandbox(server)
    pool = DedicatedPool(("u/bench/noop",), sandbox, {}, processes=ns.processes)

    def one(job_id: str) -> float:
        started = time.perf_counter()
        outcome: Outcome = pool.run(
            script_path="u/bench/noop", script_hash="noop", code=lambda: (CODE, sandbox.limits),
            job_id=job_id, args={}, env={"WM_JOB_ID": job_id}, timeout_s=30,
            sink=None, cancel=threading.Event())  # type: ignore[arg-type]  # a no-op never logs
        if not outcome.ok:
            raise SystemExit(f"job failed: {outcome.error}")
        return time.perf_counter() - started

    try:
        for i in range(20):
            one(f"warm-{i}")
        latencies = sorted(one(f"one-{i}") for i in range(ns.jobs))
        cpu, wall = time.process_time(), time.perf_counter()
        slots = [threading.Thread(target=lambda k=k: [one(f"s{k}-{i}")
                                                      for i in range(ns.jobs // SLOTS)])
                 for k in range(SLOTS)]
        for thread in slots:
            thread.start()
        for thread in slots:
            thread.join()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        pool.close()
        server.close()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e6

    print(f"one job at a time: p50 {pct(0.5):.0f} us, p90 {pct(0.9):.0f} us, p99 {pct(0.99):.0f} us;"
          f" {SLOTS} slots: {ns.jobs / wall:.0f} jobs/s, worker CPU {cpu / ns.jobs * 1e6:.0f} us"
          f" a job; processes {ns.processes}; load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
