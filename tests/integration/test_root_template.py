"""The jobs' root laid out once per fork server and copied per job (worker/sandbox/template.py).

The sandbox's own tests (tests/e2e/test_sandbox.py, test_warm.py) run on this path
already, through the session's warm sandbox; these check what copying a shared
template could get wrong: one job's files reaching another, the template itself
being writable, a bind under /tmp hidden by the job's tmpfs, and the jobs that
must not use the template (their binds differ, or it could not be built).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import deadline
from tests.integration.test_warm import ENV, run
from worker.executors.dispatch import interpret, prepare
from worker.executors.outcome import Outcome
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox import launch, template
from worker.sandbox.policy import Sandbox
from worker.sandbox.warm import ForkServer

pytestmark = pytest.mark.timeout(120)

MOUNTS = """
    def main():
        return [line.split()[4] + " " + line.split()[5].split(",")[0]
                for line in open("/proc/self/mountinfo")]
"""


def under_tmp(sandbox: Sandbox) -> list[str]:
    """What a job's empty /tmp lists: the top directories of binds under /tmp (a checkout
    there, as in CI) are put back on top of the job's tmpfs."""
    return sorted({Path(path).parts[2] for path in (*sandbox.binds, *sandbox.shared_dirs)
                   if path.startswith("/tmp/")})


def mounts(sandbox: Sandbox) -> dict[str, str]:
    """The job's mount points and whether each is ro or rw."""
    outcome = run(sandbox, MOUNTS)
    assert outcome.ok, outcome
    return dict(entry.split() for entry in outcome.result)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory under /tmp with one file, readable by any uid."""
    path = Path(tempfile.mkdtemp(prefix="gm-template-", dir="/tmp"))
    path.chmod(0o755)
    (path / "seen.txt").write_text("from the host")
    (path / "seen.txt").chmod(0o644)
    yield path
    shutil.rmtree(path)


def test_a_job_gets_the_templates_read_only_root_and_nothing_of_the_hosts(
        isolated: Sandbox) -> None:
    """Only the binds, devices and the job's own mounts: the root is the template's, read-only."""
    table = mounts(isolated)
    assert table.pop("/") == "ro"
    own = {"/tmp": "rw", launch.JOB_DIR: "rw", "/dev/shm": "rw", "/proc": "rw"}
    assert {point: table.pop(point) for point in own} == own
    devices = {f"/dev/{name}" for name in launch.DEVICES}
    assert set(table) == set(isolated.binds) - {p for p in isolated.binds if os.path.islink(p)} \
        | devices
    assert {table[point] for point in isolated.binds if point in table} == {"ro"}


def test_jobs_from_one_template_do_not_see_each_others_files(isolated: Sandbox) -> None:
    """A job's /tmp, /dev/shm and /job are its own while another job holds files in its own."""
    holder = prepare("python3", textwrap.dedent("""
        import time
        def main():
            for path in ("/tmp/held", "/dev/shm/held", "/job/held"):
                open(path, "w").write("mine")
            print("written", flush=True)
            time.sleep(60)
    """), {})
    written = threading.Event()

    def sink(batch: list[LogLine]) -> None:
        if any(line.line == "written" for line in batch):
            written.set()

    run_holder = ProcessRun(holder, sandbox=isolated, env=ENV, timeout_s=5, sink=sink,
                            kill_grace_s=0.2)
    outcomes: list[Outcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(interpret("python3",
                                                                       run_holder.run())))
    thread.start()
    try:
        deadline(written.is_set, 30, "the first job to write its files")
        seen = run(isolated, """
            import os
            def main():
                return {path: sorted(os.listdir(path)) for path in ("/tmp", "/dev/shm", "/job")}
        """)
    finally:
        thread.join(30)
    assert seen.result == {"/tmp": under_tmp(isolated), "/dev/shm": [],
                           "/job": ["args.json", "main.py"]}, seen
    assert outcomes and not outcomes[0].ok  # the holder ran to its timeout, files held


def test_tmp_dev_shm_and_job_share_one_disk_budget(isolated: Sandbox) -> None:
    """As in build_root's single tmpfs: what one of them holds, the others cannot."""
    small = dataclasses.replace(isolated, limits=dataclasses.replace(isolated.limits, disk_mb=4))
    assert small.server is isolated.server  # same server, same template
    filled = run(small, """
        def main():
            written = 0
            try:
                for path in ("/tmp/a", "/dev/shm/b", "/job/c"):
                    with open(path, "wb") as out:
                        for _ in range(2):
                            out.write(b"x" * 1024 * 1024)
                            out.flush()
                            written += 1
            except OSError as exc:
                return [written, exc.strerror]
    """)
    assert filled.result is not None and filled.result[1] == "No space left on device", filled
    assert filled.result[0] < 4


def test_a_bind_under_tmp_stays_visible_read_only_above_the_jobs_tmp(
        isolated: Sandbox, host_dir: Path) -> None:
    """The job's tmpfs covers /tmp: binds under it are put back on top, read-only."""
    sandbox = dataclasses.replace(isolated, binds=(*isolated.binds, str(host_dir)))
    own = sandbox.warm()
    try:
        assert own.server is not None
        outcome = run(own, f"""
            import os
            def main():
                open("/tmp/mine", "w").write("x")
                try:
                    open("{host_dir}/written", "w")
                    wrote = "wrote"
                except OSError as exc:
                    wrote = exc.strerror
                return [open("{host_dir}/seen.txt").read(), wrote, sorted(os.listdir("/tmp"))]
        """)
        assert outcome.result == ["from the host", "Read-only file system",
                                  sorted(["mine", *under_tmp(sandbox)])], outcome
        assert mounts(own)["/"] == "ro"  # it was the template's path
    finally:
        if own.server is not None:
            own.server.close()
    assert not (host_dir / "written").exists()


def test_a_job_with_binds_of_its_own_builds_its_root(isolated: Sandbox, host_dir: Path) -> None:
    """A locked environment's extra bind is not in the template: build_root, as cold."""
    sandbox = dataclasses.replace(isolated, binds=(*isolated.binds, str(host_dir)))
    assert sandbox.server is isolated.server
    table = mounts(sandbox)
    assert table["/"] == "rw" and table[str(host_dir)] == "ro"  # build_root's tmpfs root
    outcome = run(sandbox, f"""
        def main():
            return open("{host_dir}/seen.txt").read()
    """)
    assert outcome.result == "from the host", outcome


def test_no_template_for_a_shared_directory_each_job_has_its_own_of(
        isolated: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    """The host's /tmp shared with jobs: the server says why it has no template and builds
    every job's root itself; jobs still run, and write to the shared directory."""
    with pytest.raises(launch.SandboxError, match="/dev/shm/x is, or lies under"):
        template.make(template.spec(isolated.root, list(isolated.binds), ["/dev/shm/x"], 64))
    own = dataclasses.replace(isolated, shared_dirs=("/tmp",)).warm()
    name = f"gm-template-{os.getpid()}-{threading.get_ident()}"
    try:
        outcome = run(own, f"""
            def main():
                open("/tmp/{name}", "w").write("hello")
                return "ok"
        """)
        assert outcome.result == "ok", outcome
        assert Path("/tmp", name).read_text() == "hello"
        assert "every job builds its own root: /tmp is, or lies under" in capfd.readouterr().err
    finally:
        assert own.server is not None
        own.server.close()
        Path("/tmp", name).unlink(missing_ok=True)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return stat.read().rsplit(b")", 1)[1].split()[0].decode()


@pytest.fixture
def own(isolated: Sandbox) -> Iterator[Sandbox]:
    """The isolated sandbox with a fork server (and so a spare) of its own."""
    sandbox = dataclasses.replace(isolated, server=None).warm()
    yield sandbox
    assert sandbox.server is not None
    sandbox.server.close()


def _spare(sandbox: Sandbox) -> int:
    """The server's one child while no job runs: the process forked ahead for the next job,
    PID 1 of its namespace (at start the server has another for a moment: the template's
    builder)."""
    assert sandbox.server is not None and sandbox.server.pid is not None
    server_pid = sandbox.server.pid

    def spares() -> list[int]:
        return [child for child in _children(server_pid) if _pid_in_namespace(child) == "1"]

    deadline(lambda: len(spares()) == 1, 10, "the server's spare")
    (spare,) = spares()
    return spare


def _pid_in_namespace(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line.split()[-1] for line in status if line.startswith("NSpid:"))
    except (OSError, StopIteration):
        return None


def test_the_spare_holds_nothing_of_any_job_until_its_own(own: Sandbox) -> None:
    """Forked ahead, it has the server's stdio and its socket to the server, no job's pipes;
    its job gets it: a fresh uid, PID 1, and the next job a new spare."""
    assert run(own, "def main():\n    return 1\n").result == 1
    spare = _spare(own)
    above_stderr = [os.readlink(f"/proc/{spare}/fd/{fd}") for fd in os.listdir(f"/proc/{spare}/fd")
                    if int(fd) > 2]
    assert len(above_stderr) == 1 and above_stderr[0].startswith("socket:"), above_stderr
    assert os.stat(f"/proc/{spare}").st_uid == 0
    outcome = run(own, "import os\ndef main():\n    return [os.getpid(), os.getuid()]\n")
    assert outcome.result is not None and outcome.result[0] == 1 and outcome.result[1] != 0
    assert _spare(own) != spare


def test_a_spare_killed_before_its_job_does_not_fail_the_job(own: Sandbox) -> None:
    """The OOM killer's choice, say: the job is forked afresh, and a new spare follows."""
    spare = _spare(own)
    os.kill(spare, 9)
    deadline(lambda: _state(spare) == "Z", 10, "the spare to be dead (not yet reaped)")
    assert run(own, "def main():\n    return 'ran'\n").result == "ran"
    assert _spare(own) != spare


def test_closing_the_server_ends_its_spare(own: Sandbox) -> None:
    spare = _spare(own)
    assert own.server is not None
    own.server.close()
    assert not os.path.exists(f"/proc/{spare}")


def test_a_template_no_job_could_use_is_dropped_before_any_job(
        isolated: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    """The server tries a job's root from its template once at start: where that fails
    (here a tmpfs size the kernel refuses), jobs build their own root and still run."""
    broken = template.spec(isolated.root, isolated.binds, isolated.shared_dirs, -1)
    server = ForkServer.start(pid1=True, root=broken)
    try:
        sandbox = dataclasses.replace(isolated, server=server)
        assert sandbox.uses_template()  # the worker would say "t": no spare is there to take it
        assert mounts(sandbox)["/"] == "rw"  # build_root's tmpfs root
        assert run(sandbox, "def main():\n    return 'ran'\n").result == "ran"
    finally:
        server.close()
    assert "a job's root could not be prepared from the template" in capfd.readouterr().err
