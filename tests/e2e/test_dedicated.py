"""Dedicated workers: one script kept imported in a long-lived sandboxed process.

A real worker process (`--dedicated u/alice/fast`) on the session's Redis with
a password; its environment holds the secrets to protect. The script's module
state must persist between its jobs, and the process must be as confined as
any job (checked from inside it, as tests/e2e/test_sandbox.py does).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from common.models import Job, Status
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from tests.e2e.conftest import Processes, deadline, worker_id_of
from vault.crypto import generate_key
from worker.sandbox.policy import UID_BASE, Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = "u/alice/fast"
COUNTER = """
import os
count = 0
PID = os.getpid()
VERSION = {version}

def main(n: int):
    global count
    count += 1
    print(f"job {{n}} count {{count}}")
    return {{"count": count, "pid": PID, "version": VERSION,
            "job": os.environ.get("WM_JOB_ID"), "token": bool(os.environ.get("WM_TOKEN"))}}
"""


@dataclass
class Dedicated:
    procs: Processes
    gm: Gristmill
    worker: subprocess.Popen[bytes]
    secret_key: str

    def run(self, n: int, path: str = FAST, **options: Any) -> Job:
        job_id = self.gm.run_script(path, {"n": n}, **options)
        return self.gm.wait(job_id, 60)

    def result(self, n: int, path: str = FAST) -> Any:
        job = self.run(n, path)
        assert job.status == Status.SUCCESS, job.error
        return job.result


@pytest.fixture
def dedicated(procs: Processes, gm: Gristmill, redis_client: redis.Redis) -> Iterator[Dedicated]:
    key = generate_key()
    gm.deploy_script(FAST, COUNTER.format(version=1), "python3")
    procs.scheduler()
    worker = procs.worker("--dedicated", FAST, "--dedicated", "u/alice/snoop", "--concurrency", "4",
                          GRISTMILL_SECRET_KEY=key)
    worker_id_of(redis_client, worker.pid)
    yield Dedicated(procs, gm, worker, key)


def test_module_state_persists_between_jobs(dedicated: Dedicated) -> None:
    """Three jobs: one process, a counter that goes on, each job its own id, token and logs."""
    first, second, third = (dedicated.run(n) for n in (1, 2, 3))
    results = [job.result for job in (first, second, third)]
    assert [r["count"] for r in results] == [1, 2, 3]
    assert len({r["pid"] for r in results}) == 1
    assert [r["job"] for r in results] == [first.id, second.id, third.id]
    assert all(r["token"] for r in results)
    lines = [entry.line for entry in dedicated.gm.logs(second.id)]
    assert "job 2 count 2" in lines and not any("count 1" in line for line in lines)


def test_a_new_version_starts_a_new_process(dedicated: Dedicated) -> None:
    """A deploy: the next job runs the new version from a fresh module; the old process goes."""
    old = dedicated.result(1)
    dedicated.gm.deploy_script(FAST, COUNTER.format(version=2), "python3")
    new = dedicated.result(2)
    assert (new["version"], new["count"]) == (2, 1)
    assert dedicated.result(3)["count"] == 2
    log = dedicated.procs.tmp_path / "worker.log"
    deadline(lambda: "dedicated process drained; stopped" in log.read_text(), 30,
             "the old version's process to be stopped")
    assert old["version"] == 1


def test_failures_are_the_jobs_and_the_process_goes_on(dedicated: Dedicated) -> None:
    """An exception fails that job with its traceback; a timeout kills the process; both recover."""
    gm = dedicated.gm
    gm.deploy_script("u/alice/flaky", "import time\nstate = []\n\ndef main(n: int):\n"
                     "    state.append(n)\n    if n == 2:\n        raise ValueError('two')\n"
                     "    if n == 4:\n        time.sleep(60)\n    return len(state)\n", "python3")
    dedicated.procs.worker("--dedicated", "u/alice/flaky", "--group", "flaky", name="flaky")
    gm.set_route("python3-flaky", "flaky")

    def run(n: int) -> Job:
        return gm.wait(gm.run_script("u/alice/flaky", {"n": n}, tag="python3-flaky"), 60)

    assert run(1).result == 1
    failed = run(2)
    assert failed.status == Status.FAILURE and failed.error is not None
    assert failed.error["name"] == "ValueError" and "raise ValueError" in failed.error["traceback"]
    assert run(3).result == 3  # same module: the state survived the exception
    timed_out = gm.wait(gm.run_script("u/alice/flaky", {"n": 4}, tag="python3-flaky",
                                      timeout_s=1), 60)
    assert timed_out.status == Status.FAILURE and timed_out.error is not None
    assert timed_out.error["name"] == "Timeout"
    assert run(5).result == 1  # a new process after the kill


ASYNC = """
import asyncio, os
PID = os.getpid()

async def main(share: str, n: int):
    open(os.path.join(share, f"in-{n}"), "w").close()
    while not os.path.exists(os.path.join(share, "go")):
        await asyncio.sleep(0.02)
    print(f"async job {n}")
    return {"pid": PID, "job": os.environ["WM_JOB_ID"]}
"""


def test_async_main_runs_jobs_concurrently(dedicated: Dedicated) -> None:
    """Three async jobs are in flight in one process at once; each keeps its own environment."""
    gm, share = dedicated.gm, dedicated.procs.share
    gm.deploy_script("u/alice/aio", ASYNC, "python3")
    dedicated.procs.worker("--dedicated-tag", "aio", "--group", "aio", "--concurrency", "4",
                           name="aio")
    gm.set_route("aio", "aio")
    ids = [gm.run_script("u/alice/aio", {"share": str(share), "n": n}, tag="aio")
           for n in range(3)]
    deadline(lambda: all((share / f"in-{n}").exists() for n in range(3)), 60,
             "three async jobs in flight at once")
    (share / "go").touch()
    jobs = [gm.wait(job_id, 60) for job_id in ids]
    assert all(job.status == Status.SUCCESS for job in jobs), [job.error for job in jobs]
    assert len({job.result["pid"] for job in jobs}) == 1
    assert [job.result["job"] for job in jobs] == ids
    for n, job_id in enumerate(ids):
        assert [entry.line for entry in gm.logs(job_id)] == [f"async job {n}"]


SNOOP = """
import json, os, socket
def main(targets: list[str], port: int):
    seen = {"uid": os.getuid(), "pid": os.getpid(), "pids": [], "blob": "", "files": {}}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            seen["pids"].append(int(entry))
            for name in ("environ", "cmdline"):
                try:
                    with open(f"/proc/{entry}/{name}", "rb") as f:
                        seen["blob"] += f.read().decode(errors="replace")
                except OSError:
                    pass
    seen["blob"] += json.dumps(dict(os.environ))
    for path in targets:
        try:
            with open(path) as f:
                seen["files"][path] = f.read(200)
        except OSError as exc:
            seen["files"][path] = "denied: " + type(exc).__name__
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\\r\\n")
        seen["redis"] = conn.recv(200).decode(errors="replace")
    return seen
"""


def test_dedicated_process_is_sandboxed(
    isolated: Sandbox, dedicated: Dedicated, redis_server: EmbeddedRedis
) -> None:
    """Its own uid and PID namespace (not even the other dedicated script's process is
    visible), no worker secret, no fleet file, and Redis refuses it."""
    assert redis_server.password is not None
    gm, tmp = dedicated.gm, dedicated.procs.tmp_path
    dedicated.result(1)  # the other script's process is alive meanwhile
    data_dir = tmp / ".gristmill"
    data_dir.mkdir(mode=0o700)
    (data_dir / "secret-key").write_text(dedicated.secret_key)
    (data_dir / "secret-key").chmod(0o600)
    targets = [str(data_dir / "secret-key"), str(redis_server.data_dir / "users.acl"),
               f"/proc/{dedicated.worker.pid}/environ"]
    gm.deploy_script("u/alice/snoop", SNOOP, "python3")
    job = gm.wait(gm.run_script("u/alice/snoop", {"targets": targets, "port": redis_server.port}),
                  60)
    assert job.status == Status.SUCCESS, job.error
    seen = job.result
    assert seen["uid"] >= UID_BASE
    assert seen["pids"] == [1, seen["pid"]]
    for secret in (redis_server.password, dedicated.secret_key, "GRISTMILL_"):
        assert secret not in seen["blob"]
    for path, outcome in seen["files"].items():
        assert outcome.startswith("denied"), (path, outcome)
    assert seen["redis"].startswith("-NOAUTH"), seen["redis"]
    assert json.dumps(seen).count(dedicated.secret_key) == 0


def test_dedicated_process_started_cold(dedicated: Dedicated) -> None:
    """--job-exec cold: the dedicated process is a launcher of its own; state persists the same."""
    gm = dedicated.gm
    gm.deploy_script("u/alice/cold", COUNTER.format(version=1), "python3")
    dedicated.procs.worker("--dedicated", "u/alice/cold", "--group", "cold", "--job-exec", "cold",
                           name="cold")
    gm.set_route("cold", "cold")
    counts = [gm.wait(gm.run_script("u/alice/cold", {"n": n}, tag="cold"), 60) for n in (1, 2)]
    assert [job.result["count"] for job in counts] == [1, 2], [job.error for job in counts]


THREADED = """
import os, threading, time
PID = os.getpid()

def main(share: str, n: int):
    open(os.path.join(share, f"t-{n}"), "w").close()
    while not os.path.exists(os.path.join(share, "t-go")):
        time.sleep(0.02)
    print(f"threaded job {n}")
    return {"pid": PID, "job": os.environ["WM_JOB_ID"], "thread": threading.get_ident()}
"""


def test_sync_main_on_threads_when_asked(dedicated: Dedicated) -> None:
    """--dedicated-threads 4: three sync jobs in flight in one process, each its own env and log."""
    gm, share = dedicated.gm, dedicated.procs.share
    gm.deploy_script("u/alice/threaded", THREADED, "python3")
    dedicated.procs.worker("--dedicated", "u/alice/threaded", "--dedicated-threads", "4",
                           "--group", "threaded", "--concurrency", "4", name="threaded")
    gm.set_route("threaded", "threaded")
    ids = [gm.run_script("u/alice/threaded", {"share": str(share), "n": n}, tag="threaded")
           for n in range(3)]
    deadline(lambda: all((share / f"t-{n}").exists() for n in range(3)), 60,
             "three sync jobs in flight at once")
    (share / "t-go").touch()
    jobs = [gm.wait(job_id, 60) for job_id in ids]
    assert all(job.status == Status.SUCCESS for job in jobs), [job.error for job in jobs]
    assert len({job.result["pid"] for job in jobs}) == 1
    assert len({job.result["thread"] for job in jobs}) == 3
    assert [job.result["job"] for job in jobs] == ids
    for n, job_id in enumerate(ids):
        assert [entry.line for entry in gm.logs(job_id)] == [f"threaded job {n}"]


PREFORK = """
import os, time
PID = os.getpid()
MODULE = os.urandom(8).hex()  # which import of the module (PIDs repeat across namespaces)
count = 0

def main(share: str, n: int, hold: bool = True, sleep_s: float = 0):
    global count
    count += 1
    time.sleep(sleep_s)
    open(os.path.join(share, f"p-{n}"), "w").close()
    while hold and not os.path.exists(os.path.join(share, "p-go")):
        time.sleep(0.02)
    pids = sorted(int(e) for e in os.listdir("/proc") if e.isdigit())
    return {"pid": PID, "module": MODULE, "uid": os.getuid(), "pids": pids, "count": count,
            "job": os.environ["WM_JOB_ID"]}
"""


def test_sync_main_gets_a_sandboxed_process_per_slot(dedicated: Dedicated) -> None:
    """By default three sync jobs at once run in three processes, each its own uid, PID
    namespace and module state; a fourth that times out kills only its own process."""
    gm, share = dedicated.gm, dedicated.procs.share
    gm.deploy_script("u/alice/prefork", PREFORK, "python3")
    dedicated.procs.worker("--dedicated", "u/alice/prefork", "--group", "prefork",
                           "--concurrency", "4", name="prefork")
    gm.set_route("prefork", "prefork")
    ids = [gm.run_script("u/alice/prefork", {"share": str(share), "n": n}, tag="prefork")
           for n in range(3)]
    deadline(lambda: all((share / f"p-{n}").exists() for n in range(3)), 60,
             "three sync jobs in flight at once")
    late = gm.wait(gm.run_script("u/alice/prefork", {"share": str(share), "n": 3,
                                                     "hold": False, "sleep_s": 60},
                                 tag="prefork", timeout_s=1), 60)
    assert late.status == Status.FAILURE and late.error is not None
    assert late.error["name"] == "Timeout"
    (share / "p-go").touch()
    jobs = [gm.wait(job_id, 60) for job_id in ids]
    assert all(job.status == Status.SUCCESS for job in jobs), [job.error for job in jobs]
    results = [job.result for job in jobs]
    assert len({r["module"] for r in results}) == 3
    assert len({r["uid"] for r in results}) == 3 and all(r["uid"] >= UID_BASE for r in results)
    assert all(r["pids"] == [1, r["pid"]] for r in results)  # not even each other
    assert [r["count"] for r in results] == [1, 1, 1]  # a module of its own each
    assert [r["job"] for r in results] == ids
    # With every process idle again, the next job goes to the first one: its state goes on.
    again = gm.wait(gm.run_script("u/alice/prefork", {"share": str(share), "n": 9,
                                                      "hold": False}, tag="prefork"), 60)
    assert again.status == Status.SUCCESS, again.error
    assert again.result["count"] == 2
    assert again.result["module"] in {r["module"] for r in results}


HOSTILE = """
import gc, socket

def main(n: int):
    if n == 1:  # forge a reply on the process's own socket to the worker: not JSON
        channel = next(o for o in gc.get_objects() if isinstance(o, socket.socket))
        channel.sendall(b"\\x00\\x00\\x00\\x05hello")
        import time
        time.sleep(30)
    return n
"""


def test_a_forged_message_ends_the_process_not_the_worker(dedicated: Dedicated) -> None:
    """Job code that writes garbage on the process's socket: the process is stopped, its job
    fails with SandboxLost, and the next job runs in a new process of the same worker."""
    gm = dedicated.gm
    gm.deploy_script("u/alice/hostile", HOSTILE, "python3")
    dedicated.procs.worker("--dedicated", "u/alice/hostile", "--group", "hostile", name="hostile")
    gm.set_route("hostile", "hostile")
    forged = gm.wait(gm.run_script("u/alice/hostile", {"n": 1}, tag="hostile"), 60)
    assert forged.status == Status.FAILURE and forged.error is not None
    assert forged.error["name"] == "SandboxLost", forged.error
    after = gm.wait(gm.run_script("u/alice/hostile", {"n": 2}, tag="hostile"), 60)
    assert after.status == Status.SUCCESS and after.result == 2, after.error
