"""`gristmill up`: a whole fleet on an embedded Redis it starts itself, data kept in ./.gristmill/."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import redis

from gristmill.embedded import free_port, port_in_use
from tests.e2e.conftest import GROUP, LineReader, Processes, alive, children, clean_env, deadline

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

HELLO = "def main(name: str):\n    return f'hello {name}'\n"


class Up:
    """One `gristmill up` run in ``cwd`` with its server on ``port``."""

    def __init__(self, procs: Processes, cwd: Path, port: int, name: str, *extra: str) -> None:
        env = clean_env(None)  # no GRISTMILL_REDIS_URL: up starts its own server
        if os.environ.get("GRISTMILL_TEST_REDIS_SERVER"):
            env["GRISTMILL_REDIS_SERVER"] = os.environ["GRISTMILL_TEST_REDIS_SERVER"]
        self.procs = procs
        self.name = name
        self.api_port = free_port()
        self.process, lines = procs.start(
            name, "up", "--redis-port", str(port), "--workers", "1", "--concurrency", "1",
            "--grace", "2", "--api-port", str(self.api_port), *extra, env=env, cwd=cwd,
            read_stdout=True,
        )
        assert lines is not None
        self.lines: LineReader = lines
        self.cwd = cwd
        self.url_file = Path(lines.expect(r"password included, is in ([^\s\"]+)", 20).group(1))
        self.url = self.url_file.read_text().strip()
        self.token_file = Path(lines.expect(r"admin API token in ([^\s\"]+)", 20).group(1))
        lines.expect(r"fleet up", 10)
        ui = lines.expect(r"web UI on (http://\S+/) .*token in (\S+)", 10)
        assert ui.group(1) == f"http://127.0.0.1:{self.api_port}/"
        assert Path(ui.group(2)) == self.token_file

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A client command run where `up` runs, with no GRISTMILL_REDIS_URL: it finds the fleet."""
        return self.procs.cli(*args, env=clean_env(None), cwd=self.cwd)

    def children(self) -> dict[str, int]:
        """Its children by role (server, scheduler, worker), once worker and scheduler run."""
        client = redis.Redis.from_url(self.url)
        try:
            deadline(lambda: client.zcard("gm:workers") and client.zcard("gm:schedulers"), 15,
                     "up's worker and scheduler to register")
        finally:
            client.close()
        roles = {}
        for pid in children(self.process.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            args = [a.decode() for a in cmdline]
            role = ("scheduler" if "scheduler" in args else "worker" if "worker" in args
                    else "api" if "api" in args else "server")
            roles[role] = pid
            self.procs.adopt(pid, args[0])
        return roles

    def log(self) -> str:
        """What up and its children wrote to stderr (their JSON log lines)."""
        return (self.procs.tmp_path / f"{self.name}.log").read_text(errors="replace")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to up alone; its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(20)


def test_up_runs_a_preview_and_stops_everything(procs: Processes, tmp_path: Path) -> None:
    """`up` prints its URL, runs a preview sent by the CLI, and SIGINT stops children and server."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    up = Up(procs, site, port, "up")
    assert re.fullmatch(rf"redis://gristmill:[A-Za-z0-9_-]{{43}}@127\.0\.0\.1:{port}/0", up.url)
    assert up.url_file.stat().st_mode & 0o777 == 0o600
    assert (site / ".gristmill").stat().st_mode & 0o777 == 0o700
    with pytest.raises(redis.exceptions.AuthenticationError):  # no credentials, no entry
        redis.Redis(port=port).ping()
    (tmp_path / "hello.py").write_text(HELLO)

    done = up.cli("preview", str(tmp_path / "hello.py"), "-a", "name=mill", "--wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "hello mill"

    kids = up.children()
    assert set(kids) == {"server", "scheduler", "worker", "api"}, kids
    token = up.token_file.read_text().strip()
    assert up.token_file.stat().st_mode & 0o077 == 0  # the admin token is private
    deadline(lambda: port_in_use(up.api_port), 20, "the API to listen")
    request = urllib.request.Request(f"http://127.0.0.1:{up.api_port}/api/whoami",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["name"] == "u/admin"
    assert up.interrupt() == 0
    assert [role for role, pid in kids.items() if alive(pid)] == []
    assert not port_in_use(port)
    events = [json.loads(line)["event"] for line in up.log().splitlines() if line.startswith("{")]
    assert "worker stopped" in events and "scheduler stopped" in events  # not killed: stopped
    assert (site / ".gristmill" / "redis").is_dir()


def test_up_keeps_queued_jobs_across_restart(procs: Processes, tmp_path: Path) -> None:
    """A job queued 1 h ahead survives stopping and restarting `up` (data in ./.gristmill/)."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    (tmp_path / "later.py").write_text(HELLO)

    first = Up(procs, site, port, "up-1")
    queued = first.cli("preview", str(tmp_path / "later.py"), "-a", "name=later", "--in", "1h")
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert first.interrupt() == 0
    assert not port_in_use(port)
    assert any((site / ".gristmill" / "redis").rglob("*.aof")), "no append-only file kept"

    second = Up(procs, site, port, "up-2")
    got = second.cli("job", "get", job_id, "--json")
    assert got.returncode == 0, got.stderr
    job = json.loads(got.stdout)
    assert job["status"] == "queued"
    assert job["args"] == {"name": "later"}
    client = redis.Redis.from_url(second.url)
    try:
        assert client.zscore(f"{GROUP}:scheduled", job_id) == job["scheduled_for"]
    finally:
        client.close()
    assert second.interrupt() == 0


def test_up_output_is_one_json_object_per_line(procs: Processes, tmp_path: Path) -> None:
    """Everything up and its children write (stdout and stderr) is whole JSON objects, one a line."""
    site = tmp_path / "site"
    site.mkdir()
    up = Up(procs, site, free_port(), "up")
    (tmp_path / "hello.py").write_text(HELLO)
    assert up.cli("preview", str(tmp_path / "hello.py"), "-a", "name=x", "--wait").returncode == 0
    assert up.interrupt() == 0
    up.lines.close()
    lines = up.lines.seen + up.log().splitlines()
    assert len(lines) > 5
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_a_killed_up_leaves_no_orphans(procs: Processes, tmp_path: Path) -> None:
    """SIGKILL to up: its Redis, scheduler, workers and API die with it; the next up starts."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    first = Up(procs, site, port, "up-1")
    kids = first.children()
    assert set(kids) == {"server", "scheduler", "worker", "api"}, kids
    first.process.kill()
    first.process.wait(10)
    deadline(lambda: not any(alive(pid) for pid in kids.values()), 30, "up's children to die")
    deadline(lambda: not port_in_use(port), 10, "the port to be free")
    second = Up(procs, site, port, "up-2")
    assert second.cli("jobs", "list").returncode == 0
    assert second.interrupt() == 0


def test_up_restarts_its_redis_and_keeps_the_data(procs: Processes, tmp_path: Path) -> None:
    """The embedded Redis killed: up starts it again on the same port, queued jobs kept (AOF)."""
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    up = Up(procs, site, port, "up", "--appendfsync", "always")
    (tmp_path / "later.py").write_text(HELLO)
    queued = up.cli("preview", str(tmp_path / "later.py"), "-a", "name=later", "--in", "1h")
    assert queued.returncode == 0, queued.stderr
    server = up.children()["server"]
    os.kill(server, signal.SIGKILL)
    deadline(lambda: not alive(server), 10, "the server to die")
    up.lines.expect(r"embedded redis restarted", 30)
    got = up.cli("job", "get", queued.stdout.strip(), "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["status"] == "queued"
    assert up.interrupt() == 0
