"""Binding a job's JSON args to the parameters of main: a table of cases, no processes."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Optional

import pydantic
import pytest

from worker.executors.binding import ArgumentError, Binder, bind_args, call_bound


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Point:
    x: int
    y: int = 0


@dataclass
class Event:
    when: datetime
    where: Point
    tags: list[str] = field(default_factory=list)


class DuckModel:
    """Looks like a pydantic model to the binder: has model_validate."""

    def __init__(self, data: object) -> None:
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DuckModel) and other.data == self.data

    @classmethod
    def model_validate(cls, data: object) -> DuckModel:
        if not isinstance(data, dict):
            raise ValueError("needs an object")
        return cls(data)


class User(pydantic.BaseModel):
    name: str
    age: int


def raw(a, b=2):  # type: ignore[no-untyped-def]
    return a, b


def scalars(i: int, f: float, b: bool, s: str) -> None: ...
def dates(when: datetime, day: date) -> None: ...
def blob(data: bytes) -> None: ...
def optional(a: Optional[int], b: int | None = None, c: int | str = 0) -> None: ...  # noqa: UP045
def containers(xs: list[int], m: dict[str, float], t: tuple[int, str], s: set[int]) -> None: ...
def nested(e: Event) -> None: ...
def models(d: DuckModel, u: User) -> None: ...
def enums(c: Color, mode: Literal["fast", "slow"] = "fast") -> None: ...
def var_kw(a: int, **rest: int) -> None: ...
def stringly(n: int, u: Undefined) -> None: ...  # type: ignore[name-defined]  # noqa: F821
def anything(x: Any, y: object) -> None: ...
def stringy(p: Path, u: uuid.UUID, d: Decimal) -> None: ...
def pos_only(a: int, /, b: int = 1) -> tuple[int, int]:
    return a, b


UTC_2024 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)

CASES: list[tuple[str, Any, dict[str, object], dict[str, object]]] = [
    ("unannotated values pass raw", raw, {"a": {"k": [1]}}, {"a": {"k": [1]}, "b": 2}),
    ("undeclared keys are ignored", raw, {"a": 1, "zzz": 9}, {"a": 1, "b": 2}),
    ("a given value beats the default", raw, {"a": 1, "b": 3}, {"a": 1, "b": 3}),
    ("scalars from strings", scalars, {"i": "3", "f": "2.5", "b": "true", "s": "x"},
     {"i": 3, "f": 2.5, "b": True, "s": "x"}),
    ("scalars from numbers", scalars, {"i": 4.0, "f": 2, "b": 0, "s": ""},
     {"i": 4, "f": 2.0, "b": False, "s": ""}),
    ("bool from '1' and int from ' 7 '", scalars, {"i": " 7 ", "f": 1.5, "b": "1", "s": "s"},
     {"i": 7, "f": 1.5, "b": True, "s": "s"}),
    ("bool from 'FALSE'", scalars, {"i": 1, "f": 1, "b": "FALSE", "s": "s"},
     {"i": 1, "f": 1.0, "b": False, "s": "s"}),
    ("datetime with Z and a date", dates, {"when": "2024-01-02T03:04:05Z", "day": "2024-02-29"},
     {"when": UTC_2024, "day": date(2024, 2, 29)}),
    ("datetime with an offset", dates, {"when": "2024-01-02T05:04:05+02:00", "day": "2024-01-01"},
     {"when": datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
      "day": date(2024, 1, 1)}),
    ("naive datetime stays naive", dates, {"when": "2024-01-02 03:04:05", "day": "2024-01-01"},
     {"when": datetime(2024, 1, 2, 3, 4, 5), "day": date(2024, 1, 1)}),
    ("bytes from base64", blob, {"data": "aGVsbG8="}, {"data": b"hello"}),
    ("bytes from url-safe base64", blob, {"data": "-_8="}, {"data": b"\xfb\xff"}),
    ("Optional and X | None accept null", optional, {"a": None, "b": None},
     {"a": None, "b": None, "c": 0}),
    ("Optional converts the inner type", optional, {"a": "5", "b": 6.0}, {"a": 5, "b": 6, "c": 0}),
    ("int | str keeps a string a string", optional, {"a": 1, "c": "7"},
     {"a": 1, "b": None, "c": "7"}),
    ("containers convert their items", containers,
     {"xs": ["1", 2], "m": {"a": "1.5"}, "t": [1, "x"], "s": [1, 1, 2]},
     {"xs": [1, 2], "m": {"a": 1.5}, "t": (1, "x"), "s": {1, 2}}),
    ("nested dataclasses from objects", nested,
     {"e": {"when": "2024-01-02T03:04:05Z", "where": {"x": "1"}, "extra": True}},
     {"e": Event(UTC_2024, Point(1, 0), [])}),
    ("duck-typed and real pydantic models", models,
     {"d": {"k": 1}, "u": {"name": "ann", "age": "41"}},
     {"d": DuckModel({"k": 1}), "u": User(name="ann", age=41)}),
    ("enum by value, literal member", enums, {"c": "blue", "mode": "slow"},
     {"c": Color.BLUE, "mode": "slow"}),
    ("enum by member name", enums, {"c": "RED"}, {"c": Color.RED, "mode": "fast"}),
    ("**kwargs receives undeclared keys, converted", var_kw, {"a": "1", "b": "2"},
     {"a": 1, "b": 2}),
    ("one unresolvable annotation leaves the others working", stringly, {"n": "5", "u": [1]},
     {"n": 5, "u": [1]}),
    ("Path, UUID and Decimal from strings", stringy,
     {"p": "/tmp/x", "u": "12345678-1234-5678-1234-567812345678", "d": "0.10"},
     {"p": Path("/tmp/x"), "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
      "d": Decimal("0.10")}),
    ("Any and object pass raw", anything, {"x": "1", "y": {"a": 1}}, {"x": "1", "y": {"a": 1}}),
]


@pytest.mark.parametrize(
    ("func", "args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_binds(func: Any, args: dict[str, object], expected: dict[str, object]) -> None:
    """Each args object binds to exactly the expected keyword arguments."""
    assert bind_args(func, args) == expected


@pytest.mark.parametrize(
    ("func", "args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_kept_binder_gives_the_same_answer_every_time(
    func: Any, args: dict[str, object], expected: dict[str, object]
) -> None:
    """One Binder, as a dedicated process keeps, binds the table's cases as bind_args does, twice."""
    binder = Binder(func)
    assert binder.bind(args) == expected
    assert binder.bind(args) == expected


def main(a: int, b: str, c: int = 1) -> None: ...


ERRORS: list[tuple[str, Any, dict[str, object], list[str]]] = [
    ("every missing required parameter is named", main, {"c": 2},
     ["missing required argument(s) for main: a, b"]),
    ("a float with a fraction is not an int", scalars, {"i": 2.5, "f": 1, "b": True, "s": ""},
     ["'i'", "expected int", "fractional"]),
    ("a word is not an int", scalars, {"i": "three", "f": 1, "b": True, "s": ""},
     ["'i'", "expected int", "'three'"]),
    ("bool rejects other words", scalars, {"i": 1, "f": 1, "b": "maybe", "s": ""},
     ["'b'", "expected bool"]),
    ("bool is not an int", scalars, {"i": True, "f": 1, "b": True, "s": ""}, ["'i'", "int"]),
    ("str does not take numbers", scalars, {"i": 1, "f": 1, "b": True, "s": 5}, ["'s'", "str"]),
    ("datetime needs ISO-8601", dates, {"when": "yesterday", "day": "2024-01-01"},
     ["'when'", "datetime", "ISO-8601"]),
    ("date needs YYYY-MM-DD", dates, {"when": "2024-01-01", "day": "01/02/2024"},
     ["'day'", "date"]),
    ("bytes needs base64", blob, {"data": "not base64!"}, ["'data'", "bytes", "base64"]),
    ("the failing item is located", containers,
     {"xs": [1, "x"], "m": {}, "t": [1, "a"], "s": []}, ["'xs[1]'", "expected int"]),
    ("a tuple needs the right length", containers, {"xs": [], "m": {}, "t": [1], "s": []},
     ["'t'", "2 items"]),
    ("a list is not an object", containers, {"xs": {}, "m": {}, "t": [1, "a"], "s": []},
     ["'xs'", "list[int]"]),
    ("a nested field is located", nested, {"e": {"when": "2024-01-01", "where": {"x": "no"}}},
     ["'e.where.x'", "expected int"]),
    ("a missing dataclass field is named", nested, {"e": {"when": "2024-01-01"}},
     ["'e'", "Event", "where"]),
    ("pydantic errors are reported", models, {"d": {}, "u": {"name": "x", "age": "old"}},
     ["'u'", "User"]),
    ("duck-typed model errors are reported", models, {"d": [1], "u": {"name": "x", "age": 1}},
     ["'d'", "needs an object"]),
    ("an unknown enum value lists the allowed ones", enums, {"c": "green"},
     ["'c'", "'red', 'blue'"]),
    ("a literal outside its values", enums, {"c": "red", "mode": "medium"}, ["'mode'", "Literal"]),
    ("a bad UUID", stringy, {"p": "x", "u": "nope", "d": "1"}, ["'u'", "UUID"]),
    ("a bad Decimal", stringy, {"p": "x", "u": str(uuid.UUID(int=0)), "d": "one"},
     ["'d'", "Decimal"]),
    ("null for a non-optional parameter", scalars, {"i": None, "f": 1, "b": True, "s": ""},
     ["'i'", "null"]),
]


@pytest.mark.parametrize(
    ("func", "args", "fragments"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_rejects(func: Any, args: dict[str, object], fragments: list[str]) -> None:
    """Each bad args object raises ArgumentError whose message has the expected fragments."""
    with pytest.raises(ArgumentError) as info:
        bind_args(func, args)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("func", "args", "fragments"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_a_kept_binder_rejects_the_same(
    func: Any, args: dict[str, object], fragments: list[str]
) -> None:
    """A kept Binder rejects each bad args object with the same message, every time."""
    binder = Binder(func)
    with pytest.raises(ArgumentError) as info:
        bind_args(func, args)
    for _ in range(2):
        with pytest.raises(ArgumentError) as again:
            binder.bind(args)
        assert str(again.value) == str(info.value)


def test_a_kept_binder_does_not_carry_one_jobs_args_to_the_next() -> None:
    """A value given to one job is not the next job's default, nor its **kwargs."""
    binder = Binder(var_kw)
    assert binder.bind({"a": "1", "extra": "2"}) == {"a": 1, "extra": 2}
    assert binder.bind({"a": "3"}) == {"a": 3}
    with pytest.raises(ArgumentError, match="missing required argument"):
        binder.bind({})
    assert Binder(raw).bind({"a": 1, "b": 5}) == {"a": 1, "b": 5}
    kept = Binder(raw)
    kept.bind({"a": 1, "b": 5})
    assert kept.bind({"a": 1}) == {"a": 1, "b": 2}


def test_a_binder_reads_the_annotations_once() -> None:
    """What the annotations said when the Binder was made holds for its later jobs."""
    def late(n: int) -> int:
        return n

    binder = Binder(late)
    late.__annotations__["n"] = str
    assert binder.bind({"n": "4"}) == {"n": 4}
    assert bind_args(late, {"n": "4"}) == {"n": "4"}  # a fresh bind sees the change


def test_an_unreadable_signature_fails_every_bind() -> None:
    """A callable without a signature raises as bind_args does, on every bind, not at creation."""
    with pytest.raises(ValueError, match="no signature found") as first:
        bind_args(max, {})
    binder = Binder(max)  # a builtin without a signature: made without complaint
    for _ in range(2):
        with pytest.raises(ValueError, match="no signature found") as again:
            binder.bind({})
        assert not isinstance(again.value, ArgumentError)
        assert str(again.value) == str(first.value)


def test_argument_error_is_a_value_error() -> None:
    """ArgumentError can be caught as ValueError."""
    assert issubclass(ArgumentError, ValueError)


def test_positional_only_parameters_are_bound_and_called() -> None:
    """Positional-only parameters bind by name and are passed by position."""
    assert call_bound(pos_only, bind_args(pos_only, {"a": "4"})) == (4, 1)
    binder = Binder(pos_only)
    assert binder.call(binder.bind({"a": "4", "b": "2"})) == (4, 2)
