"""Every process serves its Prometheus metrics on --metrics-port."""

from __future__ import annotations

import urllib.request

import pytest
import redis

from gristmill.client import Gristmill
from gristmill.embedded import free_port, port_in_use
from tests.e2e.conftest import Processes, clean_env, deadline, scheduler_registered, worker_id_of

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(60)]


def scrape(port: int) -> str:
    """The text of /metrics on ``port``, once it listens."""
    deadline(lambda: port_in_use(port), 15, f"/metrics on port {port}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_worker_and_scheduler_metrics(procs: Processes, redis_client: redis.Redis,
                                      gm: Gristmill) -> None:
    """A worker counts the jobs it ran; the scheduler reports queue depth and live workers."""
    worker_port, scheduler_port = free_port(), free_port()
    procs.start("scheduler", "scheduler", "--metrics-port", str(scheduler_port),
                env=clean_env(procs.redis_url))
    worker = procs.worker("--metrics-port", str(worker_port))
    worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    job_id = gm.run_preview("def main():\n    return 1\n", "python3")
    assert gm.wait(job_id, 30).result == 1
    gm.run_preview("def main():\n    return 2\n", "python3", scheduled_for=4_000_000_000_000)

    worker_text = scrape(worker_port)
    assert 'gristmill_jobs_started_total{group="default",kind="preview"} 1.0' in worker_text
    assert ('gristmill_jobs_completed_total{group="default",kind="preview",status="success"} 1.0'
            in worker_text)
    assert "gristmill_job_duration_seconds_bucket" in worker_text
    assert "gristmill_job_start_lateness_seconds_bucket" in worker_text

    scheduler_text = scrape(scheduler_port)
    assert 'gristmill_queue_depth{group="default",state="scheduled"} 1.0' in scheduler_text
    assert 'gristmill_live_workers{group="default"} 1.0' in scheduler_text
