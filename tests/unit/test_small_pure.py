"""Small pure functions: the promoter's wait plan, CLI durations and args, instance settings."""

from __future__ import annotations

import dataclasses
import re

import pytest

from common.errors import GristmillError, SpecError
from common.instance import InstanceSettings, decode, validate_one
from common.paths import check_item_path as check_path
from gristmill.durations import parse_arg_pairs, parse_duration_ms
from jobs.scripts import check_limits, script_hash
from scheduler.promoter import FINE_WAIT_MS, IDLE_BLOCK_S, plan_wait
from worker.sandbox.policy import Limits


@pytest.mark.parametrize(
    ("next_due", "now", "plan"),
    [
        (None, 1000, (IDLE_BLOCK_S, 0.0)),            # nothing scheduled: block on wake
        (1000, 1000, (0.0, 0.0)),                     # due now: promote again at once
        (900, 1000, (0.0, 0.0)),                      # overdue
        (1100, 1000, (0.0, 0.1)),                     # within the fine window: sleep locally
        (1000 + FINE_WAIT_MS, 1000, (0.0, FINE_WAIT_MS / 1000)),
        (3000, 1000, ((2000 - FINE_WAIT_MS) / 1000, 0.0)),  # block until shortly before
        (60_000_000, 0, (IDLE_BLOCK_S, 0.0)),         # far away: block at most IDLE_BLOCK_S
    ],
)
def test_plan_wait(next_due: int | None, now: int, plan: tuple[float, float]) -> None:
    """The promoter blocks on Redis for the coarse part and sleeps locally for the last stretch."""
    assert plan_wait(next_due, now) == pytest.approx(plan)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("500ms", 500), ("30s", 30_000), ("30", 30_000), ("1.5s", 1500), ("5m", 300_000),
     ("2h", 7_200_000), ("1d", 86_400_000)],
)
def test_parse_duration(text: str, ms: int) -> None:
    """`--in` durations in every unit."""
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-3s"])
def test_parse_duration_rejects(text: str) -> None:
    """Durations that do not parse are refused with an example of what works."""
    with pytest.raises(ValueError, match="examples"):
        parse_duration_ms(text)


def test_arg_pairs_parse_json_values() -> None:
    """`-a k=v` values are JSON when they parse, strings otherwise."""
    assert parse_arg_pairs(["n=5", "name=Ada", "xs=[1,2]", "t=true", "s=\"5\"", "e="]) == {
        "n": 5, "name": "Ada", "xs": [1, 2], "t": True, "s": "5", "e": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_arg_pairs(["novalue"])


def test_instance_settings_validation() -> None:
    """Known settings are checked; unknown ones and bad values are refused by name."""
    assert validate_one("retention_s", "3600") == "3600"
    with pytest.raises(GristmillError, match="unknown setting 'retension_s'"):
        validate_one("retension_s", "3600")
    with pytest.raises(GristmillError, match="bad value 'ten' for retention_s"):
        validate_one("retention_s", "ten")
    with pytest.raises(GristmillError, match="greater than or equal to 60"):
        validate_one("retention_s", "5")
    assert decode({}) == InstanceSettings()
    assert decode({b"retention_s": b"120", b"stray": b"x"}).retention_s == 120


def test_script_hash_names_one_version() -> None:
    """The hash depends on path, language and code, and is 16 hex digits."""
    base = script_hash("u/a/x", "python3", "code")
    assert len(base) == 16 and int(base, 16) >= 0
    assert base == script_hash("u/a/x", "python3", "code")
    assert len({base, script_hash("u/a/y", "python3", "code"), script_hash("u/a/x", "bash", "code"),
                script_hash("u/a/x", "python3", "code2")}) == 4


@pytest.mark.parametrize("path", ["u/alice/hello", "g/ops/backup.daily", "f/shared/x/y"])
def test_script_paths_accepted(path: str) -> None:
    """Paths under u/, g/ and f/ are accepted."""
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["alice/hello", "u/alice", "u/alice/../bob/x", "x/a/b", "u/a b/c", ""])
def test_script_paths_refused(path: str) -> None:
    """Other paths, and traversal, are refused with the accepted forms named."""
    with pytest.raises(SpecError, match="u/<user>/<name>"):
        check_path(path)


def test_the_inbox_identity_owns_nothing() -> None:
    """Tokenless inbox jobs may read nothing, not even paths under u/inbox/."""
    from auth.permissions import Principal, can

    assert not can(Principal(user="inbox"), "read", "u/inbox/anything")


@pytest.mark.parametrize(("worker", "script", "expected"), [
    ({}, None, {}),
    ({}, {"memory_mb": 256}, {"memory_mb": 256}),
    ({"memory_mb": 128}, {"memory_mb": 256}, {"memory_mb": 128}),  # never raised
    ({}, {"max_procs": 8, "disk_mb": 4}, {"max_procs": 8, "disk_mb": 4}),
    ({"open_files": 64}, {"open_files": 65, "file_mb": 2}, {"open_files": 64, "file_mb": 2}),
])
def test_script_limits_only_tighten_the_workers(worker: dict[str, int], script: dict[str, int] | None,
                                                expected: dict[str, int]) -> None:
    """Limits.tightened: the lower of the worker's and the script's, per limit."""
    base = Limits(**worker)
    assert base.tightened(script) == dataclasses.replace(base, **expected)


@pytest.mark.parametrize(("limits", "words"), [
    ({"memory": 10}, "unknown limit(s) memory"),
    ({"memory_mb": 0}, "memory_mb must be a whole number"),
    ({"max_procs": True}, "max_procs must be a whole number"),
    ({"disk_mb": 2**31}, "disk_mb must be a whole number"),
    ({"file_mb": "8"}, "file_mb must be a whole number"),
])
def test_bad_script_limits_are_named(limits: dict[str, object], words: str) -> None:
    """check_limits refuses unknown names and values that are not whole numbers in range."""
    with pytest.raises(SpecError, match=re.escape(words)):
        check_limits(limits)
