"""Chaos for flows: 200 flows of 5-20 steps while workers are SIGKILLed, a scheduler is
SIGKILLed and Redis is restarted.

How many flows: ``GRISTMILL_CHAOS_FLOWS`` if set, else 200 on ``[single]`` and 60 on
``[cluster]`` (a 3-primary cluster's hops and its restart of three nodes take about
three times as long on 2 cores; 60 keeps that run well under the single one's time).
Measured on the shared 2-core machine: [single] 200 flows (2,468 steps) in 107 s at
load 3-13 (178 s at load 4-10 before transitions were batched), [cluster] 60 flows in
43-76 s.

Two schedulers (each advances flows), two workers of group ``default`` and one of
group ``second`` (the loop's steps are tagged ``second``: their completions cross
to the flows' slot through ``flownotify``). Each flow: ``a`` returns its index k, a
parallel loop doubles k, k+1, k+2 (in group second), ``d`` sums them, then 0-15
sequential steps add one each (alternating groups): its result is 6k + 6 + steps.
While they run the test SIGKILLs a worker four times (starting a replacement each
time), SIGKILLs a scheduler (and starts another), and restarts Redis. Then every
flow must have succeeded with its result, none is left running, every step ran, each
step was started as exactly one job (its id is derived from flow and address), and a
job ran again only as at-least-once allows: no more re-runs than the jobs a kill or
the restart could interrupt (the slots of the killed workers, and of every worker for
the restart).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from gristmill.client import Gristmill
from tests.chaos.conftest import CONCURRENCY, STOP_TIMEOUT_S, ChaosFleet, Proc
from tests.conftest import RedisUnderTest, client_for

pytestmark = pytest.mark.timeout(420)

SEED = 4104
FLOWS = {"single": 200, "cluster": 60}
MAX_SEQUENTIAL = 16  # 0-15 steps after d: 5-20 steps a flow
DRAIN_TIMEOUT_S = 300.0
KILL_WORKER_AT_S = (2.0, 5.0, 9.0, 14.0)
KILL_SCHEDULER_AT_S = 7.0
REDIS_RESTART_AT_S = 11.0
WORKERS = 3  # two of group default, one of group second (each replaced when killed)


def flow_count(backend: str) -> int:
    """``GRISTMILL_CHAOS_FLOWS``, else the backend's default."""
    return int(os.environ.get("GRISTMILL_CHAOS_FLOWS") or FLOWS[backend])

STEP = """\
import os, time

def main(runs_file: str, sleep_ms: int, value):
    line = f"{os.environ['WM_ROOT_FLOW_JOB_ID']} {os.environ['WM_FLOW_STEP_ID']} {os.environ['WM_JOB_ID']}\\n"
    fd = os.open(runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(sleep_ms / 1000)
    return OP
"""


def step(module_id: str, op: str, value_expr: str, runs_file: str, sleep_ms: int,
         tag: str | None = None) -> dict[str, Any]:
    """A python3 step that records its run, sleeps, and returns ``op`` of its ``value``."""
    value: dict[str, Any] = {
        "type": "rawscript", "language": "python3", "content": STEP.replace("OP", op),
        "input_transforms": {"runs_file": {"type": "static", "value": runs_file},
                             "sleep_ms": {"type": "static", "value": sleep_ms},
                             "value": {"type": "javascript", "expr": value_expr}}}
    if tag is not None:
        value["tag"] = tag
    return {"id": module_id, "value": value}


def flow_for(index: int, runs_file: str, rng: random.Random) -> tuple[dict[str, Any], int, list[str]]:
    """Flow ``index``: its document, its expected result, and the step ids that must run."""
    sequential = index % MAX_SEQUENTIAL

    def nap() -> int:
        return rng.randint(5, 60)

    modules = [
        step("a", "value", "flow_input.k", runs_file, nap()),
        {"id": "b", "value": {"type": "forloopflow", "parallel": True,
                              "iterator": {"type": "javascript",
                                           "expr": "[results.a, results.a + 1, results.a + 2]"},
                              "modules": [step("c", "value * 2", "flow_input.iter.value", runs_file, nap(),
                                               tag="second")]}},
        step("d", "sum(value)", "results.b", runs_file, nap()),
    ]
    for n in range(sequential):
        modules.append(step(f"s{n}", "value + 1", "previous_result", runs_file, nap(),
                            tag="second" if n % 2 else None))
    expected = 6 * index + 6 + sequential
    must_run = ["a", "c", "c", "c", "d", *(f"s{n}" for n in range(sequential))]
    return {"summary": f"chaos {index}", "value": {"modules": modules}}, expected, must_run


def describe(client: redis.Redis, flow_id: str) -> str:
    """What a stuck flow waits for: its live steps' records, pending events and actions."""
    g = "gm:{wg:default}"
    state = json.loads(client.hget(f"{g}:flow:{flow_id}", "state") or b"{}")
    jobs = {}
    for job_id, addr in state.get("jobs", {}).items():
        group = (client.get(f"gm:jobloc:{job_id}") or b"?").decode()
        record = client.hmget(f"gm:{{wg:{group}}}:job:{job_id}", "status", "worker", "attempt")
        jobs[addr] = (job_id, group, [v.decode() if v else None for v in record])
    return (f"live steps {jobs}; events {client.lrange(f'{g}:flowevents:{flow_id}', 0, -1)}; "
            f"outbox {client.lrange(f'{g}:flowoutbox:{flow_id}', 0, -1)}; "
            f"queued {client.lpos(f'{g}:flowq', flow_id)}; "
            f"notify {[client.llen(f'gm:{{wg:{n}}}:flownotify') for n in ('default', 'second')]}")


def busy_pids(client: redis.Redis) -> set[int]:
    """Pids of the registered workers that hold a job right now."""
    busy = set()
    for raw in client.zrange("gm:workers", 0, -1):
        info = client.hgetall(f"gm:worker:{raw.decode()}")
        group, pid = info.get(b"group", b"").decode(), info.get(b"pid", b"0").decode()
        if client.llen(f"gm:{{wg:{group}}}:running:{raw.decode()}"):
            busy.add(int(pid))
    return busy


def test_flows_complete_through_worker_and_scheduler_kills_and_a_redis_restart(
        chaos_fleet: ChaosFleet, chaos_redis: RedisUnderTest, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    """Every flow ends success with its result; none left running; every step ran, started once."""
    count = flow_count(request.node.callspec.params["chaos_redis"])
    rng = random.Random(SEED)
    runs_file = chaos_fleet.share / "flow-runs.txt"
    runs_file.touch()
    runs_file.chmod(0o666)
    gm = Gristmill(chaos_redis.url)
    client = client_for(chaos_redis.url)
    second: list[Proc] = []
    try:
        gm.set_route("second", "second")
        schedulers = [chaos_fleet.scheduler(), chaos_fleet.scheduler()]
        chaos_fleet.worker()
        chaos_fleet.worker()
        second.append(chaos_fleet.start("second-1", "worker", "--group", "second", "--concurrency", "4",
                                        "--job-shared-dir", str(chaos_fleet.share)))
        flows = [flow_for(i, str(runs_file), rng) for i in range(count)]
        ids = [str(uuid.uuid4()) for _ in range(count)]
        for index, (flow_id, (doc, _, _)) in enumerate(zip(ids, flows, strict=True)):
            gm.submit({"id": flow_id, "flow": doc, "args": {"k": index}})

        started = time.monotonic()
        busy_kills = 0
        actions: list[tuple[float, str]] = [(at, "worker") for at in KILL_WORKER_AT_S]
        actions += [(KILL_SCHEDULER_AT_S, "scheduler"), (REDIS_RESTART_AT_S, "redis")]
        for at_s, what in sorted(actions):
            time.sleep(max(0.0, started + at_s - time.monotonic()))  # the chaos schedule
            if what == "worker":
                live = [p for p in chaos_fleet.live_workers() + second if p.alive()]
                busy = busy_pids(client)
                victim = rng.choice([p for p in live if p.pid in busy] or live)
                busy_kills += victim.pid in busy
                os.kill(victim.pid, signal.SIGKILL)
                victim.popen.wait(STOP_TIMEOUT_S)
                if victim in second:
                    second.append(chaos_fleet.start(f"second-{len(second) + 1}", "worker", "--group",
                                                    "second", "--concurrency", "4",
                                                    "--job-shared-dir", str(chaos_fleet.share)))
                else:
                    chaos_fleet.worker()
            elif what == "scheduler":
                os.kill(schedulers[0].pid, signal.SIGKILL)
                schedulers[0].popen.wait(STOP_TIMEOUT_S)
                chaos_fleet.scheduler()
            else:
                chaos_redis.stop()
                chaos_redis.start()
                client.close()
                client = client_for(chaos_redis.url)

        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        problems: list[str] = []
        for index, flow_id in enumerate(ids):
            try:
                job = gm.wait(flow_id, max(0.1, deadline - time.monotonic()))
            except Exception as exc:
                problems.append(f"flow {index} never completed ({exc}): {describe(client, flow_id)}")
                continue
            if (job.status, job.result) != ("success", flows[index][1]):
                problems.append(f"flow {index}: {job.status} {job.result!r} {job.error}")
        running = client.zcard("gm:{wg:default}:flowsrunning")
    finally:
        gm.redis.close()
        client.close()
    assert not problems, "\n".join(problems)
    assert busy_kills > 0, "no kill hit a worker that was running a step"
    assert running == 0, f"{running} flows still marked running"

    runs: Counter[tuple[str, str]] = Counter()
    jobs_run: Counter[str] = Counter()
    for line in runs_file.read_text().splitlines():
        flow_id, step_id, job_id = line.split(" ")
        jobs_run[job_id] += 1
        if jobs_run[job_id] == 1:
            runs[(flow_id, step_id)] += 1
    wrong = [(index, step_id, runs[(flow_id, step_id)], n) for index, flow_id in enumerate(ids)
             for step_id, n in Counter(flows[index][2]).items() if runs[(flow_id, step_id)] != n]
    assert not wrong, f"(flow, step, jobs started, expected) not started exactly once: {wrong[:20]}"
    again = sum(count - 1 for count in jobs_run.values())
    interruptible = (len(KILL_WORKER_AT_S) + WORKERS) * CONCURRENCY
    assert again <= interruptible, f"{again} re-runs, more than the {interruptible} jobs kills could cut"
    steps = sum(len(flow[2]) for flow in flows)
    print(f"\nflow chaos: {count} flows, {steps} steps, {again} re-runs of a step job "
          f"(at-least-once), {busy_kills} kills of a busy worker, {time.monotonic() - started:.1f} s")
