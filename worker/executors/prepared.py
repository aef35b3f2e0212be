"""What an executor hands the worker to spawn for one job: argv, files, env, how the result comes back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prepared:
    """What to spawn for one job: run in the job's directory, which holds ``files``."""

    argv: list[str]
    files: dict[str, str]  # file name -> text, written into the job's directory
    env: dict[str, str]  # extra env for this language, merged into the job env by the caller
    result_fd: bool  # True: the child writes its result JSON on a pipe whose fd is its last arg
    # True: argv runs the python3 wrapper, which a fork server may run in-process instead.
    inprocess: bool = False
