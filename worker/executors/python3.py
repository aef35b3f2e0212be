"""The python3 executor: run ``main`` through ``pywrapper``, read its report from the result pipe."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from worker.executors.command import Prepared
from worker.executors.outcome import Outcome, failure, process_exited

if TYPE_CHECKING:
    from worker.executors.command import ProcessResult

MAIN_FILE = "main.py"
ARGS_FILE = "args.json"


def prepare(code: str, args: dict[str, object]) -> Prepared:
    """main.py and args.json for the job's directory; binding happens in the child."""
    # -u: stdout/stderr unbuffered, so lines stream while the job runs.
    # -P: keep the job's directory off sys.path until the wrapper has imported
    #     itself, so a user file named e.g. worker.py cannot shadow it.
    argv = [sys.executable, "-u", "-P", "-m", "worker.executors.pywrapper", MAIN_FILE, ARGS_FILE]
    files = {MAIN_FILE: code, ARGS_FILE: json.dumps(args)}
    return Prepared(argv=argv, files=files, env={}, result_fd=True, inprocess=True)


def interpret(run: ProcessResult) -> Outcome:
    """The wrapper's report if it wrote one, else how the process died."""
    if run.payload is None:
        return process_exited(run, "python3 job")
    try:
        report = json.loads(run.payload)
        if report["ok"] is True:
            return Outcome(ok=True, result=report["result"])
        error = report["error"]
        if report["ok"] is False and all(isinstance(error[k], str) for k in _ERROR_KEYS):
            if error["name"] == "MemoryError" and run.memory_limit_mb:
                return failure("OutOfMemory", f"the job went over its memory limit of "
                               f"{run.memory_limit_mb} MiB", error["traceback"])
            return Outcome(ok=False, error={k: error[k] for k in _ERROR_KEYS})
    except (ValueError, TypeError, KeyError):
        pass
    head = run.payload[:200].decode("utf-8", errors="replace")
    return failure("WrapperError", f"the python3 wrapper's report is malformed: {head!r}")


_ERROR_KEYS = ("name", "message", "traceback")
