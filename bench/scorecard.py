"""Issue 9's speed table in one run: every target met, or a MISS with its cause.

    make bench                      # python -m bench.scorecard, in .venv-bench
    python -m bench.scorecard [--skip-peers] [--timeout-s 900] [--json-out PATH]

Runs, one after the other, each on its own private Redis and stopping itself:

1. ``bench.throughput --mode warm``: warm jobs/s and CPU per job, latency
   (enqueue -> completed) with 300 jobs arriving at 100 jobs/s, the idle
   fleet's commands, ``enqueue_many``;
2. ``bench.throughput --mode dedicated``: the same for a dedicated script;
3. ``bench.worker_path``: the worker's Redis round trips per job;
4. ``bench.peers --workloads noop``: dedicated Gristmill beside RQ, SAQ,
   Dramatiq and Huey (when they are installed: ``.venv-bench``).

Then prints the issue's table: the figure when the issue was filed, the
target, the measure, PASS or MISS, and for a MISS its cause, read from the
same run's CPU breakdown. The figures move with the machine's load: compare
runs made on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERS = ("huey", "dramatiq", "saq", "rq")
WORKERS = 2  # worker processes of every run (and one scheduler)


@dataclass
class Figures:
    """What the runs measured (None: not measured)."""

    cpus: int = 2
    warm_jobs_s: float | None = None
    warm_cpu: dict[str, float] = field(default_factory=dict)  # ms a job, by process kind
    # Latency, enqueue -> completed p50, p99 ms: jobs arriving at ``paced_rate`` jobs/s (None:
    # one at a time, a worker always free).
    paced_rate: float | None = None
    warm_latency: tuple[float, float] | None = None
    warm_duration_ms: float | None = None  # the job's own duration, median, in that phase
    dedicated_cpu: dict[str, float] = field(default_factory=dict)
    dedicated_latency: tuple[float, float] | None = None
    dedicated_start: tuple[float, float] | None = None  # enqueue -> start p50, p99 ms
    dedicated_peers_jobs_s: float | None = None  # Gristmill dedicated in bench.peers
    peers_jobs_s: dict[str, float] = field(default_factory=dict)
    enqueue_many_jobs_s: float | None = None
    round_trips_per_job: float | None = None
    idle_per_process: float | None = None


@dataclass(frozen=True)
class Row:
    figure: str
    at_filing: str
    target: str
    measured: str
    verdict: str  # PASS, MISS or "not run"
    cause: str = ""


def _ms(cpu: dict[str, float], *kinds: str) -> float:
    return sum(cpu.get(kind, 0.0) for kind in kinds)


def _cpu_cause(cpu: dict[str, float], cpus: int, run: str) -> str:
    total = sum(cpu.values())
    return (f"CPU-bound: {total:.1f} ms of CPU a job in all in the {run} run (job processes "
            f"{_ms(cpu, 'job processes'):.1f}, worker {_ms(cpu, 'worker processes'):.1f}, "
            f"Redis {_ms(cpu, 'redis'):.1f}, scheduler and producer "
            f"{_ms(cpu, 'scheduler', 'producer (bench)'):.1f}): {cpus} cores do "
            f"{cpus * 1000 / total:.0f} jobs/s at most" if total else "no CPU figures")


def _verdict(passed: bool | None) -> str:
    return "not run" if passed is None else "PASS" if passed else "MISS"


def rows(f: Figures) -> list[Row]:
    """The issue's table from ``f``: a pure function, tested from a table."""
    out: list[Row] = []
    warm_cpu = _ms(f.warm_cpu, "job processes", "worker processes", "redis")
    spawn = "the job's own process (fork, namespaces, a fresh interpreter's state: " \
            "python -m bench.spawn breaks it down)"

    passed = None if f.warm_jobs_s is None else f.warm_jobs_s >= 500
    out.append(Row("no-op python3 jobs/s, warm sandboxed, 2 worker processes", "35", ">= 500",
                   "-" if f.warm_jobs_s is None else f"{f.warm_jobs_s:.0f}", _verdict(passed),
                   _cpu_cause(f.warm_cpu, f.cpus, "warm") if passed is False else ""))

    passed = None if not f.warm_cpu else warm_cpu <= 4
    out.append(Row("CPU per warm job (worker + job + Redis)", "~55 ms", "<= 4 ms",
                   "-" if not f.warm_cpu else
                   f"{warm_cpu:.1f} ms (job {_ms(f.warm_cpu, 'job processes'):.1f} + worker "
                   f"{_ms(f.warm_cpu, 'worker processes'):.1f} + Redis "
                   f"{_ms(f.warm_cpu, 'redis'):.1f})", _verdict(passed),
                   f"{_ms(f.warm_cpu, 'job processes'):.1f} ms of it is {spawn}"
                   if passed is False else ""))

    best = max(f.peers_jobs_s.items(), key=lambda kv: kv[1]) if f.peers_jobs_s else None
    passed = None if f.dedicated_peers_jobs_s is None or best is None \
        else f.dedicated_peers_jobs_s >= best[1]
    measured = "-" if f.dedicated_peers_jobs_s is None else f"{f.dedicated_peers_jobs_s:.0f}"
    if best is not None and f.dedicated_peers_jobs_s is not None:
        measured += f" vs {best[0]} {best[1]:.0f} ({f.dedicated_peers_jobs_s / best[1]:.2f}x)"
    out.append(Row("no-op jobs/s, dedicated, 2 worker processes", "-", ">= the best peer",
                   measured, _verdict(passed),
                   _cpu_cause(f.dedicated_cpu, f.cpus, "dedicated") + "; a peer pops and calls in process, "
                   "with no job record, index, event, log stream, token or sandbox hop"
                   if passed is False else ""))

    start = (f.dedicated_start or (0.0, 0.0))[0]
    load = "a worker free" if f.paced_rate is None else f"at {f.paced_rate:g} jobs/s"
    for mode, latency, at_filing, limits, cause in (
        ("warm", f.warm_latency, "~35 / 50 ms", (5, 15),
         f"the job lasts {f.warm_duration_ms or 0:.0f} ms of it: {spawn}"),
        ("dedicated", f.dedicated_latency, "-", (1.5, 4),
         f"start p50 {start:.0f} ms (the enqueue's write, the BLMOVE with its claim_start), then "
         f"{(f.dedicated_latency or (0.0, 0.0))[0] - start:.0f} ms to run and complete (the "
         "dedicated process's exchange, the completion's write); records keep whole ms"),
    ):
        passed = None if latency is None \
            else latency[0] <= limits[0] and latency[1] <= limits[1]
        out.append(Row(f"enqueue -> completed p50 / p99, {load}, {mode}", at_filing,
                       f"<= {limits[0]:g} / {limits[1]:g} ms",
                       "-" if latency is None else f"{latency[0]:.0f} / {latency[1]:.0f} ms",
                       _verdict(passed), cause if passed is False else ""))

    passed = None if f.enqueue_many_jobs_s is None else f.enqueue_many_jobs_s >= 50_000
    out.append(Row("enqueue_many jobs/s from one Python process", "~2,800", ">= 50,000",
                   "-" if f.enqueue_many_jobs_s is None else f"{f.enqueue_many_jobs_s:,.0f}",
                   _verdict(passed), "the producer's own CPU" if passed is False else ""))

    passed = None if f.round_trips_per_job is None else f.round_trips_per_job <= 2
    out.append(Row("Redis round trips per job on the worker", "7 + log batches",
                   "<= 2 amortised",
                   "-" if f.round_trips_per_job is None else f"{f.round_trips_per_job:.2f}",
                   _verdict(passed), "" if passed is not False else
                   "log batches of a job that prints, or a lone slot's claims"))

    passed = None if f.idle_per_process is None else f.idle_per_process <= 2
    out.append(Row("Redis commands/s of an idle fleet, per process", "~6.5", "<= 2",
                   "-" if f.idle_per_process is None else f"{f.idle_per_process:.2f}",
                   _verdict(passed), "see bench.idle's classification"
                   if passed is False else ""))
    return out


def table(table_rows: list[Row]) -> str:
    lines = ["| figure | at the issue's filing | target | now | | cause of a MISS |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.figure} | {r.at_filing} | {r.target} | {r.measured} | {r.verdict} | "
              f"{r.cause} |" for r in table_rows]
    return "\n".join(lines)


# -- reading the runs' JSON ----------------------------------------------------------------


def _latency(phase: dict[str, Any] | None, which: str) -> tuple[float, float] | None:
    summary = (phase or {}).get(which)
    return None if not summary else (float(summary["p50"]), float(summary["p99"]))


def read_throughput(report: dict[str, Any], figures: Figures, mode: str) -> None:
    """Fill ``figures`` from a ``bench.throughput --json-out`` report of ``mode``."""
    phases = report.get("phases", {})
    due, paced = phases.get("due") or {}, phases.get("paced")
    if paced is not None:
        figures.paced_rate = float(report.get("config", {}).get("paced_rate") or 0) or None
    latency = paced if paced is not None else phases.get("free_worker")
    figures.cpus = int(report.get("machine", {}).get("cpus") or figures.cpus)
    if mode == "warm":
        figures.warm_jobs_s = due.get("throughput")
        figures.warm_cpu = dict(due.get("cpu_ms_per_job") or {})
        figures.warm_latency = _latency(latency, "complete_latency")
        figures.warm_duration_ms = (latency or {}).get("duration_median_ms")
        batched = phases.get("enqueue_many")
        if batched:
            figures.enqueue_many_jobs_s = batched.get("enqueue_rate")
        idle = report.get("idle")
        if idle:
            figures.idle_per_process = float(idle["total_per_s"]) / (WORKERS + 1)
    else:
        figures.dedicated_cpu = dict(due.get("cpu_ms_per_job") or {})
        figures.dedicated_latency = _latency(latency, "complete_latency")
        figures.dedicated_start = _latency(latency, "start_latency")


def read_peers(report: dict[str, Any], figures: Figures) -> None:
    for name, result in report.get("results", {}).items():
        jobs_s = (result.get("noop") or {}).get("jobs_per_s")
        if jobs_s is None:
            continue
        if name == "gristmill-dedicated":
            figures.dedicated_peers_jobs_s = float(jobs_s)
        elif name in PEERS:
            figures.peers_jobs_s[name] = float(jobs_s)


# -- the runs ------------------------------------------------------------------------------


STOP_GRACE_S = 60.0  # a run past its time gets SIGTERM, then this long to stop what it started


def _run(module: str, args: list[str], out: Path, deadline: float,
         bounded: bool = True) -> dict[str, Any] | None:
    """``python -m module args --json-out out``; its JSON, or None when it failed.

    ``bounded``: the run takes ``--timeout-s`` (what is left of ours) and stops itself. Past
    our deadline it gets SIGTERM, on which every bench stops the processes and the Redis it
    started (``bench.fleet.stop_on_sigterm``; Ctrl-C reaches it too: it runs in our process
    group); SIGKILL only if it has not ended ``STOP_GRACE_S`` later."""
    remaining = deadline - time.monotonic()
    if remaining <= 1:
        print(f"scorecard: no time left for {module}", file=sys.stderr)
        return None
    if bounded:
        args = [*args, "--timeout-s", f"{remaining:.0f}"]
    print(f"scorecard: python -m {module} {' '.join(args)}", file=sys.stderr, flush=True)
    log = out.with_suffix(".log")  # its progress and its worker's logs: shown if it fails
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", module, *args, "--json-out", str(out)],
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            code: int | None = proc.wait(timeout=remaining + (STOP_GRACE_S if bounded else 0))
        except subprocess.TimeoutExpired:
            code = None
            proc.terminate()
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    failure = "ran out of time" if code is None \
        else None if code == 0 and out.exists() else f"failed (exit {code})"
    if failure is not None:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        print(f"scorecard: {module} {failure}; the end of its output:\n{tail}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(out.read_text())
    return result


PACED_RATE = 100.0  # jobs/s: the load for the latency rows
PACED = ["--paced-jobs", "300", "--paced-rate", f"{PACED_RATE:g}"]
WARM = ["--mode", "warm", "--jobs", "1000", "--free-jobs", "0", *PACED, "--scheduled-jobs", "10",
        "--scheduled-free-jobs", "2", "--idle-s", "30", "--enqueue-only-jobs", "0",
        "--enqueue-many-jobs", "50000", "--startup-reps", "0"]
DEDICATED = ["--mode", "dedicated", "--producer", "batch", "--jobs", "5000", "--free-jobs",
             "0", *PACED, "--scheduled-jobs", "10", "--scheduled-free-jobs", "2", "--idle-s", "0",
             "--enqueue-only-jobs", "0", "--enqueue-many-jobs", "0", "--startup-reps", "0"]
WORKER_PATH = ["--jobs", "3000"]
# bench.peers's --timeout-s bounds each system's workload: the run is not given ours.
PEERS_ARGS = ["--jobs", "2000", "--warm-noop", "400", "--workloads", "noop", "--timeout-s",
              "120", "--systems", "gristmill-dedicated", *PEERS]


def measure(skip_peers: bool, timeout_s: float, tmp: Path) -> Figures:
    deadline = time.monotonic() + timeout_s
    figures = Figures(cpus=os.cpu_count() or 2, paced_rate=PACED_RATE)
    for mode, args in (("warm", WARM), ("dedicated", DEDICATED)):
        report = _run("bench.throughput", args, tmp / f"{mode}.json", deadline)
        if report is not None:
            read_throughput(report, figures, mode)
    path = _run("bench.worker_path", WORKER_PATH, tmp / "worker_path.json", deadline)
    if path is not None:
        figures.round_trips_per_job = path.get("round_trips_per_job")
    installed = all(importlib.util.find_spec(peer) is not None for peer in PEERS)
    if skip_peers or not installed:
        if not skip_peers:
            print("scorecard: the peers are not installed here (make bench runs in "
                  ".venv-bench); the dedicated row is not run", file=sys.stderr)
    else:
        peers = _run("bench.peers", PEERS_ARGS, tmp / "peers.json", deadline, bounded=False)
        if peers is not None:
            read_peers(peers, figures)
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scorecard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-peers", action="store_true", help="leave bench.peers out")
    p.add_argument("--timeout-s", type=float, default=900.0,
                   help="for all the runs together (default 900)")
    p.add_argument("--json-out", metavar="PATH", help="also write the figures and rows as JSON")
    ns = p.parse_args(argv)
    started = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="gristmill-scorecard-") as tmp:
        figures = measure(ns.skip_peers, ns.timeout_s, Path(tmp))
    scored = rows(figures)
    print(f"machine: {figures.cpus} CPUs, Python {sys.version.split()[0]}, load average at "
          f"start {[round(x, 2) for x in started]}, at end "
          f"{[round(x, 2) for x in os.getloadavg()]}")
    print(table(scored))
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps(
            {"figures": figures.__dict__, "rows": [r.__dict__ for r in scored]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
