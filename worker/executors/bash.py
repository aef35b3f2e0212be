"""The bash executor: parameters declared as ``name="$1"``, result on the last stdout line.

A script declares its parameters with assignments from positional parameters::

    name="$1"              # required
    count="${2:-10}"       # optional, default 10
    export target=$3       # unquoted and export/declare/readonly forms work too

The job's args are passed by name as those positional parameters, and as
environment variables of the same names. The job's result is its last
non-empty stdout line, parsed as JSON when it is JSON, else the string.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.executors.base import Outcome, Prepared, failure, process_exited, stderr_excerpt
from worker.executors.binding import ArgumentError

if TYPE_CHECKING:
    from worker.process import ProcessResult

SCRIPT_FILE = "main.sh"

# `local` is left out on purpose: it only exists inside functions, where $1 is
# the function's argument, not the script's.
_PARAM_LINE = re.compile(
    r"""^\s*
    (?:(?:export|declare|typeset|readonly)(?:\s+-[A-Za-z]+)*\s+)?
    (?P<name>[A-Za-z_][A-Za-z0-9_]*)=
    (?P<quote>"?)
    (?:\$(?P<digit>[1-9])|\$\{(?P<index>[1-9][0-9]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\})
    (?P=quote)
    \s*(?:[;#].*)?$""",
    re.VERBOSE,
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class BashParam:
    """One declared parameter: ``$index`` assigned to ``name``; ``default`` None if required."""

    name: str
    index: int
    default: str | None = None

    @property
    def required(self) -> bool:
        """True when the script gives no ``:-`` default."""
        return self.default is None


def parse_bash_params(code: str) -> list[BashParam]:
    """The parameters a script declares, ordered by position.

    The first declaration of a name, and of a position, wins.
    """
    by_index: dict[int, BashParam] = {}
    names: set[str] = set()
    for line in code.splitlines():
        m = _PARAM_LINE.match(line)
        if m is None or m["name"] in names:
            continue
        index = int(m["digit"] or m["index"])
        if index in by_index:
            continue
        default = _unquote(m["default"]) if m["op"] else None
        by_index[index] = BashParam(m["name"], index, default)
        names.add(m["name"])
    return [by_index[i] for i in sorted(by_index)]


def bash_invocation(
    params: list[BashParam], args: dict[str, object]
) -> tuple[list[str], dict[str, str]]:
    """The positional parameters and environment that pass ``args`` to a script.

    Strings go as they are, other JSON values as compact JSON text. An absent
    (or null) optional parameter is passed as "" so its ``:-`` default applies,
    and is left out of the environment. Raises ArgumentError naming every
    required parameter that ``args`` lacks.
    """
    missing = [p.name for p in params if p.required and args.get(p.name) is None]
    if missing:
        raise ArgumentError(f"missing required argument(s) for the script: {', '.join(missing)}")
    size = max((p.index for p in params), default=0)
    positional = [""] * size
    env: dict[str, str] = {}
    last_given = 0
    for p in params:
        value = args.get(p.name)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        positional[p.index - 1] = text
        last_given = max(last_given, p.index)
        if _ENV_NAME.match(p.name):
            env[p.name] = text
    # Trailing absent parameters are not passed at all, so "$#" and ${N-x} see them unset.
    return positional[:last_given], env


def bash_result(stdout_tail: list[str]) -> object:
    """The last non-empty stdout line, as JSON if it parses, else as a string; None if none."""
    for line in reversed(stdout_tail):
        text = line.strip()
        if text:
            try:
                return json.loads(text, parse_constant=_reject_constant)
            except ValueError:
                return text
    return None


def prepare(code: str, args: dict[str, object]) -> Prepared:
    """main.sh for the job's directory; raise ArgumentError if required params are missing."""
    positional, env = bash_invocation(parse_bash_params(code), args)
    bash = shutil.which("bash") or "/bin/bash"
    return Prepared(argv=[bash, SCRIPT_FILE, *positional], files={SCRIPT_FILE: code}, env=env,
                    result_fd=False)


def interpret(run: ProcessResult) -> Outcome:
    """Exit 0: the last-line result; a non-zero exit code or a signal: an error."""
    if run.exit_code == 0:
        return Outcome(ok=True, result=bash_result(run.stdout_tail))
    if run.exit_code is None:
        return process_exited(run, "bash")
    return failure("ExitCode", f"bash exited with code {run.exit_code}{stderr_excerpt(run)}")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _reject_constant(name: str) -> object:
    # NaN and Infinity are not JSON: keep such a line as a string.
    raise ValueError(name)
