"""Gristmill beside the job queues users would pick instead: RQ, SAQ, Dramatiq, Huey.

    make bench-peers ARGS="--jobs 2000"      # python -m bench.peers, in .venv-bench

One private Redis server (a free loopback port, a password) serves every
system in turn, emptied between runs. Each system gets 2 worker processes of
4 slots where it has slots (RQ: 2 workers, one job at a time each, forking a
work horse per job as it does by default; SAQ: 2 workers x 4 concurrent
coroutines; Dramatiq: 2 processes x 4 threads; Huey: 2 consumers x 4 threads;
Gristmill: 2 workers x 4 slots, warm sandboxed, or dedicated: by default a
sandboxed process per slot for the script's sync main; as before this session
one process per worker (``--dedicated-processes 1``), one job at a time; or one
process on 4 threads (``--dedicated-threads 4``)), started and
warmed up (a few jobs run) before anything is measured. Workloads, from one
producer in this process:

* ``noop``: N jobs that do nothing, enqueued at once (each system's bulk call
  where it has one); jobs/s from the first enqueue to the last completion;
* ``sleep``: M jobs that sleep 10 ms, the same way;
* ``scheduled``: S jobs due ``--ahead-s`` from now, spread over 1 s: how late
  each started (p50, p99).

Peers count their completions with one INCR per job (``bench/peer_tasks.py``);
Gristmill's figures come from its job records. Everything is bounded: the
counts above and ``--timeout-s`` per workload; every process is stopped at
the end, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.fleet import stop_on_sigterm
from bench.peer_tasks import lateness_ms
from bench.stats import summarize
from gristmill.embedded import EmbeddedRedis, free_port

WORKERS = 2
SLOTS = 4
WORKLOADS = ("noop", "sleep", "scheduled")
NOOP_CODE = "def main(due_ms: int = 0, sleep_ms: int = 0):\n    return 1\n"
SLEEP_CODE = ("import time\n\n\ndef main(due_ms: int = 0, sleep_ms: int = 0):\n"
              "    time.sleep(sleep_ms / 1000)\n    return 1\n")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# How each peer is told a due time (an epoch in ms, as Gristmill's scheduled_for is).
# Pure functions, tested in tests/unit/test_bench_peers.py: every system must be
# given the same instant, to the millisecond, whatever the machine's time zone.
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def due_datetime(due_ms: int) -> dt.datetime:
    """An aware UTC datetime, exact to the millisecond (RQ's enqueue_at, Huey's eta).

    Never a naive one: Huey reads a naive eta as local time and converts it with
    ``time.mktime(eta.timetuple())``, which drops the fraction of a second, so its
    jobs were due up to 1 s early (the negative lateness of the earlier runs). An
    aware eta keeps its microseconds.
    """
    return _EPOCH + dt.timedelta(milliseconds=due_ms)


def due_seconds(due_ms: int) -> float:
    """Epoch seconds with the fraction (SAQ's ``scheduled``)."""
    return due_ms / 1000


def delay_ms(due_ms: int, at_ms: int) -> int:
    """A delay from ``at_ms`` (Dramatiq's ``delay``); a due time already past is no delay."""
    return max(0, due_ms - at_ms)


class Stop(Exception):
    """A workload ran past its time bound."""


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise Stop(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.002)


class System:
    """One job queue under test: how to start its workers, enqueue, and read its figures."""

    name = ""
    package = ""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url, self.tmp = url, tmp
        self.client = redis.Redis.from_url(url)
        self.procs: list[subprocess.Popen[bytes]] = []

    def version(self) -> str:
        return importlib.metadata.version(self.package)

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")},
                "BENCH_REDIS_URL": self.url, "BENCH_PEER": self.name,
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

    def commands(self) -> list[list[str]]:
        raise NotImplementedError

    def start(self) -> None:
        for i, argv in enumerate(self.commands()):
            log = (self.tmp / f"{self.name}-{i}.log").open("wb")
            self.procs.append(subprocess.Popen(argv, env=self.env(), cwd=self.tmp,
                                               stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        raise NotImplementedError

    def done(self) -> int:
        return int(self.client.get("bench:done") or 0)

    def lateness_ms(self) -> list[float]:
        return [float(x) for x in self.client.lrange("bench:late", 0, -1)]

    def reset(self) -> None:
        self.client.delete("bench:done", "bench:late")

    def finished(self, count: int) -> bool:
        """``count`` jobs done; Stop when a worker process has exited meanwhile."""
        for proc in self.procs:
            if proc.poll() is not None:
                raise Stop(f"{self.name}: a worker exited with {proc.returncode}")
        return self.done() >= count


_TASKS: dict[str, Any] = {}


def tasks_for(peer: str, url: str) -> Any:
    """``bench.peer_tasks`` as the producer of ``peer`` sees it (a module of its own per peer)."""
    if peer not in _TASKS:
        import importlib.util

        os.environ.update(BENCH_PEER=peer, BENCH_REDIS_URL=url)
        spec = importlib.util.find_spec("bench.peer_tasks")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _TASKS[peer] = module
    return _TASKS[peer]


class Rq(System):
    name = package = "rq"

    def commands(self) -> list[list[str]]:
        rq = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url, "-q"]
        return [[*rq, "--with-scheduler", "bench"], [*rq, "bench"]]

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        from rq import Queue

        queue = Queue("bench", connection=self.client)
        if due_ms:
            at = due_datetime(due_ms)  # RQ keeps whole seconds of it: see docs/BENCHMARKS.md
            for _ in range(count):
                queue.enqueue_at(at, "bench.peer_tasks.work", due_ms, sleep_ms)
            return
        queue.enqueue_many([Queue.prepare_data("bench.peer_tasks.work", (0, sleep_ms))
                            for _ in range(count)])


class Saq(System):
    name = package = "saq"

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "saq", "bench.peer_tasks.settings", "--quiet"]
                for _ in range(WORKERS)]

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        import asyncio

        from saq import Queue

        async def put() -> None:
            queue = Queue.from_url(self.url, name="bench")
            kwargs: dict[str, Any] = {"scheduled": due_seconds(due_ms)} if due_ms else {}
            for _ in range(count):
                await queue.enqueue("saq_work", due_ms=due_ms, sleep_ms=sleep_ms, **kwargs)
            await queue.disconnect()

        asyncio.run(put())


class Dramatiq(System):
    name = package = "dramatiq"

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "dramatiq", "bench.peer_tasks", "--processes",
                 str(WORKERS), "--threads", str(SLOTS), "--queues", "bench"]]

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        peer_tasks = tasks_for(self.name, self.url)
        for _ in range(count):
            delay = delay_ms(due_ms, now_ms()) if due_ms else None
            peer_tasks.task.send_with_options(args=(due_ms, sleep_ms), delay=delay)


class Huey(System):
    name = package = "huey"

    def commands(self) -> list[list[str]]:
        return [[sys.executable, "-m", "huey.bin.huey_consumer", "bench.peer_tasks.huey",
                 "-w", str(SLOTS), "-k", "thread", "-q"] for _ in range(WORKERS)]

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        peer_tasks = tasks_for(self.name, self.url)
        for _ in range(count):
            if due_ms:
                peer_tasks.task.schedule(args=(due_ms, sleep_ms), eta=due_datetime(due_ms))
            else:
                peer_tasks.task(0, sleep_ms)


class Gristmill(System):
    """Gristmill itself: a scheduler and 2 workers; ``dedicated`` keeps the script imported."""

    package = "gristmill"

    def __init__(self, url: str, tmp: Path, mode: str) -> None:
        super().__init__(url, tmp)
        self.name = f"gristmill-{mode}"
        self.mode = mode
        from gristmill.client import Gristmill as Client

        self.gm = Client(url)
        self.ids: list[str] = []

    def version(self) -> str:
        return "0.1.0 (this tree)"

    def env(self) -> dict[str, str]:
        return {**super().env(), "GRISTMILL_REDIS_URL": self.url, "GRISTMILL_LOG_LEVEL": "warning"}

    def commands(self) -> list[list[str]]:
        exe = [sys.executable, "-m", "gristmill"]
        dedicated = ["--dedicated", "u/bench/noop", "--dedicated", "u/bench/sleep"] \
            if self.mode.startswith("dedicated") else []
        if self.mode == "dedicated-threads":
            dedicated += ["--dedicated-threads", str(SLOTS)]
        if self.mode == "dedicated-1":
            dedicated += ["--dedicated-processes", "1"]
        return [[*exe, "scheduler"], *([*exe, "worker", "--concurrency", str(SLOTS),
                                        *dedicated] for _ in range(WORKERS))]

    def start(self) -> None:
        self.gm.deploy_script("u/bench/noop", NOOP_CODE, "python3")
        self.gm.deploy_script("u/bench/sleep", SLEEP_CODE, "python3")
        super().start()

    def enqueue(self, count: int, sleep_ms: int, due_ms: int = 0) -> None:
        path = "u/bench/sleep" if sleep_ms else "u/bench/noop"
        spec: dict[str, Any] = {"path": path, "args": {"sleep_ms": sleep_ms}}
        if due_ms:
            spec["scheduled_for"] = due_ms
        self.ids += self.gm.enqueue_many([dict(spec) for _ in range(count)]).ids

    def _records(self) -> list[list[bytes | None]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in self.ids:
            pipe.hmget(f"gm:{{wg:default}}:job:{job_id}", "status", "started_at",
                       "scheduled_for", "completed_at")
        return pipe.execute()  # type: ignore[no-any-return]

    def done(self) -> int:
        return int(self.client.zcard("gm:{wg:default}:completed"))

    def lateness_ms(self) -> list[float]:
        return [lateness_ms(int(r[1]), int(r[2] or 0)) for r in self._records() if r[1] is not None]

    def reset(self) -> None:
        self.client.delete("gm:{wg:default}:completed")
        self.ids = []


def run_workload(system: System, workload: str, ns: argparse.Namespace) -> dict[str, Any]:
    system.reset()
    if workload == "scheduled":
        base = now_ms() + int(ns.ahead_s * 1000)
        step = 1000 / max(ns.scheduled - 1, 1)
        started = time.monotonic()
        for i in range(ns.scheduled):
            system.enqueue(1, 0, base + int(i * step))
        enqueue_s = time.monotonic() - started
        wait_until(lambda: system.finished(ns.scheduled), ns.timeout_s,
                   f"{system.name}: {ns.scheduled} scheduled jobs")
        late = summarize(system.lateness_ms())
        return {"jobs": ns.scheduled, "enqueue_s": round(enqueue_s, 3),
                "late_min_ms": round(late.min, 1) if late else None,  # < 0: started early
                "late_p50_ms": round(late.p50, 1) if late else None,
                "late_p99_ms": round(late.p99, 1) if late else None}
    count, sleep_ms = (ns.jobs, 0) if workload == "noop" else (ns.sleep_jobs, 10)
    started = time.monotonic()
    system.enqueue(count, sleep_ms)
    enqueue_s = time.monotonic() - started
    wait_until(lambda: system.finished(count), ns.timeout_s,
               f"{system.name}: {count} {workload} jobs")
    wall_s = time.monotonic() - started
    return {"jobs": count, "enqueue_s": round(enqueue_s, 3), "wall_s": round(wall_s, 3),
            "jobs_per_s": round(count / wall_s, 1)}


def bench_one(system: System, ns: argparse.Namespace) -> dict[str, Any]:
    print(f"bench-peers: {system.name}", file=sys.stderr, flush=True)
    system.client.flushdb()
    system.start()
    try:
        system.enqueue(8, 50)  # warm-up: every process up and a job each
        wait_until(lambda: system.finished(8), ns.timeout_s,
                   f"{system.name} to start (warm-up jobs)")
        if ns.warm_noop:  # the no-op task's code loaded too (a dedicated worker's processes
            system.reset()  # for that script: started once per worker, at its first burst)
            system.enqueue(ns.warm_noop, 0)
            wait_until(lambda: system.finished(ns.warm_noop), ns.timeout_s,
                       f"{system.name}: {ns.warm_noop} warm-up no-op jobs")
        out: dict[str, Any] = {"version": system.version()}
        for workload in ns.workloads:
            out[workload] = run_workload(system, workload, ns)
            print(f"bench-peers:   {workload}: {out[workload]}", file=sys.stderr, flush=True)
        return out
    except Exception as exc:  # one system failing must not lose the others' figures
        return {"version": system.version(), "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        system.stop()


def table(results: dict[str, dict[str, Any]], ns: argparse.Namespace) -> str:
    lines = [f"| system | version | no-op jobs/s ({ns.jobs}) | 10 ms sleep jobs/s "
             f"({ns.sleep_jobs}) | scheduled {ns.ahead_s:g} s ahead: late p50 / p99 ms "
             f"({ns.scheduled}) |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['version']} | {r['error']} | | |")
            continue
        noop, sleep, sched = r.get("noop", {}), r.get("sleep", {}), r.get("scheduled", {})
        lines.append(f"| {name} | {r['version']} | {noop.get('jobs_per_s', '-')} | "
                     f"{sleep.get('jobs_per_s', '-')} | {sched.get('late_p50_ms', '-')} / "
                     f"{sched.get('late_p99_ms', '-')} |")
    return "\n".join(lines)


SYSTEMS: dict[str, Callable[[str, Path], System]] = {
    "gristmill-warm": lambda url, tmp: Gristmill(url, tmp, "warm"),
    "gristmill-dedicated": lambda url, tmp: Gristmill(url, tmp, "dedicated"),
    "gristmill-dedicated-1": lambda url, tmp: Gristmill(url, tmp, "dedicated-1"),
    "gristmill-dedicated-threads": lambda url, tmp: Gristmill(url, tmp, "dedicated-threads"),
    "rq": Rq, "saq": Saq, "dramatiq": Dramatiq, "huey": Huey,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000, help="no-op jobs (default 2000)")
    p.add_argument("--sleep-jobs", type=int, default=800, help="10 ms jobs (default 800)")
    p.add_argument("--scheduled", type=int, default=200, help="scheduled jobs (default 200)")
    p.add_argument("--ahead-s", type=float, default=2.0, help="scheduled this far ahead")
    p.add_argument("--timeout-s", type=float, default=120.0, help="bound of each workload")
    p.add_argument("--warm-noop", type=int, default=0, metavar="N",
                   help="also run N no-op jobs, in one burst, before measuring (default 0): "
                        "Gristmill dedicated starts a script's processes at its first burst, "
                        "so without it the no-op figure includes 8 sandboxed starts")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--json-out", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    stop_on_sigterm()  # a SIGTERM stops every system and the Redis, as Ctrl-C does
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="gristmill-peers-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = EmbeddedRedis(tmp / "redis", port=free_port(),
                               password=secrets.token_urlsafe(16),
                               binary=os.environ.get("GRISTMILL_REDIS_SERVER") or None)
        machine["redis"] = server.start()
        try:
            for name in ns.systems:
                results[name] = bench_one(SYSTEMS[name](server.url, tmp), ns)
        finally:
            server.stop()
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"machine: {machine}")
    print(table(results, ns))
    if ns.json_out:
        Path(ns.json_out).write_text(json.dumps({"machine": machine, "config": vars(ns),
                                                 "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
