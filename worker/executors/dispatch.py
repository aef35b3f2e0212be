"""The executors by language: ``prepare`` a job, then ``interpret`` its run.

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

from typing import TYPE_CHECKING

from common.languages import LANGUAGES
from worker.executors import bash, python3
from worker.executors.command import Prepared
from worker.executors.outcome import Outcome, failure

if TYPE_CHECKING:
    from worker.executors.command import ProcessResult

SUPPORTED_LANGUAGES: frozenset[str] = frozenset(LANGUAGES)


class UnsupportedLanguage(ValueError):
    """The job's language has no executor on this worker."""


def prepare(language: str, code: str, args: dict[str, object]) -> Prepared:
    """The command that runs the job and the files it needs.

    Raises ``ArgumentError`` when a bash script's required parameters are
    missing from ``args`` and ``UnsupportedLanguage`` for an unknown language.
    """
    if language == "python3":
        return python3.prepare(code, args)
    if language == "bash":
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
        return python3.interpret(run)
    if language == "bash":
        return bash.interpret(run)
    raise UnsupportedLanguage(f"unsupported language {language!r}")


