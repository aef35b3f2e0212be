"""`gristmill job logs --follow` streams a job's lines while it runs and exits when it completes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill.client import Gristmill
from tests.e2e.conftest import RunningFleet

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(45)]

# Blocks on a FIFO the test holds open, so the test decides when the job may finish.
GATED_JOB = """\
def main(gate: str):
    print("waiting at the gate", flush=True)
    with open(gate) as fifo:
        word = fifo.readline().strip()
    print(f"gate opened: {word}")
    return word
"""


@pytest.fixture
def gate(job_share: Path) -> Iterator[tuple[Path, int]]:
    """A FIFO and a write end held open by the test (O_RDWR: opening does not block)."""
    path = job_share / "gate"
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR)
    yield path, fd
    with contextlib.suppress(OSError):
        os.close(fd)


def test_logs_follow_streams_while_running(
    fleet_up: RunningFleet, gm: Gristmill, gate: tuple[Path, int]
) -> None:
    """`job logs --follow` prints a line before the job ends, then the rest, then exits 0."""
    procs = fleet_up.procs
    path, fd = gate
    job_id = gm.run_preview(GATED_JOB, "python3", {"gate": str(path)})
    follow, lines = procs.start("follow", "job", "logs", job_id, "--follow", read_stdout=True)
    assert lines is not None

    assert lines.next_line(20) == "waiting at the gate"
    assert gm.get_job(job_id).status == "running"
    assert follow.poll() is None

    os.write(fd, b"go\n")
    os.close(fd)
    assert lines.next_line(20) == "gate opened: go"
    assert lines.next_line(20) is None
    assert follow.wait(10) == 0
    job = gm.get_job(job_id)
    assert job.status == "success" and job.result == "go"
