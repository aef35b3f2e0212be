"""The worker's init script: run once, sandboxed like any job, before the worker claims anything.

An operator's script that prepares the host a worker's jobs will need (Windmill's
"init scripts"): its code is treated as hostile all the same. It runs through
the very path a job takes (``ProcessRun`` in the worker's sandbox: a uid of its
own, its own namespaces, root, limits; warm or cold as the worker's jobs are),
with an environment built from the same allow-list and no token, no Redis
credentials and no secret of the worker. Each output line is logged by the
worker; a failure (exit code, exception, timeout) is :class:`InitScriptFailed`,
which stops the worker non-zero with the script's error.

The language is the file's: ``.py`` is python3 (``main()`` without arguments,
its return value logged), anything else bash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import ConfigError
from worker.environment import process_environment
from worker.executors.dispatch import interpret, prepare
from worker.executors.outcome import Outcome
from worker.jobprocess import LogLine, ProcessRun
from worker.sandbox.policy import Sandbox

MAX_SCRIPT_BYTES = 1024 * 1024


class InitScriptFailed(ConfigError):
    """The init script failed: the worker must not take jobs on a host it did not prepare."""


@dataclass(frozen=True)
class InitScript:
    """One init script: its file, language and code (read once, at start)."""

    path: str
    language: str
    code: str

    @classmethod
    def load(cls, path: str) -> InitScript:
        """Read ``path``; ConfigError saying what is wrong when it cannot be an init script."""
        file = Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the init script {path!r}: {exc.strerror}") from exc
        if len(raw) > MAX_SCRIPT_BYTES:
            raise ConfigError(f"the init script {path!r} is larger than {MAX_SCRIPT_BYTES} bytes")
        try:
            code = raw.decode()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"the init script {path!r} is not UTF-8 text") from exc
        language = "python3" if file.suffix == ".py" else "bash"
        return cls(path=str(file), language=language, code=code)


def init_environment(group: str) -> dict[str, str]:
    """What the script's process gets: the jobs' allow-list, no token, nothing secret."""
    return {**process_environment(group), "WM_INIT_SCRIPT": "1"}


def run_init_script(script: InitScript, *, sandbox: Sandbox, group: str, timeout_s: float,
                    log: Any) -> Outcome:
    """Run ``script`` in ``sandbox`` to its end, logging its lines; InitScriptFailed on failure."""

    def sink(lines: list[LogLine]) -> None:
        for line in lines:
            log.info("init script output", stream=line.stream, line=line.line)

    log.info("init script starting", init_script=script.path, language=script.language)
    prepared = prepare(script.language, script.code, {})
    run = ProcessRun(prepared, sandbox=sandbox, env=init_environment(group), timeout_s=timeout_s,
                     sink=sink)
    outcome = interpret(script.language, run.run())
    if not outcome.ok:
        error = outcome.error or {}
        raise InitScriptFailed(
            f"the init script {script.path} failed: {error.get('name', 'Error')}: "
            f"{error.get('message', '')}".rstrip(": ")
        )
    log.info("init script done", init_script=script.path, result=outcome.result)
    return outcome
