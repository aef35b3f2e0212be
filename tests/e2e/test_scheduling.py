"""Jobs scheduled ahead start on time, in due order (loose bounds: the benchmark measures timing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.clock import now_ms
from gristmill.client import Gristmill
from tests.e2e.conftest import RunningFleet

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(45)]

LATE_BOUND_MS = 150
QUICK = "def main():\n    return 'ran'\n"


def test_job_in_2s_starts_on_time(
    fleet_up: RunningFleet, gm: Gristmill, tmp_path: Path
) -> None:
    """`preview --in 2s` starts at or after its scheduled_for and within 150 ms of it."""
    procs = fleet_up.procs
    (tmp_path / "quick.py").write_text(QUICK)
    before = now_ms()
    queued = procs.cli("preview", str(tmp_path / "quick.py"), "--in", "2s")
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()
    assert gm.get_job(job_id).status == "queued"

    job = gm.wait(job_id, timeout_s=20)
    assert job.status == "success", job.error
    assert job.scheduled_for >= before + 2000
    assert job.started_at is not None
    assert 0 <= job.started_at - job.scheduled_for <= LATE_BOUND_MS, (
        f"started {job.started_at - job.scheduled_for} ms after scheduled_for")


def test_later_enqueued_earlier_due_runs_first(
    fleet_up: RunningFleet, gm: Gristmill
) -> None:
    """A job enqueued second but due first wakes the scheduler and runs first, on time."""
    now = now_ms()
    late = gm.run_preview(QUICK, "python3", scheduled_for=now + 3000)
    early = gm.run_preview(QUICK, "python3", scheduled_for=now + 1000)

    first = gm.wait(early, timeout_s=20)
    second = gm.wait(late, timeout_s=20)
    assert first.status == second.status == "success"
    assert first.started_at is not None and second.started_at is not None
    assert first.started_at < second.started_at
    for job in (first, second):
        lateness = job.started_at - job.scheduled_for  # type: ignore[operator]
        assert 0 <= lateness <= LATE_BOUND_MS, f"{job.id} started {lateness} ms late"
