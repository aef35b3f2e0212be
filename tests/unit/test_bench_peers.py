"""bench.peers' due-time and lateness arithmetic: every system gets the same instant."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from bench.peer_tasks import lateness_ms
from bench.peers import delay_ms, due_datetime, due_seconds

DUE_MS = 1_764_687_600_123  # 2025-12-02 15:00:00.123 UTC: a fraction of a second to keep


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata"])
def local_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run under a machine time zone (tzset), restored afterwards."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_due_datetime_is_the_instant_to_the_millisecond(local_zone: str) -> None:
    """An aware UTC datetime whose timestamp is the due time exactly, in any local zone."""
    due = due_datetime(DUE_MS)
    assert due.utcoffset() == dt.timedelta(0)
    assert due == dt.datetime(2025, 12, 2, 15, 0, 0, 123_000, tzinfo=dt.UTC)
    assert round(due.timestamp() * 1000) == DUE_MS


def test_a_naive_local_eta_loses_the_fraction_an_aware_one_keeps() -> None:
    """Why Huey gets an aware eta: mktime(timetuple()) of a naive one drops the milliseconds."""
    naive = dt.datetime.fromtimestamp(DUE_MS / 1000)  # what the bench passed before
    assert time.mktime(naive.timetuple()) * 1000 == DUE_MS - 123  # due 123 ms early
    aware = due_datetime(DUE_MS)
    assert aware.astimezone(dt.UTC).microsecond == 123_000


@pytest.mark.parametrize(("due", "at", "expected"), [
    (DUE_MS, DUE_MS - 2000, 2000), (DUE_MS, DUE_MS, 0), (DUE_MS, DUE_MS + 5, 0),
])
def test_delay_from_now(due: int, at: int, expected: int) -> None:
    """Dramatiq's delay is the due time minus now, never negative."""
    assert delay_ms(due, at) == expected


def test_due_seconds_keeps_the_fraction() -> None:
    """SAQ's scheduled is epoch seconds with the milliseconds."""
    assert due_seconds(DUE_MS) == pytest.approx(1_764_687_600.123, abs=1e-6)


@pytest.mark.parametrize(("started", "due", "expected"), [
    (DUE_MS + 250, DUE_MS, 250.0), (DUE_MS, DUE_MS, 0.0), (DUE_MS - 40, DUE_MS, -40.0),
])
def test_lateness_is_start_minus_due(started: int, due: int, expected: float) -> None:
    """Late is positive, early negative, in ms, for every system alike."""
    assert lateness_ms(started, due) == expected
