"""Spec parsing: what is accepted, and the exact complaint about what is not."""

from __future__ import annotations

import pytest

from common.errors import SpecError
from common.models import Kind
from jobs.spec import guess_kind, parse_spec, parse_time, salvage_id

UUID = "6f1c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"path": "u/alice/hello"}', {"path": "u/alice/hello", "args": {}}),
        ('{"hash": "0123456789abcdef", "args": {"a": 1}}', {"hash": "0123456789abcdef", "args": {"a": 1}}),
        ('{"code": "def main(): pass", "language": "python3"}', {"language": "python3"}),
        ('{"path": "u/a/b", "scheduled_for": 1700000000000}', {"scheduled_for": 1700000000000}),
        ('{"path": "u/a/b", "scheduled_for": "2023-11-14T22:13:20Z"}', {"scheduled_for": 1700000000000}),
        ('{"path": "u/a/b", "scheduled_for": "2023-11-14T22:13:20"}', {"scheduled_for": 1700000000000}),
        ('{"path": "u/a/b", "scheduled_for": "1700000000000"}', {"scheduled_for": 1700000000000}),
        (f'{{"path": "u/a/b", "id": "{UUID.upper()}"}}', {"id": UUID}),
        ('{"path": "u/a/b", "args": null}', {"args": {}}),
        ('{"path": "u/a/b", "tag": "gpu", "priority": 2, "timeout_s": 5}', {"tag": "gpu", "priority": 2}),
    ],
)
def test_accepts(raw: str, expected: dict[str, object]) -> None:
    """Valid specs parse, with times normalised to epoch ms and ids to canonical UUIDs."""
    spec = parse_spec(raw)
    for key, value in expected.items():
        assert getattr(spec, key) == value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "spec is not valid JSON"),
        ("[1, 2]", "a job spec must be a JSON object, got an array"),
        ('"hello"', "a job spec must be a JSON object, got a string"),
        ("{}", "nothing to run: give exactly one of path, hash, code"),
        ('{"args": {"a": 1}}', "nothing to run"),
        ('{"path": "u/a/b", "code": "x", "language": "bash"}', "give exactly one of"),
        ('{"code": "echo hi"}', "code needs a language"),
        ('{"code": "x", "language": "cobol"}',
         "language: unknown language 'cobol'; supported: python3, bash"),
        ('{"path": "u/a/b", "args": [1, 2]}', "args: must be a JSON object, got an array"),
        ('{"path": "u/a/b", "args": "x"}', "args: must be a JSON object, got a string"),
        ('{"path": "u/a/b", "scheduled_for": "next tuesday"}',
         "scheduled_for: 'next tuesday' is not an ISO 8601"),
        ('{"path": "u/a/b", "scheduled_for": true}', "scheduled_for: must be epoch milliseconds"),
        ('{"path": "u/a/b", "id": "not-a-uuid"}', "id: 'not-a-uuid' is not a UUID"),
        ('{"path": "u/a/b", "timeout_s": 0}', "timeout_s: Input should be greater than 0"),
        ('{"path": "u/a/b", "colour": "red"}', "colour: unknown field"),
        ('{"path": 5}', "path: Input should be a valid string"),
    ],
)
def test_rejects_with_exact_reason(raw: str, message: str) -> None:
    """Each kind of bad input is refused with a message that names the problem."""
    with pytest.raises(SpecError) as caught:
        parse_spec(raw)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "found"),
    [(f'{{"id": "{UUID}", "args": 5}}', UUID), ('{"id": "nope"}', None), ("[1]", None),
     ("not json", None), (b"\xff\xfe", None)],
)
def test_salvage_id(raw: str | bytes, found: str | None) -> None:
    """A rejected spec keeps the producer's id only when it is a UUID."""
    assert salvage_id(raw) == found


@pytest.mark.parametrize(
    ("data", "kind"),
    [({"path": "u/a/b"}, Kind.SCRIPT), ({"hash": "ab"}, Kind.SCRIPT), ({"code": "x"}, Kind.PREVIEW),
     ({"flow_path": "f/x/y"}, Kind.FLOW), ({"flow": {}}, Kind.FLOWPREVIEW), ([1], Kind.PREVIEW)],
)
def test_guess_kind(data: object, kind: Kind) -> None:
    """The kind recorded for a spec, even an invalid one."""
    assert guess_kind(data) == kind


def test_parse_time_offsets() -> None:
    """ISO times with an offset are converted to UTC epoch ms."""
    assert parse_time("2023-11-15T00:13:20+02:00") == 1_700_000_000_000
