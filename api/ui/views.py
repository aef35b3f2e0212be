"""What the pages show, computed from data: chart geometry, time and duration text, worker rows.

Pure functions, so the page handlers stay short and these are tested without a browser.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.models import Job
from schedules.cron import parse_cron

CHART_W, CHART_H, PAD = 720, 180, 28
BUCKETS = 24


def fmt_ts(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(ms: int | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


def duration_of(job: Job, now: int) -> int | None:
    if job.duration_ms is not None:
        return job.duration_ms
    if job.started_at is None:
        return None
    return (job.completed_at or now) - job.started_at


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    status: str
    job_id: str
    label: str


@dataclass(frozen=True)
class Chart:
    """A scatter of duration per run (by creation time) and a throughput line per time bucket."""

    dots: list[Dot]
    done_line: str      # SVG polyline points: jobs completed per bucket
    failed_line: str    # ... of which failures
    y_max_ms: int
    t_from: str
    t_to: str
    width: int = CHART_W
    height: int = CHART_H
    pad: int = PAD


def chart(jobs: Sequence[Job], now: int) -> Chart | None:
    """The chart of the jobs on the page; None when there is nothing to draw."""
    points = [(j, j.created_at, duration_of(j, now)) for j in jobs]
    if not points:
        return None
    t0 = min(t for _, t, _ in points)
    t1 = max(t for _, t, _ in points)
    span = max(t1 - t0, 1)
    y_max = max([d for _, _, d in points if d is not None] + [1])
    inner_w, inner_h = CHART_W - 2 * PAD, CHART_H - 2 * PAD

    def x_of(t: int) -> float:
        return round(PAD + inner_w * (t - t0) / span, 1)

    def y_of(v: float, top: float) -> float:
        return round(CHART_H - PAD - inner_h * v / top, 1)

    dots = [Dot(x_of(t), y_of(d or 0, y_max), j.status.value, j.id,
                f"{j.script_path or j.kind.value} {j.status.value} {fmt_duration(d)}")
            for j, t, d in points]
    done = [0] * BUCKETS
    failed = [0] * BUCKETS
    for j, t, _ in points:
        b = min(BUCKETS - 1, (t - t0) * BUCKETS // span)
        if j.is_terminal:
            done[b] += 1
            failed[b] += j.status.value == "failure"
    top = max([*done, 1])

    def line(values: list[int]) -> str:
        return " ".join(f"{PAD + inner_w * (i + 0.5) / BUCKETS:.1f},{y_of(v, top)}"
                        for i, v in enumerate(values))

    return Chart(dots, line(done), line(failed), y_max, fmt_ts(t0), fmt_ts(t1))


def worker_rows(workers: Sequence[Any], running: dict[str, int], now: int) -> list[dict[str, Any]]:
    """One row per registered worker: heartbeat age, busy slots, jobs done."""
    rows = []
    for w in workers:
        rows.append({
            "id": w.worker_id, "group": w.group, "host": w.fields.get("host", ""),
            "heartbeat_s": round((now - w.last_seen_ms) / 1000, 1),
            "busy": running.get(w.worker_id, 0),
            "slots": w.fields.get("concurrency", "?"),
            "done": w.fields.get("jobs_done", "0"),
            "version": w.fields.get("version", ""),
        })
    return sorted(rows, key=lambda r: (r["group"], r["id"]))


def upcoming(cron: str, tz: str, first: int | None, n: int = 3) -> list[int]:
    """The next ``n`` fires of a schedule whose queued fire is ``first`` (none: paused)."""
    if first is None:
        return []
    fires = [first]
    parsed = parse_cron(cron, tz)
    while len(fires) < n:
        fires.append(parsed.next_after(fires[-1]))
    return fires
