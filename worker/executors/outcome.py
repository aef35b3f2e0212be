"""What a job produced (a JSON result or a named error), and the failures every executor reports alike."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.executors.command import ProcessResult

STDERR_TAIL_LINES = 20


@dataclass(frozen=True)
class Outcome:
    """What the job produced: a JSON result, or an error with name, message, traceback."""

    ok: bool
    result: object = None
    error: dict[str, str] | None = None


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
