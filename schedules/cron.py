"""Cron arithmetic for schedules: pure functions of (expression, time zone, instants in ms).

Five fields (``min hour dom month dow``) or six with seconds first
(``sec min hour dom month dow``, as Windmill and Quartz write them). Times are
computed in the schedule's time zone, so ``0 30 2 * * *`` in Europe/Paris
fires at 02:30 local time all year; on the spring-forward day, when 02:30
does not exist, it fires at 03:00 (croniter's rule); on the fall-back day,
when 02:30 happens twice, a fixed-hour schedule fires once (the first 02:30)
while one whose hour is a wildcard keeps its real-time cadence (Vixie cron's
rule).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from common.errors import SpecError

CATCH_UP_POLICIES = ("skip", "one", "all")
MAX_CATCH_UP = 1000


@dataclass(frozen=True)
class Cron:
    """A checked cron expression in a time zone."""

    expr: str
    tz: str = "UTC"

    @property
    def seconds_first(self) -> bool:
        return len(self.expr.split()) == 6

    @property
    def fixed_hour(self) -> bool:
        hour = self.expr.split()[2 if self.seconds_first else 1]
        return not hour.startswith("*")

    def _fires(self, after_ms: int) -> Iterator[int]:
        """Fires strictly after ``after_ms``, in order, forever."""
        zone = ZoneInfo(self.tz)
        start = datetime.fromtimestamp(after_ms / 1000, UTC).astimezone(zone)
        it = croniter(self.expr, start, second_at_beginning=self.seconds_first)
        while True:
            fire: datetime = it.get_next(datetime)
            if self.fixed_hour and _second_occurrence(fire, zone):
                continue
            yield int(fire.timestamp() * 1000)

    def next_after(self, after_ms: int) -> int:
        """The first fire strictly after ``after_ms``."""
        return next(self._fires(after_ms))

    def fires_between(self, after_ms: int, until_ms: int, limit: int = MAX_CATCH_UP) -> list[int]:
        """Fires in ``(after_ms, until_ms]``, at most ``limit`` of them (the earliest)."""
        fires: list[int] = []
        for fire in self._fires(after_ms):
            if fire > until_ms or len(fires) >= limit:
                break
            fires.append(fire)
        return fires


def _second_occurrence(moment: datetime, zone: ZoneInfo) -> bool:
    """Whether ``moment`` is the repeat of a wall-clock time (the hour after a fall-back)."""
    first = moment.replace(tzinfo=None).replace(tzinfo=zone, fold=0)
    return first.utcoffset() != moment.utcoffset()


def parse_cron(expr: str, tz: str = "UTC") -> Cron:
    """Check an expression and a time zone; SpecError naming what is wrong."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise SpecError(
            f"cron {expr!r} has {len(fields)} fields; use 5 (min hour dom month dow) "
            "or 6 with seconds first (sec min hour dom month dow)"
        )
    if not croniter.is_valid(" ".join(fields), second_at_beginning=len(fields) == 6):
        raise SpecError(f"cron {expr!r} is not a valid cron expression")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise SpecError(f"unknown time zone {tz!r} (use an IANA name such as Europe/Paris)") from None
    return Cron(" ".join(fields), tz)


def plan_fires(cron: Cron, policy: str, last_fire_ms: int, now_ms: int) -> tuple[list[int], int]:
    """After the fire at ``last_fire_ms`` became due: (missed fires to run now, the next fire).

    Missed fires are those in ``(last_fire_ms, now_ms]`` (the fleet was down);
    the catch-up policy runs none of them (``skip``), the latest (``one``) or
    all (``all``, at most MAX_CATCH_UP). The next fire is always after now:
    the cadence follows the schedule, never the end of the previous run.
    """
    if policy not in CATCH_UP_POLICIES:
        raise SpecError(f"catch-up policy {policy!r}; use one of {', '.join(CATCH_UP_POLICIES)}")
    missed = cron.fires_between(last_fire_ms, now_ms)
    catch_up = {"skip": [], "one": missed[-1:], "all": missed}[policy]
    return catch_up, cron.next_after(max(now_ms, last_fire_ms))
