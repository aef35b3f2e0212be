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

from worker.executors.binding import ArgumentError
from worker.executors.command import Prepared
from worker.executors.outcome import Outcome, failure, process_exited, stderr_excerpt

if TYPE_CHECKING:
    from worker.executors.command import ProcessResult

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

# Variables that change how bash, the dynamic loader, an interpreter the script
# starts, or Gristmill's own contract behave: never set from a job's args.
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "IFS", "CDPATH", "GLOBIGNORE", "SHELLOPTS",
    "BASHOPTS", "PS4", "PROMPT_COMMAND", "POSIXLY_CORRECT", "HISTFILE", "TMPDIR", "PWD",
    "OLDPWD", "LANG", "LANGUAGE", "TZ", "TERM", "NODE_OPTIONS", "PERL5OPT", "PERL5LIB",
    "RUBYOPT", "RUBYLIB", "GCONV_PATH", "NLSPATH", "LOCPATH", "HOSTALIASES", "RESOLV_HOST_CONF",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY",
    "http_proxy", "https_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy", "UV_INDEX_URL",
    "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
})
RESERVED_PREFIXES = ("LD_", "BASH_", "PYTHON", "WM_", "GRISTMILL_", "LC_", "MALLOC_", "GLIBC_",
                     "GIT_", "PIP_", "UV_")


def reserved_env_name(name: str) -> bool:
    """True when an arg of this name must not become an environment variable."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES)


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
    required parameter that ``args`` lacks, and every given one whose name is
    reserved (:func:`reserved_env_name`). The environment goes in
    ``Prepared.env``, which the spawner merges under the job's own variables.
    """
    missing = [p.name for p in params if p.required and args.get(p.name) is None]
    if missing:
        raise ArgumentError(f"missing required argument(s) for the script: {', '.join(missing)}")
    reserved = [p.name for p in params if args.get(p.name) is not None and reserved_env_name(p.name)]
    if reserved:
        raise ArgumentError(
            f"argument(s) {', '.join(reserved)} cannot be passed: args are also set as environment "
            "variables, and these names would change how the shell or the job runs (PATH, LD_*, "
            "BASH_ENV, ENV, IFS, PYTHON*, WM_*, ...); rename the script's parameter"
        )
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
