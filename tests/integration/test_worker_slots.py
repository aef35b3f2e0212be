"""A slot's thread takes its next ready job itself (no hand-over to the claim loop), and a
stopping worker's slots take none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from common.fleet import Fleet
from common.models import Job, Status
from common.settings import Settings
from common.store import Store
from jobs.scripts import ScriptStore
from tests.integration.helpers import make_job
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

pytestmark = pytest.mark.timeout(90)
WAIT_S = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def worker(store: Store, scripts: ScriptStore, fleet: Fleet, settings: Settings,
           sharing_sandbox: Sandbox) -> Iterator[Worker]:
    worker = Worker(store=store, scripts=scripts, fleet=fleet, settings=settings,
                    concurrency=1, claim_block_s=0.5, sandbox=sharing_sandbox)
    yield worker
    worker.stop()
    worker.kill_running()


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def statuses(store: Store, jobs: list[Job]) -> list[Status]:
    return [store.get_job(job.id).status for job in jobs]


def test_a_slot_runs_the_ready_jobs_back_to_back(worker: Worker, store: Store) -> None:
    jobs = [make_job() for _ in range(4)]
    for job in jobs:
        store.enqueue(job, fresh_id=True)
    claim_loop_jobs: list[str] = []
    claim = worker._claim

    def counted(free: int) -> list[Job]:
        claimed = claim(free)
        claim_loop_jobs.extend(job.id for job in claimed)
        return claimed

    claim_calls: list[str] = []

    def counted_call(name: str) -> Callable[..., list[Job]]:
        call = getattr(store, name)

        def counted_claim(*args: object, **kwargs: object) -> list[Job]:
            claim_calls.append(name)
            return call(*args, **kwargs)  # type: ignore[no-any-return]
        return counted_claim

    worker._claim = counted  # type: ignore[method-assign]
    for name in ("claim_start", "claim_start_blocking"):
        setattr(store, name, counted_call(name))
    thread = start(worker)
    wait_until(lambda: statuses(store, jobs) == [Status.SUCCESS] * 4, "the four jobs")
    # One slot: the claim loop started the first job (its blocking claim), the slot's thread
    # the three others, each claimed with the completion before it (no call of its own);
    # the last found ready empty, so the claim loop may be blocking again.
    assert claim_loop_jobs == [jobs[0].id]
    assert set(claim_calls) == {"claim_start_blocking"}
    worker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive()


def test_a_stopping_worker_takes_no_next_job(worker: Worker, store: Store) -> None:
    first = make_job(code="import time\n\ndef main():\n    time.sleep(1)\n    return 1\n")
    rest = [make_job() for _ in range(2)]
    for job in (first, *rest):
        store.enqueue(job, fresh_id=True)
    thread = start(worker)
    wait_until(lambda: store.get_job(first.id).status == Status.RUNNING, "the first job to run")
    worker.stop()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert store.get_job(first.id).status == Status.SUCCESS  # a running job finishes
    assert statuses(store, rest) == [Status.QUEUED] * 2  # and no other is taken
