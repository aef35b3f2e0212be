"""Warm execution: what forking jobs from a long-lived server must not change (no Redis)."""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import textwrap
import threading
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import deadline
from tests.procs import assert_no_process_running, processes_with, unique_sleep
from worker.executors.command import ProcessResult
from worker.executors.dispatch import interpret, prepare
from worker.executors.outcome import Outcome
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox.policy import Limits, Sandbox
from worker.sandbox.warm import FORK_SERVER_DIED, ForkServer

pytestmark = pytest.mark.timeout(120)

ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}


@pytest.fixture(params=["isolated", "shared"])
def warm(request: pytest.FixtureRequest, fork_server: ForkServer) -> Sandbox:
    """The session's fork server, in both sandbox modes."""
    if request.param == "shared":
        return Sandbox("shared", Limits(), server=fork_server)
    isolated: Sandbox = request.getfixturevalue("isolated")
    return isolated


def run(sandbox: Sandbox, code: str, args: dict[str, object] | None = None,
        lines: list[LogLine] | None = None) -> Outcome:
    prepared = prepare("python3", textwrap.dedent(code), args or {})
    sink = lines.extend if lines is not None else (lambda batch: None)
    result = ProcessRun(prepared, sandbox=sandbox, env=ENV, timeout_s=60, sink=sink,
                        kill_grace_s=0.2).run()
    return interpret("python3", result)


def test_a_jobs_imports_and_module_state_do_not_reach_the_next(warm: Sandbox) -> None:
    """Each job is a fresh fork: what one imports or changes is gone for the next."""
    leak = """
        import sys, json, colorsys
        def main():
            json.leaked = True
            sys.modules["gristmill_leak"] = colorsys
            return sorted(m for m in ("colorsys", "gristmill_leak") if m in sys.modules)
    """
    look = """
        import sys, json
        def main():
            return [hasattr(json, "leaked"),
                    sorted(m for m in ("colorsys", "gristmill_leak") if m in sys.modules)]
    """
    assert run(warm, leak) == Outcome(ok=True, result=["colorsys", "gristmill_leak"])
    assert run(warm, look) == Outcome(ok=True, result=[False, []])


# Scans the job's own memory for `head` immediately followed by `tail`, without ever
# building head+tail itself (which would put the needle in memory and find it).
SCAN = """
    import re
    def main(head: str, tail: str, secret_arg: str = ""):
        head_b, tail_b = head.encode(), tail.encode()
        found = 0
        with open("/proc/self/maps") as maps, open("/proc/self/mem", "rb", 0) as mem:
            for line in maps:
                start, end, perms = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\\S+)", line).groups()
                if not perms.startswith("rw"):
                    continue
                try:
                    mem.seek(int(start, 16))
                    chunk = mem.read(int(end, 16) - int(start, 16))
                except (OSError, OverflowError, ValueError):
                    continue
                at = chunk.find(head_b)
                while at >= 0:
                    found += chunk[at + len(head_b):at + len(head_b) + len(tail_b)] == tail_b
                    at = chunk.find(head_b, at + 1)
        return found
"""


def test_a_job_finds_nothing_of_the_previous_jobs_args_in_its_memory(warm: Sandbox) -> None:
    """The server never reads a request, so no job's args are in the memory jobs fork from."""
    head, tail = secrets.token_hex(8), secrets.token_hex(8)
    first = run(warm, SCAN, {"head": head, "tail": tail, "secret_arg": head + tail})
    assert first.ok and isinstance(first.result, int) and first.result > 0  # the scan works
    assert run(warm, SCAN, {"head": head, "tail": tail}) == Outcome(ok=True, result=0)


@pytest.fixture
def own_server(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session's sandbox mode with a fork server of its own (the test kills it)."""
    server = ForkServer.start(pid1=sandbox.mode == "isolated")
    yield dataclasses.replace(sandbox, server=server)
    server.close()


LOST = Outcome(ok=False, error={"name": "SandboxLost", "message": FORK_SERVER_DIED,
                                "traceback": ""})


def _server_killed_mid_job(sandbox: Sandbox, before_sleep: str = "") -> tuple[list[Outcome], str]:
    """Run a python3 job that (after ``before_sleep``) runs a marked sleep; SIGKILL the
    sandbox's fork server once the sleep runs: (the job's outcomes, the sleep's marker)."""
    server = sandbox.server
    assert server is not None and server.pid is not None
    marker = unique_sleep()
    prepared = prepare("python3", textwrap.dedent(f"""
        import ctypes, subprocess
        def main(marker: str):
            {before_sleep}
            subprocess.run(["sleep", marker])
    """), {"marker": marker})
    job = ProcessRun(prepared, sandbox=sandbox, env=ENV, timeout_s=60, sink=lambda b: None,
                     kill_grace_s=0.2)
    outcomes: list[Outcome] = []
    thread = threading.Thread(target=lambda: outcomes.append(interpret("python3", job.run())))
    thread.start()
    try:
        deadline(lambda: processes_with(marker), 30, "the job to start its sleep")
        os.kill(server.pid, signal.SIGKILL)
    finally:
        thread.join(30)
    return outcomes, marker


def test_a_dead_fork_server_fails_its_jobs_clearly_and_is_replaced(own_server: Sandbox) -> None:
    """SIGKILL the server mid-job: the job fails as SandboxLost, its processes die, and the
    next job runs on a new server."""
    outcomes, marker = _server_killed_mid_job(own_server)
    assert outcomes == [LOST]
    assert_no_process_running(marker, timeout_s=1.0)
    assert run(own_server, "def main():\n    return 'again'\n") == Outcome(ok=True, result="again")
    assert own_server.server is not None and own_server.server.starts == 2


def test_a_job_that_clears_its_pdeathsig_dies_with_the_fork_server(own_server: Sandbox) -> None:
    """Job code may undo PR_SET_PDEATHSIG (a PID-1 job runs in the very process that has it);
    SIGKILL the server: the worker kills the job through the pidfd the server gave it, and the
    job's namespace (its sleeper) dies with it."""
    if own_server.mode != "isolated":
        pytest.skip("a shared job is not confined to a namespace of its own")
    outcomes, marker = _server_killed_mid_job(
        own_server, "assert ctypes.CDLL(None).prctl(1, 0, 0, 0, 0) == 0  # PDEATHSIG: none")
    assert outcomes == [LOST]
    assert_no_process_running(marker, timeout_s=5.0)


# -- PID-1 jobs: an isolated job's own process is PID 1 of its namespace ----------------------


def _started(sandbox: Sandbox, kind: str, code: str, args: dict[str, object],
             timeout_s: float = 60, grace_s: float = 0.2) -> list[ProcessResult]:
    """A job running in a thread; the list gets its result."""
    job = ProcessRun(prepare(kind, textwrap.dedent(code), args), sandbox=sandbox, env=ENV,
                     timeout_s=timeout_s, sink=lambda batch: None, kill_grace_s=grace_s)
    results: list[ProcessResult] = []
    threading.Thread(target=lambda: results.append(job.run()), daemon=True).start()
    return results


def test_a_shared_job_sent_to_a_pid_1_server_fails_clearly(isolated: Sandbox) -> None:
    """A PID-1 server forks isolated jobs only: a shared one is refused, not half-sandboxed."""
    assert isolated.server is not None and isolated.server.pid1
    shared = Sandbox("shared", Limits(), server=isolated.server)
    prepared = prepare("python3", "def main():\n    return 1\n", {})
    result = ProcessRun(prepared, sandbox=shared, env=ENV, timeout_s=60, sink=lambda b: None).run()
    assert result.exit_code == 127
    assert any("isolated jobs only" in line for line in result.stderr_tail)


def test_an_isolated_python3_job_is_pid_1_and_its_own_uid(isolated: Sandbox) -> None:
    """One process per python3 job: the wrapper runs as PID 1 under the job's uid."""
    outcome = run(isolated, """
        import os
        def main():
            return [os.getpid(), os.getuid() >= 1_000_000_000, os.getppid()]
    """)
    assert outcome == Outcome(ok=True, result=[1, True, 0])


SLEEPS = """
import time
def main(marker: str):
    time.sleep(float(marker))
"""


@pytest.mark.parametrize("kind, code", [
    ("python3", SLEEPS),
    ("bash", 'marker="$1"\nsleep "$marker"\n'),
])
def test_a_timed_out_pid_1_job_ends_by_sigterm_well_before_the_grace(
        isolated: Sandbox, kind: str, code: str) -> None:
    """PID 1 ignores signals it has no handler for: the worker's SIGTERM must still end the
    job at once, reported as death by SIGTERM (not the SIGKILL after a long grace)."""
    marker = unique_sleep()
    results = _started(isolated, kind, code, {"marker": marker}, timeout_s=1.0,
                            grace_s=60.0)
    deadline(lambda: results, 30, "the job to end")
    result = results[0]
    assert result.timed_out is True
    assert result.signal == signal.SIGTERM
    assert result.duration_ms < 20_000
    assert_no_process_running(marker, timeout_s=1.0)


def test_a_cancelled_pid_1_job_ends_by_sigterm(isolated: Sandbox) -> None:
    """Cancel sends the same SIGTERM: the PID-1 job ends at once, canceled, by SIGTERM."""
    marker = unique_sleep()
    code = """
        import subprocess
        def main(marker: str):
            subprocess.run(["sleep", marker])
            subprocess.run(["sleep", marker])  # the first dies of SIGTERM too: still here
    """
    job = ProcessRun(prepare("python3", textwrap.dedent(code), {"marker": marker}),
                     sandbox=isolated, env=ENV, timeout_s=60, sink=lambda batch: None,
                     kill_grace_s=60.0)
    results: list[ProcessResult] = []
    threading.Thread(target=lambda: results.append(job.run()), daemon=True).start()
    deadline(lambda: processes_with(marker), 30, "the job to start its sleep")
    job.cancel()
    deadline(lambda: results, 30, "the job to end")
    assert results[0].canceled is True
    assert results[0].signal == signal.SIGTERM
    assert results[0].duration_ms < 20_000
    assert_no_process_running(marker, timeout_s=1.0)


def test_a_pid_1_jobs_alarm_still_ends_it(isolated: Sandbox) -> None:
    """PID 1 would ignore its own SIGALRM without a handler: the job still ends by it."""
    ended = run(isolated, """
        import signal, time
        def main():
            signal.alarm(1)
            time.sleep(60)
    """)
    assert ended.error is not None and "exit code 142" in ended.error["message"], ended


def test_a_process_a_pid_1_job_forks_starts_with_default_signals(isolated: Sandbox) -> None:
    """PID 1's handlers are not its forks': they die of SIGTERM as anywhere else."""
    assert run(isolated, """
        import os, signal
        def main():
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.write(ready_w, str(signal.getsignal(signal.SIGTERM)).encode())
                signal.pause()
                os._exit(0)
            seen = os.read(ready_r, 100).decode()
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            return [seen, os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1]
    """) == Outcome(ok=True, result=[str(signal.SIG_DFL), int(signal.SIGTERM)])


DOUBLE_FORK = """
import os
def main(marker: str):
    if os.fork() == 0:
        if os.fork() == 0:
            os.setsid()
            os.execvp("sleep", ["sleep", marker])
        os._exit(0)
    os.wait()
    return "left a sleeper"
"""


def test_a_double_forked_sleeper_dies_with_its_pid_1_job(isolated: Sandbox) -> None:
    """The orphan is re-parented to the job (PID 1), and killed when PID 1 exits."""
    marker = unique_sleep()
    assert run(isolated, DOUBLE_FORK, {"marker": marker}) == \
        Outcome(ok=True, result="left a sleeper")
    assert_no_process_running(marker, timeout_s=1.0)


def test_the_workers_socket_closing_kills_its_pid_1_jobs(isolated: Sandbox) -> None:
    """No launcher watches a request pipe any more: the server kills its jobs itself when the
    worker's end of the socket closes (as when the worker dies)."""
    own = dataclasses.replace(isolated, server=ForkServer.start(pid1=True))
    assert own.server is not None
    marker = unique_sleep()
    results = _started(own, "python3", """
        import subprocess
        def main(marker: str):
            subprocess.run(["sleep", marker])
    """, {"marker": marker})
    deadline(lambda: processes_with(marker), 30, "the job to start its sleep")
    own.server.close()
    assert_no_process_running(marker, timeout_s=1.0)
    deadline(lambda: results, 30, "the job to be reported")


def test_a_server_without_pid_1_forks_still_isolates_through_a_launcher(isolated: Sandbox) -> None:
    """The launcher path (a server started without ``pid1``) runs an isolated job under its
    namespace's init, as before."""
    server = ForkServer.start(pid1=False)
    try:
        outcome = run(dataclasses.replace(isolated, server=server), """
            import os
            def main():
                return [os.getpid(), os.getuid() >= 1_000_000_000, sorted(os.listdir("/proc"))[:2]]
        """)
    finally:
        server.close()
    assert outcome == Outcome(ok=True, result=[2, True, ["1", "2"]])


def test_a_forked_job_exits_as_an_interpreter_would(warm: Sandbox) -> None:
    """Its non-daemon threads are joined, then its atexit handlers run, before it ends."""
    lines: list[LogLine] = []
    done = run(warm, """
        import atexit, threading, time
        def late():
            time.sleep(0.2)
            print("thread finished", flush=True)
        def main():
            atexit.register(lambda: print("atexit ran", flush=True))
            threading.Thread(target=late).start()
            return "returned"
    """, lines=lines)
    assert done.result == "returned", done
    assert [line.line for line in lines] == ["thread finished", "atexit ran"]
