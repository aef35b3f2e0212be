"""A Redis Cluster primary SIGKILLed under a working fleet: its replica takes over, nothing is lost.

The cluster has 3 primaries and 3 replicas (replication is asynchronous). The
test kills the primary of the default group's slot while jobs run. The jobs
enqueued before the kill are known to be on the replica first (its offset
caught up), since a primary that dies loses the writes it had not sent yet and
no client can help that (see docs/ARCHITECTURE.md, "Redis Cluster"); what the
workers and the scheduler write around the kill may be lost, and the fleet must
outlive that: every job still ends in success.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from common.errors import RedisUnavailable
from common.models import Status
from gristmill.client import Gristmill
from gristmill.embedded_cluster import ClusterNode, EmbeddedCluster
from tests.conftest import client_for, cluster_runs
from tests.e2e.conftest import GROUP, Processes, deadline, scheduler_registered, worker_id_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

T = TypeVar("T")
BEFORE, AFTER = 30, 10
JOB = "import time\n\ndef main(i: int):\n    time.sleep(0.1)\n    return i\n"


@pytest.fixture
def failover_cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """3 primaries with a replica each, for this test alone (it kills one)."""
    if cluster_runs() == "0":
        pytest.skip("GRISTMILL_TEST_CLUSTER=0")
    cluster = EmbeddedCluster(tmp_path / "cluster", primaries=3, replicas=1,
                              password=secrets.token_urlsafe(16), node_timeout_ms=1000)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def retrying(call: Callable[[], T], timeout_s: float = 60.0) -> T:
    """``call()``, again while the cluster answers that it cannot serve (a failover)."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except RedisUnavailable:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def replica_of(cluster: EmbeddedCluster, primary: ClusterNode) -> ClusterNode:
    for node in cluster.live():
        with node.client() as client:
            info = client.info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return node
    raise AssertionError(f"no replica follows the primary on port {primary.port}")


def caught_up(primary: ClusterNode, replica: ClusterNode) -> Callable[[], bool]:
    """True once the replica holds everything the primary had when this was called."""
    with primary.client() as client:
        target = int(client.info("replication")["master_repl_offset"])

    def check() -> bool:
        with replica.client() as client:
            return int(client.info("replication").get("slave_repl_offset", -1)) >= target
    return check


def test_a_killed_primary_is_replaced_and_every_job_still_runs(
    failover_cluster: EmbeddedCluster, tmp_path: Path,
) -> None:
    """SIGKILL the primary of the group's slot mid-run: after the replica's promotion the
    fleet carries on, and every job enqueued before and after ends in success."""
    cluster = failover_cluster
    procs = Processes(tmp_path, cluster.url)
    gm = Gristmill(cluster.url)
    client = client_for(cluster.url)
    try:
        procs.scheduler()
        worker = procs.worker("--concurrency", "2")
        worker_id_of(client, worker.pid)
        scheduler_registered(client)

        ids = [gm.run_preview(JOB, "python3", {"i": i}) for i in range(BEFORE)]
        deadline(lambda: client.zcard(f"{GROUP}:completed") >= 3, 60, "the first completions")

        victim = cluster.primary_for(f"{GROUP}:ready")
        replica = replica_of(cluster, victim)
        deadline(caught_up(victim, replica), 30, "the replica to hold every enqueued job")
        killed_at = time.monotonic()
        victim.kill()
        cluster.wait_ok(timeout_s=60)
        promoted_s = time.monotonic() - killed_at
        assert cluster.primary_for(f"{GROUP}:ready") is replica

        for i in range(AFTER):
            job_id = str(uuid.uuid4())  # our own id: a retried submit is not a second job
            retrying(lambda job_id=job_id, i=i: gm.run_preview(JOB, "python3", {"i": i},
                                                                id=job_id))
            ids.append(job_id)

        for job_id in ids:
            job = retrying(lambda job_id=job_id: gm.wait(job_id, timeout_s=90), timeout_s=90)
            assert job.status == Status.SUCCESS, (job_id, job.status, job.error, procs.report())
        print(f"failover: replica promoted {promoted_s:.2f} s after the kill; "
              f"all {len(ids)} jobs succeeded {time.monotonic() - killed_at:.2f} s after it")
        assert worker.poll() is None, "the worker outlived the failover"
    finally:
        procs.stop_all()
        gm.redis.close()
        client.close()
