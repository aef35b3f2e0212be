"""A worker killed with SIGKILL mid-job: the scheduler re-queues the job and another worker runs it."""

from __future__ import annotations

import os
import signal

import pytest
import redis

from gristmill.client import Gristmill
from tests.e2e.conftest import (
    GROUP,
    Processes,
    deadline,
    scheduler_registered,
    worker_id_of,
    xwait,
)
from tests.procs import assert_no_process_running, unique_sleep

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(60)]

# The first attempt leaves a marker and then runs "forever" (a `sleep` whose unique argument
# finds it on the host: pids inside the job's namespace mean nothing outside); the second
# finds the marker and returns.
LONG_JOB = """\
import os
import subprocess

def main(marker: str, hold: str):
    first = not os.path.exists(marker)
    print(f"attempt first={first}", flush=True)
    if first:
        open(marker, "w").close()
        subprocess.run(["sleep", hold])
    return {"first": first}
"""


def test_killed_worker_job_reruns_on_another_worker(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """SIGKILL the worker running a job: after the lease a second worker runs attempt 2."""
    procs.scheduler()
    first = procs.worker(name="worker-1")
    first_id = worker_id_of(redis_client, first.pid)
    scheduler_registered(redis_client)

    hold = unique_sleep()
    job_id = gm.run_preview(LONG_JOB, "python3", {"marker": str(procs.share / "marker"),
                                                  "hold": hold})
    logs_key = f"{GROUP}:logs:{job_id}"
    line = xwait(redis_client, logs_key, lambda e: e["l"].startswith("attempt"), 20)
    assert line["a"] == "1" and "first=True" in line["l"]
    assert gm.get_job(job_id).worker == first_id

    # The worker dies, and its job's processes with it (the sandbox's namespace).
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert_no_process_running(hold)
    second = procs.worker(name="worker-2")

    job = gm.wait(job_id, timeout_s=30)
    assert job.status == "success", job.error
    assert job.attempt == 2
    assert job.result == {"first": False}
    assert job.worker == worker_id_of(redis_client, second.pid)
    assert job.worker != first_id

    logs = [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(logs_key)]
    by_attempt = {(e["a"], e["l"].split(" first=")[1]) for e in logs}
    assert by_attempt == {("1", "True"), ("2", "False")}, logs
    assert redis_client.llen(f"{GROUP}:running:{first_id}") == 0
    # The scheduler forgets the dead worker just after re-queuing its jobs (that order loses
    # no job if it dies in between): a slow scheduler may do it after the rerun completed.
    deadline(lambda: redis_client.zscore("gm:workers", first_id) is None, 10,
             "the scheduler to forget the dead worker")


def test_killed_worker_job_fails_when_no_restart_is_left(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """With GRISTMILL_MAX_RESTARTS=0 the job of a SIGKILLed worker completes as WorkerLost."""
    procs.scheduler(GRISTMILL_MAX_RESTARTS="0")
    worker = procs.worker(GRISTMILL_MAX_RESTARTS="0")
    worker_id = worker_id_of(redis_client, worker.pid)
    job_id = gm.run_preview(LONG_JOB, "python3", {"marker": str(procs.share / "marker"),
                                                  "hold": unique_sleep()})
    xwait(redis_client, f"{GROUP}:logs:{job_id}", lambda e: e["l"].startswith("attempt"), 20)

    os.kill(worker.pid, signal.SIGKILL)
    job = gm.wait(job_id, timeout_s=20)
    assert job.status == "failure"
    assert job.attempt == 1
    assert job.error is not None and job.error["name"] == "WorkerLost"
    assert worker_id in job.error["message"]
    assert redis_client.ttl(f"{GROUP}:job:{job_id}") > 0
    assert redis_client.zscore(f"{GROUP}:completed", job_id) == job.completed_at


# Regression: a stopping worker used to claim the job it had just released and start it
# again (attempt + 1, a second "started" event) before releasing it a second time.
def test_stopped_worker_releases_running_job_once(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """SIGTERM a busy worker: after its grace period the job goes back to the queue, started once."""
    worker = procs.worker("--grace", "1", name="worker")
    worker_id = worker_id_of(redis_client, worker.pid)
    hold = unique_sleep()
    job_id = gm.run_preview(LONG_JOB, "python3", {"marker": str(procs.share / "marker"),
                                                  "hold": hold})
    xwait(redis_client, f"{GROUP}:logs:{job_id}", lambda e: e["l"].startswith("attempt"), 20)

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    assert_no_process_running(hold)  # the job's processes did not outlive their worker

    job = gm.get_job(job_id)
    events = [(f[b"event"].decode(), f[b"id"].decode())
              for _, f in redis_client.xrange(f"{GROUP}:events")]
    assert job.status == "queued"
    assert redis_client.lrange(f"{GROUP}:ready", 0, -1) == [job_id.encode()]
    assert redis_client.zscore("gm:workers", worker_id) is None
    assert events.count(("started", job_id)) == 1, events
    assert job.attempt == 1
