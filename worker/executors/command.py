"""One job's command: what an executor hands the worker to spawn, and how it ended.

``Prepared`` is the command, ``ProcessResult`` its end. ``worker.jobprocess.ProcessRun``
turns the one into the other; the executors never import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prepared:
    """What to spawn for one job: run in the job's directory, which holds ``files``."""

    argv: list[str]
    files: dict[str, str]  # file name -> text, written into the job's directory
    env: dict[str, str]  # extra env for this language, merged into the job env by the caller
    result_fd: bool  # True: the child writes its result JSON on a pipe whose fd is its last arg
    # True: argv runs the python3 wrapper, which a fork server may run in-process instead.
    inprocess: bool = False


@dataclass
class ProcessResult:
    """How a run ended. ``signal`` is set when the process was killed by one."""

    exit_code: int | None
    signal: int | None
    timed_out: bool
    canceled: bool
    payload: bytes | None  # what the child wrote on its result pipe, None if nothing
    stderr_tail: list[str]
    stdout_tail: list[str]
    duration_ms: int
    timeout_s: float = 0.0
    memory_limit_mb: int = 0
    sink_error: BaseException | None = field(default=None, compare=False)  # sink was stopped
    sandbox_error: str | None = None  # the sandbox lost the job (its fork server died)
