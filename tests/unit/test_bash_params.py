"""Bash parameter declarations, invocation and last-line results: tables of cases."""

from __future__ import annotations

import pytest

from worker.executors.bash import BashParam, bash_invocation, bash_result, parse_bash_params, prepare
from worker.executors.binding import ArgumentError

P = BashParam

PARSE: list[tuple[str, str, list[BashParam]]] = [
    ("quoted positional", 'name="$1"', [P("name", 1)]),
    ("braced with a default", 'count="${2:-10}"', [P("count", 2, "10")]),
    ("unquoted", "name=$1", [P("name", 1)]),
    ("unquoted braced default", "n=${1:-5}", [P("n", 1, "5")]),
    ("indented", '    name="$1"', [P("name", 1)]),
    ("export prefix", 'export target="$1"', [P("target", 1)]),
    ("declare with flags", "declare -r x=${1}", [P("x", 1)]),
    ("readonly prefix", 'readonly x="$1"', [P("x", 1)]),
    ("empty default makes it optional", 'x="${1:-}"', [P("x", 1, "")]),
    ("quoted default is unquoted", 'x="${1:-"a b"}"', [P("x", 1, "a b")]),
    ("dash without colon is a default too", "x=${1-5}", [P("x", 1, "5")]),
    ("two-digit index needs braces", 'x="${10}"', [P("x", 10)]),
    ("trailing comment and semicolon", 'x="$1"  # the x\ny="$2"; echo', [P("x", 1), P("y", 2)]),
    ("ordered by index", 'b="$2"\na="$1"', [P("a", 1), P("b", 2)]),
    ("CRLF line endings", 'a="$1"\r\nb="${2:-x}"\r\n', [P("a", 1), P("b", 2, "x")]),
    ("local is a function's argument", 'local who="$1"\nname="$1"', [P("name", 1)]),
    ("comments are not declarations", '# name="$1"', []),
    ("$0 is not a parameter", 'me="$0"', []),
    ("$10 unbraced means ${1}0", "x=$10", []),
    ("text around $1 is not a declaration", 'x="pre$1"\ny="$1post"', []),
    ("single quotes do not expand", "x='$1'", []),
    ("first declaration of an index wins", 'a="$1"\nb="$1"', [P("a", 1)]),
    ("first declaration of a name wins", 'a="$1"\na="$2"', [P("a", 1)]),
    ("no parameters", "echo hello", []),
]


@pytest.mark.parametrize(("code", "expected"), [c[1:] for c in PARSE], ids=[c[0] for c in PARSE])
def test_parse(code: str, expected: list[BashParam]) -> None:
    """Each script declares exactly the expected parameters, in position order."""
    assert parse_bash_params(code) == expected


SCRIPT = 'name="$1"\ncount="${2:-10}"\nopts="${3:-}"'

INVOKE: list[tuple[str, dict[str, object], list[str], dict[str, str]]] = [
    ("strings as they are", {"name": "a b", "count": "3", "opts": "-v"},
     ["a b", "3", "-v"], {"name": "a b", "count": "3", "opts": "-v"}),
    ("other JSON values as compact JSON", {"name": {"k": [1, 2]}, "count": 3, "opts": True},
     ['{"k":[1,2]}', "3", "true"], {"name": '{"k":[1,2]}', "count": "3", "opts": "true"}),
    ("an absent optional in the middle is empty", {"name": "x", "opts": "o"},
     ["x", "", "o"], {"name": "x", "opts": "o"}),
    ("absent trailing optionals are not passed", {"name": "x"}, ["x"], {"name": "x"}),
    ("null counts as absent", {"name": "x", "count": None}, ["x"], {"name": "x"}),
    ("undeclared keys are ignored", {"name": "x", "other": 1}, ["x"], {"name": "x"}),
    ("floats and strings that look like numbers", {"name": 1.5, "count": "007"},
     ["1.5", "007"], {"name": "1.5", "count": "007"}),
]


@pytest.mark.parametrize(
    ("args", "positional", "env"), [c[1:] for c in INVOKE], ids=[c[0] for c in INVOKE]
)
def test_invocation(args: dict[str, object], positional: list[str], env: dict[str, str]) -> None:
    """Args become the expected positional parameters and environment variables."""
    assert bash_invocation(parse_bash_params(SCRIPT), args) == (positional, env)


def test_invocation_gaps_are_filled() -> None:
    """An undeclared position between declared ones is passed as an empty string."""
    params = parse_bash_params('a="$1"\nc="$3"')
    assert bash_invocation(params, {"a": "1", "c": "3"}) == (["1", "", "3"], {"a": "1", "c": "3"})


def test_invocation_names_every_missing_required_parameter() -> None:
    """Missing required parameters raise ArgumentError naming all of them."""
    params = parse_bash_params('a="$1"\nb="$2"\nc="${3:-x}"')
    with pytest.raises(ArgumentError, match=r"missing required argument.*: a, b$"):
        bash_invocation(params, {"c": "given"})


def test_env_skips_names_that_are_not_identifiers() -> None:
    """Only valid environment variable names are exported."""
    params = [P("ok_name", 1), P("bad-name", 2)]
    assert bash_invocation(params, {"ok_name": "1", "bad-name": "2"}) == (
        ["1", "2"], {"ok_name": "1"},
    )


RESULTS: list[tuple[str, list[str], object]] = [
    ("no output", [], None),
    ("only blank lines", ["", "  "], None),
    ("a JSON object", ["log", '{"a": 1}'], {"a": 1}),
    ("a number", ["42"], 42),
    ("a JSON string keeps its quotes off", ['"hi"'], "hi"),
    ("plain text", ["hello world"], "hello world"),
    ("trailing blank lines are skipped", ["done", "", "   "], "done"),
    ("surrounding spaces are stripped", ["  true  "], True),
    ("NaN is not JSON", ["NaN"], "NaN"),
    ("null", ["null"], None),
]


@pytest.mark.parametrize(
    ("tail", "expected"), [c[1:] for c in RESULTS], ids=[c[0] for c in RESULTS]
)
def test_result(tail: list[str], expected: object) -> None:
    """The result is the last non-empty stdout line, parsed as JSON when it is JSON."""
    assert bash_result(tail) == expected


RESERVED = ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "ENV", "IFS", "PYTHONPATH",
            "PYTHONSTARTUP", "WM_TOKEN", "WM_JOB_ID", "GRISTMILL_REDIS_URL", "SHELLOPTS", "PS4",
            "LC_ALL", "HOME"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_names_are_refused_with_a_clear_error(name: str) -> None:
    """An arg that would become PATH, LD_*, BASH_ENV, ... fails the job before it runs."""
    params = parse_bash_params(f'{name}="$1"\nother="$2"')
    with pytest.raises(ArgumentError, match=rf"{name} cannot be passed.*rename the script's parameter"):
        bash_invocation(params, {name: "/tmp/evil", "other": "x"})


def test_a_reserved_optional_parameter_not_given_is_fine() -> None:
    """Only a value that would be set is refused; ordinary names pass through to the env."""
    params = parse_bash_params('name="$1"\nPATH="${2:-/bin}"\npath_like="$3"')
    assert bash_invocation(params, {"name": "a", "path_like": "b"}) == (
        ["a", "", "b"], {"name": "a", "path_like": "b"})


def test_prepare_puts_args_in_the_prepared_env() -> None:
    """Prepared.env carries the args by name (the spawner merges it under the job's variables)."""
    prepared = prepare('name="$1"\ncount="${2:-10}"\necho "$name"', {"name": "Ada", "count": 3})
    assert prepared.env == {"name": "Ada", "count": "3"}
    assert prepared.argv[-2:] == ["Ada", "3"]
