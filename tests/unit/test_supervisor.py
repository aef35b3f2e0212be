"""`up`'s supervision: restart backoff that starts over, and output that stays one JSON per line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from gristmill.supervisor import HEALTHY_S, RESTART_BACKOFF_S, Child, Output, pump, stop_all

pytestmark = pytest.mark.timeout(60)

LONG_LINES = """
import json, sys
for i in range(40):
    sys.stdout.write(json.dumps({"event": "x" * 30000, "n": i, "who": sys.argv[1]}) + "\\n")
    sys.stdout.flush()
print("a plain line, not JSON", file=sys.stderr, flush=True)
raise SystemExit(3)
"""


def output_file(tmp_path: Path) -> tuple[Output, Path, int]:
    path = tmp_path / "up.out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return Output(as_json=True, stdout_fd=fd, stderr_fd=fd), path, fd


def test_children_output_is_relayed_one_json_object_per_line(tmp_path: Path) -> None:
    """Three children writing 30 KB lines at once, plus a plain stderr line: whole JSON lines."""
    out, path, fd = output_file(tmp_path)
    children = [Child(f"c{i}", [sys.executable, "-c", LONG_LINES, f"c{i}"], dict(os.environ))
                for i in range(3)]
    for child in children:
        child.start()
    while any(child.running() for child in children):
        pump(children, out, 0.5)
    stop_all(children, out, 5)
    os.close(fd)
    objects = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(isinstance(o, dict) for o in objects)
    assert sorted(o["who"] for o in objects if "who" in o) == sorted([f"c{i}" for i in range(3)] * 40)
    wrapped = [o for o in objects if o.get("raw")]
    assert sorted(o["process"] for o in wrapped) == ["c0", "c1", "c2"]
    assert {o["event"] for o in wrapped} == {"a plain line, not JSON"}


def test_restart_backoff_starts_over_after_a_healthy_period(tmp_path: Path) -> None:
    """After HEALTHY_S of running, the next crash restarts at once, not after 10 s."""
    out, _, fd = output_file(tmp_path)
    child = Child("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    child.start(now=0.0)
    child.restarts = 4  # four crashes in a row: the backoff is at its longest
    try:
        child.check(HEALTHY_S - 1, out)
        assert child.restarts == 4
        child.check(HEALTHY_S, out)
        assert child.restarts == 0
        assert child.process is not None
        child.process.kill()
        child.process.wait()
        assert child.check(HEALTHY_S + 1, out) is False  # the first backoff step
        assert child.next_start == HEALTHY_S + 1 + RESTART_BACKOFF_S[0]
    finally:
        stop_all([child], out, 5)
        os.close(fd)


def test_a_terminal_gets_plain_lines() -> None:
    """On a TTY (console mode) up's own lines stay readable text."""
    read, write = os.pipe()
    Output(as_json=False, stdout_fd=write).say("fleet up", workers=2)
    os.close(write)
    assert os.read(read, 1000) == b"gristmill: fleet up workers=2\n"
    os.close(read)
