"""Job code is hostile: the escalation suite (issue: the job sandbox).

Each case is a job written by ``alice``, a developer without admin rights, run
by a real worker process on a Redis that requires credentials; the harm it
tries is checked from outside. The worker holds what an attacker wants: the
Redis URL with its password and the secret key in its environment; a sibling
job of another user holds its own WM_TOKEN and args.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from auth.authn import require_live
from auth.identity import IdentityStore
from common.errors import AuthError
from common.keys import Keys
from common.models import Job, Status
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from tests.e2e.conftest import Processes, deadline, worker_id_of
from tests.procs import assert_no_process_running, processes_with, unique_sleep
from vault.crypto import generate_key
from worker.sandbox.policy import Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

JOB_TIMEOUT_S = 60
FORK_SERVER = "worker.sandbox.forkserver"  # in the command line of warm job processes


@dataclass
class Fleet:
    """A scheduler and a worker (2 slots) whose environment holds the secrets to protect."""

    procs: Processes
    gm: Gristmill
    identity: IdentityStore
    worker: subprocess.Popen[bytes]
    alice: str  # alice's API token
    bob: str
    redis_password: str
    secret_key: str
    port: int

    def run(self, code: str, args: dict[str, Any] | None = None, *, token: str | None = None,
            language: str = "python3", tag: str | None = None) -> str:
        """Submit raw code as alice (or ``token``'s owner); the job id."""
        spec: dict[str, Any] = {"code": code, "language": language, "args": args or {},
                                "token": token or self.alice}
        if tag is not None:
            spec["tag"] = tag
        return self.gm.submit(spec)

    def wait(self, job_id: str) -> Job:
        return self.gm.wait(job_id, JOB_TIMEOUT_S)


@pytest.fixture
def fleet(isolated: Sandbox, procs: Processes, gm: Gristmill, redis_client: redis.Redis,
          redis_server: EmbeddedRedis) -> Iterator[Fleet]:
    assert redis_server.password is not None
    identity = IdentityStore(redis_client, Keys("gm"))
    tokens = {}
    for name in ("alice", "bob"):
        identity.create_user(name)
        tokens[name] = identity.create_token(name, label="sandbox")[0]
    key = generate_key()
    procs.scheduler()
    worker = procs.worker("--concurrency", "2", GRISTMILL_SECRET_KEY=key)
    worker_id_of(redis_client, worker.pid)
    yield Fleet(procs, gm, identity, worker, tokens["alice"], tokens["bob"],
                redis_server.password, key, redis_server.port)


SIBLING = """
import os, time
def main(share: str, secret_arg: str):
    with open(os.path.join(share, "sibling-token"), "w") as out:
        out.write(os.environ["WM_TOKEN"])
    while not os.path.exists(os.path.join(share, "sibling-go")):
        time.sleep(0.02)
    return "sibling done"
"""


@pytest.fixture
def sibling(fleet: Fleet) -> Iterator[tuple[str, str]]:
    """A job of bob's running in the other slot: (its WM_TOKEN, its secret argument)."""
    secret_arg = "bob-private-" + generate_key()[:12]
    job_id = fleet.run(SIBLING, {"share": str(fleet.procs.share), "secret_arg": secret_arg},
                       token=fleet.bob)
    token_file = fleet.procs.share / "sibling-token"
    deadline(lambda: token_file.exists() and token_file.read_text(), 30, "the sibling to start")
    yield token_file.read_text(), secret_arg
    (fleet.procs.share / "sibling-go").touch()
    done = fleet.wait(job_id)
    assert (done.status, done.result) == (Status.SUCCESS, "sibling done"), done.error


def result_of(fleet: Fleet, job_id: str) -> Any:
    job = fleet.wait(job_id)
    assert job.status == Status.SUCCESS, job.error
    return job.result


REDIS_ATTACK = """
import socket
def main(port: int, guesses: list[str]):
    commands = {"ping": "PING", "hset": "HSET gm:{auth}:user:alice role admin",
                "config": "CONFIG GET requirepass", "keys": "KEYS *"}
    for guess in guesses:
        commands["auth " + guess] = f"AUTH default {guess}"
        commands["auth gristmill " + guess] = f"AUTH gristmill {guess}"
    answers = {}
    for name, command in commands.items():
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(command.encode() + b"\\r\\n")
            answers[name] = conn.recv(200).decode(errors="replace")
    return answers
"""


def test_job_code_cannot_use_redis(fleet: Fleet, redis_client: redis.Redis) -> None:
    """PING, HSET, CONFIG, KEYS and AUTH with guessed passwords: every one refused."""
    guesses = ["", "gristmill", "redis", "password", "admin"]
    answers = result_of(fleet, fleet.run(REDIS_ATTACK, {"port": fleet.port, "guesses": guesses}))
    assert len(answers) == 4 + 2 * len(guesses)
    for name, answer in answers.items():
        assert answer.startswith(("-NOAUTH", "-WRONGPASS", "-ERR")), (name, answer)
        assert not answer.startswith("+OK") and "PONG" not in answer
    assert redis_client.hget("gm:{auth}:user:alice", "role") == b"developer"
    assert fleet.identity.get_user("alice").role == "developer"


PROC_SCAN = """
import os
def main():
    pids, blob, memory, environ = [], b"", [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pids.append(int(entry))
        for name in ("environ", "cmdline"):
            try:
                with open(f"/proc/{entry}/{name}", "rb") as f:
                    blob += f.read()
                if name == "environ":
                    environ.append(int(entry))
            except OSError:
                pass
        try:
            with open(f"/proc/{entry}/mem", "rb") as f:
                f.read(1)
            memory.append(int(entry))
        except OSError:
            pass
    return {"pids": sorted(pids), "me": os.getpid(), "memory": memory, "environ": environ,
            "blob": blob.decode(errors="replace")}
"""


def test_job_sees_only_its_own_processes(fleet: Fleet, sibling: tuple[str, str]) -> None:
    """Every /proc/*/environ, cmdline and mem it can see: no credential, token or key but its own."""
    sibling_token, sibling_arg = sibling
    seen = result_of(fleet, fleet.run(PROC_SCAN))
    # Itself and nothing else: warm, a python3 job is its namespace's PID 1; cold, init is.
    assert seen["pids"] == sorted({1, seen["me"]})
    assert set(seen["memory"]) <= {seen["me"]}
    blob = seen["blob"]
    # It did read its own environ file. (A warm job's shows the fork server's start-up
    # environment, not WM_TOKEN: its os.environ and its children's environ are the job's.)
    assert seen["me"] in seen["environ"]
    for secret in (fleet.redis_password, fleet.secret_key, sibling_token, sibling_arg,
                   "GRISTMILL_REDIS_URL", "GRISTMILL_SECRET_KEY"):
        assert secret not in blob


FILE_ATTACK = """
import glob, os
def main(paths: list[str]):
    tried = {}
    for pattern in paths + ["/proc/*/root/job/args.json", "/proc/*/cwd/args.json",
                            "/job/../*/args.json", "/tmp/*/args.json"]:
        for path in glob.glob(pattern) or [pattern]:
            try:
                with open(path, "rb") as f:
                    tried[path] = f.read(200).decode(errors="replace")
            except OSError as exc:
                tried[path] = "denied: " + type(exc).__name__
    return {"tried": tried}
"""


def test_job_cannot_read_fleet_files_or_other_jobs(
    fleet: Fleet, sibling: tuple[str, str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`.gristmill/*`, the server's ACL file, the worker's cwd, a sibling's args: all denied."""
    _, sibling_arg = sibling
    data_dir = tmp_path / ".gristmill"
    data_dir.mkdir(mode=0o700)
    for name in ("admin-token", "secret-key", "redis-url"):
        (data_dir / name).write_text(fleet.secret_key)
        (data_dir / name).chmod(0o600)
    worker_files = [f"/proc/{fleet.worker.pid}/environ", f"/proc/{fleet.worker.pid}/cmdline"]
    targets = [*(str(p) for p in data_dir.iterdir()), str(redis_server.data_dir / "users.acl"),
               *worker_files, str(tmp_path / "worker.log")]
    answer = result_of(fleet, fleet.run(FILE_ATTACK, {"paths": targets}))
    for path, outcome in answer["tried"].items():
        # Denied, or its own args (its own directory, reached by another name): nothing else.
        assert outcome.startswith(("denied", '{"paths"')), (path, outcome)
    text = json.dumps(answer)
    assert fleet.secret_key not in text and sibling_arg not in text


SIGNALS = """
import ctypes, os, signal
def main(pids: list[int]):
    outcome = {}
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            outcome[f"kill {pid}"] = "sent"
        except OSError as exc:
            outcome[f"kill {pid}"] = type(exc).__name__
        attached = libc.ptrace(16, pid, None, None)  # PTRACE_ATTACH
        outcome[f"ptrace {pid}"] = "attached" if attached == 0 else os.strerror(ctypes.get_errno())
    try:
        os.kill(-1, signal.SIGKILL)  # everything it may signal, but itself
        outcome["kill -1"] = "sent"
    except OSError as exc:
        outcome["kill -1"] = type(exc).__name__
    return outcome
"""


def _descendants(root: int) -> set[int]:
    """Host pids of ``root``'s live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (parent := _parent(int(entry))) is not None:
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return int(stat.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_job_cannot_signal_or_trace_the_worker_or_a_sibling(
    fleet: Fleet, sibling: tuple[str, str]
) -> None:
    """kill and ptrace of the worker, its fork server and the sibling's processes fail;
    kill(-1) harms no one."""
    # Cold, the sibling is a `pywrapper` interpreter; warm, its processes are forks of the
    # worker's fork server and carry the server's command line, as it does. The sibling's
    # are those with a job's uid: not the server (root), nor the process the server forked
    # ahead for the next job (root until its job comes: this very job, as it happens).
    # Only this fleet's: other sessions on the machine run fork servers and jobs of their own.
    ours = _descendants(fleet.worker.pid)
    marked = [p for p in processes_with("pywrapper") + processes_with(FORK_SERVER) if p in ours]
    servers = [p for p in marked if _parent(p) == fleet.worker.pid]
    sibling_pids = [p for p in marked if _uid(p) not in (None, 0)]
    assert sibling_pids, "the sibling job is not running"
    sibling_pids += servers
    targets = [fleet.worker.pid, *sibling_pids]
    outcome = result_of(fleet, fleet.run(SIGNALS, {"pids": targets}))
    for pid in targets:
        assert outcome[f"kill {pid}"] in ("ProcessLookupError", "PermissionError"), outcome
        assert outcome[f"ptrace {pid}"] != "attached", outcome
    assert outcome["kill -1"] == "ProcessLookupError"  # nobody else in its namespace
    assert fleet.worker.poll() is None
    still = processes_with("pywrapper") + processes_with(FORK_SERVER)
    assert all(pid in still for pid in sibling_pids), (sibling_pids, still)


DETACH = """
import os, subprocess
def main(marker: str):
    subprocess.Popen(["sleep", marker], start_new_session=True)
    if os.fork() == 0:
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", marker])
        os._exit(0)
    subprocess.run(["bash", "-c", f"nohup sleep {marker} >/dev/null 2>&1 & disown"])
    return "left three behind"
"""


def test_detached_children_die_with_the_job(fleet: Fleet) -> None:
    """setsid, a double fork and nohup ... &: none outlives the job."""
    marker = unique_sleep()
    assert result_of(fleet, fleet.run(DETACH, {"marker": marker})) == "left three behind"
    assert_no_process_running(marker, timeout_s=1.0)


HOLD = """
import os, subprocess, time
def main(share: str, marker: str):
    path = os.path.join(share, f"token-{time.monotonic_ns()}")
    with open(path, "w") as out:
        out.write(os.environ["WM_TOKEN"])
    subprocess.run(["sleep", marker])
"""


def test_a_killed_workers_jobs_die_and_only_the_rerun_holds_a_live_token(
    fleet: Fleet, redis_client: redis.Redis
) -> None:
    """SIGKILL the worker mid-job: its job processes are gone within 1 s; the re-run's token
    is live, the first attempt's is not."""
    marker = unique_sleep()
    share = fleet.procs.share
    job_id = fleet.run(HOLD, {"share": str(share), "marker": marker})
    deadline(lambda: processes_with(marker), 30, "the job to start its sleep")
    first_token = next(share.glob("token-*")).read_text()
    fleet.worker.send_signal(signal.SIGKILL)
    fleet.worker.wait(10)
    killed_at = time.monotonic()
    assert_no_process_running(marker, timeout_s=1.0)
    assert time.monotonic() - killed_at <= 1.0
    fleet.procs.worker("--concurrency", "2", name="worker-2",
                       GRISTMILL_SECRET_KEY=fleet.secret_key)
    deadline(lambda: len(list(share.glob("token-*"))) == 2, 60, "the re-run to start")
    second_token = next(t.read_text() for t in share.glob("token-*")
                        if t.read_text() != first_token)
    # The API's rule: a token it accepts, whose attempt is the job's current one.
    first = fleet.identity.authenticate(first_token)
    with pytest.raises(AuthError, match="its attempt has ended"):
        require_live(first.token, fleet.gm.store)
    second = fleet.identity.authenticate(second_token)
    require_live(second.token, fleet.gm.store)
    assert second.principal.name == "u/alice"
    fleet.gm.cancel(job_id, reason="test over")
    assert fleet.wait(job_id).status == Status.CANCELED
    assert_no_process_running(marker)


@pytest.fixture
def limited(fleet: Fleet) -> Fleet:
    """A second worker, group `limited`, with small limits; jobs tagged `limited` go there."""
    fleet.gm.set_route("limited", "limited")
    fleet.procs.worker("--group", "limited", "--concurrency", "2", "--job-memory-mb", "256",
                       "--job-max-procs", "32", "--job-disk-mb", "16", "--job-file-mb", "8",
                       name="limited-worker", GRISTMILL_SECRET_KEY=fleet.secret_key)
    return fleet


FORK_BOMB = """
import os
def main():
    while True:
        os.fork()
"""
MEMORY_HOG = """
def main():
    hog = []
    while True:
        hog.append(bytearray(64 * 1024 * 1024))
"""
DISK_FILLER = """
import os
def main():
    for i in range(1000):
        with open(f"/tmp/fill-{i}", "wb") as out:
            out.write(b"x" * 1024 * 1024)
"""
STEADY = """
import time
def main():
    time.sleep(1.5)
    return "steady"
"""


@pytest.mark.parametrize(("code", "name", "words"), [
    (FORK_BOMB, "BlockingIOError", "Resource temporarily unavailable"),
    (MEMORY_HOG, "OutOfMemory", "memory limit of 256 MiB"),
    (DISK_FILLER, "OSError", "No space left on device"),
], ids=["fork-bomb", "memory-hog", "disk-filler"])
def test_a_job_over_its_limits_fails_alone(limited: Fleet, code: str, name: str,
                                            words: str) -> None:
    """The job fails with an error that says which limit; the other slot's job succeeds."""
    steady = limited.run(STEADY, tag="limited")
    hostile = limited.run(code, tag="limited")
    failed = limited.wait(hostile)
    assert failed.status == Status.FAILURE and failed.error is not None
    assert failed.error["name"] == name and words in failed.error["message"], failed.error
    assert limited.wait(steady).result == "steady"
    assert limited.worker.poll() is None
    again = limited.run(STEADY, tag="limited")  # and the slot is usable again
    assert limited.wait(again).result == "steady"


NETWORK = """
import socket
def main(port: int):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return "connected"
    except OSError as exc:
        return type(exc).__name__
"""


def test_job_network_none(fleet: Fleet) -> None:
    """A worker started with --job-network none: its jobs reach nothing, not even loopback."""
    fleet.gm.set_route("offline", "offline")
    fleet.procs.worker("--group", "offline", "--job-network", "none", name="offline-worker",
                       GRISTMILL_SECRET_KEY=fleet.secret_key)
    offline = fleet.run(NETWORK, {"port": fleet.port}, tag="offline")
    online = fleet.run(NETWORK, {"port": fleet.port})
    assert fleet.wait(online).result == "connected"  # the port is open to the host network
    assert fleet.wait(offline).result in ("ConnectionRefusedError", "OSError")


def test_a_script_may_tighten_its_limits(fleet: Fleet) -> None:
    """A version deployed with memory_mb=200 fails at 200 MiB on a worker that allows 2048."""
    version, _ = fleet.gm.scripts.deploy("u/alice/hog", "python3", MEMORY_HOG,
                                         limits={"memory_mb": 200}, created_by="u/alice")
    assert version.limits == {"memory_mb": 200}
    job_id = fleet.gm.submit({"path": "u/alice/hog", "token": fleet.alice})
    failed = fleet.wait(job_id)
    assert failed.error is not None and failed.error["name"] == "OutOfMemory", failed.error
    assert "memory limit of 200 MiB" in failed.error["message"]
