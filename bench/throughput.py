"""Gristmill throughput and latency benchmark (a benchmark, not a test).

    python -m bench.throughput --jobs 2000 --workers 2 --concurrency 4 [--mode cold] [--json]

Starts its own Redis (a free loopback port in a temp dir) and a real fleet of
subprocesses (1 scheduler, W workers), then measures, in order:

1. interpreter start-up, before the fleet starts (see bench/startup.py);
2. phase 1: N due jobs from one producer - enqueue rate, end-to-end jobs/s,
   enqueue->start and enqueue->completed percentiles;
3. due jobs one at a time with a worker always free - enqueue->start p50;
4. phase 2: M jobs scheduled ``--scheduled-ahead-s`` ahead, spread over
   ``--scheduled-spread-ms``; then a few more spaced out so a worker is free -
   scheduled_for->start percentiles;
5. phase 3: the idle fleet's Redis commands per second (INFO commandstats);
6. the enqueue rate with the fleet idle (jobs go to a namespace nobody watches),
   one by one and by ``enqueue_many``.

Everything it started is stopped on exit, Ctrl-C, error or ``--timeout-s``.
See docs/BENCHMARKS.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

from bench.fleet import BenchFleet, Deadline, FleetError, clean_environment, stop_on_sigterm
from bench.idle import measure_idle, promoter_sweep
from bench.phases import Phases
from bench.report import Report
from bench.startup import measure_startup
from common import log
from common.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000, help="phase 1 due jobs (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--concurrency", type=int, default=4, help="slots per worker (default 4)")
    p.add_argument("--mode", choices=["warm", "dedicated", "cold"], default="warm",
                   help="warm: jobs forked from each worker's fork server (default); dedicated: "
                   "the workers keep the job's script imported (--dedicated); cold: a "
                   "launcher interpreter per job")
    p.add_argument("--producer", choices=["single", "batch"], default="single",
                   help="phase 1's producer: one enqueue per job (default), or enqueue_many in "
                   "batches of 200 (so the fleet, not the producer, sets the pace)")
    p.add_argument("--sleep-ms", type=int, default=0,
                   help="each job sleeps this long in main (default 0: a no-op job)")
    p.add_argument("--free-jobs", type=int, default=100,
                   help="due jobs run one at a time with a free worker (default 100)")
    p.add_argument("--paced-jobs", type=int, default=0,
                   help="due jobs arriving at --paced-rate (default 0: skipped)")
    p.add_argument("--paced-rate", type=float, default=100.0,
                   help="their arrival rate, jobs/s (default 100)")
    p.add_argument("--scheduled-jobs", type=int, default=200,
                   help="phase 2 jobs scheduled ahead (default 200)")
    p.add_argument("--scheduled-ahead-s", type=float, default=2.0,
                   help="how far ahead phase 2 schedules (default 2)")
    p.add_argument("--scheduled-spread-ms", type=int, default=1000,
                   help="phase 2 due times are spread over this window (default 1000)")
    p.add_argument("--scheduled-free-jobs", type=int, default=20,
                   help="scheduled jobs spaced out so a worker is free (default 20)")
    p.add_argument("--scheduled-free-gap-ms", type=int, default=250,
                   help="gap between those jobs' due times (default 250)")
    p.add_argument("--warmup-jobs", type=int, default=4,
                   help="jobs run before measuring, not counted (default 4)")
    p.add_argument("--startup-reps", type=int, default=20,
                   help="spawns per interpreter start-up figure (default 20; 0 skips)")
    p.add_argument("--enqueue-only-jobs", type=int, default=2000,
                   help="jobs enqueued at the end with nobody consuming (default 2000; 0 skips)")
    p.add_argument("--enqueue-many-jobs", type=int, default=20000,
                   help="jobs enqueued by enqueue_many at the end (default 20000; 0 skips)")
    p.add_argument("--idle-s", type=float, default=10.0, help="idle window (default 10)")
    p.add_argument("--timeout-s", type=float, default=300.0,
                   help="abort (and stop everything) after this long (default 300)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--json-out", metavar="PATH", help="also write the JSON report to PATH")
    ns = p.parse_args(argv)
    for name in ("jobs", "workers", "concurrency", "scheduled_jobs"):
        if getattr(ns, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return ns


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
        "platform": platform.platform(), "redis": "",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def progress(deadline: Deadline, message: str) -> None:
    """One line on stderr per step, with seconds since the start (stdout stays the report)."""
    elapsed = deadline.seconds - deadline.remaining()
    print(f"bench: {elapsed:6.1f} s  {message}", file=sys.stderr, flush=True)


def run(ns: argparse.Namespace) -> Report:
    """Run every phase and return the report."""
    deadline = Deadline(ns.timeout_s)
    config = {k: v for k, v in vars(ns).items() if k not in ("json", "json_out")}
    report = Report(config=config, machine=machine_info())
    if ns.startup_reps > 0:
        progress(deadline, f"interpreter start-up, {ns.startup_reps} spawns of each kind")
        report.startup = measure_startup(ns.startup_reps)
    progress(deadline, f"starting Redis, 1 scheduler, {ns.workers} workers")
    with BenchFleet(workers=ns.workers, concurrency=ns.concurrency, mode=ns.mode) as fleet:
        report.machine["redis"] = fleet.server_version
        fleet.wait_ready(deadline)
        phases = Phases(fleet, deadline, ns.sleep_ms, batch=ns.producer == 'batch')
        if ns.warmup_jobs > 0:
            progress(deadline, f"fleet registered; {ns.warmup_jobs} warm-up jobs")
            phases.warm_up(ns.warmup_jobs)
        progress(deadline, f"phase 1: {ns.jobs} due jobs")
        report.due = phases.due(ns.jobs)
        if ns.free_jobs > 0:
            progress(deadline, f"{ns.free_jobs} due jobs one at a time")
            report.free_worker = phases.free_worker(ns.free_jobs)
        if ns.paced_jobs > 0:
            progress(deadline, f"{ns.paced_jobs} due jobs arriving at {ns.paced_rate:g}/s")
            report.paced = phases.paced(ns.paced_jobs, ns.paced_rate)
        progress(deadline, f"phase 2: {ns.scheduled_jobs} jobs {ns.scheduled_ahead_s:g} s ahead")
        report.scheduled = phases.scheduled(
            ns.scheduled_jobs, ns.scheduled_ahead_s, ns.scheduled_spread_ms, "scheduled")
        if ns.scheduled_free_jobs > 0:
            progress(deadline, f"{ns.scheduled_free_jobs} scheduled jobs, "
                     f"{ns.scheduled_free_gap_ms} ms apart")
            report.scheduled_free = phases.scheduled(
                ns.scheduled_free_jobs, ns.scheduled_ahead_s,
                ns.scheduled_free_gap_ms * max(ns.scheduled_free_jobs - 1, 1),
                "scheduled_free")
        if ns.idle_s > 0:
            deadline.check("starting the idle phase")
            progress(deadline, f"phase 3: idle for {ns.idle_s:g} s")
            # The fleet's processes run without GRISTMILL_* settings: the default socket timeout.
            timeout_s = Settings.model_fields["redis_socket_timeout_s"].default
            sweep = promoter_sweep(fleet.client, fleet.keys, timeout_s)
            report.idle = measure_idle(fleet.client, ns.idle_s, sweep)
        if ns.enqueue_only_jobs > 0:
            progress(deadline, f"{ns.enqueue_only_jobs} jobs enqueued with nobody consuming")
            report.enqueue_only = phases.enqueue_only(ns.enqueue_only_jobs)
        if ns.enqueue_many_jobs > 0:
            progress(deadline, f"{ns.enqueue_many_jobs} jobs by enqueue_many, nobody consuming")
            report.enqueue_batched = phases.enqueue_batched(ns.enqueue_many_jobs)
        report.machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        progress(deadline, "stopping the fleet")
    progress(deadline, "done")
    return report


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    # Settings() reads GRISTMILL_* from the environment: keep a developer's own
    # (namespace, routing, URL) out of the benchmark's client and fleet.
    cleaned = clean_environment()
    os.environ.clear()
    os.environ.update(cleaned)
    # The in-process producer and admitter log at info on stdout by default: keep the
    # report clean (warnings still go to stderr).
    log.configure(level="warning")
    stop_on_sigterm()
    try:
        report = run(ns)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    except (TimeoutError, FleetError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if ns.json_out:
        with open(ns.json_out, "w") as f:
            f.write(report.to_json() + "\n")
    print(report.to_json() if ns.json else report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
