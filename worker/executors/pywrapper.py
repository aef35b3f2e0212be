"""The python3 job wrapper: load the user's file, call its ``main``, report on the result pipe.

Run in the job's child process as::

    python -u -P -m worker.executors.pywrapper <path/to/main.py> <path/to/args.json>

It writes exactly one JSON object to file descriptor 3, either
``{"ok": true, "result": ...}`` or
``{"ok": false, "error": {"name": ..., "message": ..., "traceback": ...}}``,
and exits 0 once that is written (whether main succeeded or not). stdout and
stderr belong to the user's code; the wrapper prints nothing unless it cannot
report at all. Standard library only: this import cost is paid by every job.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import sys
import traceback
from types import ModuleType, TracebackType

from worker.executors.binding import ArgumentError, bind_args, call_bound

RESULT_FD = 3
MODULE_NAME = "__gristmill_main__"
_HINT = "return dicts, lists, strings, numbers, booleans or None"


class _NotSerialisable(Exception):
    """The result holds something JSON cannot carry; the message says what and where."""


def main(argv: list[str]) -> int:
    """Run one job; return the process exit code (0 whenever a report was written)."""
    if len(argv) not in (3, 4):
        sys.stderr.write("usage: python -m worker.executors.pywrapper MAIN_PY ARGS_JSON [FD]\n")
        return 2
    result_fd = int(argv[3]) if len(argv) == 4 else RESULT_FD
    try:
        # Move the result pipe onto a close-on-exec descriptor, so that processes
        # the job starts (os.system, bash) do not inherit it and keep it open.
        out_fd = os.dup(result_fd)
        os.close(result_fd)
    except OSError as exc:
        sys.stderr.write(f"gristmill wrapper: no result pipe on fd {result_fd}: {exc}\n")
        return 2
    wrapper_pid = os.getpid()
    report = run_job(argv[1], argv[2])
    if os.getpid() != wrapper_pid:
        # A process the job forked returned from main (a fork bomb does): only the job's
        # own process reports; a copy ends here, silently, without touching the pipe.
        os._exit(0 if report.get("ok") else 1)
    data = json.dumps(report, allow_nan=False, separators=(",", ":")).encode()
    try:
        with os.fdopen(out_fd, "wb") as out:
            out.write(data)
    except OSError as exc:
        sys.stderr.write(f"gristmill wrapper: could not write the result: {exc}\n")
        return 3
    return 0


def run_job(main_path: str, args_path: str) -> dict[str, object]:
    """Load, bind, call and serialise; every failure becomes an error report."""
    # Plain os.path, not pathlib: every job pays for what the wrapper imports.
    main_file = os.path.abspath(main_path)
    try:
        with open(args_path, encoding="utf-8") as args_file:
            args = json.load(args_file)
        if not isinstance(args, dict):
            return _error("ArgumentError", "the job's args must be a JSON object")
        module = _load(main_path)
        func = getattr(module, "main", None)
        if not callable(func):
            return _error("NoMainFunction",
                          f"{os.path.basename(main_path)} does not define a function main()")
        kwargs = bind_args(func, args)
    except ArgumentError as exc:
        return _error("ArgumentError", str(exc))
    except BaseException as exc:  # the user's module failed at import: report it as theirs
        return _user_error(exc, main_file)
    try:
        result = call_bound(func, kwargs)
        if inspect.iscoroutine(result):
            import asyncio  # only async jobs pay for importing asyncio

            result = asyncio.run(result)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are the job's too
        return _user_error(exc, main_file)
    try:
        _check_json(result, "result", set())
    except _NotSerialisable as exc:
        return _error("ResultNotSerializable", str(exc))
    except RecursionError:
        return _error("ResultNotSerializable", f"result is nested too deeply; {_HINT}")
    return {"ok": True, "result": result}


def _load(main_path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE_NAME, main_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {main_path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec so dataclasses and get_type_hints can find the module.
    sys.modules[MODULE_NAME] = module
    # A forked (warm) job's interpreter read no PYTHONPATH at start: its locked
    # environment (worker/dependencies.py) is added here, as a cold start would have.
    for entry in reversed(os.environ.get("PYTHONPATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    # -P kept the job's directory off sys.path while the wrapper imported; the
    # user's code may import its sibling files, so add it now.
    sys.path.insert(0, os.path.dirname(os.path.abspath(main_path)))
    sys.argv = [str(main_path)]
    spec.loader.exec_module(module)
    return module


def _check_json(value: object, where: str, seen: set[int]) -> None:
    """Raise _NotSerialisable naming the first value that strict JSON cannot carry."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotSerialisable(f"{where} is {value}, which JSON cannot carry; {_HINT}")
        return
    if isinstance(value, list | tuple | dict):
        if id(value) in seen:
            raise _NotSerialisable(f"{where} refers back to itself; {_HINT}")
        seen.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _NotSerialisable(
                        f"{where} has a key of type {type(key).__name__}; keys must be strings"
                    )
                _check_json(item, f"{where}[{key!r}]", seen)
        else:
            for index, item in enumerate(value):
                _check_json(item, f"{where}[{index}]", seen)
        seen.discard(id(value))
        return
    kind = type(value).__name__
    raise _NotSerialisable(f"{where} of type {kind} is not JSON-serialisable; {_HINT}")


def _error(name: str, message: str, tb: str = "") -> dict[str, object]:
    return {"ok": False, "error": {"name": name, "message": message, "traceback": tb}}


def _user_error(exc: BaseException, main_file: str) -> dict[str, object]:
    tb = exc.__traceback__
    # Drop the wrapper's, importlib's and asyncio's frames above the user's first one.
    while tb is not None and not _is_user_frame(tb, main_file):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    message = str(exc) if not isinstance(exc, SystemExit) else f"main called sys.exit({exc.code!r})"
    return _error(type(exc).__name__, message, text)


def _is_user_frame(tb: TracebackType, main_file: str) -> bool:
    return os.path.abspath(tb.tb_frame.f_code.co_filename) == main_file


if __name__ == "__main__":
    sys.exit(main(sys.argv))
