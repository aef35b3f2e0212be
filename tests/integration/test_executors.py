"""Executors end to end with real child processes (no Redis): prepare, run, interpret."""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.procs import assert_no_process_running, unique_sleep
from worker.executors.binding import ArgumentError
from worker.executors.command import Prepared, ProcessResult
from worker.executors.dispatch import UnsupportedLanguage, interpret, prepare
from worker.executors.outcome import Outcome
from worker.jobprocess import TRUNCATED, LogLine, ProcessRun
from worker.sandbox.policy import Limits, Sandbox
from worker.sandbox.warm import ForkServer

# LC_ALL keeps Python's C-locale coercion from adding LC_CTYPE in the job's own interpreter.
BASE_ENV = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}


@pytest.fixture(params=["isolated", "shared", "cold"])
def sandbox(request: pytest.FixtureRequest, fork_server: ForkServer) -> Sandbox:
    """Every executor test runs warm in both sandbox modes (isolated where the machine allows),
    and cold (a launcher per job) in the best mode the machine allows."""
    if request.param == "shared":
        return Sandbox("shared", Limits(), server=fork_server)
    if request.param == "cold":
        cold: Sandbox = request.getfixturevalue("cold_sandbox")
        return cold
    isolated: Sandbox = request.getfixturevalue("isolated")
    return isolated


@dataclass
class Recorder:
    """A log sink that remembers every batch with the monotonic time it arrived."""

    batches: list[tuple[float, list[LogLine]]] = field(default_factory=list)
    on_batch: Callable[[list[LogLine]], None] | None = None

    def __call__(self, batch: list[LogLine]) -> None:
        self.batches.append((time.monotonic(), list(batch)))
        if self.on_batch is not None:
            self.on_batch(batch)

    @property
    def lines(self) -> list[str]:
        return [line.line for _, batch in self.batches for line in batch]


@dataclass
class Job:
    """A prepared job and its ProcessRun, so tests can cancel it or inspect the sink."""

    language: str
    run: ProcessRun
    sink: Recorder

    def finish(self) -> tuple[Outcome, ProcessResult]:
        result = self.run.run()
        return interpret(self.language, result), result


def make_job(
    sandbox: Sandbox, language: str, code: str, args: dict[str, object] | None = None, *,
    timeout_s: float = 30.0, env: dict[str, str] | None = None, **options: Any,
) -> Job:
    """Prepare ``code`` and wrap it in a ProcessRun in ``sandbox``."""
    prepared = prepare(language, textwrap.dedent(code), args or {})
    sink = Recorder()
    run = ProcessRun(prepared, sandbox=sandbox, env=env or BASE_ENV,
                     timeout_s=timeout_s, sink=sink, kill_grace_s=0.2, **options)
    return Job(language, run, sink)


def run_job(sandbox: Sandbox, language: str, code: str, args: dict[str, object] | None = None,
            **kwargs: Any) -> tuple[Outcome, ProcessResult, Recorder]:
    """Prepare, run and interpret one job."""
    job = make_job(sandbox, language, code, args, **kwargs)
    outcome, result = job.finish()
    return outcome, result, job.sink


def test_python_returns_a_value(sandbox: Sandbox) -> None:
    """main's return value is the result; its prints reach the sink."""
    outcome, result, sink = run_job(sandbox, "python3", """
        def main(name, greeting="hello"):
            print("about to greet")
            return {"text": f"{greeting} {name}", "n": [1, 2.5, None, True]}
    """, {"name": "ann", "ignored": 1})
    assert outcome == Outcome(ok=True, result={"text": "hello ann", "n": [1, 2.5, None, True]})
    assert sink.lines == ["about to greet"]
    assert result.exit_code == 0


def test_python_converts_args_by_annotation(sandbox: Sandbox) -> None:
    """datetime, bytes and dataclass parameters are built from their JSON forms."""
    outcome, _, _ = run_job(sandbox, "python3", """
        from dataclasses import dataclass
        from datetime import datetime

        @dataclass
        class Box:
            size: int
            label: str = "?"

        def main(when: datetime, blob: bytes, box: Box, count: int):
            return [when.isoformat(), blob.decode(), box.size * 2, box.label, count + 1]
    """, {"when": "2024-05-06T07:08:09Z", "blob": "aGk=", "box": {"size": "21"}, "count": "2"})
    assert outcome == Outcome(ok=True, result=["2024-05-06T07:08:09+00:00", "hi", 42, "?", 3])


def test_python_missing_args_are_named_before_main_runs(sandbox: Sandbox) -> None:
    """Missing required parameters fail the job, naming all of them, and main never runs."""
    outcome, _, sink = run_job(sandbox, "python3", """
        print("module loaded")
        def main(a, b, c=1):
            print("main ran")
    """, {"c": 2})
    assert outcome.error is not None
    assert outcome.error["name"] == "ArgumentError"
    assert outcome.error["message"] == "missing required argument(s) for main: a, b"
    assert sink.lines == ["module loaded"]


def test_python_exception_keeps_only_user_frames(sandbox: Sandbox) -> None:
    """A user exception reports its class, message and a traceback of the user's frames."""
    outcome, result, _ = run_job(sandbox, "python3", """
        def helper(x):
            raise KeyError(f"no such thing: {x}")

        def main():
            helper(7)
    """)
    assert outcome.error is not None
    assert outcome.error["name"] == "KeyError"
    assert outcome.error["message"] == "'no such thing: 7'"
    tb = outcome.error["traceback"]
    assert "main.py" in tb and "in helper" in tb and "in main" in tb
    assert "pywrapper" not in tb and "binding" not in tb
    assert result.exit_code == 0


def test_python_import_error_is_the_users(sandbox: Sandbox) -> None:
    """An exception at import time is reported with the user's traceback."""
    outcome, _, _ = run_job(sandbox, "python3", "import no_such_module_here\ndef main(): pass\n")
    assert outcome.error is not None
    assert outcome.error["name"] == "ModuleNotFoundError"
    assert "importlib" not in outcome.error["traceback"]


def test_python_without_main(sandbox: Sandbox) -> None:
    """Code that defines no main fails with NoMainFunction."""
    outcome, _, _ = run_job(sandbox, "python3", "x = 1\n")
    assert outcome.error is not None and outcome.error["name"] == "NoMainFunction"


def test_python_unserialisable_result(sandbox: Sandbox) -> None:
    """A result JSON cannot carry is an error naming its type."""
    outcome, _, _ = run_job(sandbox, "python3", "def main():\n    return {1, 2}\n")
    assert outcome.error == {
        "name": "ResultNotSerializable",
        "message": "result of type set is not JSON-serialisable; "
                   "return dicts, lists, strings, numbers, booleans or None",
        "traceback": "",
    }


def test_python_nan_inside_the_result_is_located(sandbox: Sandbox) -> None:
    """A NaN deep in the result is refused, with where it is."""
    outcome, _, _ = run_job(sandbox, "python3", "def main():\n    return {'a': [1, float('nan')]}\n")
    assert outcome.error is not None and outcome.error["name"] == "ResultNotSerializable"
    assert "result['a'][1]" in outcome.error["message"]


def test_python_async_main(sandbox: Sandbox) -> None:
    """async def main is run to completion."""
    outcome, _, _ = run_job(sandbox, "python3", """
        import asyncio

        async def main(n: int):
            await asyncio.sleep(0)
            return n * 2
    """, {"n": "21"})
    assert outcome == Outcome(ok=True, result=42)


def test_python_killed_by_a_signal(sandbox: Sandbox) -> None:
    """A process that dies without reporting is ProcessExited, with the signal and stderr.

    It dies of a fault, which the kernel delivers even to a PID 1 (a warm isolated python3
    job is its namespace's PID 1: a signal it sends itself without a handler does nothing)."""
    outcome, result, _ = run_job(sandbox, "python3", """
        import ctypes, sys

        def main():
            print("going down", file=sys.stderr)
            ctypes.string_at(0)
    """)
    assert result.signal == signal.SIGSEGV and result.payload is None
    assert outcome.error is not None and outcome.error["name"] == "ProcessExited"
    assert "SIGSEGV" in outcome.error["message"] and "going down" in outcome.error["message"]


def test_malformed_wrapper_report() -> None:
    """A payload that is not the wrapper's report shape is a WrapperError."""
    result = ProcessResult(exit_code=0, signal=None, timed_out=False, canceled=False,
                           payload=b'{"ok": "yes"}', stderr_tail=[], stdout_tail=[], duration_ms=1)
    outcome = interpret("python3", result)
    assert outcome.error is not None and outcome.error["name"] == "WrapperError"


def test_bash_positional_env_and_last_line_result(sandbox: Sandbox) -> None:
    """Args arrive as $1.. and as env vars; the last stdout line is the result, as JSON."""
    outcome, _, sink = run_job(sandbox, "bash", """
        name="$1"
        count="${2:-10}"
        echo "positional: $name $count" >&2
        echo "from env: $(printenv name) $(printenv count || echo unset)"
        echo "{\\"name\\": \\"$name\\", \\"count\\": $count}"
        echo
    """, {"name": "bob"})
    assert outcome == Outcome(ok=True, result={"name": "bob", "count": 10})
    assert "positional: bob 10" in sink.lines
    assert "from env: bob unset" in sink.lines


def test_bash_non_json_last_line_is_a_string(sandbox: Sandbox) -> None:
    """A last line that is not JSON is returned as text."""
    outcome, _, _ = run_job(sandbox, "bash", 'x="$1"\necho "hello $x"\n', {"x": [1, 2]})
    assert outcome == Outcome(ok=True, result="hello [1,2]")


def test_bash_exit_code_failure(sandbox: Sandbox) -> None:
    """A non-zero exit is an ExitCode error with the code and the end of stderr."""
    outcome, _, _ = run_job(sandbox, "bash", "echo 'disk full' >&2\nexit 3\n")
    assert outcome.error is not None
    assert outcome.error["name"] == "ExitCode"
    assert outcome.error["message"].startswith("bash exited with code 3")
    assert "disk full" in outcome.error["message"]


def test_bash_missing_args_fail_in_prepare(sandbox: Sandbox) -> None:
    """A bash script's missing required parameters are named before anything runs."""
    with pytest.raises(ArgumentError, match="a, b"):
        prepare("bash", 'a="$1"\nb="$2"\n', {})


def test_unsupported_language(sandbox: Sandbox) -> None:
    """An unknown language is refused by prepare."""
    with pytest.raises(UnsupportedLanguage, match="cobol"):
        prepare("cobol", "", {})


def test_lines_reach_the_sink_while_the_job_runs(sandbox: Sandbox) -> None:
    """The first line is in the sink before the job ends: the job waits for the sink to see it."""
    with socket.create_server(("127.0.0.1", 0)) as gate:
        port = gate.getsockname()[1]
        job = make_job(sandbox, "python3", f"""
            import socket

            def main():
                with socket.create_connection(("127.0.0.1", {port})) as gate:
                    print("first")
                    gate.recv(1)  # blocks until the sink has seen "first"
                print("second")
                return "done"
        """)
        accepted: list[socket.socket] = []
        threading.Thread(target=lambda: accepted.append(gate.accept()[0]), daemon=True).start()

        def open_gate(batch: list[LogLine]) -> None:
            if any(line.line == "first" for line in batch):
                accepted[0].sendall(b"x")

        job.sink.on_batch = open_gate
        outcome, _ = job.finish()
        ended = time.monotonic()
        for conn in accepted:
            conn.close()
    assert outcome == Outcome(ok=True, result="done")
    (first_at, first_batch), *later = job.sink.batches
    assert [line.line for line in first_batch] == ["first"]
    assert first_at < ended
    second = [line for _, batch in later for line in batch if line.line == "second"]
    assert second and second[0].ts_ms >= first_batch[0].ts_ms


def test_batches_respect_max_batch(sandbox: Sandbox) -> None:
    """Many quick lines arrive in order, in batches of at most max_batch."""
    _, _, sink = run_job(sandbox, "bash", "for i in $(seq 1 1000); do echo $i; done\n",
                         max_batch=100)
    assert sink.lines == [str(i) for i in range(1, 1001)]
    assert max(len(batch) for _, batch in sink.batches) <= 100


def test_overlong_lines_and_invalid_utf8(sandbox: Sandbox) -> None:
    """Lines past max_line_bytes are cut with a marker; invalid UTF-8 is replaced."""
    _, result, sink = run_job(sandbox, "bash", """
        printf 'x%.0s' $(seq 1 50); echo
        printf 'ok \\xff\\n'
        printf 'no newline at the end'
    """, max_line_bytes=30)
    assert sink.lines == ["x" * 30 + TRUNCATED, "ok \ufffd", "no newline at the end"]
    assert result.stdout_tail == sink.lines


def test_a_failing_sink_does_not_block_the_job(sandbox: Sandbox) -> None:
    """When the sink raises it is not called again, the pipes are drained and the job ends."""
    calls: list[int] = []

    def broken(batch: list[LogLine]) -> None:
        calls.append(len(batch))
        raise ConnectionError("redis went away")

    job = make_job(sandbox, "python3", """
        def main():
            for i in range(20000):
                print("line", i, "x" * 100)
            return "finished"
    """)
    job.sink.on_batch = broken
    outcome, result = job.finish()
    assert outcome == Outcome(ok=True, result="finished")
    assert isinstance(result.sink_error, ConnectionError)
    assert len(calls) == 1
    assert result.stdout_tail[-1].startswith("line 19999")


def test_timeout_kills_the_whole_process_group(sandbox: Sandbox) -> None:
    """On timeout the job gets SIGTERM, then SIGKILL, grandchildren included."""
    marker = unique_sleep()
    outcome, result, _ = run_job(sandbox, "bash", f"""
        trap '' TERM
        sleep {marker} &
        wait
    """, timeout_s=3.0)  # long enough for bash to set its trap before the SIGTERM, under load
    assert result.timed_out and result.signal == 9
    assert outcome.error == {"name": "Timeout", "message": "job exceeded its timeout of 3 s",
                             "traceback": ""}
    assert_no_process_running(marker)


def test_background_processes_do_not_outlive_the_job(sandbox: Sandbox) -> None:
    """A grandchild holding stdout open is killed when the main child exits; run() returns."""
    marker = unique_sleep()
    started = time.monotonic()
    outcome, _, _ = run_job(sandbox, "bash", f"sleep {marker} &\necho started\n")
    assert outcome == Outcome(ok=True, result="started")
    assert_no_process_running(marker)
    assert time.monotonic() - started < 10


def test_cancel_kills_a_running_job(sandbox: Sandbox) -> None:
    """cancel() from another thread stops the job and the outcome is Canceled."""
    marker = unique_sleep()
    job = make_job(sandbox, "bash", f"sleep {marker} &\necho started\nwait\n")
    job.sink.on_batch = lambda batch: job.run.cancel()  # on the first line
    outcome, result = job.finish()
    assert result.canceled and not result.timed_out
    assert outcome.error is not None and outcome.error["name"] == "Canceled"
    assert_no_process_running(marker)


def test_cancel_before_run_spawns_nothing(sandbox: Sandbox) -> None:
    """A run canceled before it starts returns at once as canceled."""
    job = make_job(sandbox, "bash", "echo should not run\n")
    job.run.cancel()
    outcome, result = job.finish()
    assert result.canceled and job.sink.lines == []
    assert outcome.error is not None and outcome.error["name"] == "Canceled"


def test_env_is_exactly_what_was_passed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job sees only the env it was given, plus its HOME and TMPDIR: nothing of the worker's."""
    monkeypatch.setenv("GRISTMILL_REDIS_URL", "redis://:secret@localhost:17379/0")
    env = {**BASE_ENV, "WM_JOB_ID": "j-1"}
    outcome, _, _ = run_job(sandbox, "python3", """
        import os

        def main():
            return dict(os.environ)
    """, env=env)
    assert outcome.ok and isinstance(outcome.result, dict)
    seen = dict(outcome.result)
    home, tmpdir = seen.pop("HOME"), seen.pop("TMPDIR")
    assert seen == env
    if sandbox.mode == "isolated":
        assert (home, tmpdir) == ("/job", "/tmp")


def test_cancel_is_thread_safe_during_run(sandbox: Sandbox) -> None:
    """cancel() called from a separate thread while run() blocks ends the run."""
    job = make_job(sandbox, "python3", """
        import time

        def main():
            print("ready", flush=True)
            time.sleep(100)
    """)
    ready = threading.Event()
    job.sink.on_batch = lambda batch: ready.set()
    canceller = threading.Thread(target=lambda: ready.wait(30) and job.run.cancel())
    canceller.start()
    outcome, _ = job.finish()
    canceller.join()
    assert outcome.error is not None and outcome.error["name"] == "Canceled"


def test_a_process_in_its_own_session_does_not_outlive_the_job(sandbox: Sandbox) -> None:
    """A grandchild in its own session holding stdout open dies with the job; run() returns."""
    marker = unique_sleep()
    outcome, _, _ = run_job(sandbox, "python3", f"""
        import subprocess

        def main():
            subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
            return "detached"
    """)
    assert outcome == Outcome(ok=True, result="detached")
    assert_no_process_running(marker)


def test_a_command_that_cannot_start(sandbox: Sandbox) -> None:
    """A spawn failure is a ProcessExited outcome that says why, not an exception."""
    prepared = Prepared(argv=["/does-not-exist/python3"], files={}, env={}, result_fd=True)
    run = ProcessRun(prepared, sandbox=sandbox, env=BASE_ENV, timeout_s=30, sink=Recorder())
    result = run.run()
    outcome = interpret("python3", result)
    assert result.exit_code == 127
    assert outcome.error is not None and outcome.error["name"] == "ProcessExited"
    assert "does-not-exist" in outcome.error["message"]


def test_a_job_needs_no_thread_but_its_callers(sandbox: Sandbox) -> None:
    """Reading, batching, the timeout and the cancel all run on the thread that called run():
    while a job streams, the process has no thread more than before it started."""
    run_job(sandbox, "python3", "def main():\n    return 1\n")  # a warm server is up by now
    before = {t.ident for t in threading.enumerate()}
    seen: list[tuple[bool, set[int | None]]] = []
    job = make_job(sandbox, "python3", """
        import time
        def main():
            print("started", flush=True)
            time.sleep(60)
    """, flush_interval_s=0.01)

    def on_batch(batch: list[LogLine]) -> None:
        seen.append((threading.current_thread() is threading.main_thread(),
                     {t.ident for t in threading.enumerate()}))
        job.run.cancel()

    job.sink.on_batch = on_batch
    _, result = job.finish()
    assert result.canceled and job.sink.lines == ["started"]
    assert seen == [(True, before)]


def test_the_last_lines_go_to_the_last_sink(sandbox: Sandbox) -> None:
    """Lines still unsent when the job ends go to last_sink (the runner sends them with the
    outcome), in order; the live sink got none within its interval."""
    last = Recorder()
    job = make_job(sandbox, "python3", """
        def main():
            for n in range(3):
                print(n)
            return "done"
    """, flush_interval_s=30, last_sink=last)
    outcome, _ = job.finish()
    assert outcome.result == "done"
    assert (job.sink.lines, last.lines) == ([], ["0", "1", "2"])


def test_a_failing_loop_still_kills_the_job(sandbox: Sandbox,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the job's loop (here: reading fails) reaps the child, which kills its group,
    before the error goes up: the job does not outlive its run."""
    from worker import jobprocess

    reaped: list[str] = []
    for cls in (jobprocess._ColdChild, jobprocess._WarmChild):
        original = cls.reap

        def spy(self: Any, _original: Any = original) -> int | None:
            reaped.append(type(self).__name__)
            result: int | None = _original(self)
            return result

        monkeypatch.setattr(cls, "reap", spy)

    def broken(self: Any, fd: int) -> bool:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(jobprocess._Streams, "read", broken)
    job = make_job(sandbox, "python3", """
        import time
        def main():
            print("started", flush=True)
            time.sleep(60)
    """)
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        job.run.run()
    assert len(reaped) == 1
