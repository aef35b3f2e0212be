"""The executor interface the worker uses: ``prepare`` a job, then ``interpret`` its run.

``prepare`` turns (language, code, args) into a command and the files it
needs in the job's directory; ``worker.jobprocess.ProcessRun`` runs it in the
job's sandbox; ``interpret`` turns
the ``ProcessResult`` into an ``Outcome`` (a JSON result or a named error).

Error names an Outcome can carry, besides the user's own exception names:

==========================  =================================================
``Timeout``                 the job ran longer than its timeout and was killed
``Canceled``                the job was canceled while running
``ArgumentError``           args did not fit main's parameters (python3)
``NoMainFunction``          the python3 code defines no ``main``
``ResultNotSerializable``   main returned something that is not JSON
``WrapperError``            the python3 wrapper's report was unreadable
``ProcessExited``           the process died without reporting a result
``OutOfMemory``             the job went over its memory limit
``ExitCode``                a bash script exited with a non-zero code
``SandboxLost``             the worker's fork server died while the job ran
==========================  =================================================
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.languages import LANGUAGES

if TYPE_CHECKING:
    from worker.jobprocess import ProcessResult

SUPPORTED_LANGUAGES: frozenset[str] = frozenset(LANGUAGES)
STDERR_TAIL_LINES = 20


class UnsupportedLanguage(ValueError):
    """The job's language has no executor on this worker."""


@dataclass(frozen=True)
class Prepared:
    """What to spawn for one job: run in the job's directory, which holds ``files``."""

    argv: list[str]
    files: dict[str, str]  # file name -> text, written into the job's directory
    env: dict[str, str]  # extra env for this language, merged into the job env by the caller
    result_fd: bool  # True: the child writes its result JSON on a pipe whose fd is its last arg
    # True: argv runs the python3 wrapper, which a fork server may run in-process instead.
    inprocess: bool = False


@dataclass(frozen=True)
class Outcome:
    """What the job produced: a JSON result, or an error with name, message, traceback."""

    ok: bool
    result: object = None
    error: dict[str, str] | None = None


def prepare(language: str, code: str, args: dict[str, object]) -> Prepared:
    """The command that runs the job and the files it needs.

    Raises ``ArgumentError`` when a bash script's required parameters are
    missing from ``args`` and ``UnsupportedLanguage`` for an unknown language.
    """
    # Imported here, not at the top: both modules import Prepared and Outcome from this one.
    if language == "python3":
        from worker.executors import python3

        return python3.prepare(code, args)
    if language == "bash":
        from worker.executors import bash

        return bash.prepare(code, args)
    raise UnsupportedLanguage(
        f"unsupported language {language!r}; supported: {', '.join(sorted(SUPPORTED_LANGUAGES))}"
    )


def interpret(language: str, run: ProcessResult) -> Outcome:
    """Turn a finished run into the job's Outcome."""
    if run.canceled:
        return failure("Canceled", "job was canceled")
    if run.timed_out:
        return failure("Timeout", f"job exceeded its timeout of {run.timeout_s:g} s")
    if run.sandbox_error is not None:
        return failure("SandboxLost", run.sandbox_error)
    if language == "python3":
        from worker.executors import python3

        return python3.interpret(run)
    if language == "bash":
        from worker.executors import bash

        return bash.interpret(run)
    raise UnsupportedLanguage(f"unsupported language {language!r}")


def failure(name: str, message: str, traceback: str = "") -> Outcome:
    """An Outcome for a failed job."""
    return Outcome(ok=False, error={"name": name, "message": message, "traceback": traceback})


def exit_status(run: ProcessResult) -> str:
    """How the process ended, for messages: "exit code 3" or "signal SIGKILL"."""
    if run.signal is not None:
        try:
            return f"signal {signal.Signals(run.signal).name}"
        except ValueError:
            return f"signal {run.signal}"
    return f"exit code {run.exit_code}"


def process_exited(run: ProcessResult, what: str) -> Outcome:
    """The process ended without a result: say how, with the end of its stderr."""
    return failure("ProcessExited", f"{what} ended with {exit_status(run)}{stderr_excerpt(run)}")


def stderr_excerpt(run: ProcessResult) -> str:
    """The last stderr lines, ready to append to a message (empty if there are none)."""
    lines = run.stderr_tail[-STDERR_TAIL_LINES:]
    return "; last stderr lines:\n" + "\n".join(lines) if lines else ""
