"""`gristmill worker --init-script FILE`: once, sandboxed like a job, before any claim.

Real worker processes on the session's Redis (with a password); the init
script is hostile code as much as a job is, so what it can see is checked from
inside it, and its failure must stop the worker before it takes a job.
"""

from __future__ import annotations

import json

import pytest
import redis

from common.models import Status
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis
from tests.e2e.conftest import Processes, deadline, worker_id_of
from vault.crypto import generate_key
from worker.sandbox.policy import UID_BASE, Sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GATED_INIT = """#!/bin/bash
echo "init: preparing the host"
echo "init: a warning" >&2
touch "{share}/init-started"
while [ ! -e "{share}/init-go" ]; do sleep 0.02; done
echo ready > "{share}/init-done"
"""

SEES_INIT_DONE = """
import os
def main(share: str):
    return os.path.exists(os.path.join(share, "init-done"))
"""


def log_events(procs: Processes, name: str = "worker") -> list[dict[str, object]]:
    events = []
    for line in (procs.tmp_path / f"{name}.log").read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


def test_init_script_runs_before_any_claim_and_is_logged(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """A job queued before the worker starts waits for the init script; its lines are logged."""
    share = procs.share
    script = procs.tmp_path / "init.sh"
    script.write_text(GATED_INIT.format(share=share))
    procs.scheduler()
    job_id = gm.submit({"code": SEES_INIT_DONE, "language": "python3",
                        "args": {"share": str(share)}})
    worker = procs.worker("--init-script", str(script))
    deadline(lambda: (share / "init-started").exists(), 30, "the init script to start")
    # While it runs, the worker has neither registered nor claimed anything.
    assert gm.get_job(job_id).status == Status.QUEUED
    assert redis_client.zcard("gm:workers") == 0
    (share / "init-go").touch()
    worker_id_of(redis_client, worker.pid)
    done = gm.wait(job_id, 60)
    assert (done.status, done.result) == (Status.SUCCESS, True), done.error
    events = log_events(procs)
    lines = [(e.get("stream"), e.get("line")) for e in events
             if e.get("event") == "init script output"]
    assert ("stdout", "init: preparing the host") in lines
    assert ("stderr", "init: a warning") in lines
    names = [e.get("event") for e in events]
    assert names.index("init script done") < names.index("worker started")


FAILING_INIT = """#!/bin/bash
echo "cannot mount the model cache" >&2
exit 3
"""


def test_failing_init_script_stops_the_worker_with_its_error(
    procs: Processes, gm: Gristmill, redis_client: redis.Redis
) -> None:
    """Exit 3: the worker exits non-zero naming the script and its stderr; no job is taken."""
    script = procs.tmp_path / "init.sh"
    script.write_text(FAILING_INIT)
    job_id = gm.submit({"code": "def main():\n    return 1\n", "language": "python3"})
    worker = procs.worker("--init-script", str(script))
    assert worker.wait(60) == 2
    text = (procs.tmp_path / "worker.log").read_text()
    assert f"the init script {script} failed" in text
    assert "exited with code 3" in text and "cannot mount the model cache" in text
    assert redis_client.zcard("gm:workers") == 0
    assert gm.get_job(job_id).status == Status.QUEUED


def test_python_init_script_from_the_group_setting(
    procs: Processes, redis_client: redis.Redis
) -> None:
    """GRISTMILL_INIT_SCRIPTS names a group's script; a python3 one's exception stops the worker."""
    script = procs.tmp_path / "init.py"
    script.write_text("def main():\n    raise RuntimeError('no GPU on this host')\n")
    worker = procs.worker("--group", "gpu",
                          GRISTMILL_INIT_SCRIPTS=json.dumps({"gpu": str(script)}),
                          GRISTMILL_INIT_SCRIPT="/nonexistent/common-init.sh")
    assert worker.wait(60) == 2
    text = (procs.tmp_path / "worker.log").read_text()
    assert "RuntimeError: no GPU on this host" in text
    assert redis_client.zcard("gm:workers") == 0


def test_missing_init_script_is_a_clear_error(procs: Processes) -> None:
    """A path that cannot be read stops the worker at once, naming it."""
    worker = procs.worker("--init-script", "/nonexistent/init.sh")
    assert worker.wait(60) == 2
    assert "cannot read the init script '/nonexistent/init.sh'" in \
        (procs.tmp_path / "worker.log").read_text()


SNOOP_INIT = """
import json, os, socket
def main():
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
    for path in TARGETS:
        try:
            with open(path) as f:
                seen["files"][path] = f.read(200)
        except OSError as exc:
            seen["files"][path] = "denied: " + type(exc).__name__
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as conn:
        conn.sendall(b"PING\\r\\n")
        seen["redis"] = conn.recv(200).decode(errors="replace")
    with open(os.path.join(SHARE, "seen.json"), "w") as out:
        json.dump(seen, out)
"""


def test_init_script_runs_sandboxed(
    isolated: Sandbox, procs: Processes, redis_server: EmbeddedRedis, redis_client: redis.Redis
) -> None:
    """Its own uid and PID namespace; no worker secret in what it can read; Redis refuses it."""
    assert redis_server.password is not None
    key = generate_key()
    data_dir = procs.tmp_path / ".gristmill"
    data_dir.mkdir(mode=0o700)
    (data_dir / "secret-key").write_text(key)
    (data_dir / "secret-key").chmod(0o600)
    targets = [str(data_dir / "secret-key"), str(redis_server.data_dir / "users.acl")]
    script = procs.tmp_path / "init.py"
    script.write_text(f"TARGETS = {targets!r}\nPORT = {redis_server.port}\n"
                      f"SHARE = {str(procs.share)!r}\n{SNOOP_INIT}")
    worker = procs.worker("--init-script", str(script), GRISTMILL_SECRET_KEY=key)
    worker_id_of(redis_client, worker.pid)
    seen = json.loads((procs.share / "seen.json").read_text())
    assert seen["uid"] >= UID_BASE
    # Alone in its PID namespace: a python3 script forked warm is that namespace's PID 1.
    assert seen["pids"] == sorted({1, seen["pid"]})
    for secret in (redis_server.password, key, "GRISTMILL_"):
        assert secret not in seen["blob"]
    for path, outcome in seen["files"].items():
        assert outcome.startswith("denied"), (path, outcome)
    assert seen["redis"].startswith("-NOAUTH"), seen["redis"]


def test_init_script_setting_per_group() -> None:
    """The setting resolves per group: the group's own script, else the common one."""
    from common.settings import Settings

    settings = Settings(init_script="/etc/common.sh", init_scripts={"gpu": "/etc/gpu.sh"})
    assert settings.init_script_for("gpu") == "/etc/gpu.sh"
    assert settings.init_script_for("default") == "/etc/common.sh"
    assert Settings().init_script_for("default") is None
