"""Chaos: 500 jobs through SIGKILLed workers, a SIGSTOPped worker, a Redis restart,
Redis at maxmemory, and a CLIENT PAUSE.

Two schedulers and three workers (4 jobs each) run 500 python3 previews, each
sleeping a seeded random 20-300 ms and returning its index. While they run,
the test SIGKILLs a random worker ten times (starting a replacement each
time), SIGSTOPs one worker past its lease and continues it once its jobs were
recovered, restarts Redis (appendfsync always) once, holds Redis at its
``maxmemory`` (noeviction: every write refused with OOM) for a while, and
pauses every client (``CLIENT PAUSE ... ALL``) for a while. Then every job must
have completed exactly once, with its own index as result; jobs that ran more
than once (at-least-once) are counted from a file every run appends to, and
reported, not failed.

Waits are on conditions (``Gristmill.wait``, ``XREAD BLOCK``); the only timed
pauses are the chaos schedule itself. Two bugs it found (a claim whose BLMOVE
reply was lost, a runner crash during a Redis restart) left jobs running
forever; the worker now reconciles its running list on every heartbeat and
records a crashed run as failed, and this test fails on any unfinished job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from common.errors import DuplicateJob, JobTimeout, RedisUnavailable
from common.models import Job
from gristmill.client import Gristmill
from gristmill.embedded_cluster import EmbeddedCluster
from tests.chaos.conftest import STOP_TIMEOUT_S, ChaosFleet, Proc
from tests.conftest import RedisUnderTest, client_for

pytestmark = pytest.mark.timeout(420)

SEED = 1729
JOBS = 500
WORKERS = 3
SCHEDULERS = 2  # both recover dead workers: a job must never be re-queued twice
KILLS = 10
SLEEP_MS = (20, 300)
SIGSTOP_S = 5.0
ENQUEUE_ATTEMPTS = 40  # with backoff: outlives a Redis restart and the OOM episode
RECOVERY_WAIT_S = 30.0
BUSY_WAIT_S = 10.0
DRAIN_TIMEOUT_S = 90.0
EVENTS = "gm:{wg:default}:events"

# The chaos schedule, in seconds after enqueueing started (the producer runs
# alongside): a kill about every 2.5 s, a SIGSTOP between kills, and a gap of
# 3.5 s around the Redis restart so that no kill's recovery is measured across it.
KILL_AT_S = (3.0, 5.5, 8.0, 10.5, 13.0, 20.0, 22.5, 25.0, 27.5, 30.0)
SIGSTOP_AT_S = 6.5
REDIS_RESTART_AT_S = 16.5
# Between the restart's gap and the next kill, and between two kills (whose
# jitter keeps them at least 1.7 s apart): OOM for 1.5 s, every client paused 1 s.
MAXMEMORY_AT_S, MAXMEMORY_S = 18.0, 1.5
CLIENT_PAUSE_AT_S, CLIENT_PAUSE_MS = 11.6, 1000
JITTER_S = 0.4
ENQUEUE_BACKOFF_S = (0.1, 2.0)  # first and longest wait between tries of one enqueue

# Each run appends one line to the shared file, in one write to an O_APPEND
# descriptor (atomic), before doing its work.
JOB_CODE = """\
import os
import time

def main(index: int, runs_file: str, sleep_ms: int):
    line = f"{index} {os.environ['WM_JOB_ID']} pid={os.getpid()}\\n".encode()
    fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    time.sleep(sleep_ms / 1000)
    return index
"""


@dataclass
class Held:
    """A worker put out of action (SIGKILL or SIGSTOP): when, and the jobs it was running."""

    proc: Proc
    worker_id: str | None
    at_ms: float
    running: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)


def registered_workers(client: redis.Redis) -> dict[int, str]:
    """Worker id by pid, for every worker registered in ``gm:workers``."""
    ids = [raw.decode() for raw in client.zrange("gm:workers", 0, -1)]
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hget(f"gm:worker:{worker_id}", "pid")
    return {int(pid): worker_id for worker_id, pid in zip(ids, pipe.execute(), strict=True) if pid}


def running_jobs(client: redis.Redis, worker_id: str) -> list[str]:
    """Ids in the worker's running list that it had started (status running, its worker id).

    An id it had taken off ready but not started yet is put back silently by
    recovery (no ``requeued`` event), so it is left out of the measurement.
    """
    ids = [raw.decode() for raw in client.lrange(f"gm:{{wg:default}}:running:{worker_id}", 0, -1)]
    pipe = client.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(f"gm:{{wg:default}}:job:{job_id}", "status", "worker")
    return [
        job_id for job_id, (status, worker) in zip(ids, pipe.execute(), strict=True)
        if status == b"running" and worker == worker_id.encode()
    ]


def read_events(client: redis.Redis) -> list[tuple[int, dict[str, str]]]:
    """The group's whole event stream as (server time in ms, fields), oldest first."""
    out: list[tuple[int, dict[str, str]]] = []
    start = "-"
    while True:
        page = client.xrange(EVENTS, min=start, count=1000)
        for entry_id, raw in page:
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            out.append((int(entry_id.decode().split("-")[0]), fields))
        if len(page) < 1000:
            return out
        start = f"({page[-1][0].decode()}"


def wait_requeued(client: redis.Redis, worker_id: str, job_ids: list[str], after_ms: float,
                  timeout_s: float) -> None:
    """Block (XREAD BLOCK) until a ``requeued`` event of ``worker_id`` names every id given."""
    missing = set(job_ids)
    after = f"{int(after_ms)}-0"
    end = time.monotonic() + timeout_s
    while missing:
        left_ms = int((end - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise AssertionError(
                f"jobs {sorted(missing)} of stopped worker {worker_id} not re-queued "
                f"within {timeout_s:g} s")
        for _, entries in client.xread({EVENTS: after}, count=500, block=left_ms) or []:
            for entry_id, raw in entries:
                after = entry_id.decode()
                if raw.get(b"event") == b"requeued" and raw.get(b"worker") == worker_id.encode():
                    missing.discard(raw[b"id"].decode())


def enqueue(gm: Gristmill, job_id: str, args: dict[str, Any]) -> int:
    """Enqueue one job under its own id; return how many tries it took.

    An enqueue that raised RedisUnavailable was not acknowledged, so it is
    retried with the same id; DuplicateJob then means a try whose answer was
    lost had in fact been written (the ids are fresh uuid4s of this test).
    """
    delay = ENQUEUE_BACKOFF_S[0]
    for attempt in range(1, ENQUEUE_ATTEMPTS + 1):
        try:
            gm.submit({"id": job_id, "code": JOB_CODE, "language": "python3", "args": args})
            return attempt
        except DuplicateJob:
            return attempt
        except RedisUnavailable:
            if attempt == ENQUEUE_ATTEMPTS:
                raise
            # Reachable but refusing (OOM) answers a ping at once: back off as well.
            gm.ping(timeout_s=15.0)
            time.sleep(delay)  # the producer's backoff between tries
            delay = min(delay * 2, ENQUEUE_BACKOFF_S[1])
    raise AssertionError("unreachable")


def refused_completions(log_path: Path) -> set[str]:
    """Job ids whose late completion a worker's JSON log says was refused (fenced off)."""
    refused = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if "late completion refused" not in line:
            continue
        try:
            refused.add(str(json.loads(line)["job_id"]))
        except (ValueError, KeyError):
            continue
    return refused


class Producer:
    """Enqueues the jobs in a thread of its own, recording which were acknowledged."""

    def __init__(self, redis_url: str, ids: list[str], args: list[dict[str, Any]]) -> None:
        self.redis_url = redis_url
        self.ids = ids
        self.args = args
        self.acked: list[str] = []
        self.tries = 0

    def run(self) -> None:
        """Enqueue every job in order, each acknowledged before the next."""
        gm = Gristmill(self.redis_url)
        try:
            for job_id, args in zip(self.ids, self.args, strict=True):
                self.tries += enqueue(gm, job_id, args)
                self.acked.append(job_id)
        finally:
            gm.redis.close()


class Chaos:
    """The chaos actions on one fleet, and what each of them left to check."""

    def __init__(self, fleet: ChaosFleet, server: RedisUnderTest, client: redis.Redis,
                 producer: Producer, rng: random.Random) -> None:
        self.fleet = fleet
        self.producer = producer
        self.server = server
        self.client = client
        self.rng = rng
        self.kills: list[Held] = []
        self.stopped: Held | None = None
        self.redis_down_ms: list[float] = []
        self.acked_at_restart = 0
        self.oom_refusals = 0
        self.paused = False

    def _pick(self, *, busy: bool = False) -> tuple[Proc, str | None]:
        """A random live worker, registered if any is (its id names its running list).

        ``busy``: only among those running jobs right now.
        """
        ids = registered_workers(self.client)
        paused = self.stopped.proc if self.stopped is not None else None
        live = [p for p in self.fleet.live_workers() if p is not paused]
        registered = [p for p in live if p.pid in ids]
        if busy:
            registered = [p for p in registered if running_jobs(self.client, ids[p.pid])]
        victim = self.rng.choice(registered or live)
        return victim, ids.get(victim.pid)

    def kill_worker(self) -> None:
        """SIGKILL a random worker, note the jobs it was running, start a replacement."""
        victim, worker_id = self._pick()
        at_ms = time.time() * 1000
        os.kill(victim.pid, signal.SIGKILL)
        victim.popen.wait(STOP_TIMEOUT_S)
        self.fleet.worker()
        running = running_jobs(self.client, worker_id) if worker_id else []
        self.kills.append(Held(victim, worker_id, at_ms, running))

    def sigstop_worker(self) -> None:
        """SIGSTOP a random busy worker; it stays stopped longer than its lease."""
        # On a loaded machine every worker may be between jobs (or still starting) at
        # the scheduled instant: wait for a busy registered one (nothing signals it).
        end = time.monotonic() + BUSY_WAIT_S
        victim, worker_id = self._pick(busy=True)
        while worker_id is None or not running_jobs(self.client, worker_id):
            assert time.monotonic() < end, "no registered worker busy enough to SIGSTOP"
            time.sleep(0.05)
            victim, worker_id = self._pick(busy=True)
        at_ms = time.time() * 1000
        os.kill(victim.pid, signal.SIGSTOP)
        running = running_jobs(self.client, worker_id)
        assert running, f"worker {worker_id} was running no job when stopped"
        pipe = self.client.pipeline(transaction=False)
        for job_id in running:
            pipe.hget(f"gm:{{wg:default}}:job:{job_id}", "attempt")
        attempts = {job_id: int(n) for job_id, n in zip(running, pipe.execute(), strict=True)}
        self.stopped = Held(victim, worker_id, at_ms, running, attempts)

    def sigcont_worker(self) -> None:
        """Once the stopped worker's jobs were re-queued (lease over), SIGCONT it."""
        stopped = self.stopped
        assert stopped is not None and stopped.worker_id is not None
        wait_requeued(self.client, stopped.worker_id, stopped.running, stopped.at_ms,
                      RECOVERY_WAIT_S)
        os.kill(stopped.proc.pid, signal.SIGCONT)

    def restart_redis(self) -> None:
        """Stop Redis (SIGTERM) and start it on the same port and data: no acknowledged job lost."""
        acked = list(self.producer.acked)
        self.acked_at_restart = len(acked)
        started = time.monotonic()
        self.server.stop()
        self.server.start()
        self.redis_down_ms.append((time.monotonic() - started) * 1000)
        if isinstance(self.server, EmbeddedCluster):
            self.client.disconnect_connection_pools()
        else:
            self.client.connection_pool.disconnect()
        pipe = self.client.pipeline(transaction=False)
        for job_id in acked:
            pipe.exists(f"gm:{{wg:default}}:job:{job_id}")
        lost = [job_id for job_id, found in zip(acked, pipe.execute(), strict=True) if not found]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged jobs lost by the Redis restart"


    def servers(self) -> list[redis.Redis]:
        """A plain client on the server, or on each node of the cluster (close them)."""
        if isinstance(self.server, EmbeddedCluster):
            return [node.client() for node in self.server.primary_nodes()]
        return [redis.Redis.from_url(self.server.url)]

    def on_each(self, *command: str | int) -> None:
        for server in self.servers():
            with server:
                server.execute_command(*command)

    def fill_memory(self) -> None:
        """Redis at maxmemory (noeviction) for MAXMEMORY_S: every write refused with OOM
        (on a cluster, on every shard at once)."""
        self.on_each("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.on_each("CONFIG", "SET", "maxmemory", 1)
        before = self.oom_count()
        time.sleep(MAXMEMORY_S)  # the episode's length (the schedule)
        self.on_each("CONFIG", "SET", "maxmemory", 0)
        self.oom_refusals = self.oom_count() - before

    def oom_count(self) -> int:
        """Commands Redis refused with OOM since it started (INFO errorstats), on every shard."""
        total = 0
        for server in self.servers():
            with server:
                stats = server.info("errorstats").get("errorstat_OOM")
            total += int(stats["count"]) if stats else 0
        return total

    def pause_clients(self) -> None:
        """CLIENT PAUSE ALL: every command of every client waits for CLIENT_PAUSE_MS."""
        self.on_each("CLIENT", "PAUSE", CLIENT_PAUSE_MS, "ALL")
        self.paused = True


def chaos_schedule(chaos: Chaos, rng: random.Random) -> list[tuple[float, Callable[[], None]]]:
    """The chaos actions with their times (seconds from the start), jittered, in order."""
    steps: list[tuple[float, Callable[[], None]]] = [
        (at + rng.uniform(-JITTER_S, JITTER_S), chaos.kill_worker) for at in KILL_AT_S
    ]
    steps.append((SIGSTOP_AT_S, chaos.sigstop_worker))
    steps.append((SIGSTOP_AT_S + SIGSTOP_S, chaos.sigcont_worker))
    steps.append((REDIS_RESTART_AT_S, chaos.restart_redis))
    steps.append((MAXMEMORY_AT_S, chaos.fill_memory))
    steps.append((CLIENT_PAUSE_AT_S, chaos.pause_clients))
    return sorted(steps, key=lambda step: step[0])


def drain(gm: Gristmill, ids: list[str], timeout_s: float) -> tuple[dict[str, Job], list[str]]:
    """Wait for every job (one overall deadline); return the terminal records and the ids left."""
    deadline = time.monotonic() + timeout_s
    done: dict[str, Job] = {}
    left: list[str] = []
    for job_id in ids:
        try:
            done[job_id] = gm.wait(job_id, timeout_s=max(0.1, deadline - time.monotonic()))
        except JobTimeout:
            left.append(job_id)
    return done, left


def describe_job(client: redis.Redis, job_id: str, events: list[tuple[int, dict[str, str]]]) -> str:
    """Where a job that never completed is stuck: its record, the lists holding it, its events."""
    record = {k.decode(): v.decode(errors="replace")
              for k, v in client.hgetall(f"gm:{{wg:default}}:job:{job_id}").items()
              if k not in (b"code", b"args")}
    history = [f"{ts_ms} {fields}" for ts_ms, fields in events if fields.get("id") == job_id]
    return f"{job_id} record={record} in_lists={lists_holding(client, job_id)} events={history}"


def lists_holding(client: redis.Redis, job_id: str) -> list[str]:
    """The group's lists (ready, running:<worker>, ...) that hold ``job_id``."""
    return [key.decode() for key in client.scan_iter(match="gm:{wg:default}:*", count=1000)
            if client.type(key) == b"list" and client.lpos(key, job_id) is not None]


def runs_by_index(runs_file: Path, ids: list[str]) -> Counter[int]:
    """How many times each job ran, from the shared file; checks each line's job id."""
    runs: Counter[int] = Counter()
    for line in runs_file.read_text().splitlines():
        index_text, job_id, _marker = line.split(" ")
        index = int(index_text)
        assert ids[index] == job_id, f"run line {line!r}: job {index} is {ids[index]}"
        runs[index] += 1
    return runs


def percentile_50(values: list[float]) -> str:
    """The median as whole ms, or 'n/a' for no values."""
    return f"{statistics.median(values):.0f}" if values else "n/a"


def test_jobs_survive_worker_kills_pauses_and_a_redis_restart(
    chaos_fleet: ChaosFleet, chaos_redis: RedisUnderTest, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every job completes exactly once through the chaos; re-runs are counted, not failed."""
    test_started = time.monotonic()
    rng = random.Random(SEED)
    runs_file = chaos_fleet.share / "runs.txt"
    runs_file.touch()
    runs_file.chmod(0o666)  # every job has a uid of its own: all of them append here
    gm = Gristmill(chaos_redis.url)
    client = client_for(chaos_redis.url)
    try:
        for _ in range(SCHEDULERS):
            chaos_fleet.scheduler()
        for _ in range(WORKERS):
            chaos_fleet.worker()

        ids = [str(uuid.uuid4()) for _ in range(JOBS)]
        job_args: list[dict[str, Any]] = [
            {"index": i, "runs_file": str(runs_file), "sleep_ms": rng.randint(*SLEEP_MS)}
            for i in range(JOBS)
        ]
        producer = Producer(chaos_redis.url, ids, job_args)
        chaos = Chaos(chaos_fleet, chaos_redis, client, producer, rng)
        with ThreadPoolExecutor(1, thread_name_prefix="producer") as pool:
            chaos_started = time.monotonic()
            producing = pool.submit(producer.run)
            for at_s, action in chaos_schedule(chaos, rng):
                time.sleep(max(0.0, chaos_started + at_s - time.monotonic()))  # the schedule
                action()
            producing.result(timeout=DRAIN_TIMEOUT_S)
        assert len(chaos.kills) == KILLS
        assert len(chaos_fleet.live_workers()) == WORKERS
        assert chaos.oom_refusals > 0, "the maxmemory episode refused no write"
        assert chaos.paused

        done, left = drain(gm, ids, DRAIN_TIMEOUT_S)
        events = read_events(client)
        stuck = {job_id: describe_job(client, job_id, events) for job_id in left}
        attempts = {job_id: [entry["status"] for entry in gm.store.attempts(job)]
                    for job_id, job in done.items()}
    finally:
        gm.redis.close()
        client.close()

    completed: Counter[str] = Counter()
    requeued_at: dict[tuple[str, str], int] = {}
    requeues: Counter[tuple[str, str]] = Counter()
    for ts_ms, fields in events:
        if fields["event"] == "completed":
            completed[fields["id"]] += 1
        elif fields["event"] == "requeued":
            requeued_at.setdefault((fields["worker"], fields["id"]), ts_ms)
            requeues[(fields["worker"], fields["id"])] += 1
    twice = [pair for pair, count in requeues.items() if count > 1]
    assert not twice, f"jobs re-queued more than once for the same dead worker: {twice}"

    # Every job: one completed record, its own index as result (or a true WorkerLost).
    started_pids = chaos_fleet.started_pids()
    problems = [f"job {ids.index(job_id)} never completed: {what}"
                for job_id, what in stuck.items()]
    for index, job_id in enumerate(ids):
        job = done.get(job_id)
        if job is None:
            continue
        if completed[job_id] != 1:
            problems.append(f"job {index}: {completed[job_id]} completed events")
        if job.status == "success":
            if job.result != index:
                problems.append(f"job {index}: result {job.result!r}")
            if attempts[job_id].count("success") != 1:
                problems.append(f"job {index}: attempts {attempts[job_id]}")
        elif not (job.status == "failure" and job.error and job.error["name"] == "WorkerLost"
                  and any(f"-{pid}-" in job.error["message"] for pid in started_pids)):
            problems.append(f"job {index}: {job.status} {job.error}")
    assert not problems, "\n".join(problems[:50])

    # Runs: every completed job ran at least once; more is at-least-once, reported.
    runs = runs_by_index(runs_file, ids)
    never_ran = [i for i in range(JOBS) if runs[i] == 0 and ids[i] in done
                 and done[ids[i]].status == "success"]
    assert not never_ran, f"jobs completed without a run: {never_ran}"
    duplicates = sum(1 for count in runs.values() if count > 1)

    # Recovery of each SIGKILL: until every job the dead worker was running is re-queued.
    recovery_ms: list[float] = []
    for kill in chaos.kills:
        if kill.worker_id is None or not kill.running:
            continue
        not_requeued = [j for j in kill.running if (kill.worker_id, j) not in requeued_at]
        assert not not_requeued, f"jobs of killed {kill.worker_id} never re-queued: {not_requeued}"
        recovery_ms.append(max(requeued_at[(kill.worker_id, j)] for j in kill.running) - kill.at_ms)
    assert recovery_ms, "no kill hit a worker that was running jobs"
    assert min(recovery_ms) > 0, f"re-queued before the kill? {recovery_ms}"

    # Fencing: the paused worker's jobs were re-queued (checked before SIGCONT) and
    # completed by a later attempt (possibly its own, claimed anew after SIGCONT);
    # the late completions of the paused attempts were refused.
    stopped = chaos.stopped
    assert stopped is not None and stopped.worker_id is not None
    for job_id, stale in stopped.attempts.items():
        assert job_id not in done or done[job_id].attempt > stale, (
            f"job {job_id}: the paused attempt {stale} completed it")
    refused = refused_completions(stopped.proc.log_path)
    assert set(stopped.running) <= refused, (
        f"stopped worker's completions not refused: {set(stopped.running) - refused}")

    summary = (
        f"chaos: jobs={JOBS} schedulers={SCHEDULERS} worker_kills={len(chaos.kills)} sigstops=1 "
        f"redis_restarts={len(chaos.redis_down_ms)} oom_refusals={chaos.oom_refusals} "
        f"client_pauses=1 lost={len(left)} duplicates={duplicates} "
        f"max_runs={max(runs.values())} recovery_p50_ms={percentile_50(recovery_ms)} "
        f"recovery_max_ms={max(recovery_ms):.0f} recovery_samples={len(recovery_ms)} "
        f"fenced_refused={len(refused)} redis_down_ms={chaos.redis_down_ms[0]:.0f} "
        f"acked_at_restart={chaos.acked_at_restart} "
        f"enqueue_retries={producer.tries - JOBS} seed={SEED} "
        f"elapsed_s={time.monotonic() - test_started:.0f}"
    )
    with capsys.disabled():
        print(f"\n{summary}", flush=True)
