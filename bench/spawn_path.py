"""The worker's warm spawn path alone: CPU per no-op job on each side, without Redis.

``python -m bench.spawn_path [--jobs 100] [--threads 4]`` starts a fork server
and runs ``--jobs`` no-op python3 jobs through ``worker.jobprocess.ProcessRun``
from ``--threads`` threads at once (a worker's slots), isolated where the machine
allows it. It prints jobs per second, the CPU of the fork server and its jobs
per job (``/proc``), and the CPU of this process per job: what the worker
spends to spawn, stream, supervise and reap a job. Compare two versions back to
back on the same machine; the figures move with the machine's load.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import threading
import time

from bench.fleet import _stat_times
from common.errors import ConfigError
from worker.executors.dispatch import prepare
from worker.jobprocess import ProcessRun
from worker.sandbox.policy import Limits, Sandbox, choose
from worker.sandbox.warm import ForkServer

NO_OP = "def main():\n    return 1\n"
ENV = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _one(sandbox: Sandbox) -> None:
    result = ProcessRun(prepare("python3", NO_OP, {}), sandbox=sandbox, env=ENV, timeout_s=60,
                        sink=lambda _batch: None).run()
    if result.exit_code != 0:
        raise RuntimeError(f"the no-op job failed: {result}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.spawn_path", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--threads", type=int, default=4)
    ns = p.parse_args(argv)
    try:
        base = choose(Limits(), "host", unsafe_shared_user=False)
    except ConfigError:
        base = choose(Limits(), "host", unsafe_shared_user=True)
    server = ForkServer.start()
    try:
        sandbox = dataclasses.replace(base, server=server)
        _one(sandbox)  # the server is up and warm
        pid = server.pid
        assert pid is not None
        jobs_before, own_before = sum(_stat_times(pid) or (0.0, 0.0)), _own_cpu_s()
        started = time.monotonic()

        def slot() -> None:
            for _ in range(ns.jobs // ns.threads):
                _one(sandbox)

        threads = [threading.Thread(target=slot) for _ in range(ns.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        jobs_cpu = sum(_stat_times(pid) or (0.0, 0.0)) - jobs_before
        own_cpu = _own_cpu_s() - own_before
    finally:
        server.close()
    done = ns.jobs // ns.threads * ns.threads
    print(f"{done} jobs, {ns.threads} threads, {base.mode}: {done / elapsed:.1f} jobs/s, "
          f"fork server + jobs {1000 * jobs_cpu / done:.1f} ms/job, "
          f"this process (the worker's side) {1000 * own_cpu / done:.2f} ms/job")
    return 0


if __name__ == "__main__":
    sys.exit(main())
