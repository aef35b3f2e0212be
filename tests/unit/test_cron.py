"""Cron arithmetic from tables of cases: fields, time zones, DST, catch-up plans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.errors import SpecError
from schedules.cron import parse_cron, plan_fires


def ms(text: str) -> int:
    """Epoch ms of an ISO time (offset included)."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def iso(value: int, tz: str = "UTC") -> str:
    from zoneinfo import ZoneInfo
    return datetime.fromtimestamp(value / 1000, UTC).astimezone(ZoneInfo(tz)).isoformat()


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        ("*/5 * * * *", "UTC", "2026-01-01T10:02:00+00:00", "2026-01-01T10:05:00+00:00"),
        ("*/5 * * * *", "UTC", "2026-01-01T10:05:00+00:00", "2026-01-01T10:10:00+00:00"),
        ("*/15 * * * * *", "UTC", "2026-01-01T10:00:01+00:00", "2026-01-01T10:00:15+00:00"),
        ("30 0 9 * * 1", "UTC", "2026-01-01T00:00:00+00:00", "2026-01-05T09:00:30+00:00"),
        ("0 9 * * *", "Europe/Paris", "2026-01-01T00:00:00+00:00", "2026-01-01T09:00:00+01:00"),
        ("0 9 * * *", "Europe/Paris", "2026-07-01T00:00:00+00:00", "2026-07-01T09:00:00+02:00"),
        # Spring forward in Paris: 02:30 does not exist on 2026-03-29; it fires at 03:00.
        ("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00+01:00", "2026-03-29T03:00:00+02:00"),
        # Fall back: 02:30 happens twice on 2026-10-25; it fires once.
        ("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00+02:00", "2026-10-25T02:30:00+02:00"),
        ("0 0 29 2 *", "UTC", "2026-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
    ],
)
def test_next_after(expr: str, tz: str, after: str, expected: str) -> None:
    """The next fire is strictly after the given instant, in the schedule's time zone."""
    assert iso(parse_cron(expr, tz).next_after(ms(after)), tz) == expected


def test_fall_back_fires_once() -> None:
    """A daily 02:30 fires once on the day 02:30 happens twice."""
    cron = parse_cron("30 2 * * *", "Europe/Paris")
    fires = cron.fires_between(ms("2026-10-24T12:00:00+02:00"), ms("2026-10-26T12:00:00+01:00"))
    assert [iso(f, "Europe/Paris") for f in fires] == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


@pytest.mark.parametrize(
    ("policy", "missed", "next_fire"),
    [
        ("skip", [], "2026-01-01T10:06:00+00:00"),
        ("one", ["2026-01-01T10:05:00+00:00"], "2026-01-01T10:06:00+00:00"),
        ("all", [f"2026-01-01T10:0{m}:00+00:00" for m in range(1, 6)], "2026-01-01T10:06:00+00:00"),
    ],
)
def test_catch_up_policies(policy: str, missed: list[str], next_fire: str) -> None:
    """After 5 missed minutes, each policy runs none, the latest, or all of them; the next is after now."""
    cron = parse_cron("* * * * *")
    catch_up, nxt = plan_fires(cron, policy, ms("2026-01-01T10:00:00+00:00"),
                               ms("2026-01-01T10:05:30+00:00"))
    assert [iso(f) for f in catch_up] == missed
    assert iso(nxt) == next_fire


def test_wildcard_hours_keep_real_time_cadence_on_fall_back() -> None:
    """An every-30-minutes schedule fires through the repeated hour, by real time."""
    cron = parse_cron("0,30 * * * *", "Europe/Paris")
    fires = cron.fires_between(ms("2026-10-25T01:45:00+02:00"), ms("2026-10-25T03:00:00+01:00"))
    assert [iso(f, "Europe/Paris") for f in fires] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]


def test_no_drift_when_a_run_is_slow() -> None:
    """The next fire follows the previous fire, not the time the plan is made."""
    cron = parse_cron("*/10 * * * * *")
    catch_up, nxt = plan_fires(cron, "skip", ms("2026-01-01T10:00:00+00:00"),
                               ms("2026-01-01T10:00:03+00:00"))
    assert (catch_up, iso(nxt)) == ([], "2026-01-01T10:00:10+00:00")


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        ("* * *", "UTC", "has 3 fields"),
        ("61 * * * *", "UTC", "not a valid cron expression"),
        ("* * * * * * *", "UTC", "has 7 fields"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_expressions(expr: str, tz: str, message: str) -> None:
    """Bad expressions and zones are refused by name."""
    with pytest.raises(SpecError, match=message):
        parse_cron(expr, tz)


def test_unknown_catch_up_policy() -> None:
    """Only skip, one and all are policies."""
    with pytest.raises(SpecError, match="catch-up policy 'some'"):
        plan_fires(parse_cron("* * * * *"), "some", 0, 1)
