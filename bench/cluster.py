"""Scale-out benchmark: no-op jobs/s with 3 worker groups on one Redis and on a 3-shard cluster,
Redis CPU per job, and the recovery time after a primary is killed (a benchmark, not a test).

    python -m bench.cluster --jobs 900 --concurrency 4 [--no-failover] [--json]

For each topology it starts its own servers (free loopback ports, a temporary
directory), one scheduler and one worker per group (warm execution), picks
three group names whose hash tags land on three different shards of the
cluster, enqueues ``--jobs`` no-op python3 jobs round-robin over the groups from
one producer, and waits until every one completed. Figures:

* jobs/s: every job is due at one instant T0, after all were enqueued (by 4
  producer threads); T0 to the last completion: what the fleet and Redis drain;
* Redis CPU per job: the servers' ``used_cpu_user + used_cpu_sys`` (INFO cpu,
  summed over the primaries) over the run, divided by the jobs; one core over
  that is the ceiling of one shard (of one server) for this workload;
* failover: a 3+3 cluster under a steady producer; the primary of the first
  group's slot is SIGKILLed; seconds until the cluster is ok again and until
  that group completes a job enqueued after the kill.

Everything it started is stopped on exit. See docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from bench.fleet import Deadline, _signal_group, clean_environment
from bench.jobs import job_code, read_times, wait_done
from common.errors import RedisUnavailable
from common.keys import Keys
from common.settings import Settings
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis, free_port
from gristmill.embedded_cluster import SLOTS, EmbeddedCluster

SHARDS = 3
ENQUEUE_FLOOR_PER_S = 150  # below the slowest enqueue rate seen here (4 producers, loaded)
KEYS = Keys("gm")
Server = EmbeddedRedis | EmbeddedCluster


def spread_groups(count: int = SHARDS) -> list[str]:
    """Group names whose tags fall in ``count`` different thirds of the slot space (the
    primaries' ranges of an EmbeddedCluster), so each shard serves one group."""
    per = SLOTS // count
    found: dict[int, str] = {}
    i = 0
    while len(found) < count:
        name = f"g{i}"
        shard = min(key_slot(f"{{wg:{name}}}".encode()) // per, count - 1)
        found.setdefault(shard, name)
        i += 1
    return [found[shard] for shard in sorted(found)]


def redis_cpu_s(server: Server) -> float:
    """CPU seconds (user + sys) the server, or every live primary of the cluster, has used."""
    nodes = server.primary_nodes() if isinstance(server, EmbeddedCluster) else [server]
    total = 0.0
    for node in nodes:
        with redis.Redis.from_url(node.url) as client:
            info = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


@contextlib.contextmanager
def fleet(server: Server, groups: list[str], concurrency: int, tmp: Path) -> Iterator[Gristmill]:
    """A scheduler and one worker per group on ``server``; yields an operator client."""
    env = {**clean_environment(), "GRISTMILL_REDIS_URL": server.url,
           "GRISTMILL_LOG_LEVEL": "warning"}
    procs = []
    exe = [sys.executable, "-m", "gristmill"]
    commands = [["scheduler"]] + [["worker", "--group", g, "--concurrency", str(concurrency)]
                                  for g in groups]
    for i, argv in enumerate(commands):
        with (tmp / f"proc-{i}.log").open("wb") as log:
            procs.append(subprocess.Popen([*exe, *argv], env=env, cwd=tmp, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          stdin=subprocess.DEVNULL))
    gm = Gristmill(settings=Settings(redis_url=server.url, default_route="tag"))
    try:
        deadline = time.monotonic() + 60
        while int(gm.redis.zcard(KEYS.workers)) < len(groups):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"the fleet did not start; logs in {tmp}")
            time.sleep(0.05)  # a start-up condition, not a measurement
        yield gm
    finally:
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        gm.redis.close()


def throughput(server: Server, jobs: int, concurrency: int, tmp: Path,
               producers: int = 4) -> dict[str, Any]:
    """No-op jobs round-robin over 3 groups, all due at one instant T0 after they were
    enqueued (so the producers' speed is not measured): the drain rate from T0 to the last
    completion, and the Redis CPU per job of the whole way (enqueue to completion)."""
    groups = spread_groups()
    with fleet(server, groups, concurrency, tmp) as gm:
        code = job_code(0)
        for group in groups:  # warm-up: each worker's fork server and the scripts
            gm.wait(gm.run_preview(code, "python3", tag=group), timeout_s=60)
        cpu_before = redis_cpu_s(server)
        lead_ms = int(jobs / ENQUEUE_FLOOR_PER_S * 1000) + 2000
        t0 = int(time.time() * 1000) + lead_ms
        started = time.perf_counter()

        def submit(i: int) -> tuple[str, str]:
            group = groups[i % len(groups)]
            return group, gm.run_preview(code, "python3", tag=group, scheduled_for=t0)

        with ThreadPoolExecutor(producers) as pool:
            submitted = list(pool.map(submit, range(jobs)))
        enqueued_s = time.perf_counter() - started
        ids: dict[str, list[str]] = {g: [] for g in groups}
        for group, job_id in submitted:
            ids[group].append(job_id)
        deadline = Deadline(300 + lead_ms / 1000)
        last = 0
        for group in groups:
            wait_done(gm.redis, KEYS.group(group), ids[group], deadline, f"group {group}")
            times = read_times(gm.redis, KEYS.group(group), ids[group])
            assert all(t.status == "success" for t in times), group
            last = max(last, *(t.completed_at or 0 for t in times))
        cpu = redis_cpu_s(server) - cpu_before
    drain_s = (last - t0) / 1000
    return {"jobs": jobs, "groups": groups, "drain_s": round(drain_s, 2),
            "jobs_per_s": round(jobs / drain_s, 1),
            "enqueue_per_s": round(jobs / enqueued_s, 1), "producers": producers,
            "enqueue_overran_t0": enqueued_s * 1000 > lead_ms,
            "redis_cpu_ms_per_job": round(cpu * 1000 / jobs, 3),
            "projected_jobs_per_s_per_core": round(jobs / cpu) if cpu > 0 else None}


def failover(concurrency: int, tmp: Path) -> dict[str, Any]:
    """Kill the primary of the first group's slot under a steady producer; time the recovery."""
    cluster = EmbeddedCluster(tmp / "failover", primaries=SHARDS, replicas=1,
                              password=secrets.token_urlsafe(16), node_timeout_ms=1000)
    cluster.start()
    groups = spread_groups()
    stop = threading.Event()
    try:
        with fleet(cluster, groups, concurrency, tmp) as gm:
            code = job_code(0)

            def produce() -> None:
                i = 0
                while not stop.is_set():
                    with contextlib.suppress(RedisUnavailable):
                        gm.run_preview(code, "python3", tag=groups[i % len(groups)])
                        i += 1
                    stop.wait(0.01)

            producer = threading.Thread(target=produce, daemon=True)
            producer.start()
            g = KEYS.group(groups[0])
            deadline = time.monotonic() + 30
            while int(gm.redis.zcard(g.completed)) < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            victim = cluster.primary_for(g.ready)
            killed_ms = int(time.time() * 1000)
            killed = time.monotonic()
            victim.kill()
            cluster.wait_ok(timeout_s=60)
            ok_s = time.monotonic() - killed
            first_s = None
            while time.monotonic() - killed < 120:
                with contextlib.suppress(RedisUnavailable, redis.exceptions.RedisError):
                    # The group's latest completion, if it was created after the kill:
                    # the group works again.
                    latest = gm.redis.zrange(g.completed, "+inf", killed_ms, byscore=True,
                                             desc=True, offset=0, num=1)
                    if latest and int(gm.redis.hget(g.job(latest[0].decode()), "created_at")
                                      or 0) > killed_ms:
                        first_s = time.monotonic() - killed
                        break
                time.sleep(0.02)
            stop.set()
            producer.join(10)
    finally:
        stop.set()
        cluster.stop()
    return {"cluster_ok_s": round(ok_s, 2),
            "first_new_job_completed_s": None if first_s is None else round(first_s, 2),
            "node_timeout_ms": 1000}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=900)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--no-failover", action="store_true")
    p.add_argument("--json", action="store_true")
    ns = p.parse_args(argv)
    results: dict[str, Any] = {"cores": os.cpu_count(), "load_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-cluster-") as tmp_dir:
        tmp = Path(tmp_dir)
        binary = os.environ.get("GRISTMILL_REDIS_SERVER") or None
        single = EmbeddedRedis(tmp / "single", port=free_port(), binary=binary,
                               password=secrets.token_urlsafe(16))
        results["version"] = single.start()
        try:
            results["single"] = throughput(single, ns.jobs, ns.concurrency, tmp)
        finally:
            single.stop()
        cluster = EmbeddedCluster(tmp / "cluster", primaries=SHARDS, binary=binary,
                                  password=secrets.token_urlsafe(16))
        cluster.start()
        try:
            results["cluster"] = throughput(cluster, ns.jobs, ns.concurrency, tmp)
        finally:
            cluster.stop()
        if not ns.no_failover:
            results["failover"] = failover(ns.concurrency, tmp)
    results["load_1m_after"] = os.getloadavg()[0]
    if ns.json:
        print(json.dumps(results, indent=2))
        return
    for name in ("single", "cluster"):
        r = results[name]
        print(f"{name:8} {r['jobs']} jobs over {r['groups']}: {r['jobs_per_s']} jobs/s drained "
              f"(enqueue {r['enqueue_per_s']}/s), Redis CPU {r['redis_cpu_ms_per_job']} ms/job "
              f"-> {r['projected_jobs_per_s_per_core']} jobs/s per core")
    if "failover" in results:
        print(f"failover: cluster ok {results['failover']['cluster_ok_s']} s after the kill, "
              f"first new job of the group completed after "
              f"{results['failover']['first_new_job_completed_s']} s")
    print(f"machine: {results['cores']} cores, load {results['load_1m']:.1f} -> "
          f"{results['load_1m_after']:.1f}; {results['version']}")


if __name__ == "__main__":
    main()
