"""DedicatedPool with real sandboxed processes and no Redis: placement and idle retirement."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.dedicated import DedicatedPool
from worker.executors.outcome import Outcome
from worker.sandbox.policy import Sandbox

pytestmark = pytest.mark.timeout(60)

HOLD = """
import os, time
MODULE = os.urandom(8).hex()

def main(share: str, n: int):
    open(os.path.join(share, f"in-{n}"), "w").close()
    while not os.path.exists(os.path.join(share, "go")):
        time.sleep(0.01)
    return MODULE
"""


def until(condition: object, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def pool(sharing_sandbox: Sandbox) -> Iterator[DedicatedPool]:
    pool = DedicatedPool(("u/t/hold",), sharing_sandbox, {}, processes=4, idle_s=0.3)
    yield pool
    pool.close()


def _run(pool: DedicatedPool, sandbox: Sandbox, share: Path, n: int, out: list[Outcome]) -> None:
    out.append(pool.run(script_path="u/t/hold", script_hash="h", code=lambda: (HOLD, sandbox.limits),
                        job_id=f"j{n}", args={"share": str(share), "n": n}, env={},
                        timeout_s=30, sink=None, cancel=threading.Event()))  # type: ignore[arg-type]


def test_a_burst_gets_processes_that_go_once_unused(
    pool: DedicatedPool, sharing_sandbox: Sandbox, job_share: Path
) -> None:
    """Three sync jobs at once run in three processes; once unused for idle_s, all but the
    first are stopped, and the next job runs in that first one."""
    outcomes: list[Outcome] = []
    threads = [threading.Thread(target=_run, args=(pool, sharing_sandbox, job_share, n, outcomes))
               for n in range(3)]
    for thread in threads:
        thread.start()
    until(lambda: all((job_share / f"in-{n}").exists() for n in range(3)), 30,
          "three jobs in flight at once")
    (job_share / "go").touch()
    for thread in threads:
        thread.join(30)
    assert all(o.ok for o in outcomes), outcomes
    assert len({o.result for o in outcomes}) == 3  # three imports of the module
    until(lambda: len(pool._processes.get("h", [])) == 1, 10, "the surplus processes to go")
    last: list[Outcome] = []
    _run(pool, sharing_sandbox, job_share, 9, last)
    assert last[0].ok and last[0].result in {o.result for o in outcomes}
