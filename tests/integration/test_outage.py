"""Redis going away and coming back: nothing a worker finished is lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.fleet import Fleet
from common.keys import Keys
from common.models import Status
from common.settings import Settings
from common.store import Store
from gristmill.embedded import EmbeddedRedis, free_port
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

WAIT_FOR_RELEASE = """
import os, time
def main(flag: str, release: str):
    open(flag, "w").close()
    while not os.path.exists(release):
        time.sleep(0.01)
    print("finished while redis was away")
    return 42
"""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of this test alone: it is stopped and restarted."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port(), appendfsync="always",
                           password="outage-test-password")
    server.start()
    yield server
    server.stop()


def wait_for(path: Path, event: threading.Event) -> None:
    """Wait for a file the job creates (no blocking primitive exists for files)."""
    while not path.exists():
        assert not event.wait(0.01)


@pytest.mark.timeout(90)
def test_outcome_written_when_redis_is_back(own_server: EmbeddedRedis, job_share: Path,
                                            sharing_sandbox: Sandbox) -> None:
    """A job that finishes while Redis is down keeps its result and writes it once Redis is back."""
    client = redis.Redis.from_url(own_server.url, socket_timeout=5)
    keys = Keys("gm")
    store = Store(client, keys)
    job = make_job(code=WAIT_FOR_RELEASE,
                   args={"flag": str(job_share / "flag"), "release": str(job_share / "release")})
    store.enqueue(job, fresh_id=True)
    worker = Worker(store=store, scripts=ScriptStore(client, keys), fleet=Fleet(client, keys),
                    settings=Settings(redis_url=own_server.url, heartbeat_s=0.2),
                    claim_block_s=0.5, sandbox=sharing_sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    never = threading.Event()
    try:
        wait_for(job_share / "flag", never)
        own_server.stop()  # appendfsync always: everything acknowledged is on disk
        (job_share / "release").touch()
        own_server.start()
        final = store.wait(job.id, 60)
        assert (final.status, final.result) == (Status.SUCCESS, 42)
        assert [e.line for e in store.logs(job.id)] == ["finished while redis was away"]
    finally:
        worker.stop()
        thread.join(30)
        client.close()
